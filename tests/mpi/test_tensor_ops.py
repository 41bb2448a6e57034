"""The tensor-parallel conjugate pairs, both directions of each, against MPI's own reduction:
f is identity forward and allreduce backward, g is allreduce forward and identity backward."""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.parallel import TensorParallel

pytestmark = pytest.mark.mpi(min_size=2)


def test_f_and_g_are_conjugate_pairs():
    comm = hpr.init()
    tp = TensorParallel(comm)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((5, 7))
    want = np.empty_like(x)
    MPI.COMM_WORLD.Allreduce(x, want, op=MPI.SUM)
    a = x.copy()
    assert tp.f_forward(a) is a and np.array_equal(a, x)  # f forward: identity
    np.testing.assert_allclose(tp.f_backward(a), want, rtol=1e-14)  # f backward: allreduce
    b = x.copy()
    np.testing.assert_allclose(tp.g_forward(b), want, rtol=1e-14)  # g forward: allreduce
    c = x.copy()
    assert tp.g_backward(c) is c and np.array_equal(c, x)  # g backward: identity
    assert tp.bytes_moved == 2 * x.nbytes


def test_vocab_ranges_cover_the_vocabulary():
    comm = hpr.init()
    size = comm.size
    v = 256 if 256 % size == 0 else 256 - 256 % size
    tp = TensorParallel(comm)
    ranges = comm.mpi.allgather(tp.vocab_range(v))
    assert ranges[0][0] == 0 and ranges[-1][1] == v
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
