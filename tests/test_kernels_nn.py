"""The fused layer kernels (hpr.kernels.nn) against their numpy twins (hpr.kernels._ref), on random and
odd shapes, in float32 and float64, with one and two threads, and at every instruction-set level this
CPU runs (baseline, avx2, avx512: each test runs once per level, hpr.cpu.set_isa)."""
import numpy as np
import pytest

import hpr
from hpr import cpu
from hpr.cpu import set_num_threads, num_threads
from hpr.kernels import _ref, nn

LEVELS = cpu.isa()[1]


@pytest.fixture(autouse=True, params=LEVELS)
def isa(request):
    """Every test here at every level the machine has; the widest is restored afterwards."""
    was = cpu.set_isa(request.param)
    yield request.param
    cpu.set_isa(was)

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 7), (64, 128), (130, 97), (513, 384)]


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = num_threads()
    set_num_threads(request.param)
    yield request.param
    set_num_threads(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm(dtype, shape, threads):
    rng = np.random.default_rng(1)
    n, c = shape
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    out, mean, rstd = np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    nn.layernorm_forward(x, w, b, out, mean, rstd)
    ro, rm, rr = _ref.layernorm_forward(x.astype(np.float64), w, b)
    np.testing.assert_allclose(out, ro, **tol(dtype))
    np.testing.assert_allclose(rstd, rr, **tol(dtype))
    dout = rng.standard_normal(shape).astype(dtype)
    dx0 = rng.standard_normal(shape).astype(dtype)  # backward adds into what is there
    dw0, db0 = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    dx, dw, db = dx0.copy(), dw0.copy(), db0.copy()
    nn.layernorm_backward(dout, x, w, mean, rstd, dx, dw, db)
    rdx, rdw, rdb = _ref.layernorm_backward(dout.astype(np.float64), x.astype(np.float64), w, rm, rr)
    t = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(dx, dx0 + rdx, **t)
    np.testing.assert_allclose(dw, dw0 + rdw, **t)
    np.testing.assert_allclose(db, db0 + rdb, **t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bh,t", [(1, 1), (3, 5), (8, 64), (5, 131)])
def test_softmax_causal(dtype, bh, t, threads):
    rng = np.random.default_rng(2)
    pre = (rng.standard_normal((bh, t, t)) * 4).astype(dtype)
    scale = 1 / np.sqrt(17)
    att = np.empty_like(pre)
    nn.softmax_causal_forward(pre, scale, att)
    ref = _ref.softmax_causal_forward(pre.astype(np.float64), scale)
    np.testing.assert_allclose(att, ref, **tol(dtype))
    assert np.all(att[:, np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] == 0)
    inplace = pre.copy()
    nn.softmax_causal_forward(inplace, scale, inplace)
    np.testing.assert_array_equal(inplace, att)
    datt = rng.standard_normal(pre.shape).astype(dtype)
    dpre = np.empty_like(pre)
    nn.softmax_causal_backward(datt, att, scale, dpre)
    np.testing.assert_allclose(dpre, _ref.softmax_causal_backward(datt.astype(np.float64), att.astype(np.float64), scale),
                               **tol(dtype))
    nn.softmax_causal_backward(datt, att, scale, datt)  # in place
    np.testing.assert_array_equal(datt, dpre)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu(dtype, shape, threads):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.flat[:3] = [0, 30, -30][: x.size] if x.size >= 3 else x.flat[:3]  # saturation is clean
    bias = rng.standard_normal(shape[1]).astype(dtype)
    pre = x.copy()
    out = np.empty_like(x)
    nn.gelu_forward(pre, out, bias)
    np.testing.assert_allclose(pre, x + bias, **tol(dtype))
    np.testing.assert_allclose(out, _ref.gelu_forward((x + bias).astype(np.float64)), **tol(dtype))
    dout = rng.standard_normal(shape).astype(dtype)
    dx = np.empty_like(x)
    nn.gelu_backward(dout, pre, dx)
    np.testing.assert_allclose(dx, _ref.gelu_backward(dout.astype(np.float64), pre.astype(np.float64)), **tol(dtype))
    nn.gelu_forward(x, out)  # no bias: x untouched
    np.testing.assert_allclose(out, _ref.gelu_forward(x.astype(np.float64)), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,v", [(1, 2), (5, 3), (257, 256), (64, 1000)])
def test_crossentropy(dtype, n, v, threads):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((n, v)) * 5).astype(dtype)
    targets = rng.integers(0, v, n).astype(np.int32)
    losses = np.empty(n, dtype)
    rl, rd = _ref.crossentropy(logits.astype(np.float64), targets, 1 / n)
    nn.crossentropy(logits, targets, losses)
    np.testing.assert_allclose(losses, rl, **tol(dtype))
    d = np.empty_like(logits)
    nn.crossentropy(logits, targets, losses, d, 1 / n)
    np.testing.assert_allclose(d, rd, **tol(dtype))
    np.testing.assert_allclose(losses, rl, **tol(dtype))
    nn.crossentropy(logits, targets, losses, logits, 1 / n)  # dlogits over logits
    np.testing.assert_array_equal(logits, d)


def test_crossentropy_bad_target():
    logits = np.zeros((2, 4), np.float32)
    with pytest.raises(hpr.ConfigError, match="outside the vocabulary"):
        nn.crossentropy(logits, np.array([1, 4], np.int32), np.empty(2, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding(dtype, threads):
    rng = np.random.default_rng(5)
    b, t, c, v, ctx = 3, 5, 7, 11, 9
    wte, wpe = rng.standard_normal((v, c)).astype(dtype), rng.standard_normal((ctx, c)).astype(dtype)
    tokens = rng.integers(0, v, (b, t)).astype(np.int32)
    tokens[0, :2] = 4  # a repeated token: its gradient rows add up
    out = np.empty((b, t, c), dtype)
    nn.embedding_forward(tokens, wte, wpe, out)
    np.testing.assert_array_equal(out, _ref.embedding_forward(tokens, wte, wpe))
    dout = rng.standard_normal((b, t, c)).astype(dtype)
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    nn.embedding_backward(dout, tokens, dwte, dwpe)
    rte, rpe = _ref.embedding_backward(dout.astype(np.float64), tokens, v)
    np.testing.assert_allclose(dwte, rte, **tol(dtype))
    np.testing.assert_allclose(dwpe[:t], rpe, **tol(dtype))
    assert not dwpe[t:].any()
    with pytest.raises(hpr.ConfigError, match="outside the vocabulary"):
        nn.embedding_forward(np.full((1, 2), v, np.int32), wte, wpe, np.empty((1, 2, c), dtype))
    with pytest.raises(hpr.ConfigError, match="longer than the model's context"):
        nn.embedding_forward(np.zeros((1, ctx + 1), np.int32), wte, wpe, np.empty((1, ctx + 1, c), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_backward_and_sumsq(dtype):
    rng = np.random.default_rng(6)
    g = rng.standard_normal((37, 19)).astype(dtype)
    db = np.ones(19, dtype)
    nn.bias_backward(g, db)
    np.testing.assert_allclose(db, 1 + g.astype(np.float64).sum(0), **tol(dtype))
    x = rng.standard_normal(100003).astype(dtype)
    np.testing.assert_allclose(nn.sumsq(x), (x.astype(np.float64) ** 2).sum(), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(700, 133), (2048, 32), (515, 384), (4099, 4096)])
def test_bias_backward_threads_bitwise(dtype, shape, threads):
    """Threads take whole columns, each summed over the rows in order: bit for bit one thread's sums
    (the last shape is above the kernel's threading threshold of 2**24 elements, the others run on one
    thread), and the numpy sum to rounding."""
    rng = np.random.default_rng(16)
    g = rng.standard_normal(shape).astype(dtype)
    db = rng.standard_normal(shape[1]).astype(dtype)
    want = db.copy()
    for row in g:  # the kernel's order: db + g[0] + g[1] + ...
        want += row
    nn.bias_backward(g, db)
    np.testing.assert_array_equal(db, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_against_twin(dtype, threads):
    rng = np.random.default_rng(7)
    n = 100_001
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = (rng.standard_normal(n) * 0.1).astype(dtype), (rng.random(n) * 0.1).astype(dtype)
    rp, rm, rv = _ref.adamw(p.astype(np.float64), g, m.astype(np.float64), v.astype(np.float64),
                            3e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5)
    nn.adamw(p, g, m, v, 3e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5)
    t = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(m, rm, **t)
    np.testing.assert_allclose(v, rv, **t)
    np.testing.assert_allclose(p, rp, **t)


def test_adamw_by_hand():
    """One step at t=1 written out: m = 0.1 g, v = 0.05 g^2, mhat = g, vhat = g^2."""
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.5, -4.0, 0.0])
    m, v = np.zeros(3), np.zeros(3)
    lr, wd, eps = 0.01, 0.1, 1e-8
    nn.adamw(p, g, m, v, lr, 0.9, 0.95, eps, wd, 1)
    expect = np.array([1.0 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps),
                       -2.0 * (1 - lr * wd) - lr * -4.0 / (4.0 + eps),
                       0.5 * (1 - lr * wd)])
    np.testing.assert_allclose(p, expect, rtol=1e-14)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-14)
    np.testing.assert_allclose(v, 0.05 * g * g, rtol=1e-14)


def test_rejects_wrong_dtypes_and_sizes():
    x = np.zeros((4, 8), np.float16)
    with pytest.raises(hpr.ConfigError, match="float32 or float64"):
        nn.gelu_forward(x, np.empty_like(x))
    with pytest.raises(hpr.ConfigError, match="mixed dtypes"):
        nn.gelu_forward(np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float64))
    with pytest.raises(ValueError, match="expected"):
        nn.layernorm_forward(np.zeros((4, 8), np.float32), np.ones(8, np.float32), np.zeros(7, np.float32),
                             np.empty((4, 8), np.float32), np.empty(4, np.float32), np.empty(4, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,t,h,d", [(1, 1, 1, 1), (2, 5, 2, 4), (3, 70, 4, 16), (2, 40, 3, 24), (1, 33, 1, 128),
                                     (2, 131, 2, 20), (1, 64, 2, 32), (1, 97, 1, 64), (1, 300, 1, 8)])
def test_attention(dtype, b, t, h, d, threads):
    """The flash-style causal attention (forward and backward) against its numpy twin: lengths that are and
    are not a multiple of the tiles (32 queries, 64 keys), head sizes that are and are not a multiple of
    the vector width, one and two threads."""
    rng = np.random.default_rng(10)
    c = h * d
    qkv = (rng.standard_normal((b * t, 3 * c)) * 2).astype(dtype)  # scores of a few units: a peaked softmax
    y, lse = np.full((b * t, c), np.nan, dtype), np.full(nn.attention_saved_shape(b, h, t), np.nan, dtype)
    assert lse.shape == (b, h, t)  # O(T): the probabilities are not kept
    nn.attention_forward(qkv, b, t, h, lse, y)
    ry, rlse, _ = _ref.attention_forward(qkv.astype(np.float64), b, t, h)
    t2 = dict(rtol=1e-4, atol=2e-5) if dtype == np.float32 else tol(dtype)  # float32: sums over T keys
    np.testing.assert_allclose(lse, rlse, **t2)
    np.testing.assert_allclose(y, ry, **t2)
    dy = rng.standard_normal((b * t, c)).astype(dtype)
    dqkv = np.full_like(qkv, np.nan)
    nn.attention_backward(dy, y, lse, qkv, b, t, h, dqkv)
    ref = _ref.attention_backward(dy.astype(np.float64), rlse, qkv.astype(np.float64), b, t, h)
    np.testing.assert_allclose(dqkv, ref, **t2)


def test_attention_twin_is_softmax_attention():
    """The numpy twin itself against the textbook formula (scores, masked softmax, weighted sum) and its
    lse against the log of the softmax's denominator."""
    rng = np.random.default_rng(3)
    b, t, h, d = 2, 7, 2, 3
    qkv = rng.standard_normal((b * t, 3 * h * d))
    y, lse, att = _ref.attention_forward(qkv, b, t, h)
    x = qkv.reshape(b, t, 3, h, d)
    for bb in range(b):
        for hh in range(h):
            q, k, v = x[bb, :, 0, hh], x[bb, :, 1, hh], x[bb, :, 2, hh]
            for i in range(t):
                s = q[i] @ k[: i + 1].T / np.sqrt(d)
                p = np.exp(s - s.max())
                np.testing.assert_allclose(np.log(p.sum()) + s.max(), lse[bb, hh, i], rtol=1e-13)
                np.testing.assert_allclose(att[bb, hh, i, : i + 1], p / p.sum(), rtol=1e-12)
                np.testing.assert_allclose(y.reshape(b, t, h, d)[bb, i, hh], p @ v[: i + 1] / p.sum(), rtol=1e-12)


def test_isa_levels_and_override():
    """isa() names the level in use and those the CPU has, widest last; set_isa switches and refuses
    levels the machine lacks; HPR_ISA is validated when read."""
    now, have = cpu.isa()
    assert now in have and have[0] == "baseline" and list(have) == list(hpr.config.ISA_LEVELS[:len(have)])
    for lv in hpr.config.ISA_LEVELS[len(have):]:
        with pytest.raises(hpr.ConfigError, match="not available"):
            cpu.set_isa(lv)
    with pytest.raises(hpr.ConfigError, match="HPR_ISA"):
        hpr.config.from_env({"HPR_ISA": "sse9"})
    assert hpr.config.from_env({"HPR_ISA": "AVX2"}).isa == "avx2"
    assert hpr.config.from_env({"HPR_ISA": "auto"}).isa is None
    assert "instruction set: " + now in cpu.isa_summary()


def test_attention_rejects_big_heads():
    qkv = np.zeros((2, 3 * 256), np.float32)
    with pytest.raises(hpr.ConfigError, match="head size"):
        nn.attention_forward(qkv, 1, 2, 1, np.empty((1, 1, 2), np.float32), np.empty((2, 256), np.float32))


@pytest.mark.parametrize("m,k,n", [(1, 3, 2), (17, 5, 9), (2048, 128, 384), (129, 2048, 96), (96, 2048, 517),
                                   (128, 2048, 512)])
def test_matmul_splits_rows_over_threads(m, k, n, threads):
    """nn.matmul (hpr.cpu.matmul: out split along its longer side, rows or columns, over the rank's threads,
    each part one BLAS call) equals numpy's product, for plain and transposed views, at one and two
    threads, odd sizes included."""
    rng = np.random.default_rng(m + n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    nn.matmul(a, b, out)
    float32_product_close(out, a, b)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)  # x.T @ dy and dy @ W.T as Linear uses them
    out2 = np.full((m, n), np.nan, np.float32)
    nn.matmul(at.T, bt.T, out2)
    float32_product_close(out2, a, b)


def float32_product_close(out, a, b):
    """out, a float32 a @ b, against the float64 product: within 8 eps sqrt(k) of the root of the summed
    squared terms, entry by entry (a float32 sum of k terms of random sign errs like a random walk,
    ~eps sqrt(k) of that root; which BLAS kernels ran, and how the product was cut, moves the last bits,
    so numpy's own float32 product is no closer a reference). A lost or doubled block is off by O(1)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    bound = 8 * np.finfo(np.float32).eps * np.sqrt(a.shape[1]) * np.sqrt((a64 * a64) @ (b64 * b64))
    err = np.abs(out - a64 @ b64)
    assert np.all(err <= bound), f"max error {err.max():.3g} (bound there {bound.flat[err.argmax()]:.3g})"


def _blocks_reference(a, b):
    """a @ b as the split matmul cuts it (hpr.cpu.matmul's blocks: along out's longer side, ceil(m / nt)
    rounded up to 16), each block numpy's own product: the bits the split must reproduce."""
    nt = num_threads()
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if nt < 2:
        return np.matmul(a, b, out=out)
    by_rows = out.shape[0] >= out.shape[1]
    m = out.shape[0 if by_rows else 1]
    step = max(16, (-(-m // nt) + 15) // 16 * 16)
    for lo in range(0, m, step):
        if by_rows:
            np.matmul(a[lo:lo + step], b, out=out[lo:lo + step])
        else:
            np.matmul(a, b[:, lo:lo + step], out=out[:, lo:lo + step])
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(33, 7, 40), (2048, 128, 384), (129, 2048, 96), (96, 2048, 517), (515, 130, 77)])
def test_matmul_on_openmp_threads_is_bitwise_the_blocks(m, k, n, dtype, threads):
    """nn.matmul's OpenMP split (csrc/nn.c hpr_matmul_split, one gemm call of numpy's BLAS per block on
    the rank's OpenMP threads) gives exactly the bits of numpy's products of the same blocks, for every
    mix of plain and transposed operands, float32 and float64, odd sizes, one and two threads."""
    if not nn.blas_gemm():
        pytest.skip("numpy's BLAS has no ILP64 CBLAS gemm here: matmul splits with hpr.cpu.matmul instead")
    rng = np.random.default_rng(m * n + k)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    for x, y in [(a, b), (np.ascontiguousarray(a.T).T, b), (a, np.ascontiguousarray(b.T).T),
                 (np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T)]:
        out = np.full((m, n), np.nan, dtype)
        assert nn.matmul(x, y, out) is out
        np.testing.assert_array_equal(out, _blocks_reference(x, y))
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, **(dict(rtol=1e-4, atol=1e-4)
                                                                    if dtype == np.float32 else tol(dtype)))


def test_matmul_split_checks_buffers():
    """The compiled split refuses buffers smaller than its sizes say (a wrong stride would read past them)."""
    k = cpu.cpu_kernels()
    a, b, out = np.ones((8, 4), np.float32), np.ones((4, 8), np.float32), np.empty((8, 8), np.float32)
    with pytest.raises(ValueError, match="out is smaller"):
        k.matmul_split(1, out[:4], a, b, 8, 8, 4, 0, 4, 0, 8, 8, True, 4, 4, 2)
    with pytest.raises(ValueError, match="a is smaller"):
        k.matmul_split(1, out, a[:4], b, 8, 8, 4, 0, 4, 0, 8, 8, True, 4, 4, 2)
    with pytest.raises(ValueError, match="b is smaller"):
        k.matmul_split(1, out, a, b[:2], 8, 8, 4, 0, 4, 0, 8, 8, True, 4, 4, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2048, 128), (257, 1031)])
@pytest.mark.parametrize("residual", [False, True], ids=["bias", "bias+residual"])
def test_bias_residual_is_numpys_two_adds(dtype, shape, residual, threads):
    """bias_residual = numpy's a + bias, then x + that, bit for bit (its twin _ref.bias_residual), into a
    new buffer and in place (out = a, out = x), at every level, one and two threads."""
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    a = (rng.standard_normal(shape) * 3).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype) if residual else None
    want = _ref.bias_residual(a, bias, x)
    out = np.full(shape, np.nan, dtype)
    assert nn.bias_residual(a, bias, out, x) is out
    np.testing.assert_array_equal(out, want)
    same = a.copy()
    nn.bias_residual(same, bias, same, x)  # out = a
    np.testing.assert_array_equal(same, want)
    if residual:
        xs = x.copy()
        nn.bias_residual(a, bias, xs, xs)  # out = x
        np.testing.assert_array_equal(xs, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mlo", [0, 37])
def test_adamw_segments_is_bitwise_one_call_per_segment(dtype, mlo, threads):
    """adamw_segments (the optimizer's one fused call) = one adamw call per segment, bit for bit: segments of
    odd lengths, some shorter than a thread's block of 4096 and some spanning several, a gap left alone,
    moments from a shard's start (mlo), each segment's own weight decay; one and two threads."""
    rng = np.random.default_rng(11 + mlo)
    n = 150_001
    bounds = [(mlo, mlo + 5), (mlo + 5, mlo + 4101), (mlo + 4101, 70_003), (70_003, 70_010), (70_500, n)]
    seg = np.array([x for ab in bounds for x in ab], np.int64)
    wd = np.array([0.1, 0.0, 0.1, 0.0, 0.3])
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = (rng.standard_normal(n - mlo) * 0.1).astype(dtype), (rng.random(n - mlo) * 0.1).astype(dtype)
    want = [p.copy(), g, m.copy(), v.copy()]
    for (a, b), w in zip(bounds, wd):
        nn.adamw(want[0][a:b], g[a:b], want[2][a - mlo:b - mlo], want[3][a - mlo:b - mlo], 3e-3, 0.9, 0.95, 1e-8, w,
                 7, 0.5)
    nn.adamw_segments(p, g, m, v, seg, wd, mlo, 3e-3, 0.9, 0.95, 1e-8, 7, 0.5)
    np.testing.assert_array_equal(p, want[0])
    np.testing.assert_array_equal(m, want[2])
    np.testing.assert_array_equal(v, want[3])


def test_adamw_segments_checks_bounds():
    p = np.zeros(100, np.float32)
    m = np.zeros(90, np.float32)
    for seg in ([0, 101], [5, 3], [5, 20]):  # past the end, reversed, before the moments' start (mlo 10)
        with pytest.raises(ValueError, match="outside the buffers"):
            nn.adamw_segments(p, p.copy(), m, m.copy(), np.array(seg, np.int64), np.zeros(1), 10, 1e-3, 0.9, 0.99,
                              1e-8, 1)


def test_matmul_without_the_blas_symbol_splits_on_python_threads(monkeypatch, threads):
    """Where numpy's BLAS offers no ILP64 CBLAS gemm (or the kernels have no OpenMP), nn.matmul hands the
    split to hpr.cpu.matmul's Python threads: the same blocks, so the same bits."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((515, 130)).astype(np.float32), rng.standard_normal((130, 77)).astype(np.float32)
    monkeypatch.setattr(nn, "_gemm", {})
    out = np.full((515, 77), np.nan, np.float32)
    assert nn.matmul(a, b, out) is out
    np.testing.assert_array_equal(out, _blocks_reference(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(128, 2048, 384), (512, 2048, 128), (33, 7, 40), (515, 130, 77)])
def test_matmul_accumulates_like_numpy(m, k, n, dtype, threads, monkeypatch):
    """matmul(a, b, out, acc) = numpy's out = a @ b (the split's blocks) then acc += out, bit for bit, on the
    OpenMP split (each block added by its own thread), on hpr.cpu.matmul's threads, and whole; a weight
    gradient's x^T dy is the transposed case."""
    rng = np.random.default_rng(m + 3 * n)
    xt = rng.standard_normal((k, m)).astype(dtype)  # x (K rows, M features): x^T is a transposed view
    b = rng.standard_normal((k, n)).astype(dtype)
    acc0 = rng.standard_normal((m, n)).astype(dtype)
    want = acc0 + _blocks_reference(xt.T, b)
    for gemm in (None, {}):  # the OpenMP split, then without the BLAS symbol
        if gemm is not None:
            monkeypatch.setattr(nn, "_gemm", gemm)
        acc, out = acc0.copy(), np.full((m, n), np.nan, dtype)
        assert nn.matmul(xt.T, b, out, acc=acc) is out
        np.testing.assert_array_equal(out, _blocks_reference(xt.T, b))
        np.testing.assert_array_equal(acc, want)
