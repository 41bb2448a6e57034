"""ZeRO-2/3's shard arithmetic and paged memory, in one process: the shard plan tiles the buffer the way
comm.reduce_scatter splits each chunk, its shard-space ranges and optimizer segments are the flat
ones cut to the rank's pieces, and release() zeroes a range and gives its pages back to the OS (the
resident set shrinks), which is what makes ZeRO-2's full gradients and ZeRO-3's full parameters
transient."""
import numpy as np
import pytest

from hpr.errors import ConfigError
from hpr.model import GPT, GPTConfig
from hpr.parallel import paged_zeros
from hpr.parallel.zero import PAGE, ShardPlan, release


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def test_release_zeroes_and_returns_the_pages():
    n = 16 * 2 ** 20 // 8  # 16 MiB of float64
    a = paged_zeros(n, np.float64)
    before = rss_bytes()
    a[:] = 1.0  # touched: resident
    touched = rss_bytes()
    assert touched - before > 0.9 * a.nbytes
    lo, hi = 1001, n - 777  # ends inside pages: zeroed in place, the whole pages between given back
    release(a, lo, hi)
    after = rss_bytes()
    assert touched - after > 0.9 * a.nbytes * (hi - lo) / n
    assert (a[:lo] == 1).all() and (a[hi:] == 1).all() and not a[lo:hi].any()
    a[lo:hi] += 2.0  # fresh pages read as zeros and take writes
    assert (a[lo:hi] == 2).all()


def test_release_of_an_ordinary_array_just_zeroes():
    a = np.ones(5000)
    release(a, 10, 4000)
    assert not a[10:4000].any() and a[:10].all() and a[4000:].all()


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shard_plan_tiles_each_chunk_like_reduce_scatter(size):
    units = [("head", 0, 10), ("h1", 10, 47), ("h0", 47, 84), ("embedding", 84, 200)]
    plans = [ShardPlan(units, 200, size, r, chunk_elems=16) for r in range(size)]
    chunks = plans[0].chunks
    assert chunks[0] == (0, 10) and all(b - a <= 16 for a, b in chunks)
    assert [c for u in ("head", "h1", "h0", "embedding") for c in plans[0].units[u]] == list(range(len(chunks)))
    flat = np.arange(200.0)
    seen = np.zeros(200, int)
    for r, p in enumerate(plans):
        for (lo, hi), (a, b, s) in zip(chunks, p.pieces):
            want = np.array_split(np.arange(lo, hi), size)[r]
            assert (a, b) == ((want[0], want[-1] + 1) if want.size else (a, a))
            seen[a:b] += 1
        shard = p.take(flat)
        assert shard.size == p.size
        for a, b, s in p.pieces:
            assert (shard[s:s + b - a] == flat[a:b]).all()
        # a flat range's shard ranges hold exactly this rank's elements of it
        got = np.concatenate([shard[x:y] for x, y in p.shard_ranges([(5, 120)])] or [np.zeros(0)])
        assert sorted(got) == sorted(v for v in shard if 5 <= v < 120)
    assert (seen == 1).all()


def test_shard_segments_keep_the_decay_flags():
    m = GPT(GPTConfig.preset("tiny", n_layers=2, n_heads=2, d_model=16))
    lay = m.layout
    plan = ShardPlan(m.param_units(), lay.size, 3, 1, chunk_elems=100)
    decay = np.zeros(lay.size, bool)
    for a, b, d in lay.segments():
        decay[a:b] = d
    mine = plan.take(decay)
    got = np.zeros(plan.size, bool)
    for a, b, d in plan.segments(lay):
        got[a:b] = d
    assert (got == mine).all()
    assert sum(b - a for a, b, _ in plan.segments(lay)) == plan.size


def test_param_units_tile_the_buffer_in_backward_order():
    m = GPT(GPTConfig.preset("tiny", n_layers=3, n_heads=2, d_model=16))
    units = m.param_units()
    assert [u for u, _, _ in units] == ["head", "h2", "h1", "h0", "embedding", "embedding"]  # wpe, wte
    assert units[0][1] == 0 and units[-1][2] == m.layout.size
    assert all(a[2] == b[1] for a, b in zip(units, units[1:]))
    wte = m.layout["wte"]
    assert units[-1][1:] == (wte.offset, wte.offset + wte.size)
    plan = ShardPlan(units, m.layout.size, 2, 0, 10 ** 6)
    assert plan.unit_range["embedding"] == (units[-2][1], m.layout.size)
    assert [plan.chunks[c] for c in plan.units["embedding"]] == [u[1:] for u in units[-2:]]
    with pytest.raises(ConfigError, match="tile"):
        ShardPlan(units[1:], m.layout.size, 2, 0, 10)
