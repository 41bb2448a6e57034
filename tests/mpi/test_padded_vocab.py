"""A padded vocabulary split over tensor-parallel ranks trains the single-process model: a tiny GPT whose
300-token vocabulary is padded to a multiple of 64 x tp (384 rows at tp 2, 512 at tp 4, where the last
rank holds padding only) takes the same first steps at tp = 2 or 4 (data parallel over the rest of the
world) as on one rank with the same padded vocabulary: losses and gradient norms in float64 to 1e-10,
the parameters too, and the padded rows of wte stay as they were drawn (no gradient reaches them, and
AdamW's decoupled weight decay is all that moves them, alike everywhere). Wired as hpr.train.Run.build
wires a job (tests/mpi/test_layouts.py does the same for every layout with the byte vocabulary)."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.data import Batches
from hpr.model import GPT, GPTConfig, vocab_multiple
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import DataParallel, ProcessGrid, TensorParallel, check_same_params
from hpr.train import train_step

pytestmark = pytest.mark.mpi(min_size=2)

N = MPI.COMM_WORLD.size
V, STEPS, BATCH, SEED = 300, 3, 8, 5
TOKENS = np.random.default_rng(0).integers(0, V, 20000).astype(np.uint16)  # the same on every rank
TPS = [tp for tp in (2, 4) if N % tp == 0 and BATCH % (N // tp) == 0]


def config(tp):
    return GPTConfig.preset("tiny", n_layers=2, n_heads=4, d_model=32, dtype="float64", vocab_size=V,
                            vocab_multiple=vocab_multiple(V, tp))


def run(world, cfg, tp):
    """(losses and gradient norms of STEPS steps, the model) on world with tp tensor-parallel ranks."""
    grid = ProcessGrid(world, tp=tp, n_heads=cfg.n_heads, d_model=cfg.d_model, n_layers=cfg.n_layers, batch=BATCH)
    tpo = TensorParallel(grid.tp)
    model = GPT(cfg, seed=SEED, tp=tpo)
    sync = DataParallel(grid.dp, model.layout, 0.001, "float32", 0, tp=tpo)
    lo, hi = sync.opt_range()
    opt = AdamW(model.layout, model.params, model.grads, lo=lo, hi=hi)
    sched = CosineSchedule(3e-3, STEPS, 1)
    data = Batches(TOKENS, cfg.context, seed=7)
    out = [train_step(model, opt, sync, sched, data, s, BATCH, 1, 0.5)[::2] for s in range(1, STEPS + 1)]
    check_same_params(grid.dp, model.params)
    return np.array(out), model


@pytest.mark.skipif(not TPS, reason=f"no tp in (2, 4) divides {N} ranks")
@pytest.mark.parametrize("tp", TPS)
def test_padded_vocabulary_over_tp_equals_one_rank(tp):
    world = hpr.init()
    cfg = config(tp)
    assert cfg.padded_vocab > V and cfg.padded_vocab % (64 * tp) == 0
    got, model = run(world, cfg, tp)
    from hpr.comm import Communicator

    want, alone = run(Communicator(MPI.COMM_SELF), cfg, 1)
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-10, err_msg="losses")
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-10, err_msg="gradient norms")
    lo, hi = model.emb.lo, model.emb.hi
    assert (lo, hi) == (model.tp.rank * cfg.padded_vocab // tp, (model.tp.rank + 1) * cfg.padded_vocab // tp)
    for p in model.layout.entries:
        whole = next(q for q in alone.layout.entries if q.name == p.name).data
        part = p.shard(whole) if p.sharded else whole
        err = np.linalg.norm(p.data - part) / np.linalg.norm(part)
        assert err <= 1e-10, f"{p.name}: relative error {err:.2e}"
    # the padded rows this rank holds: only weight decay moved them, as on one rank; no gradient
    pad = slice(max(V, lo) - lo, hi - lo)
    if V < hi:
        assert not np.any(model.emb.wte.grad[pad])
        np.testing.assert_array_equal(model.emb.wte.data[pad], alone.emb.wte.data[max(V, lo):hi])
