"""Running a Program (hpr.quantum.program) on hpr's states: its gates packed into compiled kernel
programs (one kernel call per run of gates, hpr.quantum.circuit.Program), and shots.

Shots. A circuit whose measurements all come at the end (no reset, no if, no gate after a measure) is
simulated once and its outcomes drawn from the final probabilities (one multinomial draw). Any other
circuit runs as a batch of trajectories: the gates before the first measure, reset or if run once on
one state; that state is copied into a batch of B states (B x 2**n amplitudes, at most
max_batch_bytes), one per shot, and the rest of the program advances the whole batch per kernel call:
a measure draws each state's own outcome from its own probability and collapses it (a per-state
diagonal), a reset collapses and moves |1> to |0> (a per-state 2x2), an ``if`` runs its body on the
states whose classical bits hold the value (gathered, run, scattered back). Shots beyond B run in
further batches from the same saved state.

Counts are keyed as Qiskit keys them: classical bit 0 rightmost, registers in reverse declaration
order separated by spaces ("c1 c0").

Usage: ``counts = run_shots(prog, 1000, seed=1); sv = run_state(prog)``"""
import cmath
import math
from array import array

import numpy as np

from ..errors import ConfigError
from ..kernels import statevec as K
from . import gates as G
from .circuit import OPS
from .circuit import Program as Compiled
from .program import QasmError
from .statevec import StateVector, check_dtype, state_zeros

MAX_BATCH_BYTES = 256 << 20  # states of one batch of trajectories
_NO_INPUTS = np.zeros((1, 0))
_NO_WEIGHTS = np.zeros(0)
_SKIP = ("id", "u0")  # identities: no kernel call


def compile_gates(n, ops):
    """The gate instructions ops [(name, qubits, params)] as one compiled kernel program. Equal gates
    share one matrix (a 199k-gate file holds far fewer distinct ones)."""
    rows, mats, seen, info = array("q"), [], {}, {}
    for name, qs, ps in _flat(ops):
        inf = info.get(name)
        if inf is None:
            gate = G.GATES[name]
            kind = gate.kind
            code = OPS["x" if kind == "x" else "1q" if kind == "controlled" else kind] if name not in _SKIP else -1
            inf = info[name] = (code, kind in ("x", "controlled"), gate.n_controls, kind not in ("x", "swap"))
        code, controlled, nc, has_matrix = inf
        if code < 0:
            continue
        off = 0
        if has_matrix:
            key = (name, ps)
            off = seen.get(key)
            if off is None:
                entries = _scalar_entries(name, ps)
                if entries is None:
                    entries = np.ravel(G.build(name, ps)[1]).tolist()
                off = seen[key] = 2 * len(mats)  # in REALs
                mats.extend(entries)
        if controlled:
            mask = 0
            for c in qs[:nc]:
                mask |= 1 << c
            rows.extend((code, qs[-1], 0, mask, 0, 0, off, 0))
        else:
            rows.extend((code, qs[0], qs[1] if len(qs) > 1 else 0, 0, 0, 0, off, 0))
    return Compiled(n, np.frombuffer(rows, np.int64) if len(rows) else [], mats, mats, [])


def _u3(t, p, lam):
    c, s = math.cos(t / 2), math.sin(t / 2)
    return [c, -cmath.exp(1j * lam) * s, cmath.exp(1j * p) * s, cmath.exp(1j * (p + lam)) * c]


# the parameterised gates of transpiled files, built with scalar maths (numpy's per-call cost is ~20x
# more for a 2x2); the tests hold them equal to hpr.quantum.gates
_SCALAR = {
    "u3": _u3, "u": _u3, "u2": lambda p, lam: _u3(math.pi / 2, p, lam),
    "u1": lambda lam: [1, cmath.exp(1j * lam)], "p": lambda lam: [1, cmath.exp(1j * lam)],
    "rz": lambda t: [cmath.exp(-0.5j * t), cmath.exp(0.5j * t)],
    "rx": lambda t: [math.cos(t / 2), -1j * math.sin(t / 2), -1j * math.sin(t / 2), math.cos(t / 2)],
    "ry": lambda t: [math.cos(t / 2), -math.sin(t / 2), math.sin(t / 2), math.cos(t / 2)],
}


def _scalar_entries(name, ps):
    """The flat matrix / diagonal entries of a common parameterised gate, or None."""
    f = _SCALAR.get(name)
    return None if f is None else [complex(v) for v in f(*ps)]


def _flat(ops):
    """ops with every "seq" gate replaced by the gates it is made of."""
    for op in ops:
        if G.GATES[op[0]].kind == "seq":
            yield from _flat([(g, tuple(q), ()) for g, q in G.expand(G.GATES[op[0]].name, op[1])])
        else:
            yield op


class Plan:
    """A program's instructions grouped for running: ("gates", compiled, line) for each run of gates,
    ("measure", q, c, line), ("reset", q, line), ("if", branch, body Plan, orelse Plan, line)."""

    def __init__(self, n, ops, lines):
        self.items = []
        run, first = [], None
        for op, line in zip(ops, lines):
            name = op[0]
            if name in ("measure", "reset", "if"):
                if run:
                    self.items.append(("gates", compile_gates(n, run), first))
                    run = []
                if name == "measure":
                    self.items.append(("measure", op[1][0], op[2][0], line))
                elif name == "reset":
                    self.items.append(("reset", op[1][0], line))
                else:
                    br = op[2][0]
                    self.items.append(("if", br, Plan(n, br.body, br.lines), Plan(n, br.orelse, br.orelse_lines), line))
                continue
            if not run:
                first = line
            run.append(op)
        if run:
            self.items.append(("gates", compile_gates(n, run), first))


def run_gates(compiled, state):
    """state (B, 2**n) <- the compiled gates, one kernel call for the batch."""
    if len(compiled.ops):
        inputs = np.zeros((state.shape[0], 0))
        compiled.run(state, inputs, _NO_WEIGHTS)
    return state


def check_one_state(program):
    """QasmError unless the program's result is one state (its measurements, if any, all at the end)."""
    if not program.terminal_measurements:
        raise QasmError("this circuit measures, resets or branches before its end, so its result is a "
                        "distribution, not one state: run it with shots (run_shots, or --shots N)",
                        program.source)


def run_state(program, dtype=np.complex128):
    """The final state (a StateVector of one state) of a program's gates from |0...0>, all of them in
    one kernel call. Measurements must all come at the end (the state is the one before them)."""
    check_one_state(program)
    sv = StateVector(program.n_qubits, 1, dtype)
    gates = [op for op in program.ops if op[0] != "measure"]
    run_gates(compile_gates(program.n_qubits, gates), sv.state)
    return sv


# ---------------------------------------------------------------------------------- trajectories
def measure_batch(state, q, u):
    """Each state of the batch measured on qubit q with its own uniform u[b]: outcomes (B,) uint8, the
    states collapsed and renormalised in place (one per-state diagonal)."""
    p1 = np.clip((1.0 - K.expval_z(state)[:, q]) / 2, 0.0, 1.0)  # states are normalised
    out = (u < p1).astype(np.uint8)
    keep = np.where(out == 1, p1, 1.0 - p1)
    scale = 1.0 / np.sqrt(np.maximum(keep, 1e-300))
    d = np.zeros((state.shape[0], 2), state.dtype)  # (B, 2)
    d[np.arange(state.shape[0]), out] = scale
    K.apply_diag_1q(state, q, d)
    return out


def reset_batch(state, q, u):
    """Each state's qubit q back to |0>: measured (u as in measure_batch), then |1> moved onto |0>."""
    p1 = np.clip((1.0 - K.expval_z(state)[:, q]) / 2, 0.0, 1.0)
    out = u < p1
    keep = np.where(out, p1, 1.0 - p1)
    scale = 1.0 / np.sqrt(np.maximum(keep, 1e-300))
    m = np.zeros((state.shape[0], 2, 2), state.dtype)  # (B, 2, 2): [[s, 0], [0, 0]] or [[0, s], [0, 0]]
    m[:, 0, 0] = np.where(out, 0, scale)
    m[:, 0, 1] = np.where(out, scale, 0)
    K.apply_1q(state, q, m)


def branch_taken(bits, clbits, value):
    """(B,) bool: the classical bits (first the least significant) equal value."""
    v = np.zeros(bits.shape[0], np.int64)
    for k, c in enumerate(clbits):
        v |= bits[:, c].astype(np.int64) << k
    return v == value


def run_plan(plan, state, bits, rng, source):
    """The plan on a batch of trajectories: state (B, 2**n) and bits (B, n_clbits) uint8, in place."""
    for item in plan.items:
        kind, line = item[0], item[-1]
        try:
            if kind == "gates":
                run_gates(item[1], state)
            elif kind == "measure":
                out = measure_batch(state, item[1], rng.random(state.shape[0]))
                if item[2] >= 0:  # (-1: an OpenQASM 3 measure whose outcome is kept nowhere)
                    bits[:, item[2]] = out
            elif kind == "reset":
                reset_batch(state, item[1], rng.random(state.shape[0]))
            else:
                _run_branch(item, state, bits, rng, source)
        except QasmError:
            raise
        except ConfigError as e:
            raise QasmError(str(e), source, line) from None


def _run_branch(item, state, bits, rng, source):
    _, br, body, orelse, _ = item
    taken = branch_taken(bits, br.clbits, br.value)
    for sub, mask in ((body, taken), (orelse, ~taken)):
        if not sub.items or not mask.any():
            continue
        if mask.all():
            run_plan(sub, state, bits, rng, source)
            continue
        idx = np.flatnonzero(mask)
        s, b = np.ascontiguousarray(state[idx]), np.ascontiguousarray(bits[idx])
        run_plan(sub, s, b, rng, source)
        state[idx], bits[idx] = s, b


def counts_of(bits, program):
    """{key: count} of the rows of bits (S, n_clbits), keys in Qiskit's order."""
    if bits.shape[0] == 0:
        return {}
    rows, n = np.unique(bits, axis=0, return_counts=True)
    return {clbit_key(r, program): int(c) for r, c in zip(rows, n)}


def clbit_key(row, program):
    """One outcome as Qiskit writes it: registers last-declared first, each with its bit 0 rightmost."""
    regs = sorted(program.cregs, key=program.clbit_offsets.get, reverse=True)
    return " ".join("".join(str(int(row[program.clbit_offsets[r] + i])) for i in range(program.cregs[r] - 1, -1, -1))
                    for r in regs)


def merge(counts, more):
    for k, v in more.items():
        counts[k] = counts.get(k, 0) + v
    return counts


def _check_shots(shots):
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ConfigError(f"shots must be a positive integer, got {shots!r}")
    return int(shots)


def sample_terminal(program, probs, shots, rng):
    """Counts of a circuit whose measurements all come at the end, drawn from the final probabilities
    (2**n,) at once: a multinomial over the basis states, then each drawn state's classical bits."""
    p = np.asarray(probs, np.float64)
    p = p / p.sum()
    hits = rng.multinomial(shots, p)
    idx = np.flatnonzero(hits)
    return counts_of_states(program, idx, hits[idx])


def counts_of_states(program, idx, hits):
    """Counts of measuring the basis states idx (logical indices), each drawn hits[k] times, with the
    program's (final) measure instructions."""
    bits = np.zeros((idx.size, program.n_clbits), np.uint8)
    for name, qs, ps in program.ops:
        if name == "measure" and ps[0] >= 0:
            bits[:, ps[0]] = (idx >> qs[0]) & 1  # a later measure into the same bit wins, as it would
    counts = {}
    for row, c in zip(bits, hits):
        k = clbit_key(row, program)
        counts[k] = counts.get(k, 0) + int(c)
    return counts


def run_shots(program, shots, seed=None, dtype=np.complex128, max_batch_bytes=MAX_BATCH_BYTES):
    """{outcome key: count} of `shots` runs of the program (see the module docstring for how)."""
    shots = _check_shots(shots)
    dt = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    n = program.n_qubits
    if program.terminal_measurements:
        sv = run_state(program, dt)
        return sample_terminal(program, K.probabilities(sv.state)[0], shots, rng)
    k = program.unitary_prefix()
    prefix = StateVector(n, 1, dt)
    run_gates(compile_gates(n, program.ops[:k]), prefix.state)
    plan = Plan(n, program.ops[k:], program.lines[k:])
    per = max(1, min(shots, int(max_batch_bytes) // ((1 << n) * dt.itemsize)))
    counts = {}
    for start in range(0, shots, per):
        b = min(per, shots - start)
        state = state_zeros((b, 1 << n), dt)  # (B, 2**n): one trajectory per shot
        state[:] = prefix.state
        bits = np.zeros((b, program.n_clbits), np.uint8)
        run_plan(plan, state, bits, rng, program.source)
        merge(counts, counts_of(bits, program))
    return counts


# ------------------------------------------------------------- one state at a time (a sharded state)
def run_trajectories(program, state, shots, seed):
    """{outcome key: count} of `shots` runs of the program on one state object with apply / measure /
    reset / sample / snapshot / restore (a DistributedStateVector, whose every method is collective): the
    final probabilities sampled once when the measurements all come at the end, else one trajectory
    after another from the saved state after the leading gates. seed: the same on every rank. Counts
    on every rank (sampled ones on rank 0 only, None elsewhere)."""
    shots = _check_shots(shots)
    rng = np.random.default_rng(seed)
    if program.terminal_measurements:
        _trajectory(program.ops, program.lines, state, None, rng, program.source)
        got = state.sample(shots, seed)
        return None if got is None else counts_of_states(program, *got)
    k = program.unitary_prefix()
    _trajectory(program.ops[:k], program.lines[:k], state, None, rng, program.source)
    saved = state.snapshot()
    counts = {}
    for _ in range(shots):
        state.restore(saved)
        bits = np.zeros(program.n_clbits, np.uint8)
        _trajectory(program.ops[k:], program.lines[k:], state, bits, rng, program.source)
        merge(counts, {clbit_key(bits, program): 1})
    return counts


def _trajectory(ops, lines, state, bits, rng, source):
    """The instructions on one state; bits (n_clbits,) uint8 is written by measure (None: final
    measurements, skipped)."""
    for (name, qs, ps), line in zip(ops, lines):
        try:
            if name == "measure":
                if bits is not None:
                    out = state.measure(qs[0], rng.random())
                    if ps[0] >= 0:
                        bits[ps[0]] = out
            elif name == "reset":
                state.reset(qs[0], rng.random())
            elif name == "if":
                br = ps[0]
                taken = branch_taken(bits[None], br.clbits, br.value)[0]
                sub = (br.body, br.lines) if taken else (br.orelse, br.orelse_lines)
                _trajectory(sub[0], sub[1], state, bits, rng, source)
            else:
                state.apply(name, list(qs), list(ps) if ps else None)
        except QasmError:
            raise
        except ConfigError as e:
            raise QasmError(str(e), source, line) from None
