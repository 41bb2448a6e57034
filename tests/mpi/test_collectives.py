"""hpr's collectives under mpiexec, against MPI's own collectives and numpy, at any rank count.
Run by tests/run_all.py as ``mpiexec -n N python tests/mpi/run_ranks.py`` for N = 2, 3, 4, 8."""
import os
from contextlib import contextmanager

import ml_dtypes
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import Communicator
from hpr.kernels import _ref

pytestmark = pytest.mark.mpi(min_size=2)

WORLD = MPI.COMM_WORLD
DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64]
SIZES = [0, 1, 7, 1000, 65539, 300001]
MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


@contextmanager
def env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: str(v) for k, v in kv.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def algorithms():
    """Every algorithm this world can run; hierarchical by pretending nodes of 2 ranks."""
    out = [("auto", {}), ("recursive_doubling", {}), ("rabenseifner", {}), ("ring", {}), ("shm", {})]
    if WORLD.size >= 4 and WORLD.size % 2 == 0:
        out.append(("hierarchical", {"HPR_NODE_SIZE": 2}))
    return out


_comms = {}


def comm_for(algo):
    """One Communicator per algorithm, created collectively in the same order on every rank."""
    if algo not in _comms:
        extra = dict(algorithms())[algo]
        with env(HPR_ALLREDUCE=algo, HPR_SHM_SLOT_KB=64, **extra):
            _comms[algo] = Communicator(WORLD)
    return _comms[algo]


def local_input(n, dtype, rank, salt=0):
    rng = np.random.default_rng(1000 * rank + n + salt)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-50, 50, n).astype(dtype)
    return (rng.standard_normal(n) * 4).astype(dtype)


def reference(x, op):
    """MPI's own allreduce where MPI has the type; otherwise numpy over everyone's inputs."""
    if x.dtype in (np.float32, np.float64, np.int32, np.int64) and op != "avg":
        out = x.copy()
        WORLD.Allreduce(MPI.IN_PLACE, out, op=MPI_OPS[op])
        return out
    everyone = WORLD.allgather(x)
    out = _ref.reduce_many(everyone, op)
    if op == "avg":
        out = (out.astype(np.float64) / WORLD.size).astype(x.dtype)
    return out


def same_everywhere(x):
    """True when every rank holds the same bytes."""
    mine = x.view(np.uint8).tobytes()
    return all(b == mine for b in WORLD.allgather(mine))


@pytest.mark.parametrize("algo", [a for a, _ in algorithms()])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["sum", "max", "min", "avg"])
def test_allreduce_against_mpi(algo, dtype, op):
    if op == "avg" and np.dtype(dtype).kind == "i":
        pytest.skip("avg is for floating dtypes")
    comm = comm_for(algo)
    for n in SIZES:
        x = local_input(n, dtype, comm.rank)
        want = reference(x, op)
        got = comm.allreduce(x.copy(), op)
        assert same_everywhere(got), f"{algo}: ranks disagree (n={n})"
        if np.dtype(dtype).kind == "i" or op in ("max", "min"):
            np.testing.assert_array_equal(got, want, err_msg=f"{algo} n={n}")
        else:
            # summation order differs between algorithms: compare within rounding of the dtype
            eps = {2: 8e-3 if dtype == np.float16 else 6e-2, 4: 1e-5, 8: 1e-12}[np.dtype(dtype).itemsize]
            scale = WORLD.size * 16
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       rtol=eps * WORLD.size, atol=eps * scale, err_msg=f"{algo} n={n}")


def test_allreduce_multidimensional_and_returns_same_array():
    comm = hpr.init()
    x = np.full((3, 5, 7), comm.rank + 1.0)
    assert comm.allreduce(x) is x
    assert np.all(x == WORLD.size * (WORLD.size + 1) / 2)


def test_shared_buffers_reduce_in_place():
    comm = hpr.init()
    for n in (5000, 300007, 2_500_001):  # staged below 512 KiB, in place above
        g = comm.alloc(n, np.float32)
        g[:] = local_input(n, np.float32, comm.rank)
        want = reference(g.copy(), "sum")
        comm.allreduce(g)
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-4)
        assert same_everywhere(g)
        g[:] = local_input(n, np.float32, comm.rank, salt=1)
        want = reference(g.copy(), "avg")
        sl = g[17:n - 3]  # a slice at the same place on every rank
        comm.allreduce(sl, "avg")
        np.testing.assert_allclose(sl, want[17:n - 3], rtol=1e-5, atol=1e-5)


def test_shared_buffer_mismatched_slices_raise_everywhere():
    comm = hpr.init()
    if comm.algorithm_for(1 << 20) != "shm":
        pytest.skip("only the shared-memory path can see the slices")
    g = comm.alloc(300000, np.float32)
    sl = g[:200000] if comm.rank == 0 else g[8:200008]
    with pytest.raises(hpr.CommMismatch, match="different parts"):
        comm.allreduce(sl)


def test_reduce_scatter_blocks_like_array_split():
    comm = hpr.init()
    for rows, dtype, op in [(10, np.float64, "sum"), (7, np.float32, "avg"), (1001, np.int64, "max"),
                            (3, np.float32, "sum")]:
        x = local_input(rows * 3, dtype, comm.rank).reshape(rows, 3)
        full = reference(x.reshape(-1).copy(), op).reshape(rows, 3)
        got = comm.reduce_scatter(x, op)
        want = np.array_split(full, WORLD.size, axis=0)[comm.rank]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_allgather_with_different_lengths():
    comm = hpr.init()
    x = np.arange(comm.rank * 2 + 1, dtype=np.float32).reshape(-1, 1) + 100 * comm.rank
    x = np.repeat(x, 3, axis=1)
    got = comm.allgather(x)
    want = np.concatenate(WORLD.allgather(x), axis=0)
    np.testing.assert_array_equal(got, want)
    empty = np.zeros((0, 4), np.int32) if comm.rank == 0 else np.full((2, 4), comm.rank, np.int32)
    np.testing.assert_array_equal(comm.allgather(empty), np.concatenate(WORLD.allgather(empty)))


def test_allgather_rejects_different_row_shapes():
    comm = hpr.init()
    x = np.zeros((2, 3 if comm.rank == 0 else 4), np.float32)
    with pytest.raises(hpr.CommMismatch, match="row shape"):
        comm.allgather(x)


@pytest.mark.parametrize("n", [1, 1000, 300001])
def test_broadcast_from_every_root(n):
    comm = hpr.init()
    for root in range(comm.size):
        x = local_input(n, np.float32, comm.rank)
        want = WORLD.bcast(x if comm.rank == root else None, root=root)
        comm.broadcast(x, root)
        np.testing.assert_array_equal(x, want)


def test_split_subcommunicators():
    comm = hpr.init()
    sub = comm.split(comm.rank % 2, key=-comm.rank)  # reversed order inside each half
    members = [r for r in range(comm.size) if r % 2 == comm.rank % 2]
    assert sub.size == len(members)
    assert sub.rank == sorted(members, reverse=True).index(comm.rank)
    x = np.array([float(comm.rank)] * 1000)
    sub.allreduce(x)
    assert np.all(x == sum(members))
    g = sub.alloc(70000, np.float64)
    g[:] = comm.rank
    sub.allreduce(g, "max")
    assert np.all(g == max(members))
    sub.free()


def test_iallreduce_overlaps_a_computation():
    comm = hpr.init()
    xs = [local_input(200003, np.float32, comm.rank, salt=s) for s in range(3)]
    wants = [reference(x.copy(), "sum") for x in xs]
    handles = [comm.iallreduce(x, "sum") for x in xs]
    a = np.random.default_rng(0).random((300, 300))
    for _ in range(5):
        a = np.tanh(a @ a / 300)  # computation while the reductions progress
    for h, x, w in zip(handles, xs, wants):
        assert h.wait() is x
        assert h.done()
        np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-4)
    g = comm.alloc(100000, np.float32)
    g[:] = comm.rank
    comm.iallreduce(g[:50000], "avg").wait()
    assert np.allclose(g[:50000], (comm.size - 1) / 2) and np.all(g[50000:] == comm.rank)


def test_point_to_point_ring_and_barrier():
    comm = hpr.init()
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    got = np.empty(10, np.int64)
    comm.sendrecv(np.full(10, comm.rank, np.int64), right, got, left)
    assert np.all(got == left)
    if comm.rank == 0:
        comm.send(np.arange(5.0), 1, tag=3)
    elif comm.rank == 1:
        assert np.array_equal(comm.recv(np.empty(5), 0, tag=3), np.arange(5.0))
    comm.barrier()


def test_check_catches_length_mismatch_on_every_rank():
    with env(HPR_CHECK=1):
        comm = Communicator(WORLD)
    x = np.zeros(10 if comm.rank == 0 else 11, np.float32)
    with pytest.raises(hpr.CommMismatch, match="count=10") as e:
        comm.allreduce(x)
    assert "rank 0" in str(e.value) and "HPR_CHECK" in str(e.value)
    y = np.ones(4, np.float32)  # the communicator is still usable afterwards
    comm.allreduce(y)
    assert np.all(y == comm.size)
    comm.free()


def test_bad_arguments_raise_config_errors():
    comm = hpr.init()
    with pytest.raises(hpr.ConfigError, match="contiguous"):
        comm.allreduce(np.zeros((4, 4))[:, 1])
    with pytest.raises(hpr.ConfigError, match="not supported"):
        comm.allreduce(np.zeros(4, np.complex128))
    with pytest.raises(hpr.ConfigError, match="numpy array"):
        comm.allreduce([1.0, 2.0])
    with pytest.raises(hpr.ConfigError, match="outside"):
        comm.broadcast(np.zeros(3), root=comm.size)
