"""comm.allreduce of plain numpy arrays (and of comm.alloc arrays) around the sizes where its path changes,
bit for bit against MPI's own MPI_Allreduce of the same input, at any rank count.

A numpy array below DIRECT_MIN_BYTES that the plan sends through the node engine goes from
Channel.allreduce_array straight to the engine (the engine's buffer request is the only check); the
engine reduces up to SHM_TINY_BYTES through one cache line per rank, up to CommConfig.small_bytes
through the slots with one barrier, beyond in pipelined slot-sized rounds, and a comm.alloc array from
DIRECT_MIN_BYTES on in place. The inputs are small integers stored in each
dtype, so every order of summation gives the exact sum and every algorithm must equal MPI's answer
bit for bit; avg is that exact sum times 1/p in the accumulator's type (float32 for the half types),
rounded once, as the kernels define it. Run by tests/run_all.py at 2, 3, 4 and 8 ranks."""
import time

import ml_dtypes
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import Communicator
from hpr.comm.channel import DIRECT_MIN_BYTES
from hpr.cpu import cpu_kernels

pytestmark = pytest.mark.mpi(min_size=2)

WORLD = MPI.COMM_WORLD
HALF = (np.float16, ml_dtypes.bfloat16)
DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64]
MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "avg": MPI.SUM}
CASES = [(d, op) for d in DTYPES for op in ("sum", "max", "min", "avg") if not (op == "avg" and np.dtype(d).kind == "i")]

_made = {}


def world():
    """One Communicator over the world with this run's settings, and one comm.alloc array per dtype
    large enough for every size below (made collectively, in the same order on every rank)."""
    if "comm" not in _made:
        _made["comm"] = Communicator(WORLD, config=hpr.config.current().comm)
    return _made["comm"]


def shared(dtype, n):
    comm = world()
    key = np.dtype(dtype).name
    if key not in _made:
        _made[key] = comm.alloc(max_count(dtype), dtype)
    return _made[key][:n]


def counts(dtype):
    """Element counts on both sides of each size where the path changes: 1-3 elements, the engine's
    one-line messages (SHM_TINY_BYTES), the one-barrier limit (small_bytes), and DIRECT_MIN_BYTES (the
    fast path's end, the direct path's start)."""
    isz = np.dtype(dtype).itemsize
    tiny = cpu_kernels().SHM_TINY_BYTES // isz
    small = hpr.config.current().comm.small_bytes // isz
    direct = DIRECT_MIN_BYTES // isz
    return [1, 2, 3, tiny - 1, tiny, tiny + 1, small - 1, small, small + 1, direct - 1, direct, direct + 1]


def max_count(dtype):
    return max(counts(dtype))


def integers(n, dtype, rank, salt=0):
    """Integers in [-8, 8] in dtype: every sum over up to 8 ranks (|sum| <= 64) is exact in every dtype
    here, bfloat16's 8 significant bits included, whatever the order."""
    return np.random.default_rng(7919 * rank + 31 * n + salt).integers(-8, 9, n).astype(dtype)


def mpi_reference(comm, x, op):
    """MPI_Allreduce of x over comm (the half types as float32, which holds their small integers
    exactly); avg: that exact sum times 1/p in the accumulator type, as the kernels scale it."""
    wide = x.astype(np.float32) if x.dtype in HALF else x.copy()
    comm.mpi.Allreduce(MPI.IN_PLACE, wide, op=MPI_OPS[op])
    if op == "avg":
        wide = wide * wide.dtype.type(1.0 / comm.size)
    return wide.astype(x.dtype)


def assert_bitwise(comm, got, want, what):
    mine = got.view(np.uint8)
    np.testing.assert_array_equal(mine, want.view(np.uint8), err_msg=f"{what}: not MPI's answer bit for bit")
    assert all(b == mine.tobytes() for b in comm.mpi.allgather(mine.tobytes())), f"{what}: ranks disagree"


@pytest.mark.parametrize("dtype,op", [pytest.param(d, op, id=f"{np.dtype(d).name}-{op}") for d, op in CASES])
def test_allreduce_around_the_thresholds_is_mpis_bit_for_bit(dtype, op):
    comm = world()
    for n in counts(dtype):
        x = integers(n, dtype, comm.rank)
        want = mpi_reference(comm, x, op)
        got = x.copy()
        assert comm.allreduce(got, op) is got
        assert_bitwise(comm, got, want, f"numpy array, {n} x {np.dtype(dtype).name} {op}")
        g = shared(dtype, n)
        g[:] = x
        comm.allreduce(g, op)
        assert_bitwise(comm, g, want, f"comm.alloc array, {n} x {np.dtype(dtype).name} {op}")


def test_back_to_back_calls_of_mixed_sizes():
    """Calls of every size, one after another with no barrier between them (so a call's first
    meeting meets the previous call's last, whatever its path), mixed with other collectives: each
    result is the exact sum. Every rank computes the expected sums itself."""
    comm = world()
    isz = 4
    small, direct = hpr.config.current().comm.small_bytes // isz, DIRECT_MIN_BYTES // isz
    sizes = [1, 2, 14, 15, 300, small, 13, small + 1, 5000, direct - 1, 7, direct + 3, 1, 1, 40000, 3]
    for i in range(120):
        n = sizes[i % len(sizes)]
        x = integers(n, np.float32, comm.rank, salt=i)
        want = sum(integers(n, np.float32, r, salt=i) for r in range(comm.size)).astype(np.float32)
        comm.allreduce(x)
        np.testing.assert_array_equal(x, want, err_msg=f"call {i}: {n} float32")
        if i % 10 == 9:
            comm.barrier()
        if i % 25 == 24:
            y = np.full(3, comm.rank, np.int64)
            comm.broadcast(y, root=comm.size - 1)
            assert np.all(y == comm.size - 1)


def test_refused_arrays_raise_everywhere_and_the_communicator_goes_on():
    """A strided or read-only array is refused with the ConfigError users see, on every rank, before
    any rank is met, both before and after the node engine exists; the next call runs normally."""
    comm = Communicator(WORLD, config=hpr.config.current().comm)
    for _ in range(2):  # first: no engine yet (the full path); then the engine's own buffer request
        with pytest.raises(hpr.ConfigError, match="contiguous"):
            comm.allreduce(np.zeros((4, 4))[:, 1])
        ro = np.ones(4)
        ro.flags.writeable = False
        with pytest.raises(hpr.ConfigError, match="writable"):
            comm.allreduce(ro)
        x = np.full((2, 3), comm.rank + 1.0)
        comm.allreduce(x, "max")
        assert np.all(x == comm.size)
    comm.free()


def test_a_late_rank_wakes_the_sleeping_ones():
    """The last rank arrives 5 ms late at every call: the others spin, then sleep on the engine's wake
    word, and its announcement must wake them at once. A lost wake-up costs each sleeper its whole
    sleep (up to 100 ms; ~55 ms a call measured with announce() never waking): 30 calls would then
    take ~1.6 s, against 0.15 s of lateness when the wake-ups work."""
    comm = world()
    late = comm.rank == comm.size - 1
    x = np.ones(2, np.float32)
    comm.allreduce(x)
    comm.barrier()
    t0 = time.perf_counter()
    for i in range(30):
        if late:
            time.sleep(0.005)
        x[:] = comm.rank + i
        comm.allreduce(x)
        assert np.all(x == comm.size * i + comm.size * (comm.size - 1) / 2)
    took = time.perf_counter() - t0
    assert took < 30 * 0.005 + 0.6, f"30 calls with a 5 ms late rank took {took:.2f} s: a sleeper was not woken"
