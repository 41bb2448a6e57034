"""``python -m hpr.quantum run circuit.qasm [--out state.npy] [--dtype complex64|complex128]``: simulate an
OpenQASM 2.0 circuit (hpr.quantum.qasm) from |0...0>, print the qubit and gate counts, the time and the
8 most probable basis states, and with --out save the 2**n amplitudes (np.save of a 1-D array; written
to a temporary name in the same folder, then renamed, so a crash never leaves a partial file).

Under mpiexec with more than one rank the state is sharded with hpr.quantum.DistributedStateVector when
this installation has it, and gathered to rank 0 for the printout and --out; otherwise rank 0 simulates
alone and says so."""
import argparse
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from ..errors import HprError

DTYPES = {"complex64": np.complex64, "complex128": np.complex128}


def save_atomic(path, array):
    """np.save to a temporary file beside path, then os.replace: path is either absent/old or complete.
    SIGTERM (mpiexec stopping a job) during the write removes the temporary too."""
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def top_states(amps, n, k=8):
    """[(index, bitstring with qubit n-1 first, amplitude, probability)] of the k most probable states."""
    p = np.abs(amps) ** 2
    k = min(k, p.size)
    idx = np.argpartition(-p, k - 1)[:k]
    idx = idx[np.lexsort((idx, -p[idx]))]
    return [(int(i), format(int(i), f"0{n}b"), amps[i], float(p[i])) for i in idx]


def simulate(program, dtype, comm):
    """(amplitudes on rank 0 or None, mode string)."""
    from ..errors import ConfigError
    from . import qasm

    if comm is not None and comm.size > 1:
        import hpr.quantum as hq

        DSV = getattr(hq, "DistributedStateVector", None)  # checked at run time: it may be absent
        why = "this hpr has no hpr.quantum.DistributedStateVector"
        if DSV is not None:
            try:  # its checks (2**g ranks, >= 2 local qubits, memory) agree on every rank
                dsv = DSV(program.n_qubits, comm, dtype=dtype)
            except ConfigError as e:
                why = f"DistributedStateVector cannot shard this circuit: {e}"
            else:
                qasm.run(program, state=dsv)
                return dsv.gather(root=0), f"DistributedStateVector over {comm.size} ranks, gathered to rank 0"
        mode = f"rank 0 alone, the other {comm.size - 1} rank(s) idle: {why}"
        amps = qasm.run(program, dtype).amplitudes[0].copy() if comm.rank == 0 else None
        return amps, mode
    return qasm.run(program, dtype).amplitudes[0].copy(), "one process"


def cmd_run(a):
    from . import qasm

    comm = None
    if _under_mpi():
        import hpr

        comm = hpr.init()
    rank0 = comm is None or comm.rank == 0
    check_out(a.out)  # before any work: a bad --out fails now, not after the simulation
    program = qasm.load(a.circuit)  # every rank parses: a bad file fails everywhere, not only on rank 0
    t0 = time.perf_counter()
    amps, mode = simulate(program, DTYPES[a.dtype], comm)
    dt = time.perf_counter() - t0
    if comm is not None and comm.size > 1:
        dt = comm.mpi.allreduce(dt, op=_mpi_max())
    if not rank0:
        return 0
    n = program.n_qubits
    print(f"{a.circuit}: {n} qubits, {len(program)} gates, {a.dtype}, {dt * 1e3:.3f} ms ({mode})")
    if program.measurements:
        print(f"({len(program.measurements)} measure statement(s) recorded, not simulated: the state is "
              "the one before measurement)")
    print(f"{'basis state':>{max(11, n)}} {'index':>8} {'probability':>12}  amplitude")
    for i, bits, amp, p in top_states(amps, n):
        print(f"{bits:>{max(11, n)}} {i:>8} {p:>12.6f}  {amp.real:+.6f}{amp.imag:+.6f}j")
    if a.out:
        save_atomic(a.out, amps)
        print(f"amplitudes ({amps.size} x {amps.dtype}) written to {a.out}")
    return 0


def check_out(out):
    """ConfigError unless --out names a file that can be created in an existing folder."""
    from ..errors import ConfigError

    if out is None:
        return
    path = os.path.abspath(out)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ConfigError(f"--out {out} is a folder; give a file name such as {os.path.join(out, 'state.npy')}")
    if not os.path.isdir(folder):
        raise ConfigError(f"--out {out}: folder {folder} does not exist; create it first or choose another path")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--out {out}: folder {folder} is not writable; choose another path")


def _under_mpi():
    env = os.environ
    for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK", "PMI_RANK"):
        if k in env:
            return True
    return False


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.quantum", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate an OpenQASM 2.0 file")
    r.add_argument("circuit", help="the .qasm file")
    r.add_argument("--out", metavar="FILE.npy", help="save the amplitudes (np.save, 1-D, 2**n entries)")
    r.add_argument("--dtype", choices=sorted(DTYPES), default="complex128", help="default complex128")
    a = ap.parse_args(argv)
    try:
        return cmd_run(a)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
