"""The GPT's layers as forward/backward pairs (DESIGN.md decision 2): Embedding (token + position),
LayerNorm, Linear, CausalSelfAttention, MLP, Block. Each forward caches only what its backward needs
and returns a buffer the layer owns (reused step after step: no allocation in the training loop);
each backward ADDS into its parameters' gradient views and returns the gradient of its input.
Matmuls go to BLAS through hpr.kernels.nn.matmul on views (no copies or transposes; out split over the
rank's threads); everything between them is a fused kernel from hpr.kernels.nn. Never imports comm:
model parallelism wraps these layers.
For generation, Embedding.forward_at, CausalSelfAttention.forward_cached and Block.forward_cached run
new positions against a key/value cache (prefill, then one position per step); they keep nothing for
backward.

Dimensions: B batch, T time, C channels (d_model), H heads, D = C / H head size, N = B*T rows.
Usage: ``ln = LayerNorm(layout, "ln_f", C); y = ln.forward(x); dx += ...; ln.backward(dy, dx)``"""
import numpy as np

from ..device import xp_of
from ..errors import ConfigError
from ..kernels import nn as K

RECOMPUTE = ("none", "attn", "mlp", "block")  # Block's activation recomputation modes


class Workspace:
    """Named activation buffers, kept between calls while the shape stays the same; xp is the array
    module they come from (numpy, or cupy on a GPU)."""

    def __init__(self, dtype, xp=np):
        self.dtype = np.dtype(dtype)
        self.xp = xp
        self._bufs = {}

    def get(self, name, shape, zero=False):
        a = self._bufs.get(name)
        if a is None or a.shape != shape:
            a = self._bufs[name] = self.xp.empty(shape, self.dtype)
        if zero:
            a[...] = 0
        return a

    def buffers(self):
        """{key: array} of every buffer held now (a new dict; the arrays are the workspace's)."""
        return dict(self._bufs)

    @property
    def nbytes(self):
        """Bytes of activation memory the workspace holds now (what the layout benchmark reports)."""
        return sum(a.nbytes for a in self._bufs.values())


class LayerNorm:
    def __init__(self, layout, name, C, eps=1e-5):
        self.w = layout.add(name + ".w", (C,), fill=1.0)
        self.b = layout.add(name + ".b", (C,), fill=0.0)
        self.eps, self.name = eps, name
        self.out_key = None  # workspace key of the output when not name + ".out" (Block's recompute "mlp")
        self.ws = None

    def forward(self, x):
        """x: (N, C) -> (N, C)."""
        ws = self.ws
        n = x.shape[0]
        out = ws.get(self.out_key or self.name + ".out", x.shape)
        self.mean, self.rstd = ws.get(self.name + ".mean", (n,)), ws.get(self.name + ".rstd", (n,))
        self.x = x
        return K.layernorm_forward(x, self.w.data, self.b.data, out, self.mean, self.rstd, self.eps)

    def backward(self, dout, dx):
        """dx += dL/dx (the residual stream's gradient buffer), and the parameter gradients."""
        K.layernorm_backward(dout, self.x, self.w.data, self.mean, self.rstd, dx, self.w.grad, self.b.grad)


class Linear:
    """y = x @ W + b with W stored (in, out), so forward and both backward products are plain BLAS
    calls on (transposed) views."""

    def __init__(self, layout, name, n_in, n_out, std=0.02, bias=True, shard_w=None, shard_b=None):
        """shard_w / shard_b: tensor-parallel parts of the whole (n_in, n_out) weight / (n_out,) bias
        (see hpr.parallel.tensor); None keeps the whole tensor."""
        self.W = layout.add(name + ".w", (n_in, n_out), std=std, decay=True, shard=shard_w)
        self.b = layout.add(name + ".b", (n_out,), fill=0.0, shard=shard_b) if bias else None
        self.name = name
        self.tmp = name  # workspace key of backward's temporaries (Block shares them between blocks)
        self.ws = None

    def forward(self, x, residual=None, out=None):
        """x: (N, in) -> x W + b, (N, out); with residual (N, out) given, residual + (x W + b) into out
        (the residual stream's add fused with the bias: one pass, the same bits as the two adds)."""
        y = self.forward_nobias(x)
        if residual is not None:
            if self.b is None:
                return xp_of(y).add(residual, y, out=out)
            return K.bias_residual(y, self.b.data, out, residual)
        if self.b is not None:
            K.bias_residual(y, self.b.data, y)
        return y

    def forward_nobias(self, x):
        """x W without the bias, for callers that add it later (fused into GELU, or after g's sum)."""
        self.x = x
        y = self.ws.get(self.name + ".y", (x.shape[0], self.W.shape[1]))
        return K.matmul(x, self.W.data, y)

    def backward(self, dy, dx=None):
        """dW += x^T dy, db += sum(dy); returns dx = dy W^T (into `dx` if given)."""
        self.backward_params(dy)
        if dx is None:
            dx = self.ws.get(self.tmp + ".dx", self.x.shape)
        return K.matmul(dy, self.W.data.T, dx)

    def backward_params(self, dy):
        tmp = self.ws.get(self.tmp + ".dw", self.W.shape)
        K.matmul(self.x.T, dy, tmp, acc=self.W.grad)  # W.grad += x^T dy
        if self.b is not None:
            K.bias_backward(dy, self.b.grad)


class Embedding:
    """x[b, t] = wte[token[b, t]] + wpe[t]. wte is also the output projection (tied). With tensor
    parallelism wte is split by vocabulary rows: each rank looks up the tokens it holds (zeros for the
    others) and g sums the parts."""

    def __init__(self, layout, V, T, C, std=0.02, tp=None, own_wte=True, own_wpe=True):
        self.tp = tp if tp is not None and tp.size > 1 else None
        self.wte = layout.add("wte", (V, C), std=std, shard=self.tp.rows if self.tp else None, owned=own_wte)
        self.wpe = layout.add("wpe", (T, C), std=std, owned=own_wpe)
        self.lo, self.hi = self.tp.vocab_range(V) if self.tp else (0, V)
        self.ws = None

    def forward(self, tokens):
        """tokens: int32 (B, T) -> (B*T, C)."""
        b, t = tokens.shape
        self.tokens = tokens
        c = self.wte.shape[1]
        out = self.ws.get("emb.out", (b, t, c))
        if self.tp is None:
            K.embedding_forward(tokens, self.wte.data, self.wpe.data, out)
            return out.reshape(b * t, -1)
        mine = (tokens >= self.lo) & (tokens < self.hi)
        out[...] = 0
        out[mine] = self.wte.data[tokens[mine] - self.lo]
        self.tp.g_forward(out)  # every rank now holds the whole lookup
        out += self.wpe.data[:t]
        return out.reshape(b * t, -1)

    def backward(self, dx):
        b, t = self.tokens.shape
        if self.tp is None:
            K.embedding_backward(dx.reshape(b, t, -1), self.tokens, self.wte.grad, self.wpe.grad)
            return
        d = self.tp.g_backward(dx.reshape(b, t, -1))
        self.wpe.grad[:t] += d.sum(0)
        mine = (self.tokens >= self.lo) & (self.tokens < self.hi)
        K.scatter_add(self.wte.grad, self.tokens[mine] - self.lo, d[mine])  # repeated tokens each add

    def forward_at(self, tokens, pos):
        """Generation: tokens (B, t) whose first position in each row is pos[b] ((B,) ints) -> (B*t, C),
        a new array; nothing is kept for backward. The same sums as forward (one add per element)."""
        b, t = tokens.shape
        xp = xp_of(self.wte.data)
        at = pos[:, None] + xp.arange(t)  # (B, t) absolute positions
        if self.tp is None:
            out = self.wte.data[tokens]  # (B, t, C)
        else:  # this rank's vocabulary rows, zeros for the others; g sums the parts
            mine = (tokens >= self.lo) & (tokens < self.hi)
            out = xp.zeros((b, t, self.wte.shape[1]), self.wte.data.dtype)
            out[mine] = self.wte.data[tokens[mine] - self.lo]
            self.tp.g_forward(out)
        out += self.wpe.data[at]
        return out.reshape(b * t, -1)


class CausalSelfAttention:
    """Multi-head causal self-attention. qkv = x Wqkv + b lays out each row as [q | k | v], each
    (H, D); the attention itself (scores q k^T / sqrt(D), causal softmax, the weighted sum of v, and
    all of backward) is one fused flash-style kernel over (sequence, head) pairs that reads the heads
    straight from the qkv buffer and computes only the causal half (hpr.kernels.nn.attention_forward;
    its numpy twin is hpr.kernels._ref.attention_forward). Kept for backward: y and `saved`, the row
    log-sum-exp (B, H, T) on the CPU (O(T): backward recomputes the probabilities), the probabilities
    (B, H, T, T) on a GPU (hpr.kernels.nn.attention_saved_shape).

    With tensor parallelism (tp) each rank holds H/tp heads: qkv is column-parallel by heads, proj
    row-parallel, and the pair f (entry) / g (exit) joins them to the replicated residual stream."""

    def __init__(self, layout, name, C, H, n_layers, std=0.02, tp=None):
        self.tp = tp if tp is not None and tp.size > 1 else None
        t = self.tp
        self.qkv = Linear(layout, name + ".qkv", C, 3 * C, std=std, shard_w=t.qkv_columns if t else None,
                          shard_b=t.qkv_columns if t else None)
        self.proj = Linear(layout, name + ".proj", C, C, std=std / np.sqrt(2 * n_layers),
                           shard_w=t.rows if t else None)
        self.H, self.name, self.tmp = (H // t.size if t else H), name, name
        self.ws = None

    def set_workspace(self, ws):
        self.ws = self.qkv.ws = self.proj.ws = ws

    def name_buffers(self, name, tmp):
        """Workspace keys: `name` for what forward keeps, `tmp` for backward's temporaries."""
        self.name, self.tmp = name, tmp
        self.qkv.name, self.qkv.tmp = name + ".qkv", tmp + ".qkv"
        self.proj.name = self.proj.tmp = tmp + ".proj"  # its output is added to the residual at once

    def forward(self, x, b, t, residual=None, out=None):
        """x: (N, C) -> (N, C); residual + that into out when residual is given (out_forward)."""
        return self.out_forward(self.core_forward(x, b, t), residual, out)

    def core_forward(self, x, b, t):
        """Everything backward needs, no communication: qkv, the attention, y (N, C/tp)."""
        tp, ws = self.tp, self.ws
        if tp:
            x = tp.f_forward(x)
        self.qkv_out = self.qkv.forward(x)  # (N, 3C/tp)
        c = self.qkv_out.shape[1] // 3  # this rank's heads x D
        self.saved = ws.get(self.name + ".saved", K.attention_saved_shape(b, self.H, t, ws.xp))
        self.y = y = ws.get(self.name + ".y", (b * t, c))
        K.attention_forward(self.qkv_out, b, t, self.H, self.saved, y)
        self.bt = (b, t)
        return y

    def out_forward(self, y, residual=None, out=None):
        """The output projection (row-parallel under tp: partial sums over the heads, then g's sum), its
        bias added; with residual given, residual + that, written into out (the block's x1)."""
        if not self.tp:
            return self.proj.forward(y, residual, out)
        s = self.tp.g_forward(self.proj.forward_nobias(y))
        return K.bias_residual(s, self.proj.b.data, s if residual is None else out, residual)

    def backward(self, dout):
        """dout: (N, C) -> dx (N, C)."""
        b, t = self.bt
        if self.tp:
            dout = self.tp.g_backward(dout)
        dy = self.proj.backward(dout)  # (N, C/tp)
        dqkv = self.ws.get(self.tmp + ".dqkv", (b * t, 3 * dy.shape[1]))
        K.attention_backward(dy, self.y, self.saved, self.qkv_out, b, t, self.H, dqkv)
        dx = self.qkv.backward(dqkv)
        return self.tp.f_backward(dx) if self.tp else dx

    def forward_cached(self, x, b, t, cache_k, cache_v, pos):
        """Generation with a key/value cache. x (B*t, C): t new positions of each of B rows, row b's
        first at pos[b]. cache_k, cache_v (B, H, capacity, D): this rank's heads (H/tp under tensor
        parallelism); the new keys and values are written at [pos[b], pos[b] + t).
        t > 1, a prefill (every pos 0): the fused causal kernel, as forward. t == 1, one decode step:
        row b's query against its keys 0..pos[b], softmax(q k^T / sqrt(D)) v, O(pos) per head.
        Rows may stand at different positions (prompts of different lengths): keys past a row's
        position are masked out. Returns (B*t, C); nothing is kept for backward."""
        tp, ws, xp = self.tp, self.ws, xp_of(x)
        if tp:
            x = tp.f_forward(x)
        qkv = self.qkv.forward(x)  # (B*t, 3C/tp): rows [q | k | v], heads side by side
        c = qkv.shape[1] // 3
        h = self.H
        d = c // h
        q5 = qkv.reshape(b, t, 3, h, d)
        if t > 1:
            cache_k[:, :, :t] = q5[:, :, 1].transpose(0, 2, 1, 3)  # (B, H, t, D)
            cache_v[:, :, :t] = q5[:, :, 2].transpose(0, 2, 1, 3)
            saved = ws.get(self.name + ".saved", K.attention_saved_shape(b, h, t, ws.xp))
            y = ws.get(self.name + ".y", (b * t, c))
            K.attention_forward(qkv, b, t, h, saved, y)
        else:
            lo, n = int(pos.min()), int(pos.max()) + 1
            if lo + 1 == n:  # every row at the same position: a plain slice
                cache_k[:, :, lo] = q5[:, 0, 1]
                cache_v[:, :, lo] = q5[:, 0, 2]
            else:
                rows = xp.arange(b)
                cache_k[rows, :, pos] = q5[:, 0, 1]  # (B, H, D) into each row's slot pos[b]
                cache_v[rows, :, pos] = q5[:, 0, 2]
            s = xp.matmul(q5[:, 0, 0][:, :, None], cache_k[:, :, :n].swapaxes(-1, -2))  # (B, H, 1, n)
            s *= 1.0 / np.sqrt(d)
            if lo + 1 < n:  # shorter rows: their slots past pos[b] hold no key of theirs
                past = xp.arange(n)[None, :] > pos[:, None]  # (B, n)
                s += xp.where(past, -np.inf, 0.0).astype(s.dtype)[:, None, None, :]
            s -= s.max(-1, keepdims=True)
            xp.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            y = xp.matmul(s, cache_v[:, :, :n]).reshape(b, c)  # (B, H, 1, D) -> (B, C)
        if not tp:
            return self.proj.forward(y)
        out = tp.g_forward(self.proj.forward_nobias(y))
        out += self.proj.b.data
        return out


class MLP:
    """fc (C -> 4C) + bias fused into GELU, then proj (4C -> C). With tensor parallelism fc is
    column-parallel and proj row-parallel, joined to the residual stream by f and g."""

    def __init__(self, layout, name, C, n_layers, std=0.02, tp=None):
        self.tp = tp if tp is not None and tp.size > 1 else None
        t = self.tp
        self.fc = Linear(layout, name + ".fc", C, 4 * C, std=std, shard_w=t.columns if t else None,
                         shard_b=t.columns if t else None)
        self.proj = Linear(layout, name + ".proj", 4 * C, C, std=std / np.sqrt(2 * n_layers),
                           shard_w=t.rows if t else None)
        self.name = name
        self.h_key = name + ".h"
        self.ws = None

    def set_workspace(self, ws):
        self.ws = self.fc.ws = self.proj.ws = ws

    def name_buffers(self, name, tmp, h_key=None):
        """Workspace keys: `name` for what forward keeps, `tmp` for backward's temporaries; h_key, if
        given, for the GELU's output (instead of name + ".h")."""
        self.name = name
        self.fc.name, self.fc.tmp = name + ".fc", tmp + ".fc"
        self.proj.name = self.proj.tmp = tmp + ".proj"  # its output is added to the residual at once
        self.h_key = h_key or name + ".h"

    def forward(self, x, residual=None, out=None):
        """x: (N, C) -> (N, C); residual + that into out when residual is given (out_forward)."""
        return self.out_forward(self.core_forward(x), residual, out)

    def core_forward(self, x):
        """Everything backward needs, no communication: fc's output and the GELU's, h (N, 4C/tp)."""
        if self.tp:
            x = self.tp.f_forward(x)
        pre = self.fc.forward_nobias(x)  # (N, 4C/tp); bias added inside the GELU kernel
        h = self.ws.get(self.h_key, pre.shape)
        K.gelu_forward(pre, h, self.fc.b.data)  # pre += b in place, then h = GELU(pre)
        self.pre = pre
        return h

    def gelu_again(self):
        """h = GELU(pre) once more into h_key's buffer, from the kept pre-activation (the bias already
        added): Block's "mlp" recomputation; the same kernel on the same values, so the same bits."""
        K.gelu_forward(self.pre, self.ws.get(self.h_key, self.pre.shape))

    def out_forward(self, h, residual=None, out=None):
        """The output projection (row-parallel under tp, joined by g), its bias added; with residual
        given, residual + that, written into out (the block's x2)."""
        if not self.tp:
            return self.proj.forward(h, residual, out)
        s = self.tp.g_forward(self.proj.forward_nobias(h))
        return K.bias_residual(s, self.proj.b.data, s if residual is None else out, residual)

    def backward(self, dout):
        if self.tp:
            dout = self.tp.g_backward(dout)
        dh = self.proj.backward(dout)  # (N, 4C/tp)
        K.gelu_backward(dh, self.pre, dh)
        dx = self.fc.backward(dh)
        return self.tp.f_backward(dx) if self.tp else dx


class Block:
    """Pre-LN residual block: x1 = x + attn(ln1(x)); x2 = x1 + mlp(ln2(x1)). Matmul weights start as
    normal(0, std), the two residual projections as normal(0, std / sqrt(2 n_layers)) (GPT-2).

    Activation recomputation (`recompute`, one of RECOMPUTE): what forward keeps for backward.
      none   everything: ln1's and ln2's outputs and statistics, qkv, the attention's y and
             log-sum-exp, x1, fc's output and the GELU's, x2.
      attn   not the attention's own (qkv, y, the log-sum-exp): backward runs the attention's core
             again from ln1's output, which is kept. No communication: the output projection (and
             tp's g) is not needed for backward.
      mlp    every matmul's output, but not the element-wise results that feed the MLP's matmuls and
             the attention's: backward runs the GELU again from fc's output (kept, bias added), ln2
             from x1 and ln1 from x (their statistics kept), each into the backward temporary the
             next weight gradient's dx is then written over (the GELU's into the MLP proj's dx, ln2's
             into fc's, ln1's into qkv's). No matmul is recomputed (~1-3% more step time, against
             ~10% for fc's) and nothing recomputed is kept across blocks (35% less at preset S).
      block  only the block's input (the previous block's x2, or the embedding): backward runs the
             block's forward again up to the GELU (under tp that includes the attention's g, one more
             allreduce of (N, C) per block).
    What is recomputed lives in workspace buffers shared by every block (keys "shared.*"): they hold one
    block's activations at a time. Backward's temporaries and the residual projections' outputs are
    shared by every block whatever the mode (keys "tmp.*"): nothing of theirs survives a block.
    Recomputation calls the same kernels on the same inputs, so the gradients are bit-identical."""

    def __init__(self, layout, i, C, H, n_layers, std=0.02, tp=None):
        p = f"h{i}"
        self.ln1 = LayerNorm(layout, p + ".ln1", C)
        self.attn = CausalSelfAttention(layout, p + ".attn", C, H, n_layers, std, tp)
        self.ln2 = LayerNorm(layout, p + ".ln2", C)
        self.mlp = MLP(layout, p + ".mlp", C, n_layers, std, tp)
        self.name = p
        self.ws = None
        self.set_recompute("none")

    def set_workspace(self, ws):
        self.ws = self.ln1.ws = self.ln2.ws = ws
        self.attn.set_workspace(ws)
        self.mlp.set_workspace(ws)

    def set_recompute(self, mode):
        """Choose what forward keeps (class docstring) by naming the workspace buffers: a block's own
        key for a kept activation, "shared" for one that is recomputed in backward."""
        if mode not in RECOMPUTE:
            raise ConfigError(f"recompute {mode!r}: use one of {', '.join(RECOMPUTE)}")
        self.recompute = mode
        attn = "shared" if mode in ("attn", "block") else self.name
        mlp = "shared" if mode == "block" else self.name
        norms = "shared" if mode == "block" else self.name
        self.ln1.name, self.ln2.name = norms + ".ln1", norms + ".ln2"
        self.attn.name_buffers(attn + ".attn", "tmp.attn")
        # "mlp": ln1's output lives in qkv's backward dx buffer, ln2's in fc's, the GELU's in the MLP
        # proj's ((N, C), (N, C), (N, 4C/tp): the shapes of those matmuls' inputs); each is consumed by
        # the next matmul in forward and recomputed just before the weight gradient that reads it
        elementwise = mode == "mlp"
        self.ln1.out_key = "tmp.attn.qkv.dx" if elementwise else None
        self.ln2.out_key = "tmp.mlp.fc.dx" if elementwise else None
        self.mlp.name_buffers(mlp + ".mlp", "tmp.mlp", h_key="tmp.mlp.proj.dx" if elementwise else None)
        self.x1_key = ("shared" if mode == "block" else self.name) + ".x1"

    def forward(self, x, b, t):
        """x: (N, C) -> (N, C); x must stay untouched until backward (ln1 keeps it)."""
        self.x, self.bt = x, (b, t)
        self.n1 = self.ln1.forward(x)  # (N, C), what attn recomputation starts from
        x1 = self.attn.forward(self.n1, b, t, residual=x, out=self.ws.get(self.x1_key, x.shape))
        return self.mlp.forward(self.ln2.forward(x1), residual=x1, out=self.ws.get(self.name + ".x2", x.shape))

    def forward_cached(self, x, b, t, cache_k, cache_v, pos):
        """forward for generation: attention reads and extends this block's key/value cache
        (CausalSelfAttention.forward_cached); x (B*t, C) -> (B*t, C)."""
        a = self.attn.forward_cached(self.ln1.forward(x), b, t, cache_k, cache_v, pos)
        x1 = self.ws.get(self.x1_key, x.shape)
        xp_of(x).add(x, a, out=x1)
        m = self.mlp.forward(self.ln2.forward(x1))
        x2 = self.ws.get(self.name + ".x2", x.shape)
        xp_of(x).add(x1, m, out=x2)
        return x2

    def backward(self, dx):
        """dx: dL/d(output), (N, C); turned in place into dL/d(input). Recomputes first what forward
        did not keep (the same kernels on the same inputs: bit-identical)."""
        mode, (b, t) = self.recompute, self.bt
        if mode == "block":  # x1 = x + attn(ln1(x)) again, then the MLP's core from it
            x1 = self.attn.out_forward(self.attn.core_forward(self.ln1.forward(self.x), b, t), residual=self.x,
                                       out=self.ws.get(self.x1_key, self.x.shape))
            self.mlp.core_forward(self.ln2.forward(x1))
        elif mode == "mlp":  # the element-wise results again: ln2 from x1, the GELU from fc's output
            self.ln2.forward(self.ln2.x)
            self.mlp.gelu_again()
        self.ln2.backward(self.mlp.backward(dx), dx)
        if mode == "attn":
            self.attn.core_forward(self.n1, b, t)
        elif mode == "mlp":  # ln1 from the block's input (qkv's weight gradient reads it)
            self.ln1.forward(self.x)
        self.ln1.backward(self.attn.backward(dx), dx)
        return dx
