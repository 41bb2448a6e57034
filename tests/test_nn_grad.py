"""Every layer's backward (hpr.nn) and the whole GPT's against central finite differences, in float64;
and the forward of attention and of the whole model against a plain-numpy forward written here.

Method: for a layer y = f(x), fix a random R shaped like y and take the scalar L = sum(f(x) * R); the
analytic gradient of L is what backward returns when given dout = R. For a random direction u over one
tensor (the input or one parameter), the 4th-order central difference
    fd = (-L(+2hu) + 8 L(+hu) - 8 L(-hu) + L(-2hu)) / 12h
must match <grad, u> to a relative 1e-6 (truncation is O(h^4), rounding O(eps/h): ~1e-10 here).
Backward ADDS into parameter gradients (and LayerNorm's into the dx it is given), so the gradient
buffers start filled with noise and the test subtracts it: the accumulation is checked as well.

Dimensions: B batch, T time, C channels, H heads, D = C/H, N = B*T, V vocabulary."""
import numpy as np
import pytest

from hpr.kernels import nn as K
from hpr.model import GPT, GPTConfig
from hpr.nn import MLP, Block, CausalSelfAttention, Embedding, LayerNorm, Linear, ParamLayout, Workspace

RTOL = 1e-6
H_STEP = 1e-4
B, T, C, H = 2, 5, 8, 2  # T and C small and odd-ish: every causal-mask edge case is in reach


def directional_error(loss_at, grad, rng):
    """|fd - an| / |an| along a random u with grad's shape; loss_at(delta) is L at the point + delta."""
    u = rng.standard_normal(grad.shape)
    h = H_STEP
    fd = (-loss_at(2 * h * u) + 8 * loss_at(h * u) - 8 * loss_at(-h * u) + loss_at(-2 * h * u)) / (12 * h)
    an = float(np.sum(grad * u))
    assert an != 0.0, "analytic directional derivative is exactly 0: the check would be vacuous"
    return abs(fd - an) / abs(an)


def param_loss_at(p, loss):
    """loss_at(delta) for parameter p: L with p.data = p0 + delta, p restored afterwards."""
    p0 = p.data.copy()

    def at(delta):
        p.data[...] = p0 + delta
        try:
            return loss()
        finally:
            p.data[...] = p0
    return at


def randomize(lay, rng):
    """A generic point: LayerNorm weights near 1, weights ~ 1/sqrt(fan_in), biases nonzero."""
    for p in lay.entries:
        if len(p.shape) == 2:
            p.data[...] = rng.standard_normal(p.shape) / np.sqrt(p.shape[0])
        elif p.name.endswith(".w") and p.name.split(".")[-2].startswith("ln"):
            p.data[...] = 1.0 + 0.3 * rng.standard_normal(p.shape)
        else:
            p.data[...] = 0.3 * rng.standard_normal(p.shape)


def build(make, seed=0):
    """A standalone layer on its own float64 layout, randomized, gradients pre-filled with noise."""
    lay = ParamLayout()
    layer = make(lay)
    lay.build(np.float64, seed)
    rng = np.random.default_rng(seed + 100)
    randomize(lay, rng)
    lay.grads[:] = rng.standard_normal(lay.size)
    ws = Workspace(np.float64)
    if hasattr(layer, "set_workspace"):
        layer.set_workspace(ws)
    else:
        layer.ws = ws
    return lay, layer


def check_layer(lay, fwd, bwd, x0, names, seed=0):
    """{tensor: relative error}: 'x' (when x0 is a float array) and every parameter in `names`.
    fwd(x) -> output buffer; bwd(R) -> dL/dx (or None), called right after fwd(x0)."""
    rng = np.random.default_rng(seed)
    g0 = lay.grads.copy()
    R = rng.standard_normal(fwd(x0).shape)
    dx = bwd(R)
    grads = {n: lay[n].grad - g0[lay[n].offset:lay[n].offset + lay[n].size].reshape(lay[n].shape)
             for n in names}

    def loss_x(x):
        return float(np.sum(fwd(x) * R))
    errs = {}
    if dx is not None:
        errs["x"] = directional_error(lambda d: loss_x(x0 + d), dx, rng)
    for n in names:
        errs[n] = directional_error(param_loss_at(lay[n], lambda: loss_x(x0)), grads[n], rng)
    return errs


def assert_small(errs):
    bad = {k: v for k, v in errs.items() if not v < RTOL}
    assert not bad, f"finite-difference mismatch (relative error > {RTOL}): {bad}"


def test_layernorm_grad():
    lay, ln = build(lambda lay: LayerNorm(lay, "ln", C))
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((B * T, C)) * 2 + 0.5  # (N, C)
    dx0 = rng.standard_normal(x0.shape)  # backward adds into the dx it is given

    def bwd(R):
        dx = dx0.copy()
        ln.backward(R, dx)
        return dx - dx0
    assert_small(check_layer(lay, ln.forward, bwd, x0, ["ln.w", "ln.b"]))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_grad(bias):
    lay, lin = build(lambda lay: Linear(lay, "lin", 7, 5, bias=bias))
    x0 = np.random.default_rng(2).standard_normal((B * T, 7))  # (N, in)
    names = ["lin.w", "lin.b"] if bias else ["lin.w"]
    assert_small(check_layer(lay, lin.forward, lambda R: lin.backward(R).copy(), x0, names))


def test_linear_backward_into_given_dx():
    lay, lin = build(lambda lay: Linear(lay, "lin", 7, 5))
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 7)), rng.standard_normal((4, 5))
    lin.forward(x)
    dx = np.full((4, 7), np.nan)
    assert lin.backward(dy, dx) is dx
    np.testing.assert_allclose(dx, dy @ lay["lin.w"].data.T, rtol=1e-13)


def test_embedding_grad():
    V, Tmax = 11, 7
    lay, emb = build(lambda lay: Embedding(lay, V, Tmax, C))
    tokens = np.array([[3, 3, 0, 10, 3], [0, 10, 10, 5, 3]], np.int32)  # (B, T), repeats on purpose
    errs = check_layer(lay, lambda tok: emb.forward(tok), lambda R: emb.backward(R), tokens, ["wte", "wpe"])
    assert set(errs) == {"wte", "wpe"}
    assert_small(errs)
    np.testing.assert_array_equal(emb.forward(tokens).reshape(B, T, C),
                                  lay["wte"].data[tokens] + lay["wpe"].data[:T])


def test_embedding_backward_untouched_rows():
    lay, emb = build(lambda lay: Embedding(lay, 11, 7, C))
    lay.grads[:] = 0
    tokens = np.array([[3, 3, 0, 10, 3], [0, 10, 10, 5, 3]], np.int32)
    emb.forward(tokens)
    dout = np.random.default_rng(4).standard_normal((B * T, C))
    emb.backward(dout)
    d = dout.reshape(B, T, C)
    want = np.zeros((11, C))
    np.add.at(want, tokens, d)
    np.testing.assert_allclose(lay["wte"].grad, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(lay["wpe"].grad[:T], d.sum(0), rtol=1e-13)
    assert np.all(lay["wpe"].grad[T:] == 0)


def test_attention_grad():
    lay, attn = build(lambda lay: CausalSelfAttention(lay, "attn", C, H, n_layers=2))
    x0 = np.random.default_rng(5).standard_normal((B * T, C))  # (N, C)
    names = ["attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b"]
    assert_small(check_layer(lay, lambda x: attn.forward(x, B, T), lambda R: attn.backward(R).copy(), x0, names))


def test_mlp_grad():
    lay, mlp = build(lambda lay: MLP(lay, "mlp", C, n_layers=2))
    x0 = np.random.default_rng(6).standard_normal((B * T, C))
    names = ["mlp.fc.w", "mlp.fc.b", "mlp.proj.w", "mlp.proj.b"]
    assert_small(check_layer(lay, mlp.forward, lambda R: mlp.backward(R).copy(), x0, names))


def test_block_grad():
    lay, blk = build(lambda lay: Block(lay, 0, C, H, n_layers=2))
    x0 = np.random.default_rng(7).standard_normal((B * T, C))

    def bwd(R):
        dx = R.copy()
        assert blk.backward(dx) is dx  # transformed in place
        return dx
    names = ["h0.ln1.w", "h0.attn.qkv.w", "h0.ln2.b", "h0.mlp.fc.b", "h0.mlp.proj.w"]
    assert_small(check_layer(lay, lambda x: blk.forward(x, B, T), bwd, x0, names))


def test_block_grad_when_rows_equal_channels():
    """B*T = C: the workspace's shared backward buffers of different roles then have equal shapes (a
    dqkv (N, 3C) and the qkv weight gradient (C, 3C)) and must still be different buffers."""
    b, t = 2, C // 2
    lay, blk = build(lambda lay: Block(lay, 0, C, H, n_layers=2))
    x0 = np.random.default_rng(8).standard_normal((b * t, C))

    def bwd(R):
        dx = R.copy()
        blk.backward(dx)
        return dx
    names = ["h0.ln1.w", "h0.attn.qkv.w", "h0.attn.qkv.b", "h0.attn.proj.w", "h0.mlp.fc.w", "h0.mlp.proj.w"]
    assert_small(check_layer(lay, lambda x: blk.forward(x, b, t), bwd, x0, names))


# ---- plain-numpy forwards: the executable spec of the layers' forward buffers ----

def np_layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def np_attention(x, b, t, h, wqkv, bqkv, wproj, bproj):
    """(out (N, C), att (B, H, T, T)): causal softmax(q k^T / sqrt(D)) v per head, then proj."""
    c = x.shape[1]
    d = c // h
    qkv = (x @ wqkv + bqkv).reshape(b, t, 3, h, d)  # each row is [q | k | v], each (H, D)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, H, T, D)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(s - m).sum(-1))  # (B, H, T): what hpr's CPU kernel keeps
    att = np.exp(s - lse[..., None])
    y = (att @ v).transpose(0, 2, 1, 3).reshape(b * t, c)
    return y @ wproj + bproj, att, lse


def np_gpt_loss(model, tokens, targets):
    """(loss, final hidden (N, C)) of the GPT computed from its parameter views, independently of hpr."""
    P = {p.name: p.data for p in model.layout.entries}
    cfg = model.config
    b, t = tokens.shape
    x = (P["wte"][tokens] + P["wpe"][:t]).reshape(b * t, -1)
    for i in range(cfg.n_layers):
        p = f"h{i}."
        a, _, _ = np_attention(np_layernorm(x, P[p + "ln1.w"], P[p + "ln1.b"]), b, t, cfg.n_heads,
                            P[p + "attn.qkv.w"], P[p + "attn.qkv.b"], P[p + "attn.proj.w"], P[p + "attn.proj.b"])
        x = x + a
        hmid = np_gelu(np_layernorm(x, P[p + "ln2.w"], P[p + "ln2.b"]) @ P[p + "mlp.fc.w"] + P[p + "mlp.fc.b"])
        x = x + hmid @ P[p + "mlp.proj.w"] + P[p + "mlp.proj.b"]
    xf = np_layernorm(x, P["ln_f.w"], P["ln_f.b"])
    logits = xf @ P["wte"].T
    m = logits.max(-1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(-1))
    return float(np.mean(lse - logits[np.arange(b * t), targets.reshape(-1)])), xf


def test_attention_forward_matches_numpy():
    lay, attn = build(lambda lay: CausalSelfAttention(lay, "attn", C, H, n_layers=2))
    x = np.random.default_rng(8).standard_normal((B * T, C))
    out = attn.forward(x, B, T)
    want, att, lse = np_attention(x, B, T, H, lay["attn.qkv.w"].data, lay["attn.qkv.b"].data,
                                  lay["attn.proj.w"].data, lay["attn.proj.b"].data)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    assert attn.saved.shape == (B, H, T)  # the row log-sum-exp, O(T), not the (T, T) probabilities
    np.testing.assert_allclose(attn.saved, lse, rtol=1e-12, atol=1e-13)
    iu = np.triu_indices(T, 1)
    assert np.all(att[:, :, iu[0], iu[1]] == 0)  # the reference takes nothing from the future


@pytest.mark.parametrize("b,t,h,d", [(1, 1, 1, 3), (2, 37, 2, 5), (1, 97, 2, 16), (1, 300, 1, 8)])
def test_attention_gradient_by_finite_differences(b, t, h, d):
    """The fused attention's backward against central differences of its own forward, float64, at lengths
    up to 300 (several query and key tiles): L = sum(y * w) for a random w, checked along random
    directions (all of dqkv at once) and at single entries of q, k and v, including the last row."""
    rng = np.random.default_rng(t)
    c = h * d
    qkv = rng.standard_normal((b * t, 3 * c))
    w = rng.standard_normal((b * t, c))

    def loss(x):
        y, lse = np.empty((b * t, c)), np.empty((b, h, t))
        K.attention_forward(x, b, t, h, lse, y)
        return float((y * w).sum()), y, lse

    _, y, lse = loss(qkv)
    grad = np.full_like(qkv, np.nan)
    K.attention_backward(w, y, lse, qkv, b, t, h, grad)
    eps = 1e-6
    for _ in range(3):
        u = rng.standard_normal(qkv.shape)
        fd = (loss(qkv + eps * u)[0] - loss(qkv - eps * u)[0]) / (2 * eps)
        assert fd == pytest.approx(float((grad * u).sum()), rel=1e-7, abs=1e-8)
    rows = sorted({0, t // 2, t - 1})
    for r in rows:
        for col in (0, c + d // 2, 3 * c - 1):  # a q, a k and a v entry
            e = np.zeros_like(qkv)
            e[r, col] = eps
            fd = (loss(qkv + e)[0] - loss(qkv - e)[0]) / (2 * eps)
            assert fd == pytest.approx(grad[r, col], rel=1e-6, abs=1e-8), (r, col)


def tiny_model(dtype="float64", seed=0, jitter=0.02):
    """The tiny GPT, moved off its init point (LayerNorm weights 1, biases 0) so every path carries
    a generic value."""
    m = GPT(GPTConfig.preset("tiny", dtype=dtype), seed=seed)
    if jitter:
        m.params += (np.random.default_rng(seed + 1).standard_normal(m.n_params) * jitter).astype(m.params.dtype)
    return m


def batch(seed=0, b=2, t=7):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (b, t)).astype(np.int32)
    x[1, 2:5] = x[0, 1]  # repeated tokens: the tied embedding's scatter-add must accumulate
    y = rng.integers(0, 256, (b, t)).astype(np.int32)
    return x, y


def test_gpt_forward_matches_numpy():
    m = tiny_model()
    x, y = batch()
    loss = m.forward(x, y)
    want, xf = np_gpt_loss(m, x, y)
    np.testing.assert_allclose(loss, want, rtol=1e-10)
    np.testing.assert_allclose(m.hidden(x), xf, rtol=1e-10, atol=1e-12)


def test_gpt_forward_matches_numpy_at_init():
    m = tiny_model(jitter=0)
    x, y = batch(1, b=3, t=16)  # full context
    np.testing.assert_allclose(m.forward(x, y), np_gpt_loss(m, x, y)[0], rtol=1e-10)


def gpt_grad_errors(m, x, y, seed=0):
    """{parameter name: relative FD error} for every tensor in buffer order."""
    m.zero_grad()
    rng = np.random.default_rng(seed)
    g0 = rng.standard_normal(m.n_params)
    m.grads[:] = g0  # backward adds
    m.forward(x, y)
    m.backward()
    grads = m.grads - g0
    errs = {}
    for p in m.layout.order():
        g = grads[p.offset:p.offset + p.size].reshape(p.shape)
        errs[p.name] = directional_error(param_loss_at(p, lambda: m.forward(x, y)), g, rng)
    return errs


def test_gpt_grad_every_parameter():
    m = tiny_model()
    errs = gpt_grad_errors(m, *batch())
    assert list(errs) == [p.name for p in m.layout.order()]
    assert_small(errs)


def test_float32_matches_float64():
    x, y = batch(2, b=2, t=16)
    m32 = GPT(GPTConfig.preset("tiny", dtype="float32"), seed=5)
    m64 = GPT(GPTConfig.preset("tiny", dtype="float64"), seed=5)
    l32, l64 = m32.forward(x, y), m64.forward(x, y)
    assert abs(l32 - l64) / abs(l64) < 1e-5
    m32.backward()
    m64.backward()
    # gradients too, measured against the largest: float32 rounding, not a different function
    assert np.max(np.abs(m32.grads - m64.grads)) / np.max(np.abs(m64.grads)) < 1e-4
