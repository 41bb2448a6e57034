"""A circuit read from OpenQASM (2 or 3) as hpr runs it: Program (flat instructions in order, with their
source lines), Branch (an ``if`` on classical bits) and ProgramBuilder, which both readers
(hpr.quantum.qasm2, hpr.quantum.qasm3) drive: registers, gate definitions, expansion of user gates
into hpr's gates under a budget, measure, reset and if. Owns validation that does not depend on the
syntax (registers, arities, the budget); not the syntax (the readers) nor running (hpr.quantum.simulate).

Instructions, each a tuple (name, qubits, params):
  (gate, (q, ...), (p, ...))      a gate of hpr.quantum.GATES, controls first, float parameters
  ("measure", (q,), (c,))         measure qubit q into classical bit c (bits numbered over the
                                   classical registers in declaration order)
  ("reset", (q,), ())             qubit q back to |0>
  ("if", (), (branch,))           a Branch: its instructions run where the classical bits hold a value
Qubits are numbered over the quantum registers in declaration order, qubit 0 the least significant bit
of the amplitude index (hpr's convention, Qiskit's too).

The budget: a user gate's expanded size is counted when it is defined (the sum of its body's sizes,
built-in gates 1), so an application is refused before it is expanded when the program would exceed
max_ops operations: nested definitions that would expand to 2**65 gates fail at once, naming the line.

Usage: ``b = ProgramBuilder("f.qasm"); b.qreg("q", 2, 1); b.gate("h", [0], [], 2); prog = b.finish(3)``"""
from array import array
from dataclasses import dataclass, field

from ..errors import ConfigError
from . import gates as G

MAX_OPS = 10 ** 8  # default budget of expanded operations
MAX_DEPTH = 200    # nesting of user gate definitions


class QasmError(ConfigError):
    """A QASM file that cannot be read, parsed or run; .file and .line say where (line None when the
    file itself is the problem)."""

    def __init__(self, msg, file="<string>", line=None):
        self.file, self.line, self.msg = file, line, msg
        where = f"{file}:{line}" if line is not None else f"{file}"
        super().__init__(f"{where}: {msg}")


@dataclass
class Branch:
    """``if (bits == value) { body } else { orelse }``: clbits are classical bit indices, the first the
    least significant bit of the compared integer."""
    clbits: tuple
    value: int
    body: list = field(default_factory=list)
    lines: array = field(default_factory=lambda: array("i"))
    orelse: list = field(default_factory=list)
    orelse_lines: array = field(default_factory=lambda: array("i"))


@dataclass
class Program:
    """A flattened circuit: n_qubits, its instructions (see the module docstring) and the source line
    of each, the registers, and counts."""
    n_qubits: int
    ops: list = field(default_factory=list)
    lines: array = field(default_factory=lambda: array("i"))
    qregs: dict = field(default_factory=dict)      # name -> (first qubit, size)
    cregs: dict = field(default_factory=dict)      # name -> size, in declaration order
    clbit_offsets: dict = field(default_factory=dict)  # name -> first classical bit
    n_clbits: int = 0
    n_gates: int = 0       # gate applications, inside branches too
    source: str = "<string>"
    version: str = "2.0"

    def __len__(self):
        return len(self.ops)

    @property
    def measurements(self):
        """[(qubit, creg name, bit)] of the top-level measure instructions, in order."""
        names = sorted(self.clbit_offsets, key=self.clbit_offsets.get)
        out = []
        for name, qs, ps in self.ops:
            if name == "measure" and ps[0] >= 0:
                c = ps[0]
                reg = max((r for r in names if self.clbit_offsets[r] <= c), key=self.clbit_offsets.get)
                out.append((qs[0], reg, c - self.clbit_offsets[reg]))
        return out

    @property
    def is_unitary(self):
        """True when the program is gates only (no measure, reset or if)."""
        return all(name not in ("measure", "reset", "if") for name, _, _ in self.ops)

    @property
    def terminal_measurements(self):
        """True when nothing but measurements follows the first measurement and there is no reset or
        if: the outcomes can then be sampled once from the final state's probabilities."""
        seen = False
        for name, _, _ in self.ops:
            if name in ("reset", "if"):
                return False
            if name == "measure":
                seen = True
            elif seen:
                return False
        return True

    def unitary_prefix(self):
        """How many leading instructions are gates (they run once, before the shots split)."""
        for i, (name, _, _) in enumerate(self.ops):
            if name in ("measure", "reset", "if"):
                return i
        return len(self.ops)


@dataclass
class GateDef:
    """A user gate: parameter names, qubit count, body [(name, [param exprs], [arg indices], line)],
    and its expanded size."""
    params: list
    n_qubits: int
    body: list
    size: int


class ProgramBuilder:
    """Collects one program as a reader parses it. Errors are QasmError naming the file and line.
    evaluate(expr, env, line) turns a parameter expression of the reader into a float."""

    def __init__(self, source="<string>", max_ops=MAX_OPS, builtins_kept=G.QELIB1, evaluate=None, version="2.0"):
        if isinstance(max_ops, bool) or not isinstance(max_ops, int) or max_ops < 1:
            raise ConfigError(f"max_ops must be a positive integer, got {max_ops!r}")
        self.source, self.max_ops, self.kept = source, max_ops, frozenset(builtins_kept)
        self.prog = Program(0, source=source, version=version)
        self.defs = {}
        self.evaluate = evaluate
        self.n_ops = 0
        self._target = [(self.prog.ops, self.prog.lines)]  # where instructions go (a branch's body inside if)
        self._intern = {}

    def err(self, msg, line):
        return QasmError(msg, self.source, line)

    # -- registers ----------------------------------------------------------------------------
    def _new_register(self, name, size, line):
        if name in self.prog.qregs or name in self.prog.cregs:
            raise self.err(f"register {name!r} is declared twice", line)
        if size < 1:
            raise self.err(f"register {name}[{size}]: size must be at least 1", line)

    def qreg(self, name, size, line):
        self._new_register(name, size, line)
        self.prog.qregs[name] = (self.prog.n_qubits, size)
        self.prog.n_qubits += size

    def creg(self, name, size, line):
        self._new_register(name, size, line)
        self.prog.cregs[name] = size
        self.prog.clbit_offsets[name] = self.prog.n_clbits
        self.prog.n_clbits += size

    def qubits(self, name, idx, line):
        """A qubit argument as a list of qubit indices (one, or the whole register when idx is None)."""
        reg = self.prog.qregs.get(name)
        if reg is None:
            if name in self.prog.cregs:
                raise self.err(f"{name!r} is a classical register; gates act on a qreg (declared qregs: "
                               f"{', '.join(self.prog.qregs) or 'none'})", line)
            raise self.err(f"{name!r} is not a declared qreg; declare it before use (qreg {name}[n];) or use "
                           f"one of the declared qregs: {', '.join(self.prog.qregs) or 'none'}", line)
        off, size = reg
        if idx is None:
            return list(range(off, off + size))
        if not 0 <= idx < size:
            raise self.err(f"qubit index {name}[{idx}] is out of range for qreg {name}[{size}] "
                           f"(indices 0..{size - 1})", line)
        return [off + idx]

    def clbits(self, name, idx, line):
        """A classical argument as a list of classical bit indices."""
        if name not in self.prog.cregs:
            raise self.err(f"{name!r} is not a declared creg; declare it before use (creg {name}[n];)", line)
        off, size = self.prog.clbit_offsets[name], self.prog.cregs[name]
        if idx is None:
            return list(range(off, off + size))
        if not 0 <= idx < size:
            raise self.err(f"bit index {name}[{idx}] is out of range for creg {name}[{size}]", line)
        return [off + idx]

    # -- gates ----------------------------------------------------------------------------------
    def resolve(self, name, n_params, n_args, line):
        """(the gate's name in hpr, its GateDef or None for a built-in) after checking its arity."""
        if name in self.defs and name not in self.kept:
            d = self.defs[name]
            want_p, nq = len(d.params), d.n_qubits
        else:
            key = {"U": "u3", "CX": "cx"}.get(name, name)
            gate = G.GATES.get(key) if key == key.lower() else None
            if gate is None:
                raise self.err(f"unsupported gate {name!r}: hpr knows {', '.join(sorted(G.GATES))}, U, CX "
                               "(define others with a gate definition)", line)
            name, d, want_p, nq = key, None, gate.n_params, gate.n_qubits
        if n_params != want_p:
            raise self.err(f"gate {name} takes {want_p} parameter(s), got {n_params}", line)
        if n_args != nq:
            raise self.err(f"gate {name} acts on {nq} qubit(s), got {n_args}", line)
        return name, d

    def define(self, name, params, qargs, body, line):
        """A gate definition; body [(gate name, [param exprs], [qarg names], line)]. A definition of a gate
        in builtins_kept (qelib1.inc pasted into the file) keeps the built-in, as Qiskit's reader does."""
        if len(set(qargs)) != len(qargs):
            raise self.err(f"gate {name}: repeated qubit argument", line)
        resolved, size = [], 0
        for g, ps, args, ln in body:
            for a in args:
                if a not in qargs:
                    raise self.err(f"gate {name}: {a!r} is not one of its qubit arguments ({', '.join(qargs)})", ln)
            if name in self.kept:
                continue
            sub, d = self.resolve(g, len(ps), len(args), ln)
            idx = [qargs.index(a) for a in args]
            if len(set(idx)) != len(idx):
                raise self.err(f"gate {g}: a qubit appears twice", ln)
            resolved.append((sub, ps, idx, ln))
            size += d.size if d is not None else 1
        if name in self.kept:
            return
        if name in self.defs:
            raise self.err(f"gate {name!r} is already defined", line)
        self.defs[name] = GateDef(list(params), len(qargs), resolved, size)

    def apply(self, name, args, values, line):
        """A gate application: args a list of qubit lists (single qubits or whole registers, broadcast
        as the OpenQASM spec says), values the evaluated parameters. Returns the built-in gate's name in
        hpr (for emit_gate), or None for a user gate."""
        name, d = self.resolve(name, len(values), len(args), line)
        sizes = {len(r) for r in args if len(r) > 1}
        if len(sizes) > 1:
            raise self.err(f"gate {name}: whole registers of different sizes {sorted(sizes)}", line)
        reps = sizes.pop() if sizes else 1
        cost = reps * (d.size if d is not None else 1)
        if self.n_ops + cost > self.max_ops:
            raise self.err(f"gate {name}: the circuit would expand to more than {self.max_ops:,} operations "
                           f"(this line adds {cost:,}); raise the budget (--max-ops, max_ops=) if that is "
                           "intended", line)
        values = tuple(float(v) for v in values)
        for k in range(reps):
            qs = tuple(r[k] if len(r) > 1 else r[0] for r in args)
            if len(set(qs)) != len(qs):
                raise self.err(f"gate {name}: a qubit appears twice ({', '.join(map(str, qs))})", line)
            if d is None:
                self._emit(name, qs, values, line, intern=False)
            else:
                self._expand(d, qs, values, line, 1)
        return name if d is None else None

    def emit_gate(self, name, qs, values, line):
        """One application of a built-in gate already resolved by apply (name as apply returned it) on
        distinct qubits: the readers' fast path."""
        if self.n_ops >= self.max_ops:
            raise self.err(f"gate {name}: the circuit would expand to more than {self.max_ops:,} operations; "
                           "raise the budget (--max-ops, max_ops=) if that is intended", line)
        ops, lines = self._target[-1]
        ops.append((name, qs, values))
        lines.append(line)
        self.n_ops += 1
        self.prog.n_gates += 1

    def _expand(self, d, qs, values, line, depth):
        if depth > MAX_DEPTH:
            raise self.err(f"gate definitions nest deeper than {MAX_DEPTH}", line)
        env = dict(zip(d.params, values))
        for sub, ps, idx, ln in d.body:
            vals = tuple(self.evaluate(p, env, line) for p in ps)
            sq = tuple(qs[i] for i in idx)
            inner = self.defs.get(sub) if sub not in self.kept else None
            if inner is None:
                self._emit(sub, sq, vals, line)
            else:
                self._expand(inner, sq, vals, line, depth + 1)

    def _emit(self, name, qs, ps, line, intern=True):
        op = (name, qs, ps)
        if intern:  # expanded definitions repeat the same gates: they share one tuple
            op = self._intern.setdefault(op, op)
        ops, lines = self._target[-1]
        ops.append(op)
        lines.append(line)
        self.n_ops += 1
        if name not in ("measure", "reset"):
            self.prog.n_gates += 1

    # -- measure, reset, if -----------------------------------------------------------------------
    def _count(self, k, what, line):
        if self.n_ops + k > self.max_ops:
            raise self.err(f"{what}: the circuit would expand to more than {self.max_ops:,} operations; raise "
                           "the budget (--max-ops, max_ops=) if that is intended", line)

    def measure(self, qubits, clbits, line):
        if len(qubits) != len(clbits):
            raise self.err(f"measure: {len(qubits)} qubit(s) into {len(clbits)} bit(s)", line)
        self._count(len(qubits), "measure", line)
        for q, c in zip(qubits, clbits):
            self._emit("measure", (q,), (c,), line)

    def reset(self, qubits, line):
        self._count(len(qubits), "reset", line)
        for q in qubits:
            self._emit("reset", (q,), (), line)

    def begin_if(self, clbits, value, line):
        """Instructions until end_if form the branch's body (else_ switches to its orelse)."""
        if value < 0 or value >= 1 << len(clbits):
            raise self.err(f"if: {value} cannot be held by {len(clbits)} classical bit(s)", line)
        br = Branch(tuple(clbits), int(value))
        ops, lines = self._target[-1]
        ops.append(("if", (), (br,)))
        lines.append(line)
        self._target.append((br.body, br.lines))
        return br

    def else_(self, br):
        self._target[-1] = (br.orelse, br.orelse_lines)

    def end_if(self):
        self._target.pop()

    def finish(self, line):
        if self.prog.n_qubits == 0:
            raise self.err("no qreg declared: the circuit has no qubits; declare them first, e.g. qreg q[2];", line)
        return self.prog
