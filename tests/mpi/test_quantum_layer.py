"""The QuantumLayer's circuits spread over ranks: split over the tensor-parallel group (each rank a
slice of the tokens, results gathered) and over the data-parallel group (each rank its own tokens),
the losses equal the single-rank model's."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import Communicator
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import DataParallel, TensorParallel
from hpr.train import train_step

pytestmark = pytest.mark.mpi(min_size=2)
TOKENS = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8)


def losses(dp_comm, tp):
    cfg = GPTConfig.preset("tiny", dtype="float64", n_qubits=3, q_depth=2)
    m = GPT(cfg, seed=2, tp=tp)
    sync = DataParallel(dp_comm, m.layout, 0.01, tp=tp)
    opt = AdamW(m.layout, m.params, m.grads)
    sched, data = CosineSchedule(3e-3, 3, 1), Batches(TOKENS, cfg.context, 1)
    return [train_step(m, opt, sync, sched, data, s, 4 * hpr.world().size, 1, 0.5)[0] for s in (1, 2, 3)]


def test_quantum_layer_split_over_tp_and_dp():
    world = hpr.init()
    ref = losses(Communicator(MPI.COMM_SELF), None)
    np.testing.assert_allclose(losses(world, None), ref, rtol=1e-10)  # circuits follow the dp ranks' tokens
    if 4 % world.size == 0:  # tp must divide the 4 heads
        np.testing.assert_allclose(losses(Communicator(MPI.COMM_SELF), TensorParallel(world)), ref, rtol=1e-10)
