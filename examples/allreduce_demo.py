"""A first look at hpr's collectives: ``mpiexec -n 4 python examples/allreduce_demo.py``.

Every rank contributes a vector; hpr averages it across ranks (as data-parallel training averages
gradients), once on a plain numpy array and once on a buffer from comm.alloc(), which the node's ranks
share so the reduction reads the neighbours' memory in place; then an iallreduce overlaps a computation."""
import numpy as np

import hpr

comm = hpr.init()
n = 1 << 20

grad = np.full(n, float(comm.rank), np.float32)  # a plain array
comm.allreduce(grad, op="avg")

shared = comm.alloc(n, np.float32)  # memory shared within the node: hpr's gradient buffers live here
shared[:] = comm.rank
handle = comm.iallreduce(shared, op="avg")  # progresses in the background...
work = np.tanh(np.random.default_rng(comm.rank).random((256, 256)) @ np.ones((256, 256)))  # ...while we compute
handle.wait()

expect = (comm.size - 1) / 2
if comm.rank == 0:
    print(f"{comm.size} ranks on {comm.layout.nodes} node(s); algorithm for 4 MiB: {comm.algorithm_for(4 << 20)}")
    print(f"mean of ranks = {grad[0]:.3f} (plain array), {shared[0]:.3f} (shared buffer); expected {expect:.3f}")
assert np.allclose(grad, expect) and np.allclose(shared, expect)
