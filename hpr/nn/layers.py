"""The GPT's layers as forward/backward pairs (DESIGN.md decision 2): Embedding (token + position),
LayerNorm, Linear, CausalSelfAttention, MLP, Block. Each forward caches only what its backward needs
and returns a buffer the layer owns (reused step after step: no allocation in the training loop);
each backward ADDS into its parameters' gradient views and returns the gradient of its input.
Matmuls go to BLAS through numpy on views (no copies or transposes); everything between them is a
fused kernel from hpr.kernels.nn. Never imports comm: model parallelism wraps these layers.

Dimensions: B batch, T time, C channels (d_model), H heads, D = C / H head size, N = B*T rows.
Usage: ``ln = LayerNorm(layout, "ln_f", C); y = ln.forward(x); dx += ...; ln.backward(dy, dx)``"""
import numpy as np

from ..kernels import nn as K


class Workspace:
    """Named activation buffers, kept between calls while the shape stays the same."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self._bufs = {}

    def get(self, name, shape, zero=False):
        a = self._bufs.get(name)
        if a is None or a.shape != shape:
            a = self._bufs[name] = np.empty(shape, self.dtype)
        if zero:
            a[...] = 0
        return a


class LayerNorm:
    def __init__(self, layout, name, C, eps=1e-5):
        self.w = layout.add(name + ".w", (C,), fill=1.0)
        self.b = layout.add(name + ".b", (C,), fill=0.0)
        self.eps, self.name = eps, name
        self.ws = None

    def forward(self, x):
        """x: (N, C) -> (N, C)."""
        ws = self.ws
        n = x.shape[0]
        out = ws.get(self.name + ".out", x.shape)
        self.mean, self.rstd = ws.get(self.name + ".mean", (n,)), ws.get(self.name + ".rstd", (n,))
        self.x = x
        return K.layernorm_forward(x, self.w.data, self.b.data, out, self.mean, self.rstd, self.eps)

    def backward(self, dout, dx):
        """dx += dL/dx (the residual stream's gradient buffer), and the parameter gradients."""
        K.layernorm_backward(dout, self.x, self.w.data, self.mean, self.rstd, dx, self.w.grad, self.b.grad)


class Linear:
    """y = x @ W + b with W stored (in, out), so forward and both backward products are plain BLAS
    calls on (transposed) views."""

    def __init__(self, layout, name, n_in, n_out, std=0.02, bias=True):
        self.W = layout.add(name + ".w", (n_in, n_out), std=std, decay=True)
        self.b = layout.add(name + ".b", (n_out,), fill=0.0) if bias else None
        self.name = name
        self.ws = None

    def forward(self, x, out=None):
        """x: (N, in) -> (N, out). Adds the bias unless `out` is given with add_bias deferred (see MLP)."""
        self.x = x
        y = self.ws.get(self.name + ".y", (x.shape[0], self.W.shape[1])) if out is None else out
        np.matmul(x, self.W.data, out=y)
        if self.b is not None:
            y += self.b.data
        return y

    def forward_nobias(self, x):
        self.x = x
        y = self.ws.get(self.name + ".y", (x.shape[0], self.W.shape[1]))
        return np.matmul(x, self.W.data, out=y)

    def backward(self, dy, dx=None):
        """dW += x^T dy, db += sum(dy); returns dx = dy W^T (into `dx` if given)."""
        self.backward_params(dy)
        if dx is None:
            dx = self.ws.get(self.name + ".dx", self.x.shape)
        return np.matmul(dy, self.W.data.T, out=dx)

    def backward_params(self, dy):
        tmp = self.ws.get(self.name + ".dw", self.W.shape)
        np.matmul(self.x.T, dy, out=tmp)
        self.W.grad += tmp
        if self.b is not None:
            K.bias_backward(dy, self.b.grad)


class Embedding:
    """x[b, t] = wte[token[b, t]] + wpe[t]. wte is also the output projection (tied)."""

    def __init__(self, layout, V, T, C, std=0.02):
        self.wte = layout.add("wte", (V, C), std=std)
        self.wpe = layout.add("wpe", (T, C), std=std)
        self.ws = None

    def forward(self, tokens):
        """tokens: int32 (B, T) -> (B*T, C)."""
        b, t = tokens.shape
        self.tokens = tokens
        out = self.ws.get("emb.out", (b, t, self.wte.shape[1]))
        K.embedding_forward(tokens, self.wte.data, self.wpe.data, out)
        return out.reshape(b * t, -1)

    def backward(self, dx):
        b, t = self.tokens.shape
        K.embedding_backward(dx.reshape(b, t, -1), self.tokens, self.wte.grad, self.wpe.grad)


class CausalSelfAttention:
    """Multi-head causal self-attention. qkv = x Wqkv + b lays out each row as [q | k | v], each
    (H, D); the attention itself (scores q k^T / sqrt(D), causal softmax, the weighted sum of v, and
    all of backward) is one fused kernel over (sequence, head) pairs that reads the heads straight
    from the qkv buffer and computes only the causal half (hpr.kernels.nn.attention_forward; its numpy
    twin is hpr.kernels._ref.attention_forward). att, (B, H, T, T), is kept for backward."""

    def __init__(self, layout, name, C, H, n_layers, std=0.02):
        self.qkv = Linear(layout, name + ".qkv", C, 3 * C, std=std)
        self.proj = Linear(layout, name + ".proj", C, C, std=std / np.sqrt(2 * n_layers))
        self.H, self.name = H, name
        self.ws = None

    def set_workspace(self, ws):
        self.ws = self.qkv.ws = self.proj.ws = ws

    def forward(self, x, b, t):
        """x: (N, C) -> (N, C)."""
        ws, c = self.ws, x.shape[1]
        self.qkv_out = self.qkv.forward(x)  # (N, 3C)
        self.att = ws.get(self.name + ".att", (b, self.H, t, t))
        y = ws.get(self.name + ".y", (b * t, c))
        K.attention_forward(self.qkv_out, b, t, self.H, self.att, y)
        self.bt = (b, t)
        return self.proj.forward(y)

    def backward(self, dout):
        """dout: (N, C) -> dx (N, C)."""
        b, t = self.bt
        dy = self.proj.backward(dout)  # (N, C)
        dqkv = self.ws.get(self.name + ".dqkv", (b * t, 3 * dout.shape[1]))
        K.attention_backward(dy, self.att, self.qkv_out, b, t, self.H, dqkv)
        return self.qkv.backward(dqkv)


class MLP:
    """fc (C -> 4C) + bias fused into GELU, then proj (4C -> C)."""

    def __init__(self, layout, name, C, n_layers, std=0.02):
        self.fc = Linear(layout, name + ".fc", C, 4 * C, std=std)
        self.proj = Linear(layout, name + ".proj", 4 * C, C, std=std / np.sqrt(2 * n_layers))
        self.name = name
        self.ws = None

    def set_workspace(self, ws):
        self.ws = self.fc.ws = self.proj.ws = ws

    def forward(self, x):
        pre = self.fc.forward_nobias(x)  # (N, 4C); bias added inside the GELU kernel
        h = self.ws.get(self.name + ".h", pre.shape)
        K.gelu_forward(pre, h, self.fc.b.data)
        self.pre = pre
        return self.proj.forward(h)

    def backward(self, dout):
        dh = self.proj.backward(dout)  # (N, 4C)
        K.gelu_backward(dh, self.pre, dh)
        return self.fc.backward(dh)


class Block:
    """Pre-LN residual block: x1 = x + attn(ln1(x)); x2 = x1 + mlp(ln2(x1)). Matmul weights start as
    normal(0, std), the two residual projections as normal(0, std / sqrt(2 n_layers)) (GPT-2)."""

    def __init__(self, layout, i, C, H, n_layers, std=0.02):
        p = f"h{i}"
        self.ln1 = LayerNorm(layout, p + ".ln1", C)
        self.attn = CausalSelfAttention(layout, p + ".attn", C, H, n_layers, std)
        self.ln2 = LayerNorm(layout, p + ".ln2", C)
        self.mlp = MLP(layout, p + ".mlp", C, n_layers, std)
        self.name = p
        self.ws = None

    def set_workspace(self, ws):
        self.ws = self.ln1.ws = self.ln2.ws = ws
        self.attn.set_workspace(ws)
        self.mlp.set_workspace(ws)

    def forward(self, x, b, t):
        """x: (N, C) -> (N, C); x must stay untouched until backward (ln1 keeps it)."""
        a = self.attn.forward(self.ln1.forward(x), b, t)
        x1 = self.ws.get(self.name + ".x1", x.shape)
        np.add(x, a, out=x1)
        m = self.mlp.forward(self.ln2.forward(x1))
        x2 = self.ws.get(self.name + ".x2", x.shape)
        np.add(x1, m, out=x2)
        return x2

    def backward(self, dx):
        """dx: dL/d(output), (N, C); turned in place into dL/d(input)."""
        self.ln2.backward(self.mlp.backward(dx), dx)
        self.ln1.backward(self.attn.backward(dx), dx)
        return dx
