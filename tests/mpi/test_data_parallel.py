"""Data parallelism under mpiexec, at any rank count: every layout's training equals the single-process
run of the same global batch (float64 to 1e-10, float32 to 1e-5), with replicated or ZeRO-1 optimizer
state (ZeRO-1, 2 or 3), any bucket size, gradient accumulation, and half-precision communication (looser); parameters
stay bit-identical on every rank. Run by tests/run_all.py under mpiexec -n 2, 3, 4, 8."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import DataParallel, check_same_params, paged_zeros, param_checksum
from hpr.parallel.zero import ParamGather
from hpr.train import train_step

pytestmark = pytest.mark.mpi(min_size=2)

STEPS = 4
TOKENS = np.random.default_rng(0).integers(0, 256, 20000).astype(np.uint8)  # same on every rank


def world():
    return hpr.init()


_SELF = []


def _self():
    """A one-rank hpr Communicator over COMM_SELF (the single-process reference), made once."""
    if not _SELF:
        from hpr.comm import Communicator

        _SELF.append(Communicator(MPI.COMM_SELF))
    return _SELF[0]


def losses(comm, dtype, batch, zero=0, bucket_mb=1.0, accum=1, comm_dtype="float32", steps=STEPS):
    cfg = GPTConfig.preset("tiny", dtype=dtype)
    alloc = paged_zeros if zero >= 2 else (comm.alloc if comm.size > 1 else None)
    model = GPT(cfg, seed=5, alloc=alloc, params_alloc=paged_zeros if zero == 3 else None)
    sync = DataParallel(comm, model.layout, bucket_mb, comm_dtype, zero, units=model.param_units())
    sync.attach([model])
    p, g, lo, hi, segments = sync.optimizer_buffers(model.params, model.grads)
    opt = AdamW(model.layout, p, g, lo=lo, hi=hi, segments=segments)
    sched = CosineSchedule(3e-3, steps, 1)
    data = Batches(TOKENS, cfg.context, seed=7)
    out = [train_step(model, opt, sync, sched, data, s, batch, accum, clip=1.0)[0] for s in range(1, steps + 1)]
    return np.array(out), sync.whole_params(model.params).copy()


@pytest.fixture(scope="module")
def reference():
    """Single-process runs, computed on every rank (the same bits everywhere)."""
    comm = world()
    batch = 2 * comm.size
    return {dt: losses(_self(), dt, batch) for dt in ("float64", "float32")} | {
        "acc": losses(_self(), "float64", 4 * comm.size)}


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
@pytest.mark.parametrize("bucket_mb", [0.001, 0.05, 8.0])
def test_dp_equals_single_process_float64(reference, zero, bucket_mb):
    comm = world()
    got, params = losses(comm, "float64", 2 * comm.size, zero, bucket_mb)
    want, want_params = reference["float64"]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(params, want_params, rtol=1e-9, atol=1e-12)
    check_same_params(comm, params)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_dp_equals_single_process_float32(reference, zero):
    comm = world()
    got, _ = losses(comm, "float32", 2 * comm.size, zero, 0.01)
    np.testing.assert_allclose(got, reference["float32"][0], rtol=1e-5)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_accumulation_equals_one_big_step(reference, zero):
    comm = world()
    got, _ = losses(comm, "float64", 4 * comm.size, zero, 0.01, accum=2)
    np.testing.assert_allclose(got, reference["acc"][0], rtol=1e-10)


@pytest.mark.parametrize("comm_dtype", ["bfloat16", "float16"])
def test_half_precision_communication(reference, comm_dtype):
    """Rounded gradients: the curve follows float32's closely, not exactly; params still identical."""
    comm = world()
    got, params = losses(comm, "float32", 2 * comm.size, 0, 0.01, comm_dtype=comm_dtype)
    np.testing.assert_allclose(got, reference["float32"][0], rtol=2e-3)
    check_same_params(comm, params)


def test_buckets_are_a_static_plan():
    comm = world()
    model = GPT(GPTConfig.preset("tiny"), seed=1, alloc=comm.alloc)
    sync = DataParallel(comm, model.layout, bucket_mb=0.01)
    plan = sync.plan()
    assert plan[0][0] == 0 and plan[-1][1] == model.params.size
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    everyone = comm.mpi.allgather(plan)
    assert all(p == plan for p in everyone)


def test_zero1_shards_the_optimizer_state():
    comm = world()
    model = GPT(GPTConfig.preset("tiny"), seed=1, alloc=comm.alloc)
    sync = DataParallel(comm, model.layout, zero=1)
    lo, hi = sync.opt_range()
    opt = AdamW(model.layout, model.params, model.grads, lo=lo, hi=hi)
    n = model.params.size
    assert abs(opt.m.size - n / comm.size) <= 1
    sizes = comm.mpi.allgather(opt.m.size)
    assert sum(sizes) == n


def test_checksum_mismatch_is_an_error_on_every_rank():
    comm = world()
    p = np.arange(100, dtype=np.float32)
    check_same_params(comm, p)
    if comm.rank == comm.size - 1:
        p[3] += 1
    with pytest.raises(hpr.ConfigError, match="parameters differ between ranks"):
        check_same_params(comm, p)
    assert param_checksum(np.arange(100, dtype=np.float32)) == param_checksum(np.arange(100, dtype=np.float32))


@pytest.mark.parametrize("zero", [2, 3])
def test_zero23_shards_gradients_optimizer_and_parameters(zero):
    """ZeRO-2/3 keep 1/dp of the gradients and the moments (and, ZeRO-3, of the parameters) per rank,
    the shards together are the whole buffer, and the paged full buffers hold nothing between steps."""
    comm = world()
    model = GPT(GPTConfig.preset("tiny"), seed=1, alloc=paged_zeros,
                params_alloc=paged_zeros if zero == 3 else None)
    full = model.params.copy()
    sync = DataParallel(comm, model.layout, bucket_mb=0.01, zero=zero, units=model.param_units())
    p, g, lo, hi, seg = sync.optimizer_buffers(model.params, model.grads)
    n = model.params.size
    sizes = comm.mpi.allgather(p.size)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= len(sync.shards.plan.chunks)
    assert g.size == p.size and (lo, hi) == (0, p.size) and sum(b - a for a, b, _ in seg) == p.size
    np.testing.assert_array_equal(sync.whole_params(model.params), full)
    if zero == 3:  # the model's own views are released until a unit is gathered
        assert not model.params.any()
        sync.attach([model])
        model.gather.need("h0")
        h0 = [u for u in model.param_units() if u[0] == "h0"][0]
        np.testing.assert_array_equal(model.params[h0[1]:h0[2]], full[h0[1]:h0[2]])
        model.gather.drop("h0")
        model.gather.invalidate()
        assert not model.params.any()


def test_bad_zero_settings_are_refused_on_every_rank():
    comm = world()
    model = GPT(GPTConfig.preset("tiny"), seed=1)
    for kw, words in [(dict(zero=4), "--zero 4 is not supported"),
                      (dict(zero=2, comm_dtype="bfloat16"), "--grad-comm-dtype float32"),
                      (dict(zero=3), "parameter units")]:
        msg = None
        try:
            DataParallel(comm, model.layout, **kw)
        except hpr.ConfigError as e:
            msg = str(e)
        everyone = comm.mpi.allgather(msg)
        assert all(m is not None and words in m for m in everyone), everyone


def test_zero3_trace_shows_parameter_gathers_on_their_own_track(tmp_path_factory):
    """With hpr.trace on, a ZeRO-3 step's block gathers are spans on the "param gather" track (one per
    unit gathered, the blocks twice: forward and backward, but the last ParamGather.DEPTH, kept between), the chunks' reduce-scatters on "grad bucket
    k" tracks, and the main thread's waits on "compute"."""
    import json

    from hpr import trace

    comm = world()
    path = comm.mpi.bcast(str(tmp_path_factory.mktemp("trace") / "zero3.json") if comm.rank == 0 else None)
    cfg = GPTConfig.preset("tiny", n_layers=3)
    model = GPT(cfg, seed=5, alloc=paged_zeros, params_alloc=paged_zeros)
    sync = DataParallel(comm, model.layout, 0.01, "float32", 3, units=model.param_units())
    sync.attach([model])
    p, g, lo, hi, seg = sync.optimizer_buffers(model.params, model.grads)
    opt = AdamW(model.layout, p, g, lo=lo, hi=hi, segments=seg)
    data = Batches(TOKENS, cfg.context, seed=7)
    trace.start(path)
    train_step(model, opt, sync, CosineSchedule(3e-3, 2, 1), data, 1, 2 * comm.size)
    trace.finish(comm)
    if comm.rank != 0:
        return
    ev = json.load(open(path))["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    on = lambda track: [e["name"] for e in ev if e["ph"] == "X" and names[(e["pid"], e["tid"])] == track]  # noqa: E731
    gathers = on("param gather")
    for r in range(comm.size):
        mine = [e["name"] for e in ev if e["ph"] == "X" and e["pid"] == r
                and names[(r, e["tid"])] == "param gather"]
        kept = cfg.n_layers - ParamGather.DEPTH  # the last DEPTH blocks stay gathered into backward
        for b in range(cfg.n_layers):  # forward and backward (a span per chunk), the kept ones once
            assert mine.count(f"gather h{b}") >= (2 if b < kept else 1), mine
        assert "gather embedding" in mine and "gather head" in mine
    assert gathers and any(t.startswith("grad bucket") for t in names.values())
    assert "reduce_scatter" in [e["name"] for e in ev if e["ph"] == "X" and e["pid"] == 0
                                and names[(0, e["tid"])].startswith("grad bucket")]
