"""hpr's collectives under mpiexec, against MPI's own collectives and numpy, at any rank count, on every
kind of communicator mpi4py's own tests use: the world, a split of it (ranks reversed; two interleaved
halves when the world divides evenly), a duplicate of the world, and COMM_SELF. Each test compares with MPI's collective over the same group (``comm.mpi``). An algorithm is
picked by the CommConfig a Communicator is made with, never by the environment.
Run by tests/run_all.py as ``mpiexec -n N python tests/mpi/run_ranks.py`` for N = 2, 3, 4, 8."""
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
OPS = ["sum", "max", "min", "avg"]
KINDS = ["world", "split", "dup", "self"]
P2P = ["recursive_doubling", "rabenseifner", "ring"]


def base():
    """The settings of this run (HPR_* read once by hpr.config), which every test communicator starts from."""
    return hpr.config.current().comm


def halves():
    """Whether the split test communicator is two interleaved halves (else the whole world, reversed)."""
    return WORLD.size >= 4 and WORLD.size % 2 == 0


def kind_size(kind):
    """Ranks in the communicator of a kind: the same number on every rank, so every rank collects the
    same tests."""
    return {"world": WORLD.size, "dup": WORLD.size, "self": 1,
            "split": WORLD.size // 2 if halves() else WORLD.size}[kind]


# Whether MPI puts every rank in one shared-memory domain (not so under MPIR_CVAR_NOLOCAL=1, where
# every rank is its own node to MPICH and traffic goes over TCP): collective at import, on every rank.
_shared = WORLD.Split_type(MPI.COMM_TYPE_SHARED)
ONE_MACHINE = _shared.Get_size() == WORLD.size
_shared.Free()


def algorithms(kind):
    """Every algorithm the communicator of this kind can run, with the settings that make it possible:
    {name: CommConfig}. When MPI sees every rank on one machine, a node is the whole communicator unless
    node_size (HPR_NODE_SIZE) pretends smaller ones; hierarchical pretends nodes of 2 ranks if unset."""
    n, ns = kind_size(kind), base().node_size
    out = {"auto": None, **{a: a for a in P2P}}
    if ONE_MACHINE and (ns == 0 or ns >= n):
        out["shm"] = "shm"
    hier = ns or 2
    configs = {name: base().replace(allreduce=a, shm_slot_kb=64) for name, a in out.items()}
    if hier > 1 and n > hier and n % hier == 0:
        configs["hierarchical"] = base().replace(allreduce="hierarchical", shm_slot_kb=64, node_size=hier)
    return configs


_comms = {}


def comm_for(kind, algo=None, check=False):
    """One Communicator per (kind, algorithm, check), made collectively in the same order on every rank
    (pytest runs the tests in the same order everywhere). algo None: the run's own settings, as
    hpr.init() makes the world."""
    key = (kind, algo, check)
    if key not in _comms:
        cfg = (base() if algo is None else algorithms(kind)[algo]).replace(check=check)
        if kind == "world":
            c = Communicator(WORLD, config=cfg)
        elif kind == "dup":
            c = Communicator(WORLD.Dup(), config=cfg)
        elif kind == "self":
            c = Communicator(MPI.COMM_SELF, config=cfg)
        else:  # MPI's split of the world: ranks reversed, interleaved halves when the world divides evenly
            c = Communicator(WORLD.Split(WORLD.rank % 2 if halves() else 0, key=-WORLD.rank), config=cfg)
        _comms[key] = c
    return _comms[key]


HALF = (np.float16, ml_dtypes.bfloat16)


def local_input(n, dtype, rank, salt=0, positive=False):
    """positive: values in [1, ~20), so an average is never zero and bit patterns order like values."""
    rng = np.random.default_rng(1000 * rank + n + salt)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-50, 50, n).astype(dtype)
    if positive:
        return (np.abs(rng.standard_normal(n)) * 4 + 1).astype(dtype)
    return (rng.standard_normal(n) * 4).astype(dtype)


def check_half_avg(comm, algo, x, got):
    """avg of float16 / bfloat16 against the ordered reference (everyone's x in rank order, accumulated
    in float32, scaled by 1/p and rounded once: _ref.reduce_many). The node engine (shm) computes
    exactly that: bit for bit. The point-to-point algorithms round each partial sum to the half type:
    at most p - 1 roundings of half an ulp of a partial sum (<= the whole sum, the inputs being
    positive), so after the scale at most p ulps of the average, plus the reference's own half ulp:
    p + 1 ulps, counted as the distance of the (positive, so monotonic) bit patterns."""
    want = _ref.reduce_many(comm.mpi.allgather(x), "sum", scale=1.0 / comm.size)
    assert x.size == 0 or want.astype(np.float32).min() >= 1, "the average must not be zero"
    bits, ref = got.view(np.uint16).astype(np.int64), want.view(np.uint16).astype(np.int64)
    if algo in ("shm", "none"):  # none: one rank, a copy
        np.testing.assert_array_equal(bits, ref, err_msg=f"{algo} n={x.size}: not the ordered reference")
    elif x.size:
        ulps = int(np.abs(bits - ref).max())
        assert ulps <= comm.size + 1, f"{algo} n={x.size}: {ulps} ulps from the ordered reference"


def reference(comm, x, op):
    """MPI's own allreduce over comm's group where MPI has the type; otherwise numpy over everyone's
    inputs."""
    if x.dtype in (np.float32, np.float64, np.int32, np.int64) and op != "avg":
        out = x.copy()
        comm.mpi.Allreduce(MPI.IN_PLACE, out, op=MPI_OPS[op])
        return out
    everyone = comm.mpi.allgather(x)
    out = _ref.reduce_many(everyone, op)
    if op == "avg":
        out = (out.astype(np.float64) / comm.size).astype(x.dtype)
    return out


def same_everywhere(comm, x):
    """True when every rank of comm holds the same bytes."""
    mine = x.view(np.uint8).tobytes()
    return all(b == mine for b in comm.mpi.allgather(mine))


def allreduce_cases():
    """(kind, algorithm, dtype, op): on the world every algorithm with every dtype and op; on the other
    kinds every algorithm with each dtype and each op at least once (what differs between kinds is the
    group, which the algorithms see through rank and size only; the dtypes and ops are the kernels')."""
    out = [("world", a, d, op) for a in algorithms("world") for d in DTYPES for op in OPS
           if not (op == "avg" and np.dtype(d).kind == "i")]
    some = list(zip(DTYPES, ["sum", "avg", "max", "avg", "min", "sum"]))
    return out + [(k, a, d, op) for k in KINDS[1:] for a in algorithms(k) for d, op in some]


@pytest.mark.parametrize("kind,algo,dtype,op", [
    pytest.param(*c, id=f"{c[0]}-{c[1]}-{np.dtype(c[2]).name}-{c[3]}") for c in allreduce_cases()])
def test_allreduce_against_mpi(kind, algo, dtype, op):
    comm = comm_for(kind, algo)
    half_avg = op == "avg" and dtype in HALF
    for n in SIZES:
        x = local_input(n, dtype, comm.rank, positive=half_avg)
        want = reference(comm, x, op)
        got = comm.allreduce(x.copy(), op)
        assert same_everywhere(comm, got), f"{algo}: ranks disagree (n={n})"
        if half_avg:
            check_half_avg(comm, comm.algorithm_for(x.nbytes), x, got)
        elif np.dtype(dtype).kind == "i" or op in ("max", "min"):
            np.testing.assert_array_equal(got, want, err_msg=f"{algo} n={n}")
        else:
            # summation order differs between algorithms: compare within rounding of the dtype
            eps = {2: 8e-3 if dtype == np.float16 else 6e-2, 4: 1e-5, 8: 1e-12}[np.dtype(dtype).itemsize]
            scale = comm.size * 16
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       rtol=eps * comm.size, atol=eps * scale, err_msg=f"{algo} n={n}")


_tiny_slot = {}


def tiny_slot_comm(kind):
    """A communicator of this kind on the node engine with 4 KiB slots (1024 float32 per round) and
    no one-barrier path: every message of more than a slot runs the pipelined rounds. None where the
    engine cannot run (one rank, no shared window, pretended nodes)."""
    if kind not in _tiny_slot:
        src = comm_for(kind)
        ok = kind_size(kind) > 1 and ONE_MACHINE and base().node_size in (0, kind_size(kind))
        _tiny_slot[kind] = Communicator(src.mpi, config=base().replace(
            allreduce="shm", shm_slot_kb=4, shm_small_kb=0)) if ok else None
    return _tiny_slot[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_staged_rounds_are_the_ordered_reduction(kind):
    """The staged engine's pipelined rounds (round k+1 staged into the other bank before the barrier
    that publishes round k): every element is the rank-order reduction, bit for bit, for messages of
    one round, of many rounds with a short last one, and below one round, run back to back with no
    barrier between calls (so a call's first round meets the previous call's last)."""
    comm = tiny_slot_comm(kind)
    if comm is None or comm.algorithm_for(1 << 20) != "shm":
        pytest.skip("needs the node engine over several ranks")
    for n, dtype, op in [(1024, np.float32, "sum"), (5 * 1024 + 37, np.float32, "sum"), (3, np.float32, "max"),
                         (40_003, np.float64, "avg"), (511, np.float64, "sum"), (2 * 1024, np.int32, "min"),
                         (7777, np.float16, "avg"), (100_000, np.float32, "avg")]:
        x = local_input(n, dtype, comm.rank, salt=3, positive=dtype == np.float16)
        scale = 1.0 / comm.size if op == "avg" else 1.0
        want = _ref.reduce_many(comm.mpi.allgather(x), "sum" if op == "avg" else op, scale=scale)
        got = comm.allreduce(x.copy(), op)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8),
                                      err_msg=f"n={n} {np.dtype(dtype).name} {op}: not the ordered reduction")


@pytest.mark.parametrize("kind", KINDS)
def test_allreduce_multidimensional_and_returns_same_array(kind):
    comm = comm_for(kind)
    x = np.full((3, 5, 7), comm.rank + 1.0)
    assert comm.allreduce(x) is x
    assert np.all(x == comm.size * (comm.size + 1) / 2)


@pytest.mark.parametrize("kind", KINDS)
def test_node_and_plan_properties(kind):
    """local_rank / local_size are this rank's place on its node (or the pretended node of
    node_size ranks), and algorithm_for follows cost_model's choice for this communicator."""
    comm = comm_for(kind)
    ns = comm.config.node_size
    node = comm.mpi.Split(comm.rank // ns, comm.rank) if ns else comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
    assert (comm.local_rank, comm.local_size) == (node.Get_rank(), node.Get_size())
    node.Free()
    for n in (8, 1 << 16, 1 << 24):
        if comm.size == 1:
            want = "none"
        elif comm.shared_memory_missing:  # no node window (MPIR_CVAR_NOLOCAL=1 with HPR_NODE_SIZE): p2p
            want = comm.config.allreduce or comm.cost_model.choose(n, comm.size, None)
        else:
            want = comm.config.allreduce or comm.cost_model.choose(n, comm.size, comm.layout)
        assert comm.algorithm_for(n) == want


@pytest.mark.parametrize("kind", KINDS)
def test_shared_buffers_reduce_in_place(kind):
    comm = comm_for(kind)
    for n in (5000, 300007, 2_500_001):  # staged below 512 KiB, in place above
        g = comm.alloc(n, np.float32)
        g[:] = local_input(n, np.float32, comm.rank)
        want = reference(comm, g.copy(), "sum")
        comm.allreduce(g)
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-4)
        assert same_everywhere(comm, g)
        g[:] = local_input(n, np.float32, comm.rank, salt=1)
        want = reference(comm, g.copy(), "avg")
        sl = g[17:n - 3]  # a slice at the same place on every rank
        comm.allreduce(sl, "avg")
        np.testing.assert_allclose(sl, want[17:n - 3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_buffer_mismatched_slices_raise_everywhere(kind):
    comm = comm_for(kind)
    if comm.algorithm_for(1 << 20) != "shm":
        pytest.skip("only the shared-memory path can see the slices")
    g = comm.alloc(300000, np.float32)
    sl = g[:200000] if comm.rank == 0 else g[8:200008]
    with pytest.raises(hpr.CommMismatch, match="different parts"):
        comm.allreduce(sl)


@pytest.mark.parametrize("kind", [k for k in KINDS if kind_size(k) > 1])
def test_shared_buffer_mismatched_dtype_or_op_raise_everywhere(kind):
    """The engine compares dtype and operation too: a float32 slice against the same bytes read as
    int32, or sum against max, is a CommMismatch on every rank, not a silent mix."""
    comm = comm_for(kind)
    if comm.algorithm_for(1 << 20) != "shm":
        pytest.skip("only the shared-memory path can see the slices")
    g = comm.alloc(300000, np.float32)
    with pytest.raises(hpr.CommMismatch, match="different parts"):
        comm.allreduce(g if comm.rank == 0 else g.view(np.int32))
    with pytest.raises(hpr.CommMismatch, match="different parts"):
        comm.allreduce(g, "sum" if comm.rank == 0 else "max")
    with pytest.raises(hpr.CommMismatch, match="different parts"):
        comm.allreduce(g, "sum" if comm.rank == 0 else "avg")
    g[:] = comm.rank + 1  # and the communicator still works (a mismatch leaves the ranks in step)
    comm.allreduce(g, "max")
    assert np.all(g == comm.size)


@pytest.mark.parametrize("kind", [k for k in KINDS if kind_size(k) > 1])
def test_alloc_of_different_sizes_or_dtypes_raises_everywhere(kind):
    comm = comm_for(kind)
    with pytest.raises(hpr.CommMismatch, match=r"alloc #\d+: ranks asked for different shared arrays"):
        comm.alloc(1000 + (comm.rank == 0), np.float32)
    with pytest.raises(hpr.CommMismatch, match="rank 0: 4000 bytes of float32"):
        comm.alloc(1000, np.float32 if comm.rank == 0 else np.int32)
    assert comm.alloc(1000, np.float64).shape == (1000,)


@pytest.mark.parametrize("kind", KINDS)
def test_reduce_scatter_blocks_like_array_split(kind):
    comm = comm_for(kind)
    for rows, dtype, op in [(10, np.float64, "sum"), (7, np.float32, "avg"), (1001, np.int64, "max"),
                            (3, np.float32, "sum")]:
        x = local_input(rows * 3, dtype, comm.rank).reshape(rows, 3)
        full = reference(comm, x.reshape(-1).copy(), op).reshape(rows, 3)
        got = comm.reduce_scatter(x, op)
        want = np.array_split(full, comm.size, axis=0)[comm.rank]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_allgather_with_different_lengths(kind):
    comm = comm_for(kind)
    x = np.arange(comm.rank * 2 + 1, dtype=np.float32).reshape(-1, 1) + 100 * comm.rank
    x = np.repeat(x, 3, axis=1)
    got = comm.allgather(x)
    want = np.concatenate(comm.mpi.allgather(x), axis=0)
    np.testing.assert_array_equal(got, want)
    empty = np.zeros((0, 4), np.int32) if comm.rank == 0 else np.full((2, 4), comm.rank, np.int32)
    np.testing.assert_array_equal(comm.allgather(empty), np.concatenate(comm.mpi.allgather(empty)))


@pytest.mark.parametrize("kind", [k for k in KINDS if kind_size(k) > 1])
def test_allgather_rejects_different_row_shapes(kind):
    comm = comm_for(kind)
    x = np.zeros((2, 3 if comm.rank == 0 else 4), np.float32)
    with pytest.raises(hpr.CommMismatch, match="row shape"):
        comm.allgather(x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 1000, 300001])
def test_broadcast_from_every_root(kind, n):
    comm = comm_for(kind)
    for root in range(comm.size):
        x = local_input(n, np.float32, comm.rank)
        want = comm.mpi.bcast(x if comm.rank == root else None, root=root)
        comm.broadcast(x, root)
        np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("kind", KINDS)
def test_split_subcommunicators(kind):
    comm = comm_for(kind)
    sub = comm.split(comm.rank % 2, key=-comm.rank)  # reversed order inside each half
    assert sub.config == comm.config  # a split runs with its parent's settings
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


@pytest.mark.parametrize("kind", KINDS)
def test_iallreduce_overlaps_a_computation(kind):
    comm = comm_for(kind)
    xs = [local_input(200003, np.float32, comm.rank, salt=s) for s in range(3)]
    wants = [reference(comm, x.copy(), "sum") for x in xs]
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


@pytest.mark.parametrize("kind", KINDS)
def test_ireduce_scatter_and_iallgather_in_the_background_equal_the_blocking_ones(kind):
    """ZeRO-2/3's background collectives, queued behind each other and an iallreduce on the progress
    thread: the same blocks as reduce_scatter, the same concatenation as allgather (uneven lengths,
    into a given output too)."""
    comm = comm_for(kind)
    xs = [local_input(n, np.float64, comm.rank, salt=n) for n in (7, 1001, 65539)]
    wants = [comm.reduce_scatter(x, "avg") for x in xs]
    y = local_input(1000, np.float32, comm.rank, salt=3)
    want_y = reference(comm, y.copy(), "sum")
    parts = [local_input(3 * comm.rank + k, np.float32, comm.rank, salt=k) for k in (1, 2)]
    want_g = [np.concatenate(comm.mpi.allgather(p)) for p in parts]
    out = np.full(want_g[1].size, -1, np.float32)
    hs = [comm.ireduce_scatter(x, "avg") for x in xs]
    hy = comm.iallreduce(y, "sum")
    hg = [comm.iallgather(parts[0]), comm.iallgather(parts[1], out=out)]
    for h, w in zip(hs, wants):
        np.testing.assert_array_equal(h.wait(), w)
    np.testing.assert_allclose(hy.wait(), want_y, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(hg[0].wait(), want_g[0])
    assert hg[1].wait() is out
    np.testing.assert_array_equal(out, want_g[1])
    with pytest.raises(hpr.ConfigError, match="1-D numpy"):
        comm.iallgather(np.zeros((2, 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_point_to_point_ring_and_barrier(kind):
    comm = comm_for(kind)
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    got = np.empty(10, np.int64)
    comm.sendrecv(np.full(10, comm.rank, np.int64), right, got, left)
    assert np.all(got == left)
    if comm.rank == 0 and comm.size > 1:
        comm.send(np.arange(5.0), 1, tag=3)
    elif comm.rank == 1:
        assert np.array_equal(comm.recv(np.empty(5), 0, tag=3), np.arange(5.0))
    comm.barrier()


@pytest.mark.parametrize("kind", [k for k in KINDS if kind_size(k) > 1])
def test_check_catches_length_mismatch_on_every_rank(kind):
    comm = comm_for(kind, check=True)
    x = np.zeros(10 if comm.rank == 0 else 11, np.float32)
    with pytest.raises(hpr.CommMismatch, match="count=10") as e:
        comm.allreduce(x)
    assert "rank 0" in str(e.value) and "HPR_CHECK" in str(e.value)
    y = np.ones(4, np.float32)  # the communicator is still usable afterwards
    comm.allreduce(y)
    assert np.all(y == comm.size)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments_raise_config_errors(kind):
    comm = comm_for(kind)
    with pytest.raises(hpr.ConfigError, match="contiguous"):
        comm.allreduce(np.zeros((4, 4))[:, 1])
    with pytest.raises(hpr.ConfigError, match="not supported"):
        comm.allreduce(np.zeros(4, np.complex128))
    with pytest.raises(hpr.ConfigError, match="numpy array"):
        comm.allreduce([1.0, 2.0])
    with pytest.raises(hpr.ConfigError, match="outside"):
        comm.broadcast(np.zeros(3), root=comm.size)
