"""``mpiexec -n N python -m hpr.bench allreduce``: hpr's in-place allreduce against the MPI library's own
in-place MPI_Allreduce in the same run, float32 sums from 8 B to 256 MiB (--min-bytes times powers of --factor, and always
--max-bytes itself as the last row). Prints latency (median, or
with ``--stat min`` the minimum, over rounds that run every library once in turn) and bus bandwidth (bytes/time × 2(n-1)/n, as nccl-tests defines it) for

  MPI          MPI_Allreduce(IN_PLACE) on a numpy array
  hpr          comm.allreduce on an array from comm.alloc() — memory the node's ranks share, where
               hpr keeps its gradient buffers — reduced straight from the neighbours' copies
  hpr(numpy)   comm.allreduce on a plain numpy array (staged through the shared window)

and the ratios hpr/MPI. Before each size is timed, hpr's sums (both columns) are checked against
MPI_Allreduce of the same random input (ResultsDisagree past the rounding bound, and the benchmark exits 2). With ``--device gpu`` the buffers are CuPy arrays on each rank's GPU: hpr's
allreduce of the device buffer against MPI_Allreduce of the same device buffer when the MPI is
CUDA-aware, else against what a user writes without hpr (copy to the host, MPI_Allreduce, copy back).
``--json FILE`` writes {"ranks", "mpi", "rows": [{"bytes", "algorithm",
"hpr_us", "mpi_us", "hpr_busbw_gbps", "mpi_busbw_gbps", "hpr_numpy_us", "hpr_numpy_busbw_gbps"}]}."""
import argparse
import time

import numpy as np
from mpi4py import MPI

import hpr
from hpr.bench import ResultsDisagree, write_json
from hpr.errors import ConfigError


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(s.rstrip("B"))
    except (ValueError, IndexError):
        raise ConfigError(f"size {s!r} is not a byte count like 8, 64K, 16M or 1G") from None


def time_op(fn, iters, comm):
    """Median seconds of fn over iters runs, each started together (MPI barrier) and timed as the
    slowest rank's time."""
    ts = np.empty(iters)
    for i in range(iters):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t0
    comm.Allreduce(MPI.IN_PLACE, ts, op=MPI.MAX)
    return float(np.median(ts))


def sizes(lo, hi, factor):
    """Message sizes lo, lo * factor, ... below hi, then hi itself (the sweep always ends at hi, even when
    no power of factor lands on it: 8 B * 4^k skips 256 MiB), as float32 element counts (at least 1)."""
    n = lo
    while n < hi:
        yield max(1, n // 4)
        n *= factor
    yield max(1, hi // 4)


def busbw(count, t, p):
    """Bus bandwidth (GB/s) of an allreduce of count float32 taking t seconds on p ranks."""
    return count * 4 / t * 2 * (p - 1) / p / 1e9 if p > 1 else count * 4 / t / 1e9


def check_sums(comm, count, shared):
    """hpr's allreduce of `shared` (from comm.alloc) and of a plain array against MPI_Allreduce of the
    same float32 input (random, different on every rank). Any order of a float32 sum of p terms is within
    (p-1) eps sum|x| of the exact sum, so two orders differ by at most twice that (eps: float32's unit
    roundoff, 2^-24; the bound is taken elementwise from sum|x| in float64). Every rank checks its own
    copy and the largest excess over the bound, over the ranks, must be <= 0."""
    src = np.random.default_rng(20 + comm.rank).standard_normal(count).astype(np.float32)
    want = src.copy()
    comm.mpi.Allreduce(MPI.IN_PLACE, want)
    bound = np.abs(src).astype(np.float64)
    comm.mpi.Allreduce(MPI.IN_PLACE, bound)
    bound *= 2 * (comm.size - 1) * 2.0 ** -24 * 1.01  # 1.01: the O(eps^2) terms of the bound
    plain = src.copy()
    shared[:] = src
    comm.allreduce(shared)
    comm.allreduce(plain)
    for name, got in (("hpr (comm.alloc buffer)", shared), ("hpr(numpy)", plain)):
        diff = np.abs(got.astype(np.float64) - want)
        worst = np.array([float((diff - bound).max()), float(diff.max())])  # over the bound; largest
        comm.mpi.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)
        if not worst[0] <= 0:  # a NaN fails too
            raise ResultsDisagree(f"allreduce of {count * 4} bytes on {comm.size} ranks: {name} differs from "
                                  f"MPI_Allreduce of the same input by up to {worst[1]:.3e}, beyond the rounding "
                                  "bound 2(p-1) eps sum|x|; the timings would be of a wrong sum")


def time_all(fns, budget, comm, stat="median"):
    """{name: seconds} of each fn: two warm-up calls each, then as many rounds as fit the budget for the
    slowest (at least 3, the same count on every rank), each round running every fn once, started
    together and timed as the slowest rank's time. The order rotates from round to round, so a load
    that comes and goes (a shared machine) falls on every library alike and the ratios stay fair.
    stat: "median" or "min" over the rounds."""
    for f in fns.values():
        f()
        f()
    t1 = max(time_op(f, 1, comm) for f in fns.values())
    iters = comm.bcast(int(max(3, min(2000, budget / max(t1, 1e-7)))), root=0)
    names = list(fns)
    ts = np.empty((len(names), iters))
    for i in range(iters):
        for j in range(len(names)):
            k = (i + j) % len(names)
            comm.Barrier()
            t0 = time.perf_counter()
            fns[names[k]]()
            ts[k, i] = time.perf_counter() - t0
    comm.Allreduce(MPI.IN_PLACE, ts, op=MPI.MAX)
    pick = np.min if stat == "min" else np.median
    return {name: float(pick(ts[k])) for k, name in enumerate(names)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench allreduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-bytes", default="8", help="smallest message (default 8)")
    ap.add_argument("--max-bytes", default="256M", help="largest message, always the last row (default 256M)")
    ap.add_argument("--factor", type=int, default=4, help="size step (default 4)")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds per size and library (default 0.4)")
    ap.add_argument("--stat", default="median", choices=("median", "min"),
                    help="median (default) or min over the interleaved rounds (min: on a loaded machine)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu (default) or gpu: CuPy buffers")
    args = ap.parse_args(argv)
    lo, hi = parse_size(args.min_bytes), parse_size(args.max_bytes)
    if lo < 4 or hi < lo or args.factor < 2:
        raise ConfigError("need 4 <= --min-bytes <= --max-bytes and --factor >= 2")

    comm = hpr.init()
    if args.device == "gpu":
        return _gpu(args, comm, lo, hi)
    mpi = comm.mpi
    p = comm.size
    lib = MPI.Get_library_version().splitlines()[0].strip()
    if comm.rank == 0:
        print(f"# hpr allreduce vs MPI_Allreduce: {p} ranks, float32 sum in place, {lib}")
        print(f"# {args.stat} of interleaved rounds; busbw = bytes/time * 2(n-1)/n in GB/s; x = ratio of busbw to MPI's")
        print("# hpr: buffer from comm.alloc (shared, hpr's gradient buffers); hpr(numpy): plain numpy array")
        print(f"{'bytes':>10} {'algorithm':>18} {'MPI us':>9} {'busbw':>7} | {'hpr us':>9} {'busbw':>7} "
              f"{'x':>5} | {'hpr(numpy) us':>13} {'busbw':>7} {'x':>5}")
    rows = []
    for count in sizes(lo, hi, args.factor):
        x = np.ones(count, np.float32)
        sx = comm.alloc(count, np.float32)
        check_sums(comm, count, sx)
        sx[:] = 1
        bw = lambda t: busbw(count, t, p)  # noqa: E731
        t = time_all({"mpi": lambda: mpi.Allreduce(MPI.IN_PLACE, x), "hpr": lambda: comm.allreduce(sx),
                      "numpy": lambda: comm.allreduce(x)}, args.budget, mpi, args.stat)
        row = {"bytes": count * 4, "algorithm": comm.algorithm_for(count * 4),
               "hpr_us": t["hpr"] * 1e6, "mpi_us": t["mpi"] * 1e6,
               "hpr_busbw_gbps": bw(t["hpr"]), "mpi_busbw_gbps": bw(t["mpi"]),
               "hpr_numpy_us": t["numpy"] * 1e6, "hpr_numpy_busbw_gbps": bw(t["numpy"])}
        rows.append(row)
        if comm.rank == 0:
            print(f"{count * 4:>10} {row['algorithm']:>18} {t['mpi'] * 1e6:>9.1f} {bw(t['mpi']):>7.3f} | "
                  f"{t['hpr'] * 1e6:>9.1f} {bw(t['hpr']):>7.3f} {t['mpi'] / t['hpr']:>5.2f} | "
                  f"{t['numpy'] * 1e6:>13.1f} {bw(t['numpy']):>7.3f} {t['mpi'] / t['numpy']:>5.2f}", flush=True)
        del x, sx
    if comm.rank == 0 and args.json:
        write_json(args.json, {"ranks": p, "mpi": lib, "rows": rows})
    return 0


def _gpu(args, comm, lo, hi):
    """The --device gpu table: device buffers, hpr against MPI on the same buffer (CUDA-aware) or
    against staging by hand."""
    dev = hpr.device.select("gpu", comm)
    cp, sync, mpi, p = dev.xp, dev.synchronize, comm.mpi, comm.size
    aware = comm.cuda_aware
    ref = "MPI_Allreduce on the device buffer" if aware else "copy to host + MPI_Allreduce + copy back"
    if comm.rank == 0:
        print(f"# hpr allreduce of CuPy arrays: {p} ranks, {dev.name()}, float32 sum in place; MPI "
              f"{'is' if aware else 'is not'} CUDA-aware (hpr {'passes the buffer' if aware else 'stages it'})")
        print(f"# reference: {ref}; {args.stat} of interleaved rounds; busbw = bytes/time * 2(n-1)/n in GB/s; x = hpr busbw / reference's")
        print(f"{'bytes':>10} {'ref us':>9} {'busbw':>7} | {'hpr us':>9} {'busbw':>7} {'x':>5}")
    rows = []
    for count in sizes(lo, hi, args.factor):
        x = cp.ones(count, cp.float32)
        host = np.empty(count, np.float32)
        bw = lambda t: busbw(count, t, p)  # noqa: E731

        def mpi_ref():
            if aware:
                sync()
                mpi.Allreduce(MPI.IN_PLACE, x)
            else:
                x.get(out=host)
                mpi.Allreduce(MPI.IN_PLACE, host)
                x.set(host)
            sync()

        t = time_all({"ref": mpi_ref, "hpr": lambda: (comm.allreduce(x), sync())}, args.budget, mpi, args.stat)
        rows.append({"bytes": count * 4, "ref_us": t["ref"] * 1e6, "hpr_us": t["hpr"] * 1e6,
                     "ref_busbw_gbps": bw(t["ref"]), "hpr_busbw_gbps": bw(t["hpr"])})
        if comm.rank == 0:
            print(f"{count * 4:>10} {t['ref'] * 1e6:>9.1f} {bw(t['ref']):>7.3f} | {t['hpr'] * 1e6:>9.1f} "
                  f"{bw(t['hpr']):>7.3f} {t['ref'] / t['hpr']:>5.2f}", flush=True)
    if comm.rank == 0 and args.json:
        write_json(args.json, {"ranks": p, "device": dev.name(), "cuda_aware": aware, "reference": ref, "rows": rows})
    return 0
