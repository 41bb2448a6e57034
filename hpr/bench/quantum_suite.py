"""``python -m hpr.bench quantum [--quick] [--sizes 22,23,24,25,26] [--qubits all|sweep|classes|0,1,..] [--batch 1024]
[--qasm-gates 199000] [--parts gates,batched,qasm] [--json FILE]`` (also ``python -m hpr.bench.quantum_suite``;
the older bandwidth tables are ``python -m hpr.bench quantum-kernels``): hpr's quantum figures beside the
references the issue names, measured in the same run, each with the ratio; a reference whose results
disagree with hpr's stops the run (exit 1), and one not installed is skipped with the reason printed.

1. gates: every single-qubit gate on every qubit position (--qubits all, the default), and CNOT on each
   pair class, one state of n qubits (complex128, 1 thread), median time per gate,
   beside PennyLane Lightning's kernels called the same way (its C++ state's gate methods, one call
   per gate; hpr qubit q is Lightning's wire n-1-q, which makes the two amplitude arrays identical).
   Each gate's result is checked against Lightning's once per size. The full sweep (15 gates x every
   position x n = 22..26, 1800 cells, each gate timed >= 6 times for hpr and for Lightning) takes about
   23-25 minutes on an idle core at the default --budget (most of it at n = 26); --qubits sweep covers
   every position at n <= 23 and the positions 0, 1, 2, mid (n // 2), n-3, n-2, n-1 above (about 9
   minutes); the output's first line of part 1 says which positions were timed. --qubits classes times one qubit of
   every class the kernels (csrc/statevec_impl.h) tell apart, so it reaches each of their code paths:
   q = 0 (adjacent pairs), 1, 2 (block walks for dense and diagonal gates), 3, 4 (block walks for
   diagonals), 5 and 10 (the general walk, runs of 2**q < 2048 amplitudes), 11 and 12 (full runs of
   2048; the high streaming walks of diagonals), and n-3, n-2, n-1 (the same code as 11, at the
   strides where the halves are furthest apart: the top qubits are timed apart as Lightning's
   kernels change with them). The CNOT pairs (control, target): (0, 1), (1, 0) (the 3-low-qubit
   tables), (0, n-1), (1, n-1), (2, n-1) (low control, high target: each its own select of the control's
   lines), (n-1, 0) (high control, swaps inside its runs),
   (5, 8) (the general walk), (3, n-1), (n-2, n-1), (n-1, n-2) (the high block swaps).
2. batched: 1024 circuits of 8 qubits (hpr.bench.quantum's workload: RY encoding of per-circuit inputs,
   4 layers of RY + RZ with shared weights and a CNOT ring, <Z_i>): forward against vectorised numpy,
   forward + gradient (the vector-Jacobian product for a random upstream gradient) against PennyLane
   with parameter broadcasting on lightning.qubit (adjoint) and a plain-JAX state vector under jit +
   vmap (its compile time reported apart).
3. qasm: a ~199k-gate OpenQASM 2 file (a random circuit transpiled by Qiskit to u1/u2/u3/cx, written to
   a temporary folder) parsed and run to its final state, against Qiskit's reader + Statevector.

Targets (the issue's): gates <= Lightning's time; forward >= 10x numpy; forward + gradient >= 5x the
fastest alternative; QASM >= 3x Qiskit. The closing lines say which hold on this machine."""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

from hpr import cpu
from hpr.bench.quantum import NumpyCircuit, workload
from hpr.quantum import StateVector, qasm
from hpr.quantum import gates as G

from . import write_json

GATES_1Q = [("x", None), ("y", None), ("z", None), ("h", None), ("s", None), ("sdg", None), ("t", None),
            ("tdg", None), ("sx", None), ("sxdg", None), ("rx", 0.3), ("ry", 0.3), ("rz", 0.3), ("p", 0.3),
            ("u3", [0.3, 0.2, 0.1])]
# hpr name -> (Lightning method, inverse flag); None: the dense matrix through applyMatrix
LIGHTNING = {"x": ("PauliX", False), "y": ("PauliY", False), "z": ("PauliZ", False), "h": ("Hadamard", False),
             "s": ("S", False), "sdg": ("S", True), "t": ("T", False), "tdg": ("T", True), "sx": ("SX", False),
             "sxdg": ("SX", True), "rx": ("RX", False), "ry": ("RY", False), "rz": ("RZ", False),
             "p": ("PhaseShift", False), "u3": None}


def cx_pairs(n):
    """(control, target) of the CNOT pair classes at n qubits (part 1 in the docstring)."""
    pairs = [(0, 1), (1, 0), (0, n - 1), (1, n - 1), (2, n - 1), (n - 1, 0), (5, 8), (3, n - 1), (n - 2, n - 1),
             (n - 1, n - 2)]
    return list(dict.fromkeys(p for p in pairs if p[0] != p[1] and max(p) < n))


class Disagree(Exception):
    """hpr and a reference computed different results: the figures would compare different work."""


STAT = {"median": np.median, "min": np.min}
# one qubit of each class the kernels tell apart (part 1 in the docstring); negative counts from the top
QUBIT_CLASSES = [0, 1, 2, 3, 4, 5, 10, 11, 12, -3, -2, -1]
SWEEP_ALL_UP_TO = 23  # --qubits sweep: every position up to this n, SWEEP_POSITIONS above


def sweep_positions(n):
    """--qubits sweep at n qubits: every position for n <= SWEEP_ALL_UP_TO, else 0, 1, 2, mid, top-2..top."""
    if n <= SWEEP_ALL_UP_TO:
        return list(range(n))
    return sorted({0, 1, 2, n // 2, n - 3, n - 2, n - 1})


def positions(qubits, n):
    """The qubit positions part 1 times at n qubits for --qubits (all, sweep or a list, negatives from the top)."""
    if qubits == "all":
        return list(range(n))
    if qubits == "sweep":
        return sweep_positions(n)
    return sorted({q if q >= 0 else n + q for q in qubits if -n <= q < n})
QUICK = ["--sizes", "12", "--qubits", "0,1,11,-1", "--budget", "0.01", "--batch", "16", "--qasm-gates", "2000"]
_stat = np.median  # --stat: min is the steadier estimate on a machine shared with other work
# --clock: wall, or the process's CPU time (every thread of it: JAX computes on threads of its own), for a loaded machine
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def median_time(fn, budget=0.3, min_reps=5, max_reps=100):
    """Median (or, with --stat min, least) seconds of fn after one warm-up call, over as many calls as
    fit the budget."""
    t0 = _clock()
    fn()
    reps = int(max(min_reps, min(max_reps, budget / max(_clock() - t0, 1e-9))))
    ts = []
    for _ in range(reps):
        t0 = _clock()
        fn()
        ts.append(_clock() - t0)
    return float(_stat(ts))


def check(what, got, want, tol):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    if not err <= tol:
        raise Disagree(f"{what}: hpr and the reference differ by {err:.3g} (> {tol:g})")
    return err


def _missing(module):

    return importlib.util.find_spec(module) is None


# ----------------------------------------------------------------------------------- 1. gates
def lightning_state(n):
    from pennylane_lightning.lightning_qubit._state_vector import LightningStateVector  # lazy: optional

    return LightningStateVector(n, np.complex128)


def lightning_gate(qs, name, p, wires):
    """A call applying hpr's gate `name` with parameter p on Lightning wires."""

    spec = LIGHTNING.get(name)
    if spec is None:
        m = np.ascontiguousarray(G.matrix(name, p if isinstance(p, list) else ([] if p is None else [p])))
        return lambda: qs.applyMatrix(m, wires, False)
    meth, inv = spec
    f = getattr(qs, meth)
    params = [] if p is None else [p]
    return lambda: f(wires, inv, params)


def gate_table(n, qubits, budget, gates=None):
    """Rows {n, gate, qubit(s), hpr_us, lightning_us, ratio} for one size; each gate checked once."""

    rows = []
    sv = StateVector(n)
    sv.apply("h", [0])
    lsv = lightning_state(n) if not _missing("pennylane_lightning") else None
    if lsv is not None:
        lsv._qubit_state.Hadamard([n - 1], False, [])
    cases = [(g, p, [q]) for g, p in GATES_1Q for q in qubits if gates is None or g in gates]
    cases += [("cx", None, list(qs)) for qs in cx_pairs(n) if gates is None or "cx" in gates]
    checked = set()
    for name, p, qs in cases:
        t = median_time(lambda: sv.apply(name, qs, p), budget)
        row = {"n": n, "gate": name, "qubits": qs, "hpr_us": t * 1e6}
        if lsv is not None:
            wires = [n - 1 - q for q in qs]
            if name == "cx":
                call = (lambda w=wires: lsv._qubit_state.CNOT(w, False, []))
            else:
                call = lightning_gate(lsv._qubit_state, name, p, wires)
            if name not in checked:  # one application each, from equal states: equal results
                checked.add(name)
                sv.amplitudes[0] = lsv.state
                call()
                sv.apply(name, qs, p)
                check(f"{name} on {qs} at n = {n}", sv.amplitudes[0], lsv.state, 1e-10)
            tl = median_time(call, budget)
            row.update(lightning_us=tl * 1e6, ratio=tl / t)
        rows.append(row)
        print(f"{n:>3} {name:<5}{str(qs):<10}{t * 1e6:>12.1f}" +
              (f"{row['lightning_us']:>14.1f}{row['ratio']:>8.2f}" if "ratio" in row else f"{'-':>14}{'-':>8}"),
              flush=True)
    return rows


def _span(qs, n):
    return "every qubit" if qs == list(range(n)) else ",".join(map(str, qs))


def part_gates(a):
    print("1. gates: one state, complex128, 1 thread; us per gate; x = Lightning's time / hpr's "
          "(>= 1: hpr at or under Lightning)")
    if _missing("pennylane_lightning"):
        print("   (pennylane-lightning is not installed: no side-by-side; pip install pennylane pennylane-lightning)")
    print(f"{'n':>3} {'gate':<5}{'qubits':<10}{'hpr us':>12}{'lightning us':>14}{'x':>8}")
    print("   positions timed: " + "; ".join(f"n={n}: {_span(positions(a.qubits, n), n)}" for n in a.sizes))
    rows = []
    for n in a.sizes:
        rows += gate_table(n, positions(a.qubits, n), a.budget, a.gates)
    slower = [r for r in rows if r.get("ratio", 1) < 1]
    return {"rows": rows, "slower_than_lightning": len(slower), "timed": len(rows)}


# ------------------------------------------------------------------------------------- 2. batched
def jax_workload(circuit):
    """(forward(x, w) -> (B, n) <Z>, grad(x, w, g) -> (dx, dw)) of the workload in plain JAX: the state a
    (2,)*n tensor, each gate elementwise on the two halves of its axis, vmap over the batch, jit."""
    import jax  # lazy: a benchmark-only reference
    import jax.numpy as jnp  # lazy: a benchmark-only reference

    jax.config.update("jax_enable_x64", True)
    n, ops = circuit.n, circuit.ops

    def one(x, w):
        psi = jnp.zeros((2,) * n, jnp.complex128).at[(0,) * n].set(1)
        for name, qs, p in ops:
            ax = n - 1 - qs[0]
            if name == "cx":
                at = n - 1 - qs[1]
                on = jnp.take(psi, 1, axis=ax)
                flipped = jnp.flip(on, axis=at - (at > ax))
                psi = jnp.stack([jnp.take(psi, 0, axis=ax), flipped], axis=ax)
                continue
            th = x[p[1]] if p[0] == "in" else w[p[1]]
            a0, a1 = jnp.take(psi, 0, axis=ax), jnp.take(psi, 1, axis=ax)  # elementwise: XLA fuses them
            if name == "ry":
                c, s = jnp.cos(th / 2), jnp.sin(th / 2)
                b0, b1 = c * a0 - s * a1, s * a0 + c * a1
            else:
                e = jnp.exp(-0.5j * th)
                b0, b1 = e * a0, jnp.conj(e) * a1
            psi = jnp.stack([b0, b1], axis=ax)
        p = jnp.abs(psi.reshape(-1)) ** 2
        idx = jnp.arange(1 << n)
        signs = 1 - 2 * ((idx[None, :] >> jnp.arange(n)[:, None]) & 1)
        return signs @ p

    fwd = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def loss(x, w, g):
        return jnp.sum(jax.vmap(one, in_axes=(0, None))(x, w) * g)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return fwd, grad


def pennylane_broadcast(circuit, x, w, g):
    """(seconds, (dx, dw)) of forward + gradient with parameter broadcasting on lightning.qubit (adjoint):
    one QNode call for the whole batch of inputs, PennyLane splitting it as it does."""
    import pennylane as qml  # lazy: a benchmark-only reference
    from pennylane import numpy as pnp  # lazy: a benchmark-only reference

    n = circuit.n
    dev = qml.device("lightning.qubit", wires=n)

    @qml.qnode(dev, diff_method="adjoint")
    def f(xb, wb):
        for name, qs, p in circuit.ops:
            wire = n - 1 - qs[0]  # hpr qubit q is wire n-1-q
            if name == "cx":
                qml.CNOT(wires=[wire, n - 1 - qs[1]])
            else:
                th = xb[:, p[1]] if p[0] == "in" else wb[p[1]]
                (qml.RY if name == "ry" else qml.RZ)(th, wires=wire)
        return [qml.expval(qml.PauliZ(n - 1 - q)) for q in range(n)]

    def cost(xb, wb):
        return pnp.sum(pnp.stack(f(xb, wb)).T * g)
    grad = qml.grad(cost, argnum=[0, 1]) if "argnum" in qml.grad.__init__.__code__.co_varnames else \
        qml.grad(cost, argnums=[0, 1])
    xs, ws = pnp.array(x, requires_grad=True), pnp.array(w, requires_grad=True)
    t0 = time.perf_counter()
    dx, dw = grad(xs, ws)
    return time.perf_counter() - t0, (np.asarray(dx), np.asarray(dw))


def part_batched(a):

    c = workload()
    r = np.random.default_rng(0)
    B = a.batch
    x, w, g = r.uniform(-np.pi, np.pi, (B, c.n)), r.uniform(-np.pi, np.pi, c.n_weights), r.standard_normal((B, c.n))
    ref = NumpyCircuit(c)
    z, (dx, dw) = c.forward(x, w), c.backward(g)
    check("batched forward vs numpy", z, ref.forward(x, w), 1e-10)
    ndx, ndw = ref.backward(g)
    check("batched gradient vs numpy", np.concatenate([dx.ravel(), dw]), np.concatenate([ndx.ravel(), ndw]), 1e-9)

    def fb(sim):
        sim.forward(x, w)
        sim.backward(g)
    out = {"circuits": B, "hpr_fwd_s": median_time(lambda: c.forward(x, w), a.budget),
           "hpr_fwd_grad_s": median_time(lambda: fb(c), a.budget),
           "numpy_fwd_s": median_time(lambda: ref.forward(x, w), a.budget)}
    alts = {}
    if _missing("jax"):
        print("   (jax is not installed: no JAX jit+vmap reference; pip install jax)")
    else:
        fwd, grad = jax_workload(c)
        t0 = time.perf_counter()
        jz = np.asarray(fwd(x, w))
        jdx, jdw = (np.asarray(v) for v in grad(x, w, g))
        out["jax_compile_s"] = time.perf_counter() - t0
        check("JAX forward", jz, z, 1e-10)
        check("JAX gradient", np.concatenate([jdx.ravel(), jdw]), np.concatenate([dx.ravel(), dw]), 1e-9)
        alts["jax jit+vmap"] = median_time(lambda: [v.block_until_ready() for v in grad(x, w, g)], a.budget)
    if _missing("pennylane_lightning"):
        print("   (pennylane-lightning is not installed: no broadcasting reference)")
    else:
        t, (pdx, pdw) = pennylane_broadcast(c, x, w, g)
        check("PennyLane broadcasting gradient", np.concatenate([pdx.ravel(), pdw]),
              np.concatenate([dx.ravel(), dw]), 1e-8)
        alts["lightning broadcast (adjoint)"] = t
    out["alternatives_fwd_grad_s"] = alts
    return out


def print_batched(bt):
    B = bt["circuits"]
    print(f"\n2. batched: {B} circuits x 8 qubits, circuits/s (higher is better), same run")
    print(f"   hpr forward            {B / bt['hpr_fwd_s']:>12,.0f}   numpy {B / bt['numpy_fwd_s']:>10,.0f}   "
          f"x {bt['numpy_fwd_s'] / bt['hpr_fwd_s']:.1f} (target >= 10)")
    print(f"   hpr forward + gradient {B / bt['hpr_fwd_grad_s']:>12,.0f}")
    for k, t in bt["alternatives_fwd_grad_s"].items():
        print(f"   {k:<22} {B / t:>12,.0f}   x {t / bt['hpr_fwd_grad_s']:.1f} for hpr (target >= 5)")
    if "jax_compile_s" in bt:
        print(f"   (JAX compile + first call {bt['jax_compile_s']:.2f} s, not in its figure)")


# ---------------------------------------------------------------------------------------- 3. qasm
def write_circuit(path, gates):
    """A ~gates-gate OpenQASM 2 file: a random 10-qubit circuit transpiled by Qiskit to u1/u2/u3/cx."""
    from qiskit import qasm2, transpile  # lazy: a benchmark-only reference
    from qiskit.circuit.random import random_circuit  # lazy: a benchmark-only reference

    qc = random_circuit(10, max(1, gates // 41), max_operands=3, seed=1)
    tq = transpile(qc, basis_gates=["u3", "u2", "u1", "cx"], optimization_level=0, seed_transpiler=1)
    with open(path, "w") as f:
        f.write(qasm2.dumps(tq))
    return tq.size()


def part_qasm(a):
    if _missing("qiskit"):
        print("\n3. qasm: skipped, qiskit is not installed (it writes the circuit and is the reference)")
        return {}
    from qiskit import QuantumCircuit  # lazy: a benchmark-only reference
    from qiskit.quantum_info import Statevector  # lazy: a benchmark-only reference


    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "transpiled.qasm")
        size = write_circuit(path, a.qasm_gates)
        t0 = time.perf_counter()
        prog = qasm.load(path)
        t1 = time.perf_counter()
        mine = qasm.run(prog).amplitudes[0]
        t2 = time.perf_counter()
        qc = QuantumCircuit.from_qasm_file(path)
        t3 = time.perf_counter()
        want = Statevector(qc).data
        t4 = time.perf_counter()
    check("QASM final state vs Qiskit's", mine, want, 1e-9)
    out = {"gates": size, "hpr_parse_s": t1 - t0, "hpr_run_s": t2 - t1, "qiskit_parse_s": t3 - t2,
           "qiskit_statevector_s": t4 - t3}
    hpr_t, q_t = t2 - t0, t4 - t2
    print(f"\n3. qasm: {size} gates, 10 qubits (Qiskit-transpiled random circuit), parse + final state, s")
    print(f"   hpr    {hpr_t:>8.2f}  (parse {t1 - t0:.2f}, run {t2 - t1:.2f})")
    print(f"   qiskit {q_t:>8.2f}  (qasm2 reader {t3 - t2:.2f}, Statevector {t4 - t3:.2f})   x {q_t / hpr_t:.1f} "
          "(target >= 3)")
    return out


# ------------------------------------------------------------------------------------------- main
def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench.quantum_suite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run in seconds: " + " ".join(QUICK))
    ap.add_argument("--sizes", type=_ints, default=[22, 23, 24, 25, 26], help="n of part 1 (default 22..26; "
                    "n = 26 holds two 1 GiB states, hpr's and Lightning's)")
    ap.add_argument("--qubits", default="all", help="qubit positions of part 1: all (default; about 25 minutes "
                    "for n = 22..26), sweep (every position at n <= 23, 0,1,2,mid,n-3,n-2,n-1 above), classes (one per "
                    "class the kernels tell apart, see above) or a list; negative counts from the top (-1 is n-1; a list that starts with one: --qubits=-2,-1)")
    ap.add_argument("--gates", type=lambda t: None if t == "all" else set(t.split(",")), default=None,
                    help="part 1's gates, all (default) or a subset of "
                    f"{','.join([g for g, _ in GATES_1Q] + ['cx'])}")
    ap.add_argument("--batch", type=int, default=1024, help="circuits of part 2 (default 1024)")
    ap.add_argument("--qasm-gates", type=int, default=199000, dest="qasm_gates", help="size of part 3's file")
    ap.add_argument("--parts", default="gates,batched,qasm", help="which parts (default all three)")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per timed item (default 0.3)")
    ap.add_argument("--stat", choices=sorted(STAT), default="median", help="median (default) or min of the "
                    "repetitions: min is steadier where other work shares the cores")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall (default) or cpu: the process's "
                    "CPU time, every thread of it (JAX computes on threads of its own, which the calling thread's "
                    "clock would not see), not counting time spent waiting for a core on a shared machine")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(QUICK + argv if "--quick" in argv else argv)
    if a.qubits == "classes":
        a.qubits = QUBIT_CLASSES
    elif a.qubits not in ("all", "sweep"):
        a.qubits = _ints(a.qubits)
    return a


def main(argv=None):
    global _stat, _clock
    a = parse(argv)
    _stat = STAT[a.stat]
    _clock = CLOCKS[a.clock]
    os.environ["OMP_NUM_THREADS"] = "1"  # before Lightning's or JAX's runtime loads: one thread for all

    cpu.set_num_threads(1)
    print(f"hpr.bench.quantum_suite: 1 thread; {a.stat} of the repetitions; {a.clock} clock; CPU: {cpu.cpu_model()}")
    parts, out = a.parts.split(","), {}
    try:
        if "gates" in parts:
            out["gates"] = part_gates(a)
        if "batched" in parts:
            out["batched"] = part_batched(a)
            print_batched(out["batched"])
        if "qasm" in parts:
            out["qasm"] = part_qasm(a)
    except Disagree as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verdicts(out)
    if a.json:

        write_json(a.json, out)
    return 0


def verdicts(out):
    """One line per target: held or not, on this machine."""
    print("\ntargets on this machine:")
    g = out.get("gates")
    if g and g["timed"] and "ratio" in g["rows"][0]:
        cells = {(r["gate"], tuple(r["qubits"]), r["n"]) for r in g["rows"]}
        print(f"   gates <= Lightning: {g['timed'] - g['slower_than_lightning']} of {g['timed']} (gate, qubits, n) "
              f"cells hold ({len(cells)} distinct cells timed, sizes {sorted({r['n'] for r in g['rows']})})")
        miss = sorted((r for r in g["rows"] if r.get("ratio", 1) < 1), key=lambda r: r["ratio"])
        if miss:
            print("   slower than Lightning (x = Lightning's time / hpr's): " +
                  ", ".join(f"n={r['n']} {r['gate']} {r['qubits']} {r['ratio']:.2f}" for r in miss))
    b = out.get("batched")
    if b:
        fx = b["numpy_fwd_s"] / b["hpr_fwd_s"]
        print(f"   forward >= 10x numpy: {'holds' if fx >= 10 else 'does not hold'} ({fx:.1f}x)")
        if b["alternatives_fwd_grad_s"]:
            best = min(b["alternatives_fwd_grad_s"].values())
            gx = best / b["hpr_fwd_grad_s"]
            print(f"   forward + gradient >= 5x the fastest alternative: {'holds' if gx >= 5 else 'does not hold'} "
                  f"({gx:.1f}x)")
    q = out.get("qasm")
    if q:
        x = (q["qiskit_parse_s"] + q["qiskit_statevector_s"]) / (q["hpr_parse_s"] + q["hpr_run_s"])
        print(f"   QASM >= 3x Qiskit: {'holds' if x >= 3 else 'does not hold'} ({x:.1f}x)")



if __name__ == "__main__":
    sys.exit(main())
