"""The OpenQASM 3 reader: the openqasm3 package's parser (the language's reference grammar, kept by
the OpenQASM project; ``pip install "openqasm3[parser]"``) turns the text into its syntax tree, and
this module walks the tree into a ProgramBuilder (hpr.quantum.program), for the same subset as
OpenQASM 2: ``qubit`` / ``bit`` (and ``qreg`` / ``creg``) declarations, ``include "stdgates.inc";``
(its gates are built in, with Qiskit's matrices, as Qiskit's reader maps them), gate applications and
``gate`` definitions, ``measure`` (``c[0] = measure q[0];``, ``c = measure q;``, ``measure q -> c;``),
``reset``, ``if`` / ``else`` on a register (``c == 5``, ``c != 5``) or one bit (``c[0]``, ``!c[0]``,
``c[0] == 1``), ``barrier`` (ignored) and ``gphase``. Parameters are the expressions of
hpr.quantum.qasm_expr (``**`` is the power). Anything else (loops, classical variables, gate
modifiers, timing) is a QasmError naming the line.

(pyqasm, the other maintained reader on PyPI, is built on this same parser and adds unrolling that hpr's
builder already does; openqasm3 alone is the smaller dependency.)

Usage: ``prog = read(open("f.qasm").read(), "f.qasm")`` (hpr.quantum.qasm.load is the usual way in)."""
import re

from . import gates as G
from .program import MAX_OPS, ProgramBuilder, QasmError
from .qasm_expr import FUNCS, evaluate


def _parse(text, file):
    try:
        import openqasm3  # lazy: an optional dependency (the "quantum" extra)
    except ImportError:
        raise QasmError("is an OpenQASM 3 file; reading it needs the openqasm3 package: "
                        "pip install 'openqasm3[parser]' (or pip install 'hpr[quantum]')", file) from None
    try:
        return openqasm3.parse(text)
    except ImportError as e:  # openqasm3 without its ANTLR runtime
        raise QasmError(f"is an OpenQASM 3 file; its parser needs antlr4: pip install 'openqasm3[parser]' ({e})",
                        file) from None
    except Exception as e:  # QASM3ParsingError: the offending token rides on its cause (or in its text)
        m = re.match(r"L(\d+):C\d+: (.*)", str(e))
        if m:
            raise QasmError(f"syntax error: {m.group(2)}", file, int(m.group(1))) from None
        tok, todo = None, [e]
        while todo and tok is None:
            x = todo.pop()
            tok = getattr(x, "offendingToken", None)
            todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
            todo += [c for c in (x.__cause__, x.__context__) if c is not None]
        if tok is not None:
            raise QasmError(f"syntax error near {tok.text!r}", file, tok.line) from None
        raise QasmError(f"syntax error: {e or type(e).__name__}", file) from None


class Reader:
    """One OpenQASM 3 program's tree into a ProgramBuilder."""

    def __init__(self, text, file, max_ops=MAX_OPS):
        from openqasm3 import ast  # lazy: an optional dependency

        self.ast, self.file = ast, file
        self.tree = _parse(text, file)
        self.b = ProgramBuilder(file, max_ops, G.STDGATES, self._eval, str(self.tree.version or "3.0"))

    def err(self, msg, node):
        return QasmError(msg, self.file, _line(node))

    def _eval(self, node, env, line):
        def fail(msg):
            raise QasmError(msg, self.file, line)
        return evaluate(node, env, fail)

    def read(self):
        v = str(self.tree.version or "3")
        if not v.startswith("3"):
            raise QasmError(f"OPENQASM {v}: hpr reads OpenQASM 2.0 and 3.x", self.file, 1)
        last = 1
        for s in self.tree.statements:
            self.statement(s)
            last = _line(s) or last
        return self.b.finish(last)

    # -- statements -------------------------------------------------------------------------------
    def statement(self, s):
        a, line = self.ast, _line(s)
        if isinstance(s, a.Include):
            if s.filename not in ("stdgates.inc", "qelib1.inc"):
                raise self.err(f"include \"{s.filename}\": only \"stdgates.inc\" is supported (its gates are built in)", s)
        elif isinstance(s, a.QubitDeclaration):
            self.b.qreg(s.qubit.name, self.size(s.size), line)
        elif isinstance(s, a.ClassicalDeclaration) and isinstance(s.type, a.BitType) and s.init_expression is None:
            self.b.creg(s.identifier.name, self.size(s.type.size), line)
        elif isinstance(s, a.QuantumGateDefinition):
            self.define(s)
        elif isinstance(s, a.QuantumGate):
            self.gate(s, line)
        elif isinstance(s, a.QuantumPhase):
            self.gphase(s, line)
        elif isinstance(s, a.QuantumMeasurementStatement):
            qs = self.qubits(s.measure.qubit)
            if s.target is None:
                self.b.measure(qs, [-1] * len(qs), line)  # measured, the outcome kept nowhere
            else:
                self.b.measure(qs, self.clbits(s.target), line)
        elif isinstance(s, a.QuantumReset):
            self.b.reset(self.qubits(s.qubits), line)
        elif isinstance(s, a.QuantumBarrier):
            for q in s.qubits:
                self.qubits(q)  # validated, then ignored
        elif isinstance(s, a.BranchingStatement):
            self.branch(s, line)
        else:
            raise self.err(f"unsupported statement ({type(s).__name__}): hpr reads gates, gate definitions, "
                           "measure, reset, if/else, barrier and bit/qubit declarations", s)

    def size(self, node):
        if node is None:
            return 1
        if not isinstance(node, self.ast.IntegerLiteral):
            raise self.err("a register size must be an integer literal", node)
        return node.value

    def index(self, indices, node):
        """One integer index, or None for none."""
        if not indices:
            return None
        if len(indices) != 1 or len(indices[0]) != 1 or not isinstance(indices[0][0], self.ast.IntegerLiteral):
            raise self.err("only single integer indices (q[3]) are supported, not ranges or sets", node)
        return indices[0][0].value

    def qubits(self, node):
        line = _line(node)
        if isinstance(node, self.ast.IndexedIdentifier):
            return self.b.qubits(node.name.name, self.index(node.indices, node), line)
        return self.b.qubits(node.name, None, line)

    def clbits(self, node):
        line = _line(node)
        if isinstance(node, self.ast.IndexedIdentifier):
            return self.b.clbits(node.name.name, self.index(node.indices, node), line)
        if isinstance(node, self.ast.IndexExpression):
            return self.b.clbits(node.collection.name, self.index([node.index], node), line)
        return self.b.clbits(node.name, None, line)

    def gate(self, s, line):
        if s.modifiers:
            raise self.err("gate modifiers (ctrl @, inv @, pow @) are not supported; use the controlled gate "
                           "(cx, ccx, cu, ...) or a gate definition", s)
        values = [self._eval(self.expr(p), {}, line) for p in s.arguments]
        self.b.apply(s.name.name, [self.qubits(q) for q in s.qubits], values, line)

    def gphase(self, s, line):
        if s.modifiers:
            raise self.err("gphase with modifiers is not supported", s)
        self.b.apply("gphase", [[0]], [self._eval(self.expr(s.argument), {}, line)], line)

    def define(self, s):
        a, line = self.ast, _line(s)
        params = [p.name for p in s.arguments]
        qargs = [q.name for q in s.qubits]
        body = []
        for st in s.body:
            ln = _line(st)
            if isinstance(st, a.QuantumBarrier):
                continue
            if isinstance(st, a.QuantumPhase):  # a global phase: on the gate's first qubit
                body.append(("gphase", [self.expr(st.argument)], [qargs[0]], ln))
                continue
            if not isinstance(st, a.QuantumGate) or st.modifiers:
                raise self.err("a gate body may hold gate applications, gphase and barrier only (no modifiers)", st)
            args = []
            for q in st.qubits:
                if not isinstance(q, a.Identifier):
                    raise self.err(f"gate {s.name.name}: a gate body acts on its qubit arguments ({', '.join(qargs)})", q)
                args.append(q.name)
            body.append((st.name.name, [self.expr(p) for p in st.arguments], args, ln))
        self.b.define(s.name.name, params, qargs, body, line)

    def branch(self, s, line):
        clbits, value = self.condition(s.condition)
        br = self.b.begin_if(clbits, value, line)
        for st in s.if_block:
            self.statement(st)
        if s.else_block:
            self.b.else_(br)
            for st in s.else_block:
                self.statement(st)
        self.b.end_if()

    def condition(self, c):
        """(classical bits, value) of an if condition; != and ! flip the value of a single bit, or are
        refused for a register (use else)."""
        a = self.ast
        negate = False
        if isinstance(c, a.UnaryExpression) and c.op.name == "!":
            negate, c = True, c.expression
        if isinstance(c, a.BinaryExpression) and c.op.name in ("==", "!="):
            bits = self.clbits(c.lhs)
            if isinstance(c.rhs, a.BooleanLiteral):
                value = int(c.rhs.value)
            elif isinstance(c.rhs, a.IntegerLiteral):
                value = c.rhs.value
            else:
                raise self.err("an if compares classical bits with an integer literal", c)
            negate ^= c.op.name == "!="
        elif isinstance(c, (a.IndexExpression, a.Identifier)):
            bits, value = self.clbits(c), 1
        else:
            raise self.err("unsupported if condition: use c == n, c != n, c[i], !c[i] or c[i] == b", c)
        if negate:
            if len(bits) != 1:
                raise self.err("a negated condition on a whole register is not supported; use == with else", c)
            value = 1 - value
        return bits, value

    def expr(self, e):
        """The openqasm3 expression as an hpr.quantum.qasm_expr tree."""
        a = self.ast
        if isinstance(e, (a.FloatLiteral, a.IntegerLiteral)):
            return ("num", float(e.value))
        if isinstance(e, a.Identifier):
            return ("name", e.name)
        if isinstance(e, a.UnaryExpression) and e.op.name == "-":
            return ("neg", self.expr(e.expression))
        if isinstance(e, a.BinaryExpression) and e.op.name in ("+", "-", "*", "/", "**"):
            return ("bin", "^" if e.op.name == "**" else e.op.name, self.expr(e.lhs), self.expr(e.rhs))
        if isinstance(e, a.FunctionCall) and e.name.name in FUNCS and len(e.arguments) == 1:
            return ("call", e.name.name, self.expr(e.arguments[0]))
        raise self.err(f"unsupported parameter expression ({type(e).__name__})", e)


def _line(node):
    span = getattr(node, "span", None)
    return span.start_line if span is not None else None


def read(text, file="<string>", max_ops=MAX_OPS):
    """A Program from OpenQASM 3 source text."""
    return Reader(text, file, max_ops).read()
