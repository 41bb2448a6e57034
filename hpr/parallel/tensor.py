"""Tensor parallelism: the operators and the shardings that split the GPT's matrices over a tp group.

The two conjugate pairs (Megatron's mappings), stated once:

    f: forward identity,  backward allreduce   -- where a replicated activation enters column-parallel
                                                  layers (each rank's dx is a partial sum)
    g: forward allreduce, backward identity    -- where row-parallel layers' partial outputs leave

Sharding of the whole tensors (each rank keeps part r of tp; the whole tensor is drawn at init, so
every layout starts from the same numbers):
    qkv weight (C, 3C), bias (3C):   column-parallel by heads: [q_r | k_r | v_r], C/tp columns each
    attention proj (C, C):           row-parallel (its input is the local heads' output); bias replicated
    MLP fc (C, 4C), bias (4C):       column-parallel
    MLP proj (4C, C):                row-parallel; bias replicated
    wte (V, C):                      vocab-parallel rows (the embedding and the tied output head)
LayerNorms and wpe are replicated: their inputs and gradients are the same on every tp rank.
The layers in hpr.nn take a TensorParallel object and never import comm themselves.

Usage: ``tp = TensorParallel(grid.tp); model = GPT(config, seed, tp=tp)``"""
import numpy as np


class TensorParallel:
    """The f and g operators over one tp Communicator (anything with .rank, .size, .allreduce)."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.rank, comm.size
        self.bytes_moved = 0  # allreduce payload this rank sent through f and g (for the benchmark)

    def _allreduce(self, x, op="sum"):
        if self.size > 1:
            self.comm.allreduce(x, op=op)
            self.bytes_moved += x.nbytes
        return x

    # f: identity forward, allreduce backward
    def f_forward(self, x):
        return x

    def f_backward(self, dx):
        return self._allreduce(dx)

    # g: allreduce forward, identity backward
    def g_forward(self, y):
        return self._allreduce(y)

    def g_backward(self, dy):
        return dy

    # reductions of the vocab-parallel cross-entropy
    def allreduce_max(self, x):
        return self._allreduce(x, "max")

    def allreduce_sum(self, x):
        return self._allreduce(x)

    # -- shardings: whole tensor -> this rank's part ----------------------------------------------
    def columns(self, full):
        """Split the last axis into tp parts; keep part r."""
        w = full.shape[-1] // self.size
        return full[..., self.rank * w:(self.rank + 1) * w]

    def rows(self, full):
        """Split the first axis into tp parts; keep part r."""
        w = full.shape[0] // self.size
        return full[self.rank * w:(self.rank + 1) * w]

    def qkv_columns(self, full):
        """[q | k | v] along the last axis, each split by heads: [q_r | k_r | v_r]."""
        c = full.shape[-1] // 3
        w = c // self.size
        r = self.rank
        return np.concatenate([full[..., j * c + r * w:j * c + (r + 1) * w] for j in range(3)], axis=-1)

    def vocab_range(self, vocab_size):
        """[lo, hi) of the token ids whose embedding rows this rank holds."""
        w = vocab_size // self.size
        return self.rank * w, (self.rank + 1) * w
