"""Which tokens each global sample index reads: the SplitMix64 hash, window starts, and Batches (input
and target windows of one token array). Owns no corpus reading and no tokenisation (corpus.py, shards.py),
and not which rank trains on which sample indices (the trainer hands each rank its global indices).
Usage: ``x, y = Batches(tokens, context=256, seed=0).get(first=0, count=32)``

Dimensions: B samples in a batch, T = context (tokens each sample predicts).

The token array may be a numpy array (uint8 bytes, a memory-mapped uint16/uint32 shard, ...) or any
object with ``size``, ``dtype`` and ``windows(starts, length)`` (hpr.data.SplitTokens: a split stored in
several shard files, read in place); either way only the gathered windows are read.
"""
import numpy as np

from ..errors import DataError

# SplitMix64 constants (Steele, Lea & Flood 2014; Vigna's splitmix64.c): the Weyl increment is
# 2^64 / golden ratio, the two multipliers are Stafford's "Mix13" variant.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x):
    """SplitMix64 as a vectorised hash: for each x, the output of the SplitMix64 generator whose state
    is x, i.e. mix(x + golden) with mix the Stafford Mix13 finaliser. All arithmetic is mod 2^64.
    x: any integer array (cast to uint64); returns uint64 of the same shape."""
    shape = np.shape(x)
    # 1-D so that numpy wraps on overflow silently (uint64 arrays wrap; 0-d scalars warn or raise)
    z = np.array(x, dtype=np.uint64, copy=True).reshape(-1)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return z.reshape(shape)


def window_starts(seed, indices, n_tokens, context):
    """Where each sample's window (context + 1 tokens) starts in a corpus of n_tokens tokens.

    Sample i starts at s_i = u_i mod (n_tokens - context), with u_i the i-th output of a SplitMix64
    stream whose state starts at splitmix64(seed): u_i = splitmix64(key + i * golden). s_i depends only
    on (seed, i, n_tokens, context), so any data-parallel layout that splits the global indices among
    ranks sees the same samples. The modulo's bias is below (n_tokens - context) / 2^64, negligible.
    Seeds are taken mod 2^64. Returns int64 of indices' shape."""
    idx = np.asarray(indices)
    context = _count(context, "context", minimum=1)
    n_windows = int(n_tokens) - context  # valid starts 0 .. n_tokens - context - 1
    if n_windows < 1:
        raise DataError(f"{n_tokens} tokens are fewer than one window of context + 1 = {context + 1}: "
                        "use a larger corpus or a smaller context")
    if idx.size == 0:
        return np.zeros(idx.shape, np.int64)
    if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise DataError(f"sample indices must be non-negative integers (got dtype {idx.dtype}, "
                        f"smallest {idx.min()})")
    key = splitmix64(np.array([int(seed) % (1 << 64)], np.uint64))  # (1,)
    with np.errstate(over="ignore"):
        state = key + idx.astype(np.uint64).reshape(-1) * _GOLDEN  # the stream's i-th state, mod 2^64
    return (splitmix64(state) % np.uint64(n_windows)).astype(np.int64).reshape(idx.shape)


class Batches:
    """Training samples over one token array: sample i is the window tokens[s_i : s_i + T + 1] with
    s_i = window_starts(seed, i, len(tokens), T); its input is the first T tokens, its target the last T."""

    def __init__(self, tokens, context, seed):
        if not hasattr(tokens, "windows"):
            tokens = np.asarray(tokens)  # a np.memmap stays a view of its file: nothing is read here
        if getattr(tokens, "ndim", 1) != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise DataError(f"tokens must be a 1-D integer array (got {tokens.ndim}-D {tokens.dtype})")
        self.context = _count(context, "context", minimum=1)
        if tokens.size < self.context + 1:
            raise DataError(f"{tokens.size} tokens are fewer than one window of context + 1 = "
                            f"{self.context + 1}: use a larger corpus or a smaller context")
        self.tokens, self.seed = tokens, _count(seed, "seed", minimum=None)
        if hasattr(tokens, "windows"):
            self._gather = tokens.windows
        else:
            # (n_tokens - T, T + 1) view: row s is the window starting at s, no copy
            view = np.lib.stride_tricks.sliding_window_view(tokens, self.context + 1)
            self._gather = lambda starts, length: view[starts]

    def get(self, first, count):
        """Samples first .. first + count - 1: (x, y), both int32 (count, T) and C-contiguous,
        y[b, t] = x[b, t + 1] for t < T - 1 (the next token), whatever the stored token dtype."""
        first, count = _count(first, "first"), _count(count, "count")
        starts = window_starts(self.seed, np.arange(first, first + count, dtype=np.int64),
                               self.tokens.size, self.context)  # (B,)
        w = self._gather(starts, self.context + 1)  # (B, T + 1), gathered copy
        return w[:, :-1].astype(np.int32, order="C"), w[:, 1:].astype(np.int32, order="C")  # (B, T) each


def _count(value, name, minimum=0):
    """value as a Python int, or DataError if it is not an integer or is below minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer (got {value!r})")
    if minimum is not None and value < minimum:
        raise DataError(f"{name} must be at least {minimum} (got {value})")
    return int(value)
