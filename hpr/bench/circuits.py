"""What the quantum benchmarks run, shared by the CPU tables (hpr/bench/quantum.py) and the GPU tables
(hpr/bench/quantum_gpu.py): the single gates timed on one state, the 20-gate circuit, the batched
workload's circuit, and the median timer both use. Owns these definitions; not the timing of other
simulators or the printing (quantum.py, quantum_gpu.py).

Usage: ``for name, qubits, param, label in gate_list(20): ...``; ``t = median_time(fn, budget=0.25)``"""
import statistics
import time

from hpr.quantum.circuit import Circuit


def median_time(fn, budget=0.25, min_reps=5, max_reps=200):
    """Median seconds of fn, after one warm-up call, over as many calls as fit budget (>= min_reps)."""
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter() - t0
    reps = int(max(min_reps, min(max_reps, budget / max(t1, 1e-9))))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def gate_list(n):
    """(name, qubits, parameter, label) of the single gates timed on an n-qubit state: H on qubits 0,
    n/2 and n-1, CNOT(0, n-1), RZ(0.3) on n/2."""
    h = n // 2
    return [("h", (0,), None, "H q0"), ("h", (h,), None, f"H q{h}"), ("h", (n - 1,), None, f"H q{n - 1}"),
            ("cx", (0, n - 1), None, f"CNOT 0,{n - 1}"), ("rz", (h,), 0.3, f"RZ q{h}")]


def circuit20():
    """(name, qubits) of the 20-gate circuit: H on 0..9, then CNOT(q, q+1) for q = 0..9."""
    return [("h", (q,)) for q in range(10)] + [("cx", (q, q + 1)) for q in range(10)]


def workload(n=8, layers=4):
    """The batched workload's circuit: RY(input q) on every qubit, then `layers` x (RY(w), RZ(w) on every
    qubit, CNOT(q, q+1 mod n)); weights 2 n layers."""
    c = Circuit(n, n_inputs=n, n_weights=2 * n * layers)
    for q in range(n):
        c.add("ry", [q], ("in", q))
    for l in range(layers):
        for q in range(n):
            c.add("ry", [q], ("w", 2 * n * l + q)).add("rz", [q], ("w", 2 * n * l + n + q))
        for q in range(n):
            c.add("cx", [q, (q + 1) % n])
    return c
