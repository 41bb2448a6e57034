"""``python -m hpr.bench quantum-kernels [--max-qubits N] [--threads K] [--circuit-qubits N] [--batch B] [--json FILE]``:
hpr's state-vector kernels, one thread by default, in three parts, each beside its references measured
in the same run.

1. Single gates on one state of n = 16, 18, ... qubits (complex128): the median time per gate for H on
   qubits 0, n/2 and n-1, CNOT(0, n-1) and RZ on n/2, and the effective bandwidth 2 * 16 * 2**n bytes /
   time (the state read and written once), beside numpy's copy of the same array (np.copyto: the same
   bytes read and written) and the ratio; qulacs, qiskit-aer and pennylane-lightning side by side when
   importable (never dependencies).
2. A 20-gate circuit at n = 24 (H on qubits 0..9, then CNOT(q, q+1) for q = 0..9): gate by gate, and
   compiled (hpr.quantum.Circuit: one call; runs of gates on low qubits applied chunk by chunk in cache;
   and with dense blocks of <= 4 qubits), beside lightning and qulacs running the same circuit.
3. The batched workload: 1024 circuits of 8 qubits (RY encoding of per-circuit inputs, 4 layers of RY +
   RZ on every qubit with shared weights and a CNOT ring, <Z_i> of every qubit): forward and forward +
   gradient (adjoint, the vector-Jacobian product for a random upstream gradient), circuits/s, beside the
   same computation in plain vectorised numpy (einsum over the batch, adjoint in numpy) and lightning's
   adjoint (qml.grad with diff_method="adjoint", one circuit at a time, timed on a subset).

The other simulators' per-gate times are what each offers: qulacs applies one gate to a state in place
(timed like hpr); qiskit-aer and lightning run whole circuits, so their time per gate is (circuit of R
copies - empty circuit) / R, which leaves out their per-run overhead.

The gates, circuits and timer are hpr/bench/circuits.py's (the GPU tables, quantum_gpu.py, use them too).
The other simulators are imported only by the functions that time them, when installed."""
import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

from hpr import cpu
from hpr.quantum import StateVector
from hpr.quantum.circuit import Circuit

from . import check_agree, quantum_gpu, write_json
from .circuits import circuit20, gate_list, median_time, workload


# ------------------------------------------------------------------------------- other simulators
def _qulacs(n, gates, budget):
    import qulacs  # lazy: optional simulator, timed only when installed
    from qulacs import gate as qg  # lazy: optional simulator, timed only when installed

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
    from qiskit import QuantumCircuit  # lazy: optional simulator, timed only when installed
    from qiskit_aer import AerSimulator  # lazy: optional simulator, timed only when installed

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
    import pennylane as qml  # lazy: optional simulator, timed only when installed

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
    return [(name, fn) for name, mod, fn in OTHERS if importlib.util.find_spec(mod) is not None]


def circuit20_others(n, budget):
    """{simulator: seconds for the 20 gates} for the installed simulators."""
    out = {}
    if importlib.util.find_spec("qulacs") is not None:
        import qulacs  # lazy: optional simulator, timed only when installed

        st, qc = qulacs.QuantumState(n), qulacs.QuantumCircuit(n)
        for name, qs in circuit20():
            qc.add_H_gate(qs[0]) if name == "h" else qc.add_CNOT_gate(*qs)
        out["qulacs"] = median_time(lambda: qc.update_quantum_state(st), budget, min_reps=3)
    if importlib.util.find_spec("pennylane_lightning") is not None:
        import pennylane as qml  # lazy: optional simulator, timed only when installed

        dev = qml.device("lightning.qubit", wires=n)

        def make(gates):
            @qml.qnode(dev)
            def c():
                for name, qs in gates:
                    qml.Hadamard(qs[0]) if name == "h" else qml.CNOT(wires=list(qs))
                return qml.state()
            return c
        out["lightning"] = _circuit_diff(make([]), make(circuit20()), 1, budget)
    return out


class NumpyCircuit:
    """The same circuits in plain vectorised numpy (the state as (B, 2, ..., 2), the axis of qubit q is
    n - q), with the adjoint gradient written in numpy too: the reference hpr's kernels are measured
    against."""

    def __init__(self, circuit):
        self.n, self.ops = circuit.n, circuit.ops

    def _gate(self, name, theta):
        c, s = np.cos(theta / 2), np.sin(theta / 2)
        if name == "ry":
            return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2).astype(np.complex128)
        z = np.zeros_like(c)
        return np.stack([np.stack([c - 1j * s, z], -1), np.stack([z, c + 1j * s], -1)], -2)  # rz

    def _apply(self, psi, name, qs, theta):
        n = self.n
        if name == "cx":
            ac, at = n - qs[0], n - qs[1]
            out = psi.copy()
            sl = [slice(None)] * (n + 1)
            sl[ac] = 1
            out[tuple(sl)] = np.flip(psi[tuple(sl)], axis=at - (at > ac))
            return out
        m = self._gate(name, theta)  # (2, 2) or (B, 2, 2)
        ax = n - qs[0]
        spec = "bij,bj...->bi..." if m.ndim == 3 else "ij,bj...->bi..."
        return np.moveaxis(np.einsum(spec, m, np.moveaxis(psi, ax, 1)), 1, ax)

    def _theta(self, p, x, w):
        return x[:, p[1]] if p[0] == "in" else w[p[1]]

    def forward(self, x, w):
        b, n = x.shape[0], self.n
        psi = np.zeros((b, 1 << n), np.complex128)
        psi[:, 0] = 1
        psi = psi.reshape((b,) + (2,) * n)
        for name, qs, p in self.ops:
            psi = self._apply(psi, name, qs, None if p is None else self._theta(p, x, w))
        self.psi, self.x, self.w = psi, x, w
        return (np.abs(psi.reshape(b, -1)) ** 2) @ self._signs().T

    def _signs(self):
        idx = np.arange(1 << self.n)
        return 1 - 2 * ((idx[None, :] >> np.arange(self.n)[:, None]) & 1)  # (n, 2**n)

    def backward(self, g):
        psi, x, w, n = self.psi, self.x, self.w, self.n
        b = psi.shape[0]
        lam = (psi.reshape(b, -1) * (g @ self._signs())).reshape(psi.shape)
        dx, dw = np.zeros_like(x), np.zeros_like(w)
        for name, qs, p in reversed(self.ops):
            theta = None if p is None else self._theta(p, x, w)
            if p is not None:  # Im <lam| G |psi>, G = Y (ry) or Z (rz) on qs[0]
                gen = np.array([[0, -1j], [1j, 0]]) if name == "ry" else np.diag([1.0 + 0j, -1.0])
                ax = n - qs[0]
                gp = np.moveaxis(np.einsum("ij,bj...->bi...", gen, np.moveaxis(psi, ax, 1)), 1, ax)
                d = np.imag(np.einsum("bi,bi->b", lam.reshape(b, -1).conj(), gp.reshape(b, -1)))
                if p[0] == "in":
                    dx[:, p[1]] += d
                else:
                    dw[p[1]] += d.sum()
            if name == "cx":
                psi, lam = self._apply(psi, name, qs, None), self._apply(lam, name, qs, None)
            else:
                psi, lam = self._apply(psi, name, qs, -theta), self._apply(lam, name, qs, -theta)
        return dx, dw


def lightning_adjoint(circuit, x, w, g, budget):
    """Seconds per circuit of forward + gradient with lightning's adjoint method (qml.grad of
    sum(g * <Z>)), over as many of the circuits as fit the budget (>= 3)."""
    import pennylane as qml  # lazy: optional simulator, timed only when installed
    from pennylane import numpy as pnp  # lazy: optional simulator, timed only when installed

    n = circuit.n
    dev = qml.device("lightning.qubit", wires=n)

    @qml.qnode(dev, diff_method="adjoint")
    def f(xb, wb):
        for name, qs, p in circuit.ops:
            if name == "cx":
                qml.CNOT(wires=list(qs))
            else:
                th = xb[p[1]] if p[0] == "in" else wb[p[1]]
                (qml.RY if name == "ry" else qml.RZ)(th, wires=qs[0])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    def cost(xb, wb, gb):
        return pnp.sum(pnp.stack(f(xb, wb)) * gb)

    try:
        grad = qml.grad(cost, argnums=[0, 1])
    except TypeError:  # PennyLane before 0.40 spells it argnum
        grad = qml.grad(cost, argnum=[0, 1])
    ts = []
    t_end = time.perf_counter() + budget
    for i in range(x.shape[0]):
        t0 = time.perf_counter()
        grad(pnp.array(x[i], requires_grad=True), pnp.array(w, requires_grad=True), g[i])
        ts.append(time.perf_counter() - t0)
        if len(ts) >= 3 and time.perf_counter() > t_end:
            break
    return statistics.median(ts[1:]) if len(ts) > 2 else ts[-1]


def batched(B, budget, others):
    """The batched workload's figures (circuits/s), hpr checked against numpy first."""
    c = workload()
    r = np.random.default_rng(0)
    x, w, g = r.uniform(-np.pi, np.pi, (B, c.n)), r.uniform(-np.pi, np.pi, c.n_weights), r.standard_normal((B, c.n))
    ref = NumpyCircuit(c)
    zn = ref.forward(x, w)
    dxn, dwn = ref.backward(g)
    zh = c.forward(x, w)
    dxh, dwh = c.backward(g)
    err = max(float(np.abs(zh - zn).max()), float(np.abs(dxh - dxn).max()), float(np.abs(dwh - dwn).max()))
    check_agree("batched workload, hpr against numpy einsum (float64)", err, 1e-9)

    def fb(sim):
        sim.forward(x, w)
        sim.backward(g)
    out = {"circuits": B, "qubits": c.n, "layers": 4, "gates": len(c.ops), "max_abs_diff": err,
           "hpr_forward_cps": B / median_time(lambda: c.forward(x, w), budget, min_reps=3),
           "hpr_forward_grad_cps": B / median_time(lambda: fb(c), budget, min_reps=3),
           "numpy_forward_cps": B / median_time(lambda: ref.forward(x, w), budget, min_reps=3),
           "numpy_forward_grad_cps": B / median_time(lambda: fb(ref), budget, min_reps=3)}
    if "lightning" in others:
        try:
            out["lightning_forward_grad_cps"] = 1 / lightning_adjoint(c, x, w, g, budget)
        except Exception as e:  # a broken optional install must not stop hpr's figures
            print(f"(lightning adjoint: skipped, {type(e).__name__}: {e})")
    return out


# ------------------------------------------------------------------------------------------- main
def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.bench quantum-kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-qubits", type=int, default=None, help="largest n of the single gates, 16..26 in steps "
                    "of 2 (default 24; 26 needs 1 GiB per state; on the GPU 20..30, default 28)")
    ap.add_argument("--threads", type=int, default=1, help="threads for hpr and the other simulators (default 1; "
                    "numpy's copy is single-threaded)")
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per timed item (default 0.25)")
    ap.add_argument("--circuit-qubits", type=int, default=24, help="n of the 20-gate circuit (default 24; 0 skips)")
    ap.add_argument("--batch", type=int, default=None, help="circuits in the batched workload (default 1024; on "
                    "the GPU the largest of 1024, 65536, 1048576 to run, default 1048576; 0 skips)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                    help="gpu: the GPU kernels (CuPy) against the device's copy bandwidth; see quantum_gpu.py")
    ap.add_argument("--dtype", default="complex128", choices=("complex64", "complex128"),
                    help="state dtype on the GPU (default complex128; the CPU part is complex128)")
    return ap


def single_gates(sizes, budget, others):
    """Part 1: each gate of gate_list(n) on one state of n qubits, beside numpy's copy of the same bytes
    and the installed simulators; prints a line per gate and returns the rows."""
    print("1. single gates on one state: median time per gate; GB/s = 2 * 16 * 2**n bytes / time")
    print("   reference: np.copyto of the same 2**n complex128 array, same run (read + write, single thread); "
          "x = hpr GB/s / copy GB/s")
    if others:
        print("   also timed: " + ", ".join(k for k, _ in others) + " (x_other = their time / hpr's time)")
    else:
        print("   none of qulacs, qiskit-aer, pennylane-lightning is installed: no side-by-side simulator")
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
        t_copy = median_time(lambda: np.copyto(dst, src), budget)
        copy_bw = nbytes / t_copy / 1e9
        gates = gate_list(n)
        other_t = {}
        for k, fn in others:
            try:
                other_t[k] = fn(n, gates, budget)
            except Exception as e:  # a broken optional install must not stop hpr's figures
                print(f"({k}: skipped, {type(e).__name__}: {e})")
        for name, qs, p, label in gates:
            t = median_time(lambda: sv.apply(name, list(qs), p), budget)
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
    return rows


def circuit_part(n, budget):
    """Part 2: the 20-gate circuit at n qubits, gate by gate and compiled (and fused), beside the
    installed simulators; prints its table and returns its figures."""
    c = Circuit(n)
    for name, qs in circuit20():
        c.add(name, list(qs))
    sv = StateVector(n, 1, np.complex128)
    sv.apply("h", [n - 1])
    zx, zw = np.zeros((1, 0)), np.zeros(0)
    progs = {"compiled": c.compile(0), "fused": c.compile(4)}
    s = np.zeros((1, 1 << n), np.complex128)
    s[0, :] = 1 / np.sqrt(1 << n)
    t_gbg = median_time(lambda: [sv.apply(name, list(qs)) for name, qs in circuit20()], budget, min_reps=3)
    t_c = {k: median_time(lambda p=p: p.run(s, zx, zw), budget, min_reps=3) for k, p in progs.items()}
    ot = {}
    try:
        ot = circuit20_others(n, budget)
    except Exception as e:
        print(f"(20-gate circuit in the other simulators: skipped, {type(e).__name__}: {e})")
    print(f"\n2. the 20-gate circuit at n = {n} (H on 0..9, CNOT(q, q+1) for q = 0..9), one state, ms; "
          "x_other = their time / hpr's")
    print(f"   {'hpr gate by gate':<34}{t_gbg * 1e3:>9.2f}")
    labels = {"compiled": "hpr compiled (chunked runs)", "fused": "hpr compiled, dense blocks <= 4q"}
    for k, t in t_c.items():
        line = f"   {labels[k]:<34}{t * 1e3:>9.2f}"
        for o, to in ot.items():
            line += f"   x_{o} {to / t:5.2f}"
        print(line)
    for o, to in ot.items():
        print(f"   {o:<34}{to * 1e3:>9.2f}")
    return {"n": n, "hpr_gate_by_gate_us": t_gbg * 1e6, "hpr_us": t_c["compiled"] * 1e6,
            "hpr_fused_us": t_c["fused"] * 1e6, "hpr_ops": len(progs["compiled"].ops),
            "hpr_fused_ops": len(progs["fused"].ops), **{f"{o}_us": to * 1e6 for o, to in ot.items()}}


def batched_part(B, budget, others):
    """Part 3: the batched workload (see `batched`), printed; returns its figures."""
    bt = batched(B, budget, others)
    print(f"\n3. batched workload: {bt['circuits']} circuits x {bt['qubits']} qubits, {bt['gates']} gates "
          f"(RY encoding, {bt['layers']} x (RY + RZ, CNOT ring)), <Z_i>; circuits/s (higher is better)")
    print(f"   {'':<28}{'forward':>12}{'fwd + grad':>12}")
    print(f"   {'hpr (one call per batch)':<28}{bt['hpr_forward_cps']:>12,.0f}{bt['hpr_forward_grad_cps']:>12,.0f}")
    print(f"   {'numpy einsum (reference)':<28}{bt['numpy_forward_cps']:>12,.0f}{bt['numpy_forward_grad_cps']:>12,.0f}")
    if "lightning_forward_grad_cps" in bt:
        print(f"   {'lightning adjoint':<28}{'-':>12}{bt['lightning_forward_grad_cps']:>12,.1f}")
    print(f"   hpr / numpy: forward {bt['hpr_forward_cps'] / bt['numpy_forward_cps']:.1f}x, fwd + grad "
          f"{bt['hpr_forward_grad_cps'] / bt['numpy_forward_grad_cps']:.1f}x" +
          (f"; hpr / lightning fwd + grad {bt['hpr_forward_grad_cps'] / bt['lightning_forward_grad_cps']:.0f}x"
           if "lightning_forward_grad_cps" in bt else "") +
          f"; backward / forward time {bt['hpr_forward_cps'] / bt['hpr_forward_grad_cps'] - 1:.2f}"
          f" (results agree to {bt['max_abs_diff']:.1e})")
    return bt


def main(argv=None):
    a = build_parser().parse_args(argv)
    if a.max_qubits is None:
        a.max_qubits = 28 if a.device == "gpu" else 24
    if a.batch is None:
        a.batch = (1 << 20) if a.device == "gpu" else 1024
    if a.device == "gpu":
        if a.max_qubits < 20 or a.batch < 0:
            print("with --device gpu: --max-qubits >= 20 (default 28 there) and --batch >= 0", file=sys.stderr)
            return 2
        return quantum_gpu.main(a)
    sizes = [n for n in (16, 18, 20, 22, 24, 26) if n <= a.max_qubits]
    if not sizes or a.threads < 1 or a.batch < 0 or not (a.circuit_qubits == 0 or 11 <= a.circuit_qubits <= 30):
        print("need --max-qubits >= 16, --threads >= 1, --batch >= 0 and --circuit-qubits 0 or 11..30",
              file=sys.stderr)
        return 2
    # The environment of the OpenMP runtimes, not a setting of hpr's: OpenMP reads OMP_NUM_THREADS once,
    # when its runtime loads, so it is set before any loads one (hpr's kernels on their first call, the
    # other simulators when the functions that time them import them), and every simulator runs on
    # a.threads threads. hpr's own count is set directly.
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    cpu.set_num_threads(a.threads)
    others = available_others()
    print(f"hpr.bench quantum-kernels: complex128, {a.threads} thread(s) for hpr and the others (OMP_NUM_THREADS)")
    out = {"threads": a.threads, "dtype": "complex128", "rows": single_gates(sizes, a.budget, others),
           "others": [k for k, _ in others]}
    if a.circuit_qubits:
        out["circuit20"] = circuit_part(a.circuit_qubits, a.budget)
    if a.batch:
        out["batched"] = batched_part(a.batch, max(a.budget, 1.0), dict(others))
    if a.json:
        write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
