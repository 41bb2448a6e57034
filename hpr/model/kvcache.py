"""Generation with a key/value cache: the cache itself, the sampler (temperature, top-k, top-p, seed)
and the token loop over a batch of prompts. A prompt is run once (prefill, the same fused kernels as
training); then each new token costs one position through the blocks, its attention reading the
cached keys and values of the positions before it (hpr.nn's CausalSelfAttention.forward_cached):
O(T) per token instead of the O(T^2) of running the whole window again.

Past the model's context the cache cannot slide (positions are absolute, so every cached key would
change): a row whose sequence outgrows the context is run again over its last `context` tokens at
each step, exactly what GPT.logits_last on that window gives. So the tokens are the same as full
recomputation's at every length; only their cost differs.

Under tensor parallelism each rank caches its own heads (H/tp); the sampled ids are broadcast from tp
rank 0 so every rank feeds the same token. Owns decoding; not text (hpr.generate) or the math of a
block (hpr.nn). Dimensions: B rows (prompts), H heads on this rank, D head size, V vocabulary.

Usage: ``new_ids = generate(model, [ids], 50, Sampler(temperature=0.8, top_k=40, seed=0))``"""
import numpy as np

from ..errors import ConfigError


class KVCache:
    """Per block this rank holds: keys k[i] and values v[i], (B, H, capacity, D), zero-filled (masked
    slots must hold finite numbers). pos[b]: the cached positions of row b = where its next goes."""

    def __init__(self, n_blocks, batch, heads, capacity, head_dim, dtype, xp=np):
        if batch < 1 or capacity < 1:
            raise ConfigError(f"a key/value cache needs batch >= 1 and capacity >= 1, got {batch}, {capacity}")
        shape = (batch, heads, capacity, head_dim)
        self.k = [xp.zeros(shape, dtype) for _ in range(n_blocks)]
        self.v = [xp.zeros(shape, dtype) for _ in range(n_blocks)]
        self.pos = np.zeros(batch, np.int64)
        self.batch, self.capacity = batch, capacity

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self.k + self.v)


class Sampler:
    """Next ids from logits (B, V), row by row: temperature 0 is greedy (argmax); otherwise the logits
    are divided by the temperature, cut to the top_k largest, then to the smallest set whose
    probability reaches top_p, and one id is drawn per row from numpy's default_rng(seed) (one stream:
    the rows of a batch draw in turn, so a sampled row depends on the batch it is in; greedy does not)."""

    def __init__(self, temperature=1.0, top_k=None, top_p=None, seed=0):
        if not (temperature >= 0) or (top_k is not None and top_k < 1) or (
                top_p is not None and not 0 < top_p <= 1):
            raise ConfigError(f"sampling wants temperature >= 0, top_k >= 1 (or None) and 0 < top_p <= 1 (or "
                              f"None); got temperature={temperature}, top_k={top_k}, top_p={top_p}")
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits):
        z = np.asarray(logits, dtype=np.float64)  # (B, V)
        if self.temperature == 0:
            return np.argmax(z, axis=1)
        return np.array([self._draw(row) for row in z], dtype=np.int64)

    def _draw(self, z):
        v = z.shape[0]
        z = z / self.temperature
        if self.top_k is not None and self.top_k < v:
            kth = np.partition(z, v - self.top_k)[v - self.top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        p /= p.sum()
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-p, kind="stable")
            before = np.cumsum(p[order]) - p[order]  # mass of the likelier tokens: keep while < top_p
            p[order[before >= self.top_p]] = 0
            p /= p.sum()
        return int(self.rng.choice(v, p=p))


def _agree(model, ids):
    """Every tensor-parallel rank takes tp rank 0's ids (int64 array, in place)."""
    if model.tp is not None:
        model.tp.comm.broadcast(ids, root=0)
    return ids


def generate(model, prompts, max_new, sampler, eos_id=None, on_tokens=None):
    """New ids for each of B prompts (lists of ids, each at least one): up to max_new per row; a row
    ends after eos_id (kept) or when on_tokens(ids (B,), live (B,) bool) -> (B,) bool says so (stop
    strings; called on every rank with the same arguments). Returns B lists of ints. Collective over
    the model's tensor-parallel group."""
    if max_new < 0:
        raise ConfigError(f"max_new must be >= 0, got {max_new}")
    if not prompts or any(len(p) < 1 for p in prompts):
        raise ConfigError("generation needs at least one prompt, each of at least one token")
    ctx = model.config.context
    seqs = [[int(t) for t in p] for p in prompts]
    out = [[] for _ in seqs]
    if max_new == 0:
        return out
    cache = model.new_cache(len(seqs), min(ctx, max(map(len, seqs)) + max_new))
    logits = model.prefill([s[-ctx:] for s in seqs], cache)  # (B, V)
    live = np.ones(len(seqs), bool)
    for step in range(max_new):
        ids = _agree(model, sampler(logits).astype(np.int64))  # (B,)
        for b in np.flatnonzero(live):
            out[b].append(int(ids[b]))
            seqs[b].append(int(ids[b]))
        if eos_id is not None:
            live &= ids != eos_id
        if on_tokens is not None:
            live &= ~_agree(model, np.asarray(on_tokens(ids, live.copy()), np.int64)).astype(bool)
        if step == max_new - 1 or not live.any():
            break
        logits = _next_logits(model, cache, seqs, ids, live)
    return out


def _next_logits(model, cache, seqs, ids, live):
    """Logits (B, V) after feeding ids: one cached step for the live rows inside the context; rows past
    it run again over their last `context` tokens; ended rows rewrite a slot nobody reads."""
    if live.all() and cache.pos.max() < cache.capacity:  # the common step: every row cached and running
        logits = model.decode_step(ids, cache)
        cache.pos += 1
        return logits
    cached = live & (cache.pos < cache.capacity)
    full = live & ~cached
    logits = None
    if cached.any():
        at = np.where(cached, cache.pos, np.minimum(cache.pos, cache.capacity - 1))
        logits = model.decode_step(ids, cache, at)
        cache.pos[cached] += 1
    if full.any():
        ctx = model.config.context
        rows = np.flatnonzero(full)
        windows = np.array([seqs[b][-ctx:] for b in rows], np.int32)  # (rows, ctx)
        recomputed = model.logits_last(windows)
        if logits is None:
            logits = np.zeros((len(seqs), recomputed.shape[1]), recomputed.dtype)
        logits[rows] = recomputed
    return logits
