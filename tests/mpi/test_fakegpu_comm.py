"""hpr's collectives and point-to-point on device arrays, under mpiexec, with the numpy-backed stand-in
for CuPy (tests/fakegpu), against MPI's own collectives on host copies: staged through host memory
(MPI not CUDA-aware) and passed straight to MPI (CommConfig.cuda_aware=True, as HPR_CUDA_AWARE=1 sets it;
the stand-in's __cuda_array_interface__ points at host memory, so any MPI takes it). The CUDA kernels
themselves: tests/test_gpu.py on a GPU."""
import importlib
import os
import sys

import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import Communicator

pytestmark = pytest.mark.mpi(min_size=2)

WORLD = MPI.COMM_WORLD
FAKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fakegpu")
MODES = ["staged", "direct"]


@pytest.fixture(scope="module")
def cp():
    sys.path.insert(0, FAKE)
    try:
        route = importlib.import_module("route")
    finally:
        sys.path.remove(FAKE)
    with route.installed():
        import cupy

        yield cupy


_comms = {}


def config_for(mode, algo="auto"):
    """The run's settings with the algorithm and the CUDA-aware answer of this mode."""
    return hpr.config.current().comm.replace(allreduce=None if algo == "auto" else algo,
                                             cuda_aware=mode == "direct")


def comm_for(mode, algo="auto"):
    """One Communicator per (mode, algorithm), made collectively in the same order on every rank; the
    CUDA-aware answer comes from its config and is agreed at its first device call (here)."""
    key = (mode, algo)
    if key not in _comms:
        c = Communicator(WORLD, config=config_for(mode, algo))
        assert c.cuda_aware == (mode == "direct")
        _comms[key] = c
    return _comms[key]


def data(n, dtype, salt=0):
    return (np.random.default_rng(100 * WORLD.rank + n + salt).standard_normal(n) * 4).astype(dtype)


def mpi_allreduce(x, op):
    out = x.copy()
    WORLD.Allreduce(MPI.IN_PLACE, out, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "avg": MPI.SUM}[op])
    return out / WORLD.size if op == "avg" else out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algo", ["auto", "ring", "recursive_doubling", "rabenseifner"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("op", ["sum", "max", "avg"])
def test_allreduce_device(cp, mode, algo, dtype, op):
    comm = comm_for(mode, algo)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for n in (1, 7, 1000, 65539):
        x = data(n, dtype)
        d = cp.asarray(x)
        assert comm.allreduce(d, op) is d
        np.testing.assert_allclose(d.get(), mpi_allreduce(x, op), rtol=tol, atol=tol * WORLD.size * 16)
        assert isinstance(d, cp.ndarray)


@pytest.mark.parametrize("mode", MODES)
def test_iallreduce_device_buckets(cp, mode):
    """Several device buckets in flight at once, each landing back in its own array."""
    comm = comm_for(mode)
    xs = [data(n, np.float32, salt=k) for k, n in enumerate((5, 4096, 70001, 3))]
    ds = [cp.asarray(x) for x in xs]
    hs = [comm.iallreduce(d, op="avg") for d in ds]
    for h, d, x in zip(hs, ds, xs):
        assert h.wait() is d
        np.testing.assert_allclose(d.get(), mpi_allreduce(x, "avg"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_other_collectives_device(cp, mode):
    comm = comm_for(mode)
    p, r = WORLD.size, WORLD.rank
    x = data(6 * p + 1, np.float64).reshape(-1, 1) * np.ones((1, 3))
    everyone = WORLD.allgather(x)
    mine = comm.reduce_scatter(cp.asarray(x), op="sum")
    want = np.array_split(np.sum(everyone, axis=0), p)[r]
    assert isinstance(mine, cp.ndarray)
    np.testing.assert_allclose(mine.get(), want, rtol=1e-12, atol=1e-12)
    g = comm.allgather(cp.asarray(x[: r + 1]))
    np.testing.assert_array_equal(g.get(), np.concatenate([e[: i + 1] for i, e in enumerate(everyone)]))
    b = cp.asarray(data(1001, np.float32))
    comm.broadcast(b, root=p - 1)
    np.testing.assert_array_equal(b.get(), WORLD.bcast(data(1001, np.float32), root=p - 1))


@pytest.mark.parametrize("mode", MODES)
def test_point_to_point_device(cp, mode):
    """A ring of sendrecv, and isend / irecv, with device buffers on both sides."""
    comm = comm_for(mode)
    p, r = WORLD.size, WORLD.rank
    right, left = (r + 1) % p, (r - 1) % p
    out = cp.zeros(513, np.float32)
    comm.sendrecv(cp.asarray(np.full(513, r, np.float32)), right, out, left)
    assert (out.get() == left).all()
    buf = cp.zeros((4, 5), np.float64)
    rq = comm.irecv(buf, left, tag=7)
    sq = comm.isend(cp.asarray(np.arange(20.0).reshape(4, 5) + r), right, tag=7)
    sq.wait()
    rq.wait()
    np.testing.assert_array_equal(buf.get(), np.arange(20.0).reshape(4, 5) + left)


@pytest.mark.parametrize("mode", MODES)
def test_integer_device_allreduce(cp, mode):
    """The GPU reduce kernels are float-only: integer device arrays stage even with a CUDA-aware MPI."""
    comm = comm_for(mode)
    x = np.arange(1000, dtype=np.int64) * (WORLD.rank + 1)
    d = cp.asarray(x)
    comm.allreduce(d, "max")
    np.testing.assert_array_equal(d.get(), np.arange(1000) * WORLD.size)


@pytest.mark.skipif(WORLD.size & (WORLD.size - 1), reason="a sharded state needs 2**g ranks")
@pytest.mark.parametrize("mode", MODES)
def test_sharded_state_on_devices(cp, mode):
    """DistributedStateVector with its slices on the (stand-in) GPUs, against the same circuit on the CPU:
    global-qubit exchanges through device buffers, staged or CUDA-aware."""
    from hpr.quantum import DistributedStateVector

    comm = Communicator(WORLD, config=config_for(mode))
    n = WORLD.size.bit_length() - 1 + 4
    dev = hpr.device.select("gpu", comm)
    a = DistributedStateVector(n, comm, np.complex128)
    b = DistributedStateVector(n, comm, np.complex128, device=dev)
    b.chunk_elems = a.chunk_elems = 4  # several messages per exchange
    assert isinstance(b.local, cp.ndarray)
    top = n - 1
    for name, qs, p in [("h", [top], None), ("h", [0], None), ("cx", [top, 1], None), ("rz", [top], 0.4),
                        ("ry", [top - 1], 0.9), ("cz", [top, top - 1], None), ("u3", [top], (0.3, 0.2, 0.1)),
                        ("swap", [0, top], None), ("crx", [2, top], 0.5), ("rzz", [top, 0], 0.7)]:
        a.apply(name, qs, p)
        b.apply(name, qs, p)
    np.testing.assert_allclose(b.expval_z(), a.expval_z(), atol=1e-12)
    assert b.norm() == pytest.approx(a.norm(), rel=1e-12)
    ga, gb = a.gather(0), b.gather(0)
    if WORLD.rank == 0:
        np.testing.assert_allclose(gb, ga, atol=1e-12)


def test_non_contiguous_device_array_is_refused(cp):
    comm = comm_for("staged")
    x = cp.zeros((4, 6), np.float32)[:, ::2]
    with pytest.raises(Exception, match="C-contiguous"):
        comm.allreduce(x)
