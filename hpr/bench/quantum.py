"""``python -m hpr.bench quantum [--max-qubits N] [--threads K] [--json FILE]``: hpr's state-vector gate
kernels on one state of n = 16, 18, 20, 22 qubits (complex128): the median time per gate for H on qubits
0, n/2 and n-1, CNOT(0, n-1) and RZ on n/2, and the effective bandwidth 2 * 16 * 2**n bytes / time (the
state read and written once), beside numpy's copy bandwidth (np.copyto of the same array) measured in the
same run, and the ratio. When qulacs, qiskit-aer or pennylane-lightning happens to be importable (never a
dependency) the same gates are timed there side by side. Then a batched workload: 4096 states of 6
qubits, one RY layer with per-state angles, a CNOT ring and <Z_i>, per state, beside the same circuit in
plain vectorised numpy (einsum over the batch), with the ratio.

Per-gate times of the other simulators are what each offers: qulacs applies one gate to a state in
place (timed like hpr); qiskit-aer and lightning run whole circuits, so their time per gate is (circuit
of R copies - empty circuit) / R, which leaves out their per-run overhead."""
import argparse
import statistics
import sys
import time

import numpy as np

from . import write_json


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
    h = n // 2
    return [("h", (0,), None, "H q0"), ("h", (h,), None, f"H q{h}"), ("h", (n - 1,), None, f"H q{n - 1}"),
            ("cx", (0, n - 1), None, f"CNOT 0,{n - 1}"), ("rz", (h,), 0.3, f"RZ q{h}")]


# ------------------------------------------------------------------------------- other simulators
def _qulacs(n, gates, budget):
    import qulacs
    from qulacs import gate as qg

    st = qulacs.QuantumState(n)
    make = {"h": lambda q, p: qg.H(q[0]), "cx": lambda q, p: qg.CNOT(q[0], q[1]),
            "rz": lambda q, p: qg.RZ(q[0], p)}
    out = {}
    for name, qs, p, label in gates:
        g = make[name](qs, p)
        out[label] = median_time(lambda: g.update_quantum_state(st), budget)
    return out


def _circuit_diff(run_empty, run_k, reps=20, budget=1.0):
    t0 = median_time(run_empty, budget / 2, min_reps=3, max_reps=20)
    tk = median_time(run_k, budget / 2, min_reps=3, max_reps=20)
    return max(tk - t0, 1e-9) / reps


def _qiskit_aer(n, gates, budget, reps=20):
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    sim = AerSimulator(method="statevector", precision="double")

    def circ(name, qs, p, k):
        qc = QuantumCircuit(n)
        for _ in range(k):
            getattr(qc, name)(*(([p] if p is not None else []) + list(qs)))
        qc.save_statevector()
        return qc

    out = {}
    for name, qs, p, label in gates:
        c0, ck = circ(name, qs, p, 0), circ(name, qs, p, reps)
        out[label] = _circuit_diff(lambda: sim.run(c0, shots=1).result(), lambda: sim.run(ck, shots=1).result(),
                                   reps, budget)
    return out


def _lightning(n, gates, budget, reps=20):
    import pennylane as qml

    dev = qml.device("lightning.qubit", wires=n)
    ops = {"h": lambda q, p: qml.Hadamard(q[0]), "cx": lambda q, p: qml.CNOT(wires=list(q)),
           "rz": lambda q, p: qml.RZ(p, wires=q[0])}
    out = {}
    for name, qs, p, label in gates:
        def make(k, name=name, qs=qs, p=p):
            @qml.qnode(dev)
            def c():
                for _ in range(k):
                    ops[name](qs, p)
                return qml.state()
            return c
        out[label] = _circuit_diff(make(0), make(reps), reps, budget)
    return out


OTHERS = [("qulacs", "qulacs", _qulacs), ("qiskit-aer", "qiskit_aer", _qiskit_aer),
          ("lightning", "pennylane_lightning", _lightning)]


def available_others():
    import importlib.util

    return [(name, fn) for name, mod, fn in OTHERS if importlib.util.find_spec(mod) is not None]


# ---------------------------------------------------------------------------------- batched row
def batched_hpr(angles):
    from hpr.quantum import StateVector

    B, n = angles.shape
    sv = StateVector(n, batch=B)
    for q in range(n):
        sv.apply("ry", [q], angles[:, q])
    for q in range(n):
        sv.apply("cx", [q, (q + 1) % n])
    return sv.expval_z()


def batched_numpy(angles):
    """The same circuit in vectorised numpy: the state as (B, 2, ..., 2), axis 1 + (n-1-q) = qubit q."""
    B, n = angles.shape
    psi = np.zeros((B, 1 << n), np.complex128)
    psi[:, 0] = 1
    psi = psi.reshape((B,) + (2,) * n)
    c, s = np.cos(angles / 2), np.sin(angles / 2)
    for q in range(n):
        ax = 1 + n - 1 - q
        m = np.stack([np.stack([c[:, q], -s[:, q]], -1), np.stack([s[:, q], c[:, q]], -1)], -2)  # (B,2,2)
        psi = np.moveaxis(np.einsum("bij,bj...->bi...", m, np.moveaxis(psi, ax, 1)), 1, ax)
    for q in range(n):
        t = (q + 1) % n
        ac, at = 1 + n - 1 - q, 1 + n - 1 - t
        sl = [slice(None)] * (n + 1)
        sl[ac] = 1
        sub = psi[tuple(sl)]  # control = 1; the target axis shifts down by one if it was after ac
        tax = at - (1 if at > ac else 0)
        psi = psi.copy()
        psi[tuple(sl)] = np.flip(sub, axis=tax)
    p = (np.abs(psi) ** 2).reshape(B, -1)
    idx = np.arange(1 << n)
    signs = 1 - 2 * ((idx[None, :] >> np.arange(n)[:, None]) & 1)  # (n, 2**n)
    return p @ signs.T


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    from hpr import backend
    from hpr.quantum import StateVector

    ap = argparse.ArgumentParser(prog="python -m hpr.bench quantum", description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-qubits", type=int, default=22, help="largest n of 16, 18, 20, 22 (default 22)")
    ap.add_argument("--threads", type=int, default=1, help="threads for hpr's kernels (default 1; numpy's "
                    "copy is single-threaded)")
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per timed gate (default 0.25)")
    ap.add_argument("--batch", type=int, default=4096, help="states in the batched workload (default 4096)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    a = ap.parse_args(argv)
    sizes = [n for n in (16, 18, 20, 22) if n <= a.max_qubits]
    if not sizes:
        print("--max-qubits must be at least 16", file=sys.stderr)
        return 2
    backend.set_num_threads(a.threads)
    others = available_others()
    print(f"hpr.bench quantum: one state, complex128, {a.threads} thread(s) for hpr's kernels; median time per "
          "gate; GB/s = 2 * 16 * 2**n bytes / time")
    print("reference: np.copyto of the same 2**n complex128 array, same run (read + write, single thread); "
          "x = hpr GB/s / copy GB/s")
    if others:
        print("also timed: " + ", ".join(k for k, _ in others) + " (x_other = their time / hpr's time)")
    else:
        print("none of qulacs, qiskit-aer, pennylane-lightning is installed: no side-by-side simulator")
    hdr = f"{'n':>3} {'gate':<12}{'us/gate':>10}{'GB/s':>8} {'copy GB/s':>10}{'x':>6}"
    for k, _ in others:
        hdr += f" | {k + ' us':>14}{'x_' + k[:6]:>9}"
    print("\n" + hdr)
    rows = []
    for n in sizes:
        sv = StateVector(n, 1, np.complex128)
        sv.apply("h", [0])
        nbytes = 2 * 16 * (1 << n)
        src = np.ones(1 << n, np.complex128)
        dst = np.empty_like(src)
        t_copy = median_time(lambda: np.copyto(dst, src), a.budget)
        copy_bw = nbytes / t_copy / 1e9
        gates = gate_list(n)
        other_t = {}
        for k, fn in others:
            try:
                other_t[k] = fn(n, gates, a.budget)
            except Exception as e:  # a broken optional install must not stop hpr's figures
                print(f"({k}: skipped, {type(e).__name__}: {e})")
        for name, qs, p, label in gates:
            t = median_time(lambda: sv.apply(name, list(qs), p), a.budget)
            bw = nbytes / t / 1e9
            row = {"n": n, "gate": label, "us": t * 1e6, "gbps": bw, "copy_us": t_copy * 1e6,
                   "copy_gbps": copy_bw, "ratio_to_copy": bw / copy_bw}
            line = f"{n:>3} {label:<12}{t * 1e6:>10.1f}{bw:>8.2f} {copy_bw:>10.2f}{bw / copy_bw:>6.2f}"
            for k, _ in others:
                ot = other_t.get(k, {}).get(label)
                if ot is None:
                    line += f" | {'-':>14}{'-':>9}"
                else:
                    row[f"{k}_us"] = ot * 1e6
                    line += f" | {ot * 1e6:>14.1f}{ot / t:>9.2f}"
            rows.append(row)
            print(line, flush=True)
        sv = src = dst = None  # freed before the next size is allocated

    B, nq = a.batch, 6
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, (B, nq))
    zh, zn = batched_hpr(angles), batched_numpy(angles)
    err = float(np.abs(zh - zn).max())
    th = median_time(lambda: batched_hpr(angles), a.budget, min_reps=3)
    tn = median_time(lambda: batched_numpy(angles), a.budget, min_reps=3)
    batched = {"states": B, "qubits": nq, "hpr_us_per_state": th / B * 1e6, "numpy_us_per_state": tn / B * 1e6,
               "ratio_numpy_over_hpr": tn / th, "max_abs_diff": err}
    print(f"\nbatched workload: {B} states x {nq} qubits, RY layer (per-state angles) + CNOT ring + <Z_i>")
    print(f"{'':<22}{'us/state':>10}{'total ms':>10}")
    print(f"{'hpr StateVector':<22}{th / B * 1e6:>10.3f}{th * 1e3:>10.2f}")
    print(f"{'numpy einsum (ref)':<22}{tn / B * 1e6:>10.3f}{tn * 1e3:>10.2f}")
    print(f"numpy / hpr time: {tn / th:.2f}x   (results agree to {err:.1e})")
    if a.json:
        out = {"threads": a.threads, "dtype": "complex128", "rows": rows, "others": [k for k, _ in others],
               "batched": batched}
        write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
