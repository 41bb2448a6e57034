"""OpenQASM 2.0 circuits for hpr's state vectors: a small hand-written parser of the subset hpr can
run, and the loop that runs it. Owns parsing and validation (every error names the file and line);
not the gates' maths (hpr.quantum.gates) nor the state (hpr.quantum.statevec).

The subset: ``OPENQASM 2.0;``, ``include "qelib1.inc";``, ``qreg``/``creg``, every qelib1 gate hpr
knows (hpr.quantum.GATES, plus the built-ins ``U`` and ``CX``), gate applications on single qubits or
on whole registers (broadcast as the spec says), ``gate`` definitions (expanded inline; a definition of a gate hpr has built in, as in a pasted
qelib1.inc, keeps the built-in), ``measure``
(recorded in Program.measurements, not simulated: the state stays unmeasured), ``barrier`` (ignored)
and ``//`` comments. Parameters are expressions over numbers, ``pi``, + - * / ^, unary minus and
sin cos tan exp ln sqrt. Not supported (an error naming the line): ``opaque``, ``reset``, ``if``,
other includes. Qubits are numbered over the qregs in declaration order, qubit 0 the least
significant bit of the amplitude index (hpr's convention).

Usage: ``prog = load("bell.qasm"); sv = run(prog); sv.amplitudes[0]``"""
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .gates import GATES

__all__ = ["QasmError", "Program", "load", "loads", "run"]


class QasmError(ConfigError):
    """A QASM file that cannot be read, parsed or run; .file and .line say where (line None when the
    file itself is the problem)."""

    def __init__(self, msg, file="<string>", line=None):
        self.file, self.line, self.msg = file, line, msg
        where = f"{file}:{line}" if line is not None else f"{file}"
        super().__init__(f"{where}: {msg}")


@dataclass
class Program:
    """A flattened circuit: n_qubits, and ops as (gate name, qubit indices, float params), one per
    gate application, with the source line of each in lines."""
    n_qubits: int
    ops: list = field(default_factory=list)          # [(name, (q, ...), (p, ...))]
    lines: list = field(default_factory=list)        # source line of each op
    qregs: dict = field(default_factory=dict)        # name -> (offset, size)
    cregs: dict = field(default_factory=dict)        # name -> size
    measurements: list = field(default_factory=list)  # [(qubit, creg name, bit)]
    source: str = "<string>"

    def __len__(self):
        return len(self.ops)


# ---------------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>//[^\n]*) | (?P<block>/\*.*?\*/)
  | (?P<real>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<str>"[^"\n]*")
  | (?P<arrow>->) | (?P<eq>==)
  | (?P<sym>[;,()\[\]{}+\-*/^])
""", re.X | re.S)


class _Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return f"{self.text!r}"


def _tokenize(text, file):
    toks, line, pos = [], 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QasmError(f"syntax error: unexpected character {text[pos]!r}", file, line)
        kind = m.lastgroup
        if kind in ("real", "id", "str", "arrow", "eq"):
            toks.append(_Tok(kind, m.group(), line))
        elif kind == "sym":
            toks.append(_Tok(m.group(), m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    toks.append(_Tok("eof", "end of file", line))
    return toks


# ----------------------------------------------------------------------------------- expressions
_FUNCS = {"sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log,
          "sqrt": math.sqrt}


class _Parser:
    def __init__(self, text, file):
        self.file = file
        self.toks = _tokenize(text, file)
        self.i = 0
        self.prog = Program(0, source=file)
        self.gates = {}  # user gate definitions: name -> (params, qargs, body, line)

    # token helpers
    @property
    def tok(self):
        return self.toks[self.i]

    def err(self, msg, tok=None):
        return QasmError(msg, self.file, (tok or self.tok).line)

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, kind):
        if self.tok.kind == kind:
            return self.next()
        return None

    def expect(self, kind, what=None):
        if self.tok.kind != kind:
            got = "end of file" if self.tok.kind == "eof" else repr(self.tok.text)
            raise self.err(f"syntax error: expected {what or repr(kind)}, got {got}")
        return self.next()

    def expect_int(self, what):
        t = self.expect("real", what)
        if not t.text.isdigit():
            raise self.err(f"syntax error: {what} must be a non-negative integer, got {t.text!r}", t)
        return int(t.text)

    # expressions: parsed into closures of the gate's parameter environment
    def expr(self):
        left = self.term()
        while self.tok.kind in ("+", "-"):
            op = self.next().kind
            right = self.term()
            left = (lambda a, b: lambda env: a(env) + b(env))(left, right) if op == "+" else \
                (lambda a, b: lambda env: a(env) - b(env))(left, right)
        return left

    def term(self):
        left = self.unary()
        while self.tok.kind in ("*", "/"):
            op = self.next()
            right = self.unary()
            if op.kind == "*":
                left = (lambda a, b: lambda env: a(env) * b(env))(left, right)
            else:
                left = (lambda a, b, t: lambda env: self._div(a(env), b(env), t))(left, right, op)
        return left

    def _div(self, a, b, tok):
        if b == 0:
            raise self.err("division by zero in a parameter", tok)
        return a / b

    def unary(self):
        if self.accept("-"):
            a = self.unary()
            return lambda env: -a(env)
        if self.accept("+"):
            return self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.accept("^"):
            exp = self.unary()  # right-associative
            return lambda env: base(env) ** exp(env)
        return base

    def atom(self):
        t = self.tok
        if t.kind == "real":
            self.next()
            v = float(t.text)
            return lambda env: v
        if t.kind == "(":
            self.next()
            e = self.expr()
            self.expect(")", "')'")
            return e
        if t.kind == "id":
            self.next()
            if t.text == "pi":
                return lambda env: math.pi
            if t.text in _FUNCS:
                self.expect("(", f"'(' after {t.text}")
                a = self.expr()
                self.expect(")", "')'")
                f = _FUNCS[t.text]

                def call(env, f=f, a=a, t=t):
                    try:
                        return f(a(env))
                    except (ValueError, OverflowError) as e:
                        raise self.err(f"{t.text}(...) in a parameter: {e}", t) from None
                return call

            def lookup(env, name=t.text, tok=t):
                if name not in env:
                    raise self.err(f"unknown identifier {name!r} in a parameter expression", tok)
                return env[name]
            return lookup
        got = "end of file" if t.kind == "eof" else repr(t.text)
        raise self.err(f"syntax error: expected a number, pi, a parameter or '(', got {got}")

    # statements
    def parse(self):
        if self.tok.kind == "id" and self.tok.text == "OPENQASM":
            t = self.next()
            v = self.expect("real", "a version number")
            if not v.text.startswith("2"):
                raise self.err(f"OPENQASM {v.text}: hpr reads OpenQASM 2.0 only", t)
            self.expect(";", "';'")
        while self.tok.kind != "eof":
            self.statement()
        if self.prog.n_qubits == 0:
            raise QasmError("no qreg declared: the circuit has no qubits; declare them first, e.g. qreg q[2];",
                            self.file, self.tok.line)
        return self.prog

    def statement(self):
        t = self.tok
        if t.kind != "id":
            raise self.err(f"syntax error: expected a statement, got {t.text!r}")
        kw = t.text
        if kw == "OPENQASM":
            raise self.err("OPENQASM must be the first statement")
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
            if name.text in self.prog.qregs or name.text in self.prog.cregs:
                raise self.err(f"register {name.text!r} is declared twice", name)
            if size < 1:
                raise self.err(f"register {name.text}[{size}]: size must be at least 1", name)
            if kw == "qreg":
                self.prog.qregs[name.text] = (self.prog.n_qubits, size)
                self.prog.n_qubits += size
            else:
                self.prog.cregs[name.text] = size
            return
        if kw == "gate":
            return self.gate_def()
        if kw == "measure":
            return self.measure()
        if kw == "barrier":
            self.next()
            self.qargs()  # validated, then ignored
            self.expect(";", "';'")
            return
        if kw in ("opaque", "reset", "if"):
            raise self.err(f"unsupported statement {kw!r}: hpr simulates unitary circuits "
                           "(gates, barrier, and measure as a final record) only")
        self.application()

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

    def resolve(self, arg):
        """A qarg as a list of global qubit indices (one, or the whole register)."""
        name, idx, tok = arg
        if name not in self.prog.qregs:
            if name in self.prog.cregs:
                raise self.err(f"{name!r} is a classical register; gates act on a qreg (declared qregs: "
                               f"{', '.join(self.prog.qregs) or 'none'})", tok)
            raise self.err(f"{name!r} is not a declared qreg; declare it before use (qreg {name}[n];) or use "
                           f"one of the declared qregs: {', '.join(self.prog.qregs) or 'none'}", tok)
        off, size = self.prog.qregs[name]
        if idx is None:
            return list(range(off, off + size))
        if idx >= size:
            raise self.err(f"qubit index {name}[{idx}] is out of range for qreg {name}[{size}] "
                           f"(indices 0..{size - 1})", tok)
        return [off + idx]

    def measure(self):
        self.next()
        q = self.qarg()
        self.expect("arrow", "'->'")
        c = self.expect("id", "a classical register")
        cidx = None
        if self.accept("["):
            cidx = self.expect_int("bit index")
            self.expect("]", "']'")
        self.expect(";", "';'")
        qs = self.resolve(q)
        if c.text not in self.prog.cregs:
            raise self.err(f"{c.text!r} is not a declared creg; declare it before use (creg {c.text}[n];)", c)
        csize = self.prog.cregs[c.text]
        bits = list(range(csize)) if cidx is None else [cidx]
        if cidx is not None and cidx >= csize:
            raise self.err(f"bit index {c.text}[{cidx}] is out of range for creg {c.text}[{csize}]", c)
        if len(qs) != len(bits):
            raise self.err(f"measure: {len(qs)} qubit(s) into {len(bits)} bit(s)", c)
        self.prog.measurements += [(qb, c.text, b) for qb, b in zip(qs, bits)]

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
        if len(set(qa)) != len(qa):
            raise self.err(f"gate {name.text}: repeated qubit argument", name)
        self.expect("{", "'{'")
        builtin = name.text in GATES or name.text in ("U", "CX")
        body = []  # (name token, [param closures], [arg tokens])
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
                if a[1] is not None or a[0] not in qa:
                    raise self.err(f"gate {name.text}: {a[0]!r} is not one of its qubit arguments "
                                   f"({', '.join(qa)})", a[2])
            if not builtin:
                self._check_gate(g, len(ps), len(args))
            body.append((g, ps, [qa.index(a[0]) for a in args]))
        if builtin:
            return  # a definition of a gate hpr has built in (qelib1.inc pasted in): the built-in is kept
        if name.text in self.gates:
            raise self.err(f"gate {name.text!r} is already defined", name)
        self.gates[name.text] = (params, len(qa), body)

    def call(self):
        """name(params) qargs;  -> (name token, [closures], [qargs])."""
        g = self.expect("id", "a gate name")
        ps = []
        if self.accept("("):
            if not self.accept(")"):
                ps.append(self.expr())
                while self.accept(","):
                    ps.append(self.expr())
                self.expect(")", "')'")
        args = self.qargs()
        self.expect(";", "';'")
        return g, ps, args

    def _check_gate(self, g, n_params, n_args):
        name = {"U": "u3", "CX": "cx"}.get(g.text, g.text)
        if name in self.gates:
            params, nq, _ = self.gates[name]
            want_p = len(params)
        elif name in GATES and name == name.lower():
            want_p, nq = GATES[name].n_params, GATES[name].n_qubits
        else:
            raise self.err(f"unsupported gate {g.text!r}: hpr knows {', '.join(sorted(GATES))}, U, CX "
                           "(define others with a gate definition)", g)
        if n_params != want_p:
            raise self.err(f"gate {g.text} takes {want_p} parameter(s), got {n_params}", g)
        if n_args != nq:
            raise self.err(f"gate {g.text} acts on {nq} qubit(s), got {n_args}", g)
        return name

    def application(self):
        g, ps, args = self.call()
        name = self._check_gate(g, len(ps), len(args))
        vals = [p({}) for p in ps]
        regs = [self.resolve(a) for a in args]
        sizes = {len(r) for r in regs if len(r) > 1}
        if len(sizes) > 1:
            raise self.err(f"gate {g.text}: whole registers of different sizes {sorted(sizes)}", g)
        reps = sizes.pop() if sizes else 1
        for k in range(reps):
            qs = [r[k] if len(r) > 1 else r[0] for r in regs]
            if len(set(qs)) != len(qs):
                raise self.err(f"gate {g.text}: a qubit appears twice ({', '.join(map(str, qs))})", g)
            self.emit(name, qs, vals, g.line, depth=0)

    def emit(self, name, qs, vals, line, depth):
        if name in self.gates:
            if depth > 64:
                raise QasmError(f"gate {name}: definitions nest deeper than 64", self.file, line)
            params, _, body = self.gates[name]
            env = dict(zip(params, vals))
            for g, ps, idx in body:
                sub = {"U": "u3", "CX": "cx"}.get(g.text, g.text)
                self.emit(sub, [qs[i] for i in idx], [p(env) for p in ps], line, depth + 1)
            return
        self.prog.ops.append((name, tuple(qs), tuple(float(v) for v in vals)))
        self.prog.lines.append(line)


def _is_text(x):
    return isinstance(x, str) and ("\n" in x or ";" in x)


def loads(text, file="<string>"):
    """A Program from QASM source text."""
    return _Parser(text, file).parse()


def load(path_or_text):
    """A Program from a .qasm file (a path) or from QASM source text (a string with a ';' or a newline)."""
    if _is_text(path_or_text):
        return loads(path_or_text)
    path = os.fspath(path_or_text)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise QasmError("file not found; check the path (or pass the QASM source text itself)", path) from None
    except IsADirectoryError:
        raise QasmError("is a folder, not a .qasm file; pass the circuit's file", path) from None
    except UnicodeDecodeError as e:
        raise QasmError(f"is not UTF-8 text ({e}); pass an OpenQASM 2.0 text file", path) from None
    except OSError as e:
        raise QasmError(f"cannot read: {e.strerror or e}; check the file's permissions", path) from None
    return loads(text, path)


def run(program, dtype=np.complex128, state=None):
    """Simulate a Program (or a path / text, loaded first) from |0...0> on one StateVector (batch 1),
    or on ``state`` (anything with .apply(name, qubits, params)) when given. Returns the state."""
    if not isinstance(program, Program):
        program = load(program)
    if state is None:
        from .statevec import StateVector

        state = StateVector(program.n_qubits, 1, dtype)
    for (name, qs, ps), line in zip(program.ops, program.lines):
        try:
            state.apply(name, list(qs), list(ps) if ps else None)
        except ConfigError as e:
            raise QasmError(str(e), program.source, line) from None
    return state
