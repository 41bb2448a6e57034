"""The OpenQASM 2.0 reader: a streaming lexer and recursive-descent parser that drives a ProgramBuilder
(hpr.quantum.program). The file is read a line at a time, never whole: a line holding one plain
statement (``name(params) q[i], r[j];`` or ``measure q[i] -> c[j];``, as toolkits write them) is taken
by one anchored regex on that line, its constant parameter texts evaluated once and remembered; any
other line goes through the token-level parser, which pulls further lines as a statement needs them.
Both paths check the same things through the builder, so an error says the same either way.

The language: ``OPENQASM 2.0;``, ``include "qelib1.inc";`` (its gates are built in), ``qreg`` /
``creg``, gate applications on qubits or whole registers (broadcast), ``gate`` definitions, ``measure``,
``reset``, ``if (creg == n) <op>;``, ``barrier`` (ignored), ``//`` and ``/* */`` comments. Parameters are
expressions over numbers, pi, + - * / ^, unary minus and sin cos tan exp ln sqrt (hpr.quantum.qasm_expr).
Not supported (an error naming the line): ``opaque``, other includes.

Usage: ``prog = read(open("f.qasm"), "f.qasm")`` (hpr.quantum.qasm.load is the usual way in)."""
import re
from collections import deque

from . import gates as G
from .program import MAX_OPS, ProgramBuilder, QasmError
from .qasm_expr import ExprParser, evaluate, names

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v\n]+) | (?P<comment>//[^\n]*) | (?P<bopen>/\*)
  | (?P<real>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<str>"[^"\n]*")
  | (?P<arrow>->) | (?P<eq>==)
  | (?P<sym>[;,()\[\]{}+\-*/^])
""", re.X)
_ID = r"[A-Za-z_]\w*"
_ARG = rf"{_ID}\s*(?:\[\s*\d+\s*\])?"
_TAIL = r"\s*;\s*(?://.*)?$"
# name, optional (params: one level of nested parentheses), then qubit arguments; a name and its
# arguments are separated by '(...)' or by white space
_FAST_GATE = re.compile(rf"\s*({_ID})(?:\s*\(((?:[^()]|\([^()]*\))*)\)\s*|\s+)({_ARG}(?:\s*,\s*{_ARG})*){_TAIL}")
_FAST_MEASURE = re.compile(rf"\s*measure\s+({_ID})\s*(?:\[\s*(\d+)\s*\])?\s*->\s*({_ID})\s*(?:\[\s*(\d+)\s*\])?{_TAIL}")
_ARGS = re.compile(rf"({_ID})\s*(?:\[\s*(\d+)\s*\])?")
_BLANK = re.compile(r"\s*(?://.*)?$")
KEYWORDS = frozenset(("OPENQASM", "include", "qreg", "creg", "gate", "opaque", "measure", "reset", "barrier", "if"))


class Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return f"{self.text!r}"


class Lexer:
    """Tokens of a stream of lines, one line tokenised at a time (block comments may span lines)."""

    def __init__(self, lines, file):
        self.lines, self.file = iter(lines), file
        self.line = 0
        self.pending = deque()
        self.in_block = False
        self.done = False
        self.ended_line = False

    def read_line(self):
        """The next raw line, or None at the end."""
        if self.done:
            return None
        try:
            text = next(self.lines)
        except StopIteration:
            self.done = True
            return None
        self.line += 1
        self.ended_line = text.endswith("\n")
        return text

    def lex(self, text, line):
        pos, n = 0, len(text)
        if self.in_block:
            end = text.find("*/")
            if end < 0:
                return
            self.in_block, pos = False, end + 2
        while pos < n:
            m = _TOKEN.match(text, pos)
            if m is None:
                raise QasmError(f"syntax error: unexpected character {text[pos]!r}", self.file, line)
            kind = m.lastgroup
            if kind == "bopen":
                end = text.find("*/", m.end())
                if end < 0:
                    self.in_block = True
                    return
                pos = end + 2
                continue
            if kind in ("real", "id", "str", "arrow", "eq"):
                self.pending.append(Tok(kind, m.group(), line))
            elif kind == "sym":
                self.pending.append(Tok(m.group(), m.group(), line))
            pos = m.end()

    @property
    def tok(self):
        while not self.pending:
            text = self.read_line()
            if text is None:
                self.pending.append(Tok("eof", "end of file", self.line))
                break
            self.lex(text, self.line)
        return self.pending[0]

    def next(self):
        t = self.tok
        if t.kind != "eof":
            self.pending.popleft()
        return t


class ListCursor:
    """A token cursor over a list (a parameter text of the fast path)."""

    def __init__(self, toks, file, line):
        self.toks, self.i, self.file, self.line = toks + [Tok("eof", "end of the parameter", line)], 0, file, line

    @property
    def tok(self):
        return self.toks[self.i]

    def next(self):
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def accept(self, kind):
        return self.next() if self.tok.kind == kind else None

    def expect(self, kind, what=None):
        if self.tok.kind != kind:
            raise self.err(f"syntax error: expected {what or repr(kind)}, got {self.tok.text!r}")
        return self.next()

    def err(self, msg, tok=None):
        return QasmError(msg, self.file, self.line)


class Reader:
    """One OpenQASM 2 program from a stream of lines into a ProgramBuilder."""

    def __init__(self, lines, file, max_ops=MAX_OPS):
        self.file = file
        self.lx = Lexer(lines, file)
        self.b = ProgramBuilder(file, max_ops, G.QELIB1, self._eval, "2.0")
        self.first = True
        self.consts = {}  # parameter text -> value (the fast path's constant parameters)
        self.params, self.args, self.resolved = {}, {}, {}  # the fast path's texts, resolved once

    # -- the cursor protocol over the lexer (for ExprParser) ------------------------------------
    @property
    def tok(self):
        return self.lx.tok

    def next(self):
        return self.lx.next()

    def accept(self, kind):
        return self.lx.next() if self.lx.tok.kind == kind else None

    def err(self, msg, tok=None):
        return QasmError(msg, self.file, (tok or self.lx.tok).line)

    def expect(self, kind, what=None):
        t = self.lx.tok
        if t.kind != kind:
            got = "end of file" if t.kind == "eof" else repr(t.text)
            raise self.err(f"syntax error: expected {what or repr(kind)}, got {got}")
        return self.lx.next()

    def expect_int(self, what):
        t = self.expect("real", what)
        if not t.text.isdigit():
            raise self.err(f"syntax error: {what} must be a non-negative integer, got {t.text!r}", t)
        return int(t.text)

    def _eval(self, node, env, line):
        def fail(msg):
            raise QasmError(msg, self.file, line)
        return evaluate(node, env, fail)

    def value(self, node, line):
        """A top-level parameter (no gate parameters in scope) as a float."""
        return self._eval(node, {}, line)

    # -- the program ------------------------------------------------------------------------------
    def read(self):
        lx = self.lx
        while True:
            if not lx.pending and not lx.in_block:
                text = lx.read_line()
                if text is None:
                    break
                if self.fast(text, lx.line):
                    continue
                lx.lex(text, lx.line)
                if not lx.pending:
                    continue
            if lx.tok.kind == "eof":
                break
            self.statement()
            self.first = False
        return self.b.finish(lx.line + 1 if lx.ended_line or not lx.line else lx.line)

    def fast(self, text, line):
        """True when the line was one plain statement (or blank) and has been taken. Parameter texts,
        argument texts and gate names are each resolved once and remembered: a file of 10**5 lines
        holds far fewer distinct ones."""
        m = _FAST_GATE.match(text)
        if m is not None and m.group(1) not in KEYWORDS:
            name, ptext, atext = m.groups()
            self.first = False
            values = self.params.get(ptext) if ptext else ()
            if values is None:
                values = self.params[ptext] = tuple(self.fast_params(ptext, line)) if ptext.strip() else ()
            qs = self.args.get(atext)
            if qs is None:
                qs = self.args[atext] = self.fast_args(atext, line)
            g = self.resolved.get((name, len(values), len(qs))) if type(qs) is tuple else None
            if g is not None:  # a built-in gate on distinct single qubits: straight in
                self.b.emit_gate(g, qs, values, line)
                return True
            args = [[q] for q in qs] if type(qs) is tuple else qs
            g = self.b.apply(name, args, values, line)
            if g is not None and type(qs) is tuple:
                self.resolved[(name, len(values), len(qs))] = g
            return True
        m = _FAST_MEASURE.match(text)
        if m is not None:
            q, qi, c, ci = m.groups()
            self.first = False
            self.b.measure(self.b.qubits(q, int(qi) if qi else None, line),
                           self.b.clbits(c, int(ci) if ci else None, line), line)
            return True
        return _BLANK.match(text) is not None

    def fast_args(self, atext, line):
        """The qubits of an argument text: a tuple of distinct single qubits, or a list of qubit lists
        (whole registers, or a repeated qubit: the builder then says what is wrong)."""
        args = [self.b.qubits(r, int(i) if i else None, line) for r, i in _ARGS.findall(atext)]
        if all(len(a) == 1 for a in args) and len({a[0] for a in args}) == len(args):
            return tuple(a[0] for a in args)
        return args

    def fast_params(self, ptext, line):
        out = []
        parts = ptext.split(",") if "(" not in ptext else _split_top(ptext)
        for p in parts:
            v = self.consts.get(p)
            if v is None:
                sub = Lexer((), self.file)
                sub.lex(p, line)
                cur = ListCursor(list(sub.pending), self.file, line)
                node = ExprParser(cur).expr()
                if cur.tok.kind != "eof":
                    raise QasmError(f"syntax error: unexpected {cur.tok.text!r} in a parameter", self.file, line)
                v = self.value(node, line)
                self.consts[p] = v
            out.append(v)
        return out

    def statement(self):
        t = self.tok
        if t.kind != "id":
            raise self.err(f"syntax error: expected a statement, got {t.text!r}")
        kw = t.text
        if kw == "OPENQASM":
            return self.header()
        if kw == "include":
            self.next()
            s = self.expect("str", "a quoted file name")
            self.expect(";", "';'")
            if s.text.strip('"') != "qelib1.inc":
                raise self.err(f"include {s.text}: only \"qelib1.inc\" is supported (its gates are built in)", s)
            return
        if kw in ("qreg", "creg"):
            self.next()
            name = self.expect("id", "a register name")
            self.expect("[", "'['")
            size = self.expect_int("register size")
            self.expect("]", "']'")
            self.expect(";", "';'")
            (self.b.qreg if kw == "qreg" else self.b.creg)(name.text, size, name.line)
            return
        if kw == "gate":
            self.resolved.clear()  # a definition may give a name a new meaning
            return self.gate_def()
        if kw == "barrier":
            self.next()
            for name, idx, tok in self.qargs():
                self.b.qubits(name, idx, tok.line)  # validated, then ignored
            self.expect(";", "';'")
            return
        if kw == "opaque":
            raise self.err("unsupported statement 'opaque': hpr simulates gates it knows or that are defined "
                           "with a gate body")
        if kw == "if":
            return self.if_()
        self.qop()

    def header(self):
        t = self.next()
        if not self.first:
            raise self.err("OPENQASM must be the first statement", t)
        v = self.expect("real", "a version number")
        if not v.text.startswith("2"):
            raise self.err(f"OPENQASM {v.text}: this reader takes OpenQASM 2.0 (3.x files go through "
                           "hpr.quantum.qasm.load, which reads their header)", t)
        self.expect(";", "';'")

    def qop(self):
        """A quantum operation: measure, reset or a gate application."""
        t = self.tok
        if t.kind == "id" and t.text == "measure":
            self.next()
            q = self.qarg()
            self.expect("arrow", "'->'")
            c = self.expect("id", "a classical register")
            cidx = None
            if self.accept("["):
                cidx = self.expect_int("bit index")
                self.expect("]", "']'")
            self.expect(";", "';'")
            self.b.measure(self.b.qubits(q[0], q[1], q[2].line), self.b.clbits(c.text, cidx, c.line), c.line)
            return
        if t.kind == "id" and t.text == "reset":
            self.next()
            q = self.qarg()
            self.expect(";", "';'")
            self.b.reset(self.b.qubits(q[0], q[1], q[2].line), t.line)
            return
        g, ps, args = self.call()
        self.b.apply(g.text, [self.b.qubits(n, i, tok.line) for n, i, tok in args],
                     [self.value(p, g.line) for p in ps], g.line)

    def if_(self):
        t = self.next()
        self.expect("(", "'('")
        c = self.expect("id", "a classical register")
        self.expect("eq", "'=='")
        value = self.expect_int("the compared value")
        self.expect(")", "')'")
        clbits = self.b.clbits(c.text, None, c.line)
        self.b.begin_if(clbits, value, t.line)
        self.qop()
        self.b.end_if()

    def qarg(self):
        """(register name, index or None, token)."""
        name = self.expect("id", "a qubit register")
        idx = None
        if self.accept("["):
            idx = self.expect_int("qubit index")
            self.expect("]", "']'")
        return name.text, idx, name

    def qargs(self):
        out = [self.qarg()]
        while self.accept(","):
            out.append(self.qarg())
        return out

    def call(self):
        """name(params) qargs;  -> (name token, [expression trees], [qargs])."""
        g = self.expect("id", "a gate name")
        ps = []
        if self.accept("("):
            if not self.accept(")"):
                ps.append(ExprParser(self).expr())
                while self.accept(","):
                    ps.append(ExprParser(self).expr())
                self.expect(")", "')'")
        args = self.qargs()
        self.expect(";", "';'")
        return g, ps, args

    def gate_def(self):
        start = self.next()
        name = self.expect("id", "a gate name")
        params = []
        if self.accept("("):
            if not self.accept(")"):
                params.append(self.expect("id", "a parameter name").text)
                while self.accept(","):
                    params.append(self.expect("id", "a parameter name").text)
                self.expect(")", "')'")
        qa = [self.expect("id", "a qubit argument name").text]
        while self.accept(","):
            qa.append(self.expect("id", "a qubit argument name").text)
        self.expect("{", "'{'")
        body = []
        while not self.accept("}"):
            t = self.tok
            if t.kind == "eof":
                raise self.err(f"syntax error: gate {name.text} (line {start.line}) has no closing '}}'")
            if t.kind == "id" and t.text == "barrier":
                self.next()
                self.qargs()
                self.expect(";", "';'")
                continue
            g, ps, args = self.call()
            for a in args:
                if a[1] is not None:
                    raise self.err(f"gate {name.text}: {a[0]}[{a[1]}] indexes a register; a gate body acts on "
                                   f"its qubit arguments ({', '.join(qa)})", a[2])
            for p in ps:
                unknown = names(p) - set(params) - {"pi"}
                if unknown:
                    raise self.err(f"unknown identifier {sorted(unknown)[0]!r} in a parameter expression", g)
            body.append((g.text, ps, [a[0] for a in args], g.line))
        self.b.define(name.text, params, qa, body, name.line)


def _split_top(text):
    """text split at the commas outside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def read(lines, file="<string>", max_ops=MAX_OPS):
    """A Program from an iterable of OpenQASM 2 source lines (a file object streams)."""
    return Reader(lines, file, max_ops).read()
