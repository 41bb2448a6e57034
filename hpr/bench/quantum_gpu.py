"""``python -m hpr.bench quantum-kernels --device gpu [--max-qubits N] [--batch B] [--dtype complex64|complex128]``:
hpr's state-vector kernels on one GPU (CuPy), each beside its reference measured in the same run.

1. Single gates on one state of n = 20, 22, ... qubits: the median time per gate (H on qubits 0, n/2,
   n-1, CNOT(0, n-1), RZ on n/2) and the effective bandwidth 2 * itemsize * 2**n / time (the state read
   and written once), beside the device's own copy of the same array (cupy.copyto: the same bytes read
   and written) and the ratio, and the memory's theoretical bandwidth from the device properties when
   CUDA reports it. Target (issue 7): >= 70% of the memory bandwidth at n >= 26.
2. The batched workload of the CPU benchmark (8 qubits, RY encoding, 4 x (RY + RZ, CNOT ring), <Z_i>) at
   1024, 65536 and 1048576 circuits: forward and forward + adjoint gradient, circuits/s, one launch per
   pass with each state in shared memory; checked against the CPU kernels first. Target: >= 1e6
   circuits/s. The CPU kernels' figure for 1024 circuits is printed beside it.

``python -m hpr.bench quantum-kernels`` parses the flags and calls main(a) here; the gates, circuits and timer
are hpr/bench/circuits.py's, the same the CPU tables use. CuPy is reached through hpr.device."""
import numpy as np

import hpr
from hpr.quantum import StateVector

from . import check_agree, write_json
from .circuits import gate_list, median_time, workload


def _timed(fn, sync, budget, min_reps=5):
    """circuits.median_time of fn with the device synchronised after each call, after one extra warm-up
    (a first call compiles its kernels, which would set the repetition count)."""
    def call():
        fn()
        sync()
    call()
    return median_time(call, budget, min_reps)


def _theoretical_bandwidth(dev):
    """Bytes/s from the memory clock and bus width, or None (CUDA 13 dropped the clock from the props)."""
    try:
        p = dev.xp.cuda.runtime.getDeviceProperties(dev.index)
        clock_khz, bus_bits = p.get("memoryClockRate"), p.get("memoryBusWidth")
        if clock_khz and bus_bits:
            return 2.0 * clock_khz * 1e3 * bus_bits / 8
    except Exception:
        pass
    return None


def main(a):
    dev = hpr.device.select("gpu", local_rank=0)
    cp, sync = dev.xp, dev.synchronize
    dt = np.dtype(a.dtype)
    isz = dt.itemsize
    sizes = [n for n in range(20, a.max_qubits + 1, 2)]
    peak = _theoretical_bandwidth(dev)
    print(f"hpr.bench quantum-kernels --device gpu: {dev.name()} (GPU {dev.index}), {dt.name}")
    print(f"1. single gates on one state: median time per gate; GB/s = 2 * {isz} * 2**n bytes / time")
    print("   reference: cupy.copyto of the same array, same run (read + write); x = hpr GB/s / copy GB/s"
          + (f"; memory's theoretical bandwidth {peak / 1e9:,.0f} GB/s (x_peak)" if peak else ""))
    print(f"\n{'n':>3} {'gate':<12}{'us/gate':>10}{'GB/s':>9} {'copy GB/s':>10}{'x':>6}" + (f"{'x_peak':>8}" if peak else ""))
    rows = []
    for n in sizes:
        sv = StateVector(n, 1, dt, device=dev)
        sv.apply("h", [0])
        nbytes = 2 * isz * (1 << n)
        src = cp.ones(1 << n, dt)
        dst = cp.empty_like(src)
        t_copy = _timed(lambda: cp.copyto(dst, src), sync, a.budget)
        copy_bw = nbytes / t_copy / 1e9
        for name, qs, p, label in gate_list(n):
            t = _timed(lambda: sv.apply(name, list(qs), p), sync, a.budget)
            bw = nbytes / t / 1e9
            row = {"n": n, "gate": label, "us": t * 1e6, "gbps": bw, "copy_gbps": copy_bw, "ratio_to_copy": bw / copy_bw}
            line = f"{n:>3} {label:<12}{t * 1e6:>10.1f}{bw:>9.1f} {copy_bw:>10.1f}{bw / copy_bw:>6.2f}"
            if peak:
                row["ratio_to_peak"] = bw * 1e9 / peak
                line += f"{bw * 1e9 / peak:>8.2f}"
            rows.append(row)
            print(line, flush=True)
        sv = src = dst = None
        cp.get_default_memory_pool().free_all_blocks()
    out = {"device": dev.name(), "dtype": dt.name, "rows": rows, "memory_peak_gbps": peak / 1e9 if peak else None}

    if a.batch:
        c = workload()
        r = np.random.default_rng(0)
        x = r.uniform(-np.pi, np.pi, (1024, c.n))
        w = r.uniform(-np.pi, np.pi, c.n_weights)
        g = r.standard_normal((1024, c.n))
        zc = c.forward(x, w, dt)
        dxc, dwc = c.backward(g)
        zg = c.forward(cp.asarray(x), cp.asarray(w), dt)
        dxg, dwg = c.backward(cp.asarray(g))
        err = max(float(np.abs(zg.get() - zc).max()), float(np.abs(dxg.get() - dxc).max()),
                  float(np.abs(dwg.get() - dwc).max()))
        # the same kernels' arithmetic on two devices: a few hundred roundings apart at most
        check_agree(f"batched workload, GPU against the CPU kernels ({dt.name})", err, 1e5 * float(np.finfo(dt).eps))
        t_cpu = _timed(lambda: c.forward(x, w, dt), lambda: None, a.budget, min_reps=3)
        print(f"\n2. batched workload: {c.n} qubits, {len(c.ops)} gates; circuits/s (GPU agrees with the CPU "
              f"kernels to {err:.1e}); CPU kernels, 1024 circuits, forward: {1024 / t_cpu:,.0f}/s")
        print(f"   {'circuits':>10}{'forward':>14}{'fwd + grad':>14}")
        bt = []
        for B in (1024, 65536, 1 << 20):
            if B > a.batch:
                break
            xb = cp.asarray(r.uniform(-np.pi, np.pi, (B, c.n)))
            wb = cp.asarray(w)
            gb = cp.asarray(r.standard_normal((B, c.n)))

            def fb():
                c.forward(xb, wb, dt)
                c.backward(gb)
            tf = _timed(lambda: c.forward(xb, wb, dt), sync, a.budget, min_reps=3)
            tg = _timed(fb, sync, a.budget, min_reps=3)
            bt.append({"circuits": B, "forward_cps": B / tf, "forward_grad_cps": B / tg})
            print(f"   {B:>10,}{B / tf:>14,.0f}{B / tg:>14,.0f}", flush=True)
        out["batched"] = {"rows": bt, "max_abs_diff": err, "cpu_forward_cps_1024": 1024 / t_cpu}
    if a.json:
        write_json(a.json, out)
    return 0
