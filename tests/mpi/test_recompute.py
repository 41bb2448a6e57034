"""Activation recomputation under MPI: at every layout of the world with dp, tp or pp of 2 (and the
mixed ones at 4 and 8 ranks), each --recompute mode's losses, gradient norms and parameters after a
few steps are bit-identical to keeping every activation (float32 and float64), and the memory model
(hpr.model.memory.stage_buffers) names exactly the workspace a tensor-parallel stage allocates.
Wired as hpr.train.run wires a job. Run by tests/run_all.py under mpiexec -n 2 (and more)."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.model.memory import stage_buffers
from hpr.nn import RECOMPUTE
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import DataParallel, Pipeline, ProcessGrid, TensorParallel, valid_layouts
from hpr.train import train_step

pytestmark = pytest.mark.mpi(min_size=2)

N = MPI.COMM_WORLD.size
STEPS, BATCH, M = 3, 4 * N, 2
TOKENS = np.random.default_rng(0).integers(0, 256, 20000).astype(np.uint8)


def config(dtype):
    return GPTConfig.preset("tiny", n_layers=4, n_heads=4, d_model=32, dtype=dtype)


def run(world, cfg, dp, tp, pp, recompute):
    """(losses and gradient norms of STEPS steps, this rank's parameters) of one layout."""
    grid = ProcessGrid(world, dp=dp, tp=tp, pp=pp, n_heads=cfg.n_heads, d_model=cfg.d_model,
                       n_layers=cfg.n_layers, batch=BATCH, micro_batches=M)
    tpo = TensorParallel(grid.tp)

    def make_stage(params, grads):
        alloc = grid.dp.alloc if (dp > 1 and grads is None) else None
        return GPT(cfg, seed=5, tp=tpo, stage=(grid.pp_rank, pp), params=params, grads=grads, alloc=alloc,
                   recompute=recompute)

    pipe = Pipeline(grid.pp, make_stage, M, tied=grid.tied) if pp > 1 else None
    model = pipe.model if pipe else make_stage(None, None)
    skip = [(model.emb.wte.offset, model.emb.wte.offset + model.emb.wte.size)] if pp > 1 and model.last else []
    sync = DataParallel(grid.dp, model.layout, 0.001, "float32", 0, tp=tpo, pp=grid.pp, norm_skip=skip)
    opt = AdamW(model.layout, model.params, model.grads)
    sched = CosineSchedule(3e-3, STEPS, 1)
    data = Batches(TOKENS, cfg.context, seed=7)
    got = [train_step(model, opt, sync, sched, data, s, BATCH, M, 0.5, pipe=pipe) for s in range(1, STEPS + 1)]
    return [(loss, norm) for loss, _, norm in got], model.params.copy()


def _layouts():
    c = config("float64")
    return [lay for lay in valid_layouts(N, c.n_heads, c.d_model, c.n_layers, BATCH, M) if max(lay) > 1]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lay", _layouts(), ids=lambda v: "dp{}-tp{}-pp{}".format(*v))
def test_recompute_bit_identical_under_mpi(lay, dtype):
    world = hpr.init()
    ref, ref_params = run(world, config(dtype), *lay, "none")
    for mode in RECOMPUTE[1:]:
        got, params = run(world, config(dtype), *lay, mode)
        assert got == ref, mode
        assert np.array_equal(params, ref_params), mode


def test_memory_model_matches_tensor_parallel_workspace():
    """With tp = the world, a stage's workspace after a step is what stage_buffers says, per mode."""
    world = hpr.init()
    cfg = config("float32")
    if cfg.n_heads % N:
        pytest.skip(f"{N} ranks do not divide the heads")
    tpo = TensorParallel(world)
    b, t = 3, cfg.context
    r = np.random.default_rng(1)
    x = r.integers(0, 256, (b, t)).astype(np.int32)
    for mode in RECOMPUTE:
        m = GPT(cfg, seed=0, tp=tpo, recompute=mode)
        m.forward(x, x)
        m.backward()
        assert {k: a.shape for k, a in m.ws.buffers().items()} == stage_buffers(cfg, b, t, N, 0, 1, mode), mode
