"""``python -m hpr.quantum run circuit.qasm [--shots N] [--seed S] [--out FILE] [--dtype complex64|complex128]
[--max-ops N]``: simulate an OpenQASM 2.0 or 3 circuit (hpr.quantum.qasm) from |0...0>.

A circuit without measurements (or whose measurements all come at the end, without --shots): print the
qubit and gate counts, the time and the 8 most probable basis states, and with --out save the 2**n
amplitudes (np.save of a 1-D array). With --shots N, or for a circuit that measures, resets or branches
before its end (1024 shots by default): run it N times and print the counts of the outcomes, keyed as
Qiskit keys them (classical bit 0 rightmost, registers last-declared first, space-separated), and with
--out write them as JSON ({"shots", "seed", "counts"}). Files are written to a temporary name in the
same folder, then renamed, so a crash never leaves a partial file.

Under mpiexec with more than one rank the state is sharded with hpr.quantum.DistributedStateVector
(shots: sampled rank by rank, or one trajectory at a time) and the result gathered to rank 0; when it
cannot shard the circuit, rank 0 simulates alone and says so."""
import argparse
import json as _json
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from ..errors import ConfigError, HprError
from . import qasm
from . import simulate as sim
from .distributed import DistributedStateVector

DTYPES = {"complex64": np.complex64, "complex128": np.complex128}
DEFAULT_SHOTS = 1024  # for a circuit that measures before its end, when --shots is not given


def save_atomic(path, array, json=False):
    """np.save (json: json.dump of a dict) to a temporary file beside path, then os.replace: path is
    either absent/old or complete. SIGTERM (mpiexec stopping a job) during the write removes the
    temporary too."""
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        with os.fdopen(fd, "wb") as f:
            if json:
                f.write(_json.dumps(array, indent=1).encode())
            else:
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


def _sharded(program, dtype, comm):
    """(a DistributedStateVector over comm, or None, and why not)."""
    try:  # its checks (2**g ranks, >= 1 local qubit, memory) agree on every rank
        return DistributedStateVector(program.n_qubits, comm, dtype=dtype), None
    except ConfigError as e:
        return None, f"DistributedStateVector cannot shard this circuit: {e}"


def simulate(program, dtype, comm):
    """(amplitudes on rank 0 or None, mode string)."""
    if comm is not None and comm.size > 1:
        dsv, why = _sharded(program, dtype, comm)
        if dsv is not None:
            qasm.run(program, state=dsv)
            return dsv.gather(root=0), f"DistributedStateVector over {comm.size} ranks, gathered to rank 0"
        mode = f"rank 0 alone, the other {comm.size - 1} rank(s) idle: {why}"
        amps = qasm.run(program, dtype).amplitudes[0].copy() if comm.rank == 0 else None
        return amps, mode
    return qasm.run(program, dtype).amplitudes[0].copy(), "one process"


def sample(program, dtype, comm, shots, seed):
    """(counts on rank 0 or None, mode string): shots of a measured circuit."""
    if comm is not None and comm.size > 1:
        seed = int(comm.bcast_obj(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)))
        dsv, why = _sharded(program, dtype, comm)
        if dsv is not None:
            counts = sim.run_trajectories(program, dsv, shots, seed)
            how = "sampled once" if program.terminal_measurements else "one trajectory at a time"
            return counts, f"DistributedStateVector over {comm.size} ranks, {how}"
        counts = sim.run_shots(program, shots, seed, dtype) if comm.rank == 0 else None
        return counts, f"rank 0 alone, the other {comm.size - 1} rank(s) idle: {why}"
    how = ("sampled once from the final probabilities" if program.terminal_measurements
           else "a batch of trajectories, one state per shot")
    return sim.run_shots(program, shots, seed, dtype), f"one process, {how}"


def cmd_run(a):
    comm = None
    if _under_mpi():
        import hpr  # lazy: hpr.init starts MPI, wanted only under mpiexec

        comm = hpr.init()
    rank0 = comm is None or comm.rank == 0
    shots, seed = getattr(a, "shots", None), getattr(a, "seed", None)
    check_out(a.out)  # before any work: a bad --out fails now, not after the simulation
    # every rank parses: a bad file fails everywhere, not only on rank 0
    program = qasm.load(a.circuit, max_ops=getattr(a, "max_ops", None) or qasm.MAX_OPS)
    if shots is None and not program.terminal_measurements:
        shots = DEFAULT_SHOTS
        note = (f"(it measures, resets or branches before its end: {shots} shots, a batch of trajectories; "
                "--shots N to choose)")
    else:
        note = None
    counting = shots is not None and not program.is_unitary
    t0 = time.perf_counter()
    if counting:
        counts, mode = sample(program, DTYPES[a.dtype], comm, shots, seed)
    else:
        amps, mode = simulate(program, DTYPES[a.dtype], comm)
    dt = time.perf_counter() - t0
    if comm is not None and comm.size > 1:
        dt = comm.mpi.allreduce(dt, op=_mpi_max())
    if not rank0:
        return 0
    n = program.n_qubits
    print(f"{a.circuit}: {n} qubits, {program.n_gates} gates, {a.dtype}, {dt * 1e3:.3f} ms ({mode})")
    if counting:
        return print_counts(counts, shots, seed, note, a.out)
    if program.measurements:
        print(f"({len(program.measurements)} measure statement(s), all at the end: the state shown is the one "
              "before them; --shots N samples them)")
    elif shots is not None:
        print("(no measure statement: nothing to count, --shots ignored; the state follows)")
    print(f"{'basis state':>{max(11, n)}} {'index':>8} {'probability':>12}  amplitude")
    for i, bits, amp, p in top_states(amps, n):
        print(f"{bits:>{max(11, n)}} {i:>8} {p:>12.6f}  {amp.real:+.6f}{amp.imag:+.6f}j")
    if a.out:
        save_atomic(a.out, amps)
        print(f"amplitudes ({amps.size} x {amps.dtype}) written to {a.out}")
    return 0


def print_counts(counts, shots, seed, note, out, k=16):
    """The counts, most frequent first (keys in Qiskit's order: bit 0 rightmost, registers
    last-declared first), and --out as JSON."""
    if note:
        print(note)
    print(f"{shots} shots{'' if seed is None else f', seed {seed}'}; outcomes (classical bit 0 rightmost, "
          "registers last-declared first):")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    width = max(8, max(len(key) for key in counts))
    for key, c in top[:k]:
        print(f"{key:>{width}} {c:>10} {c / shots:>10.4f}")
    if len(top) > k:
        print(f"... and {len(top) - k} more outcome(s)")
    if out:
        save_atomic(out, {"shots": shots, "seed": seed, "counts": dict(top)}, json=True)
        print(f"counts written to {out} (JSON)")
    return 0


def check_out(out):
    """ConfigError unless --out names a file that can be created in an existing folder."""
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


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return v


def _under_mpi():
    env = os.environ
    for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK", "PMI_RANK"):
        if k in env:
            return True
    return False


def _mpi_max():
    from mpi4py import MPI  # lazy: only under mpiexec

    return MPI.MAX


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.quantum", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="simulate an OpenQASM 2.0 or 3 file")
    r.add_argument("circuit", help="the .qasm file")
    r.add_argument("--out", metavar="FILE", help="save the amplitudes (np.save, 1-D, 2**n entries), or with "
                   "shots the counts (JSON)")
    r.add_argument("--dtype", choices=sorted(DTYPES), default="complex128", help="default complex128")
    r.add_argument("--shots", type=_positive, help="run the circuit this many times and count the outcomes "
                   f"(default: the state; {DEFAULT_SHOTS} shots for a circuit that measures before its end)")
    r.add_argument("--seed", type=int, help="random seed of the shots (default: fresh entropy)")
    r.add_argument("--max-ops", type=_positive, dest="max_ops", help="budget of operations the file may expand "
                   "to (default 10**8)")
    a = ap.parse_args(argv)
    try:
        return cmd_run(a)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
