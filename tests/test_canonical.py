"""Tensor-parallel shardings and their inverse (hpr.parallel.canonical._unshard): cutting a whole tensor
into tp parts and joining the parts gives the whole tensor back, for every shard kind."""
import numpy as np
import pytest

from hpr.parallel import TensorParallel
from hpr.parallel.canonical import _unshard


class FakeGroup:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("kind,shape", [("rows", (8, 5)), ("columns", (5, 8)), ("columns", (8,)),
                                        ("qkv_columns", (5, 24)), ("qkv_columns", (24,))])
def test_shard_then_unshard_is_identity(size, kind, shape):
    full = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    parts = [getattr(TensorParallel(FakeGroup(r, size)), kind)(full) for r in range(size)]
    assert sum(p.size for p in parts) == full.size
    np.testing.assert_array_equal(_unshard(kind, parts), full)


def test_qkv_columns_keep_heads_together():
    """Part r of [q | k | v] is [q_r | k_r | v_r]: the columns of rank r's heads in each third."""
    c = 8
    full = np.concatenate([np.full((2, c), 1.0), np.full((2, c), 2.0), np.full((2, c), 3.0)], axis=1)
    full += np.tile(np.arange(c), 3)[None] / 100
    part = TensorParallel(FakeGroup(1, 2)).qkv_columns(full)
    np.testing.assert_array_equal(part[0], [1.04, 1.05, 1.06, 1.07, 2.04, 2.05, 2.06, 2.07, 3.04, 3.05, 3.06, 3.07])
