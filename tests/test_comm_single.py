"""The Communicator on one rank (COMM_SELF) and the cost model's plan: no mpiexec needed."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import CostModel
from hpr.comm.cost import NodeLayout


def test_one_rank_collectives_are_identities():
    comm = hpr.init(MPI.COMM_SELF)
    x = np.arange(10, dtype=np.float32)
    assert comm.allreduce(x.copy(), "avg").tolist() == x.tolist()
    assert comm.reduce_scatter(x.reshape(5, 2)).tolist() == x.reshape(5, 2).tolist()
    assert comm.allgather(x).tolist() == x.tolist()
    assert comm.broadcast(x.copy()).tolist() == x.tolist()
    comm.barrier()


def test_cost_model_plan():
    m = CostModel()
    # between nodes: latency-bound recursive doubling for small, bandwidth-optimal ring for large
    assert m.choose(8, 8) == "recursive_doubling"
    assert m.choose(256 << 20, 6) == "ring"  # not a power of two: no folding
    assert m.choose(256 << 20, 8) in ("rabenseifner", "ring")  # same bandwidth term at a power of two
    th = m.pt2pt_thresholds(6)
    assert th[0] == (1, "recursive_doubling") and th[-1][1] == "ring"
    assert [n for n, _ in th] == sorted(n for n, _ in th)
    # one node: the shared-memory engine at every size
    one = NodeLayout(1, 4)
    assert {m.choose(n, 4, one) for n in (8, 1 << 16, 1 << 28)} == {"shm"}
    # several equal nodes: hierarchical for large messages
    assert m.choose(64 << 20, 16, NodeLayout(4, 4)) == "hierarchical"
    # predicted times grow with the message
    for algo in ("recursive_doubling", "rabenseifner", "ring"):
        assert m.time(algo, 1 << 20, 8) < m.time(algo, 1 << 24, 8)


def test_world_before_init_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(hpr, "_world", None)
    with pytest.raises(hpr.HprError, match="hpr.init"):
        hpr.world()
