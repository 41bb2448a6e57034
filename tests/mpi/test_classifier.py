"""The LSTM classifier data-parallel, stepped by the trainer's train_step: the same losses and held-out
accuracy at any rank count as on one rank with the same global batch (float64 to 1e-10, float32 to 1e-5)."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.classify import SplitWindows, evaluate
from hpr.comm import Communicator
from hpr.data import LabeledWindows
from hpr.model.classifier import LSTMClassifier
from hpr.optim import AdamW
from hpr.parallel import DataParallel, check_same_params
from hpr.train import train_step

pytestmark = pytest.mark.mpi(min_size=2)


def dataset():
    rng = np.random.default_rng(0)
    files = []
    for split in ("train", "val"):
        for label in (0, 1):
            for _ in range(3):  # label 1 files lean to high bytes: something to learn
                lo = 128 * label
                files.append((split, label, bytes(rng.integers(lo // 2, lo // 2 + 128, 300).astype(np.uint8))))
    return LabeledWindows(files, window=24)


def run(comm, dtype, steps=4, batch=None):
    data = dataset()
    batch = batch or 4 * hpr.world().size
    m = LSTMClassifier(embed=8, hidden=6, dtype=dtype, seed=3, alloc=comm.alloc if comm.size > 1 else None)
    sync = DataParallel(comm, m.layout, bucket_mb=0.001)
    opt = AdamW(m.layout, m.params, m.grads, eps=1e-7, weight_decay=0.0)
    train = SplitWindows(data, "train", seed=1)
    losses = []
    for s in range(1, steps + 1):  # each loss: the mean over every rank's windows
        losses.append(train_step(m, opt, sync, lambda step: 3e-3, train, s, batch, clip=1.0)[0])
    xv, yv = data.fixed_eval("val", 64, seed=2)
    acc, conf = evaluate(m, xv, yv, comm)
    return np.array(losses), acc, conf, m.params.copy()


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_same_curve_at_any_rank_count(dtype, rtol):
    world = hpr.init()
    ref = run(Communicator(MPI.COMM_SELF), dtype)
    got = run(world, dtype)
    np.testing.assert_allclose(got[0], ref[0], rtol=rtol)
    assert got[1] == ref[1] and np.array_equal(got[2], ref[2])
    np.testing.assert_allclose(got[3], ref[3], rtol=rtol * 100, atol=rtol)
    check_same_params(world, got[3])
