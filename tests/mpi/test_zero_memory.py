"""What a ZeRO-2/3 rank keeps, against the memory planner, and evaluation in the step's micro-batches.

- kept_state_bytes (the trainer's "memory per rank" banner) at ZeRO 0-3 equals the planner's
  parameters, gradients and optimizer state less the in-flight terms it adds for the paged buffers
  (hpr.plan.zero_inflight): byte-exact but for numpy.array_split's rounding of each chunk (at most one
  element per chunk and array).
- evaluate with micro (the trainer's: the step's micro-batch rows) equals the whole-batch evaluate (the
  loss before this change) to float rounding: data-parallel over the world, and through a pipeline.
Wired as hpr.train.run wires a job. Run by tests/run_all.py under mpiexec -n 2 (and more)."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr import plan
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.model.memory import block_param_elements
from hpr.optim import AdamW
from hpr.parallel import DataParallel, Pipeline, ProcessGrid, TensorParallel, paged_zeros
from hpr.train import evaluate
from hpr.train.loop import kept_state_bytes

pytestmark = pytest.mark.mpi(min_size=2)

N = MPI.COMM_WORLD.size
TOKENS = np.random.default_rng(0).integers(0, 256, 40000).astype(np.uint8)
BUCKET_MB = 0.01


def config(dtype="float32"):
    return GPTConfig.preset("tiny", n_layers=4, n_heads=4, d_model=32, dtype=dtype)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_kept_bytes_match_planner(zero):
    world = hpr.init()
    cfg = config()
    grid = ProcessGrid(world, dp=N, tp=1, pp=1, n_heads=cfg.n_heads, d_model=cfg.d_model, n_layers=cfg.n_layers,
                       batch=4 * N, micro_batches=1)
    alloc = paged_zeros if zero >= 2 else None
    model = GPT(cfg, seed=5, tp=TensorParallel(grid.tp), alloc=alloc,
                params_alloc=paged_zeros if zero == 3 else None)
    sync = DataParallel(grid.dp, model.layout, BUCKET_MB, "float32", zero, units=model.param_units())
    sync.attach([model])
    p, g, lo, hi, segments = sync.optimizer_buffers(model.params, model.grads)
    opt = AdamW(model.layout, p, g, lo=lo, hi=hi, segments=segments)
    kept = kept_state_bytes(model, opt, sync)
    job = plan.Job(cfg, 4 * N, bucket_mb=BUCKET_MB)
    roles = plan.estimate(job, N, 1, 1, zero).roles
    item = model.params.itemsize
    block = block_param_elements(cfg) * item
    # (gathered parameters, gradients in flight): the planner's terms beyond what the rank keeps
    inflight = plan.zero_inflight(cfg, 1, 0, 1, block, item, model.params.nbytes) if zero >= 2 else (0, 0)
    want = {"parameters": roles["parameters"] - (inflight[0] if zero == 3 else 0),
            "gradients": roles["gradients"] - inflight[1],
            "optimizer": roles["optimizer"]}
    chunks = len(sync.shards.plan.chunks) if sync.shards is not None else 1
    for k in want:  # array_split rounds each chunk's piece: at most one element per chunk and array
        assert abs(kept[k] - want[k]) <= 2 * chunks * item, (zero, k, kept, want)
    if zero >= 2:  # what the rank keeps is what ZeRO promises: 4 + 16 / N (ZeRO-2), 16 / N bytes (ZeRO-3)
        n = model.params.size
        total = sum(kept.values())
        assert abs(total - ((4 * n if zero == 2 else 0) + 16 * n / N)) <= 8 * chunks * item, (zero, total, n)


def _eval_model(world, cfg, dp, pp, m):
    grid = ProcessGrid(world, dp=dp, tp=1, pp=pp, n_heads=cfg.n_heads, d_model=cfg.d_model, n_layers=cfg.n_layers,
                       batch=4 * N, micro_batches=m)
    tpo = TensorParallel(grid.tp)

    def make_stage(params, grads):
        return GPT(cfg, seed=5, tp=tpo, stage=(grid.pp_rank, pp), params=params, grads=grads)

    pipe = Pipeline(grid.pp, make_stage, m, tied=grid.tied) if pp > 1 else None
    return (pipe.model if pipe else make_stage(None, None)), pipe, grid


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 1e-6)])
@pytest.mark.parametrize("lay", [(N, 1), (N // 2, 2)], ids=["dp", "dp-pp2"])
def test_evaluate_micro_equals_whole_batch(lay, dtype, tol):
    world = hpr.init()
    dp, pp = lay
    if dp * pp != N:
        pytest.skip(f"the pp 2 layout needs an even world, this one has {N} ranks")
    m = 2
    batch = 4 * N
    model, pipe, grid = _eval_model(world, config(dtype), dp, pp, m)
    val = Batches(TOKENS, config().context, seed=8)
    whole = evaluate(model, val, 3, batch, grid.dp, pipe)
    micro = evaluate(model, val, 3, batch, grid.dp, pipe, micro=batch // (dp * m))
    assert np.isfinite(whole) and abs(micro - whole) <= tol * abs(whole), (whole, micro)
