"""``mpiexec -n 8 python -m hpr.bench oversubscribe``: one rank computes while all the others wait in a
barrier — hpr's (spin briefly, then sleep) or the MPI library's — with more ranks than cores. Prints
the computing rank's time in each case against the same computation with the other ranks asleep
("alone"), and the ratios. Under MPICH's default launcher a rank spinning in MPI takes the core from
the one computing; hpr's waits give it back."""
import argparse
import os
import time

import numpy as np

import hpr


def compute(reps, a, b):
    """A fixed single-threaded computation (numpy ufuncs, no BLAS threads involved)."""
    for _ in range(reps):
        np.sin(a, out=b)
        np.multiply(b, 1.0001, out=a)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench oversubscribe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ms", type=float, default=40.0, help="length of the computation alone (default 40 ms)")
    ap.add_argument("--repeats", type=int, default=7, help="measurements per case (default 7)")
    args = ap.parse_args(argv)
    comm = hpr.init()
    mpi = comm.mpi
    a = np.random.default_rng(0).random(1 << 14)
    b = np.empty_like(a)
    # calibrate on rank 0 while the others sleep in hpr's barrier: the fastest of a few short runs
    comm.barrier()
    reps = 0
    if comm.rank == 0:
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            compute(64, a, b)
            ts.append(time.perf_counter() - t0)
        reps = max(1, int(64 * args.ms / 1000 / min(ts)))
    comm.barrier()
    reps = mpi.bcast(reps, root=0)

    def case(wait):
        ts = []
        for _ in range(args.repeats):
            mpi.Barrier()
            if comm.rank == 0:
                t0 = time.perf_counter()
                compute(reps, a, b)
                ts.append(time.perf_counter() - t0)
            wait()
        return float(np.median(ts)) if ts else 0.0

    sleep_s = args.ms / 1000 * 3

    def asleep():  # the others sleep through the computation, then everyone meets
        if comm.rank != 0:
            time.sleep(sleep_s)
        comm.barrier()

    alone = case(asleep)
    t_hpr = case(comm.barrier)
    t_mpi = case(mpi.Barrier)
    if comm.rank == 0:
        print(f"# one rank computes, {comm.size - 1} wait; {comm.size} ranks on {os.cpu_count()} cores; "
              f"median of {args.repeats}")
        print(f"{'case':<28} {'compute ms':>10} {'vs alone':>9}")
        print(f"{'alone (others asleep)':<28} {alone * 1e3:>10.1f} {1.0:>9.2f}")
        print(f"{'others in hpr barrier':<28} {t_hpr * 1e3:>10.1f} {t_hpr / alone:>9.2f}")
        print(f"{'others in MPI_Barrier':<28} {t_mpi * 1e3:>10.1f} {t_mpi / alone:>9.2f}")
    return 0
