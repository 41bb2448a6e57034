"""Parameter expressions of OpenQASM circuits: a small tree (numbers, names, unary minus, + - * / ^, and
the functions sin cos tan exp ln sqrt, plus OpenQASM 3's arcsin arccos arctan) and its evaluation to a
finite real float. Every numeric failure is a QasmError naming the file and line: overflow (10^400,
exp(1000), 1e400), division by zero, a negative number to a fractional power ((-1)^0.5), a function
outside its domain (sqrt(-1), ln(0)). Owns the tree and the arithmetic; not the syntax (each reader
builds trees from its own tokens) nor what the values mean.

Trees: ("num", value) | ("name", text) | ("neg", a) | ("bin", op, a, b) | ("call", function, a).
Usage: ``value = evaluate(("bin", "/", ("name", "pi"), ("num", 2.0)), {}, err)``"""
import math

FUNCS = {"sin": math.sin, "cos": math.cos, "tan": math.tan, "exp": math.exp, "ln": math.log, "sqrt": math.sqrt,
         "arcsin": math.asin, "arccos": math.acos, "arctan": math.atan}
CONSTANTS = {"pi": math.pi, "π": math.pi, "tau": 2 * math.pi, "τ": 2 * math.pi, "euler": math.e, "ℇ": math.e}


def _finite(v, what, fail):
    if isinstance(v, complex) or not math.isfinite(v):
        fail(f"{what} is not a finite real number (overflow or an undefined value)")
    return v


def _power(a, b, fail):
    if a < 0 and b != int(b):
        fail(f"({a:g})^{b:g}: a negative number to a fractional power is not a real number")
    if a == 0 and b < 0:
        fail(f"0^{b:g}: zero to a negative power (division by zero)")
    try:
        v = a ** b
    except OverflowError:
        fail(f"{a:g}^{b:g} overflows a double")
    return _finite(v, f"{a:g}^{b:g}", fail)


def _binary(op, a, b, fail):
    if op == "+":
        return _finite(a + b, f"{a:g} + {b:g}", fail)
    if op == "-":
        return _finite(a - b, f"{a:g} - {b:g}", fail)
    if op == "*":
        return _finite(a * b, f"{a:g} * {b:g}", fail)
    if op == "/":
        if b == 0:
            fail("division by zero in a parameter")
        return _finite(a / b, f"{a:g} / {b:g}", fail)
    return _power(a, b, fail)


def evaluate(node, env, fail):
    """The float value of a tree; env maps a gate's parameter names to numbers; fail(msg) raises (it
    must not return). Names not in env are the constants pi, tau, euler (and their symbols)."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "name":
        v = env.get(node[1])
        if v is None:
            v = CONSTANTS.get(node[1])
            if v is None:
                fail(f"unknown identifier {node[1]!r} in a parameter expression")
        return v
    if kind == "neg":
        return -evaluate(node[1], env, fail)
    if kind == "bin":
        return _binary(node[1], evaluate(node[2], env, fail), evaluate(node[3], env, fail), fail)
    a = evaluate(node[2], env, fail)
    try:
        v = FUNCS[node[1]](a)
    except (ValueError, OverflowError) as e:
        fail(f"{node[1]}({a:g}) in a parameter: {e}")
    return _finite(v, f"{node[1]}({a:g})", fail)


def names(node):
    """The identifiers a tree uses (to fold constant trees once, at parse time)."""
    kind = node[0]
    if kind == "num":
        return set()
    if kind == "name":
        return {node[1]}
    if kind == "neg":
        return names(node[1])
    if kind == "bin":
        return names(node[2]) | names(node[3])
    return names(node[2])


class ExprParser:
    """Recursive descent over a token cursor (.tok with .kind/.text/.line, .next(), .accept(kind),
    .expect(kind, what), .err(msg)): exp := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
    unary := ('-'|'+') unary | power; power := atom ('^' unary)? (right-associative)."""

    def __init__(self, cursor):
        self.c = cursor

    def expr(self):
        left = self.term()
        while self.c.tok.kind in ("+", "-"):
            op = self.c.next().kind
            left = ("bin", op, left, self.term())
        return left

    def term(self):
        left = self.unary()
        while self.c.tok.kind in ("*", "/"):
            op = self.c.next().kind
            left = ("bin", op, left, self.unary())
        return left

    def unary(self):
        if self.c.accept("-"):
            return ("neg", self.unary())
        if self.c.accept("+"):
            return self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.c.accept("^"):
            return ("bin", "^", base, self.unary())
        return base

    def atom(self):
        t = self.c.tok
        if t.kind == "real":
            self.c.next()
            v = float(t.text)
            if not math.isfinite(v):
                raise self.c.err(f"number {t.text} overflows a double", t)
            return ("num", v)
        if t.kind == "(":
            self.c.next()
            e = self.expr()
            self.c.expect(")", "')'")
            return e
        if t.kind == "id":
            self.c.next()
            if t.text in FUNCS and self.c.tok.kind == "(":
                self.c.next()
                a = self.expr()
                self.c.expect(")", "')'")
                return ("call", t.text, a)
            return ("name", t.text)
        got = "end of file" if t.kind == "eof" else repr(t.text)
        raise self.c.err(f"syntax error: expected a number, pi, a parameter or '(', got {got}")
