"""The compact GPT: configuration and presets, and the single-rank model built from hpr.nn's layers
(token + position embedding, pre-LN blocks, final LayerNorm, output projection tied to the token
embedding, softmax cross-entropy averaged over tokens). Parameters and gradients are two flat arrays
(`model.params`, `model.grads`), live: writing into `params` changes the model, `backward` adds
into `grads`. Owns the model's math; not its sharding (hpr.parallel) or training loop (hpr.train).

For use after training: `GPT.load(ckpt_dir)` (the model and its tokenizer), `logits(tokens)`, and
generation with a key/value cache (`prefill`, `decode_step`; the loop is hpr.model.kvcache's).

Dimensions: B batch, T time (<= context), C d_model, V vocab, N = B*T.

Padded vocabulary: wte holds Vp = config.padded_vocab >= V rows (V rounded up to config.vocab_multiple,
64 x tp for a tokenizer's vocabulary, so each rank's share of the head's matmul is a multiple of 64).
Rows V..Vp-1 are no token: their logits are set to -inf before the softmax (probability 0: exp(-inf) is
0 in float64, and float32's vectorised exp clamps at e^-80, below the resolution of a sum >= 1), and
their dlogits are zeroed after it, so the loss is the loss over the V real tokens and the padded rows'
gradients are exactly 0 (no token looks them up either).
Usage: ``m = GPT(GPTConfig.preset("S")); loss = m.forward(x, y); m.backward()``"""
import dataclasses

import numpy as np

from ..device import CPU, to_host
from ..errors import CheckpointError, ConfigError
from ..kernels import nn as K
from ..nn import RECOMPUTE, Block, Embedding, LayerNorm, ParamLayout, Workspace
from ..quantum.layer import QuantumLayer
from . import kvcache, saved

PRESETS = {
    "tiny": dict(context=16, d_model=32, n_layers=2, n_heads=4),
    "S": dict(context=128, d_model=128, n_layers=4, n_heads=4),
    "M": dict(context=256, d_model=384, n_layers=6, n_heads=6),
    # GPT-2's shapes (124M and 355M parameters with its 50257-token vocabulary, which comes from the
    # tokenizer: vocab_size=...); the same architecture, so their weights convert (hpr.convert)
    "gpt2": dict(context=1024, d_model=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(context=1024, d_model=1024, n_layers=24, n_heads=16),
}
DTYPES = ("float32", "float64")


def vocab_multiple(vocab_size, tp=1):
    """What to round a vocabulary of vocab_size up to for tp tensor-parallel ranks: 1 (no padding) when
    it is already a multiple of 64 that tp divides (bytes' 256 at tp 1, 2, 4, 8 ...; a 4096-token BPE),
    else 64 x tp, so every rank's rows of the head are a whole multiple of 64 (GPT-2's 50257 -> 50304)."""
    return 1 if vocab_size % 64 == 0 and vocab_size % tp == 0 else 64 * tp


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 256  # token ids 0 .. vocab_size - 1 (the tokenizer's vocabulary)
    context: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    dtype: str = "float32"
    n_qubits: int = 0  # > 0: a QuantumLayer of that many qubits after the last block
    q_depth: int = 1   # its layers of trainable rotations and entangling ring
    vocab_multiple: int = 1  # wte's rows: vocab_size rounded up to a multiple of this (vocab_multiple())

    def __post_init__(self):
        for f in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "vocab_multiple"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"GPTConfig.{f} must be a positive integer, got {v!r}")
        for f, lo, hi in (("n_qubits", 0, 16), ("q_depth", 1, 64)):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"GPTConfig.{f} must be an integer from {lo} to {hi}, got {v!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}; pick a "
                              f"head count that divides it (e.g. {_divisor_hint(self.d_model)})")
        try:
            name = np.dtype(self.dtype).name if self.dtype is not None else None
        except TypeError:
            name = None
        if name not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        object.__setattr__(self, "dtype", name)  # np.float32 and "float32" are the same config

    @classmethod
    def preset(cls, name, **overrides):
        """A named size: 'tiny' (tests), 'S', 'M', 'gpt2' or 'gpt2-medium'; keyword overrides (e.g.
        dtype='float64', vocab_size=50257)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        fields = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(overrides) - set(fields))
        if bad:
            raise ConfigError(f"unknown GPTConfig field(s) {', '.join(map(repr, bad))}; the fields are "
                              f"{', '.join(fields)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def padded_vocab(self):
        """Rows of wte (and columns of the logits): vocab_size rounded up to a multiple of vocab_multiple."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def init_std(self):
        """GPT-2's init, std 0.02 at d_model 768, scaled as 1/sqrt(d_model) for other widths (so each
        layer's output starts at the same scale whatever the width): 0.049 for S, 0.028 for M.
        Measured on the default corpus with the trainer's S recipe (300 steps, batch 16, lr 1e-3):
        validation loss 2.24 nats/byte with it, 2.31-2.33 with a flat 0.02."""
        return 0.02 * (768 / self.d_model) ** 0.5

    def flops_per_token(self):
        """Training FLOPs per token, 6 N + 12 L T C (N: matmul weights incl. the tied head; the
        attention term counts the full T x T square, as PaLM's appendix B; V: the padded vocabulary, what
        the head's matmul computes)."""
        L, C, T, V = self.n_layers, self.d_model, self.context, self.padded_vocab
        return 6 * (12 * L * C * C + V * C) + 12 * L * T * C


def _divisor_hint(c):
    return ", ".join(str(h) for h in (1, 2, 4, 8, 16, 3, 6, 12) if c % h == 0)


def stage_blocks(n_layers, pp):
    """[(first block, end block)] of each of pp pipeline stages: contiguous and balanced, the extra
    blocks (when pp does not divide n_layers) on the first stages, since the last one also runs the
    final norm, the output head and the loss."""
    q, r = divmod(n_layers, pp)
    bounds = [0]
    for s in range(pp):
        bounds.append(bounds[-1] + q + (1 if s < r else 0))
    return [(bounds[s], bounds[s + 1]) for s in range(pp)]


class GPT:
    def __init__(self, config, seed=0, params=None, grads=None, alloc=None, tp=None, stage=(0, 1), device=None,
                 recompute="none", params_alloc=None):
        """Parameters initialised from `seed`: normal(0, config.init_std) for embeddings and matmul
        weights, init_std/sqrt(2L) for the residual projections, biases 0, LayerNorm 1; seed None:
        no initialisation (every parameter 0), for a caller that loads all of them next (GPT.load).
        params/grads: optional caller-owned flat arrays; alloc(n, dtype): where to allocate the
        gradient buffer instead (e.g. comm.alloc, memory the node's ranks share, so data-parallel sync
        reduces it in place); tp: a hpr.parallel.TensorParallel to split heads, MLP columns and the
        vocabulary over its group; stage = (pipeline stage, stages): hold only that stage's layers
        (the first has the embedding, the last the final norm and the tied head, so both hold wte).
        params_alloc(n, dtype): where to allocate the parameter buffer (ZeRO-3's paged memory).
        device: an hpr.device.Device; a GPU holds parameters, gradients and activations there (the same
        initial numbers), and tokens may be passed from the host.
        recompute: what the blocks keep for backward, one of hpr.nn.RECOMPUTE (hpr.nn.Block): "none",
        "attn", "mlp" or "block"; the rest is recomputed in backward, with bit-identical results.
        Every layout draws the same initial numbers for the same parameter."""
        if not isinstance(config, GPTConfig):
            raise ConfigError(f"GPT wants a GPTConfig, got {type(config).__name__}")
        if recompute not in RECOMPUTE:
            raise ConfigError(f"recompute {recompute!r}: use one of {', '.join(RECOMPUTE)}")
        self.recompute = recompute
        c = config
        self.config = c
        self.dtype = np.dtype(c.dtype)
        self.layout = lay = ParamLayout()
        std = c.init_std
        self.tp = tp if tp is not None and tp.size > 1 else None
        if self.tp and (c.n_heads % tp.size or c.padded_vocab % tp.size):
            raise ConfigError(f"tp={tp.size} must divide the {c.n_heads} heads and the vocabulary of "
                              f"{c.padded_vocab}" + (f" ({c.vocab_size} padded to a multiple of {c.vocab_multiple})"
                                                     if c.padded_vocab != c.vocab_size else ""))
        self.stage, self.n_stages = stage
        if not 0 <= self.stage < self.n_stages or self.n_stages > c.n_layers:
            raise ConfigError(f"stage {stage} of a {c.n_layers}-layer model: need 0 <= stage < stages <= layers")
        self.first, self.last = self.stage == 0, self.stage == self.n_stages - 1
        self.block_range = stage_blocks(c.n_layers, self.n_stages)[self.stage]
        self.emb = Embedding(lay, c.padded_vocab, c.context, c.d_model, std=std, tp=self.tp,
                             own_wte=self.first or self.last, own_wpe=self.first)
        self.blocks = []
        for i in range(c.n_layers):
            lay.owning = self.block_range[0] <= i < self.block_range[1]
            blk = Block(lay, i, c.d_model, c.n_heads, c.n_layers, std, self.tp)
            if lay.owning:
                self.blocks.append(blk)
        lay.owning = self.last
        self.qlayer = None
        if c.n_qubits:
            self.qlayer = QuantumLayer(lay, "quantum", c.d_model, c.n_qubits, c.q_depth, std, self.tp)
        self.ln_f = LayerNorm(lay, "ln_f", c.d_model)
        lay.owning = True
        if grads is None and alloc is not None:
            grads = alloc(lay.size, self.dtype)
        if params is None and params_alloc is not None:
            params = params_alloc(lay.size, self.dtype)
        self.device = device if device is not None else CPU
        self.xp = self.device.xp
        self.params, self.grads = lay.build(self.dtype, seed, params, grads, self.device)
        self.ws = Workspace(self.dtype, self.xp)
        self.emb.ws = self.ln_f.ws = self.ws
        if self.qlayer is not None:
            self.qlayer.ws = self.ws
        for b in self.blocks:
            b.set_workspace(self.ws)
            b.set_recompute(recompute)
        self._ready = None
        # ZeRO-3 (hpr.parallel.zero.ParamGather): need(unit) before a unit's layers run, drop(unit)
        # after; None when the parameters are whole on this rank
        self.gather = None
        self.vocab_size = c.vocab_size  # the tokenizer's; the embedding's rows are padded past it
        self.tokenizer = None  # set by GPT.load
        # this rank's logit columns that are padding (rows V.. of wte it holds), as a slice, or None
        lo, hi = self.emb.lo, self.emb.hi
        self.pad_columns = slice(max(c.vocab_size, lo) - lo, hi - lo) if c.vocab_size < hi else None

    @property
    def n_params(self):
        return self.params.size

    def param_units(self):
        """[(unit, lo, hi)] tiling this stage's flat buffer in buffer (backward's) order: "head" (the
        final norm and the quantum layer), each block "h{i}", "embedding" (wpe and the tied wte). What
        ZeRO-2/3 cut into chunks and ZeRO-3 gathers one at a time. wte is a range of its own (a second
        "embedding" entry): the first and last pipeline stages, which both hold it, then cut it into the
        same chunks and reduce it in the same order, so their copies stay bit-identical."""
        out = []
        for p in self.layout.order():
            top = p.name.split(".")[0]
            unit = top if top[:1] == "h" and top[1:].isdigit() else (
                "embedding" if top in ("wte", "wpe") else "head")
            if out and out[-1][0] == unit and p.name != "wte":
                out[-1][2] = p.offset + p.size
            else:
                out.append([unit, p.offset, p.offset + p.size])
        return [tuple(u) for u in out]

    def _need(self, unit, direction):
        if self.gather is not None:
            self.gather.need(unit, direction)

    def _drop(self, unit):
        if self.gather is not None:
            self.gather.drop(unit)

    def _check_tokens(self, tokens, what):
        a = to_host(tokens)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ConfigError(f"{what} must be an integer array of shape (batch, time), got "
                              f"{a.dtype} {a.shape}")
        if a.shape[1] > self.config.context or a.shape[0] < 1 or a.shape[1] < 1:
            raise ConfigError(f"{what} has shape {a.shape}; time must be 1..{self.config.context} "
                              "(the model's context) and batch at least 1")
        if a.size and (a.min() < 0 or a.max() >= self.config.vocab_size):
            raise ConfigError(f"{what} holds ids outside the vocabulary [0, {self.config.vocab_size}) "
                              f"(min {a.min()}, max {a.max()}); check the tokenizer or the data")
        return self.device.asarray(np.ascontiguousarray(a, dtype=np.int32))

    def _whole(self, what):
        if self.n_stages > 1:
            raise ConfigError(f"{what} needs the whole model; this is pipeline stage {self.stage} of "
                              f"{self.n_stages} (use stage_forward / stage_backward)")

    def hidden(self, tokens):
        """tokens (B, T) -> final-LayerNorm output (N, C)."""
        self._whole("hidden()")
        b, t = tokens.shape
        x = self.emb.forward(tokens)
        for blk in self.blocks:
            x = blk.forward(x, b, t)
        if self.qlayer is not None:
            x = self.qlayer.forward(x)
        return self.ln_f.forward(x)

    def forward(self, tokens, targets):
        """Mean cross-entropy (nats per token) of predicting targets[b, t] from tokens[b, :t+1].
        Also computes d(loss)/d(logits) in the same pass, kept for backward()."""
        self._whole("forward()")
        return self._loss(tokens, targets, grad=True)

    def loss(self, tokens, targets):
        """The same loss without keeping anything for backward (evaluation)."""
        self._whole("loss()")
        return self._loss(tokens, targets, grad=False)

    def _loss(self, tokens, targets, grad):
        tokens = self._check_tokens(tokens, "tokens")
        targets = self._check_tokens(targets, "targets")
        if targets.shape != tokens.shape:
            raise ConfigError(f"targets {targets.shape} and tokens {tokens.shape} differ in shape")
        return self.stage_forward(tokens, *tokens.shape, targets=targets, grad=grad)

    def stage_forward(self, inp, b, t, targets=None, grad=True):
        """This stage's part of forward. inp: tokens (B, T) on the first stage, else the previous
        stage's output (N, C). Returns the loss on the last stage (targets (B, T) needed there), else
        this stage's output activation (N, C), a buffer the stage owns (copy it before sending)."""
        self._ready = None
        dev = self.device
        if targets is not None:  # host batches move to the GPU here (no-op on the CPU)
            targets = dev.xp.ascontiguousarray(dev.asarray(targets), dtype=np.int32)
        if self.first:
            self._need("embedding", "forward")
            x = self.emb.forward(dev.xp.ascontiguousarray(dev.asarray(inp), dtype=np.int32))
        else:
            x = inp
        # ZeRO-3: the last stage keeps its last blocks gathered (as many as the gathers prefetch): its
        # backward starts there
        tail = len(self.blocks) - (self.gather.DEPTH if self.gather is not None else 0)
        for j, blk in enumerate(self.blocks):
            self._need(blk.name, "forward")
            x = blk.forward(x, b, t)
            if not (grad and self.last and j >= tail):
                self._drop(blk.name)
        if not self.last:
            if grad:
                self._ready = ("act", x.shape)
            return x
        self._need("head", "forward")
        self._need("embedding", None)  # the tied head reads wte (no prefetch: backward comes next)
        if self.qlayer is not None:
            x = self.qlayer.forward(x)
        xf = self.ln_f.forward(x)  # (N, C)
        n = xf.shape[0]
        wte = self.emb.wte.data  # (V, C), or this rank's vocabulary rows (V/tp, C)
        logits = self.ws.get("logits", (n, wte.shape[0]))
        K.matmul(xf, wte.T, logits)  # tied head: x @ wte^T (rows over the rank's threads)
        pad = self.pad_columns
        if pad is not None:
            logits[:, pad] = -np.inf  # padded vocabulary: no probability (module docstring)
        losses = self.ws.get("losses", (n,))
        tg = targets.reshape(-1)
        if self.tp:
            self._vocab_parallel_loss(logits, tg, losses, grad, 1.0 / n)
        else:  # in one pass: losses, and (when training) dlogits written over the logits
            K.crossentropy(logits, tg, losses, logits if grad else None, 1.0 / n)
        if grad and pad is not None:
            logits[:, pad] = 0  # exactly: the padded rows of wte get no gradient
        if grad:
            self._ready = ("loss", xf, logits)
        return float(losses.sum(dtype=np.float64) / n)

    def _vocab_parallel_loss(self, logits, targets, losses, grad, dscale):
        """Cross-entropy with the vocabulary split over tp, never gathering the logits: the row max,
        the sum of exponentials and the target's logit are reduced over the group instead. logits
        (N, V/tp) becomes dlogits when grad."""
        tp, (lo, hi), xp = self.tp, (self.emb.lo, self.emb.hi), self.xp
        m = tp.allreduce_max(logits.max(1).astype(np.float64))  # (N,) the global row max
        e = xp.exp(logits - m[:, None].astype(logits.dtype))
        s = tp.allreduce_sum(e.sum(1, dtype=np.float64))
        mine = (targets >= lo) & (targets < hi)
        rows = xp.nonzero(mine)[0]
        tl = xp.zeros(len(targets), np.float64)
        tl[rows] = logits[rows, targets[rows] - lo]
        tp.allreduce_sum(tl)
        losses[...] = xp.log(s) + m - tl
        if grad:
            xp.multiply(e, (dscale / s)[:, None].astype(logits.dtype), out=logits)
            logits[rows, targets[rows] - lo] -= logits.dtype.type(dscale)

    def backward(self, scale=1.0, on_ready=None):
        """Adds d(scale * loss)/d(params) into self.grads. on_ready(k), if given, is called each time
        grads[:k] holds its final value for this backward (buckets may then be reduced)."""
        self._whole("backward()")
        self.stage_backward(None, scale, on_ready)

    def stage_backward(self, dout=None, scale=1.0, on_ready=None):
        """This stage's part of backward: from the loss on the last stage, else from dout, the
        gradient of this stage's output (N, C). Adds into self.grads; returns the gradient of the
        stage's input activation (a buffer the stage owns), or None on the first stage."""
        if self._ready is None:
            raise ConfigError("backward needs a forward first (one backward per forward)")
        ready, self._ready = self._ready, None
        if self.last:
            _, xf, dlogits = ready
            self._need("head", "backward")
            self._need("embedding", None)
            if scale != 1.0:
                dlogits *= self.dtype.type(scale)
            wte = self.emb.wte
            dx = self.ws.get("dx", xf.shape, zero=True)  # the residual stream's gradient, (N, C)
            dxf = self.ws.get("dxf", xf.shape)
            K.matmul(dlogits, wte.data, dxf)
            if self.tp:
                self.tp.f_backward(dxf)  # the head is column-parallel over the vocabulary: sum the parts
            tmp = self.ws.get("dwte", wte.shape)
            K.matmul(dlogits.T, xf, tmp, acc=wte.grad)  # wte.grad += dlogits^T xf
            self.ln_f.backward(dxf, dx)
            if on_ready:
                on_ready(self.ln_f.w.offset + self.ln_f.w.size)
            if self.qlayer is not None:
                dx[...] = self.qlayer.backward(dx)
                if on_ready:
                    on_ready(self.qlayer.W_in.offset + self.qlayer.W_in.size)
        else:
            dx = self.ws.get("dx", ready[1])
            dx[...] = dout  # already scaled: the last stage applied `scale` to the loss's gradient
        for blk in reversed(self.blocks):
            self._need(blk.name, "backward")
            blk.backward(dx)
            self._drop(blk.name)
            if on_ready:
                on_ready(blk.ln1.w.offset + blk.ln1.w.size)
        if self.first:
            self._need("embedding", "backward")
            self.emb.backward(dx)
        if on_ready:
            on_ready(self.params.size)
        return None if self.first else dx

    def zero_grad(self):
        self.grads[:] = 0

    def _head(self, xf):
        """Final-norm rows (R, C) -> logits (R, V) on the host: the tied head x @ wte^T, the vocabulary
        parts gathered under tensor parallelism, the padded rows (past the tokenizer's) dropped."""
        z = xf @ self.emb.wte.data.T  # (R, V) or this rank's (R, V/tp)
        if self.tp:  # generation only: gather the vocabulary parts
            z = self.tp.comm.allgather(self.xp.ascontiguousarray(z.T)).T
        return to_host(z)[:, :self.vocab_size]

    def logits_last(self, tokens):
        """Logits of the last position of each row: (B, V), a numpy array wherever the model lives."""
        tokens = self._check_tokens(tokens, "tokens")
        self._ready = None  # the layers' caches now hold this call, not the last forward
        xf = self.hidden(tokens)
        b, t = tokens.shape
        return self._head(xf.reshape(b, t, -1)[:, -1])

    def logits(self, tokens):
        """Logits of every position, (B, T, V) numpy: row t predicts token t+1 from tokens[:, :t+1]."""
        tokens = self._check_tokens(tokens, "tokens")
        self._ready = None
        b, t = tokens.shape
        return self._head(self.hidden(tokens)).reshape(b, t, -1)

    # ---- generation with a key/value cache (the loop: hpr.model.kvcache.generate) ----

    def new_cache(self, batch, capacity=None):
        """An empty KVCache for `batch` rows of up to `capacity` positions (default: the context)."""
        c = self.config
        capacity = c.context if capacity is None else capacity
        if not 1 <= capacity <= c.context:
            raise ConfigError(f"cache capacity {capacity} must be 1..{c.context} (the model's context)")
        heads = c.n_heads // (self.tp.size if self.tp else 1)
        return kvcache.KVCache(len(self.blocks), batch, heads, capacity, c.d_model // c.n_heads, self.dtype,
                               self.xp)

    def _cached_hidden(self, tokens, cache, pos):
        b, t = tokens.shape
        x = self.emb.forward_at(tokens, pos)
        for blk, k, v in zip(self.blocks, cache.k, cache.v):
            x = blk.forward_cached(x, b, t, k, v, pos)
        if self.qlayer is not None:
            x = self.qlayer.forward(x)
        return self.ln_f.forward(x)  # (B*t, C)

    def prefill(self, prompts, cache):
        """Run B prompts (id sequences, 1..capacity long) into an empty cache, right-padded to the
        longest (causal attention: padding after a row's end never reaches its positions); returns the
        logits (B, V) of each row's last token and sets cache.pos to the lengths."""
        self._whole("prefill()")
        lens = np.array([len(p) for p in prompts], np.int64)
        if len(prompts) != cache.batch or lens.min() < 1 or lens.max() > cache.capacity:
            raise ConfigError(f"prefill takes {cache.batch} prompt(s) of 1..{cache.capacity} tokens (the "
                              f"cache's batch and capacity), got lengths {lens.tolist()}")
        tokens = np.zeros((len(prompts), int(lens.max())), np.int64)  # (B, T)
        for b, p in enumerate(prompts):
            tokens[b, :lens[b]] = p
        tokens = self._check_tokens(tokens, "prompt")
        self._ready = None
        b, t = tokens.shape
        xf = self._cached_hidden(tokens, cache, self.xp.zeros(b, np.int64)).reshape(b, t, -1)
        cache.pos[:] = lens
        return self._head(xf[np.arange(b), lens - 1])

    def decode_step(self, ids, cache, at=None):
        """One new token per row, ids (B,), at position at[b] (default cache.pos; the caller advances
        cache.pos): each block attends over the row's cached positions 0..at[b]. Returns logits (B, V)."""
        self._whole("decode_step()")
        at = cache.pos if at is None else np.asarray(at, np.int64)
        ids = np.asarray(ids)
        if at.shape != (cache.batch,) or ids.shape != at.shape or ids.dtype.kind not in "iu":
            raise ConfigError(f"decode_step takes one integer id per row of the cache ({cache.batch}), got "
                              f"{ids.dtype} {ids.shape} at positions {at.shape}")
        lo, hi = min(int(at.min()), int(ids.min())), max(int(at.max()) - cache.capacity, int(ids.max()) - self.config.vocab_size)
        if lo < 0 or hi >= 0:
            raise ConfigError(f"decode_step: ids {ids.tolist()} must be in [0, {self.config.vocab_size}) and positions "
                              f"{at.tolist()} in [0, {cache.capacity}) (the cache's capacity)")
        self._ready = None
        tokens = self.device.asarray(ids.astype(np.int32).reshape(-1, 1))
        return self._head(self._cached_hidden(tokens, cache, self.xp.asarray(at)))

    def generate(self, prompt, n_tokens, temperature=1.0, top_k=None, seed=0, top_p=None):
        """Sample n_tokens after `prompt` (bytes, str, or int sequence) with the key/value cache; returns
        bytes of prompt + sample for a byte vocabulary, else the list of ids. temperature 0 is greedy;
        top_k keeps the k likeliest tokens, top_p the smallest set reaching that probability."""
        if isinstance(prompt, str):
            prompt = prompt.encode("utf-8")
        toks = [int(t) for t in prompt]
        if not toks:
            raise ConfigError("generate needs a prompt of at least one token")
        if n_tokens < 0:
            raise ConfigError(f"generate wants n_tokens >= 0, got {n_tokens}")
        toks += kvcache.generate(self, [toks], n_tokens, kvcache.Sampler(temperature, top_k, top_p, seed))[0]
        return bytes(int(t) & 0xFF for t in toks) if self.config.vocab_size <= 256 else toks

    @classmethod
    def load(cls, ckpt_dir, dtype=None, tp=None):
        """The model of a checkpoint (a --ckpt-dir: its newest intact step; or one step folder), with
        its tokenizer as `model.tokenizer` (None when it has none and its vocabulary is not bytes).
        dtype: compute in float32 / float64 instead of the saved dtype. tp: a TensorParallel to split
        the heads over (generation under mpiexec); the vocabulary rows are then padded for it
        (vocab_multiple; the padding never sampled, whatever padding the training run had). CheckpointError when the folder holds no usable model."""
        path, meta = saved.find(ckpt_dir)
        try:
            config = GPTConfig(**{**meta["config"], **({"dtype": dtype} if dtype is not None else {})})
        except TypeError as e:
            raise CheckpointError(f"{path}: meta.json's config does not fit this hpr's GPTConfig ({e})") from None
        tok = saved.tokenizer_of(path, ckpt_dir, config.vocab_size)
        tensors = saved.read_params(path)
        n = tp.size if tp is not None else 1
        config = dataclasses.replace(config, vocab_multiple=vocab_multiple(config.vocab_size, n))  # this tp's
        padded = config.padded_vocab
        model = cls(config, seed=None, tp=tp)  # no random draw: every parameter is loaded below
        for p in model.layout.entries:
            if p.name not in tensors:
                raise CheckpointError(f"{path}: {saved.PARAMS} has no tensor {p.name!r}; the checkpoint is "
                                      "incomplete or from another model")
            t = tensors[p.name]
            if p.name == "wte" and padded != t.shape[0]:
                t = np.concatenate([t, np.zeros((padded - t.shape[0],) + t.shape[1:], t.dtype)])
            if tuple(t.shape) != p.full_shape:
                raise CheckpointError(f"{path}: tensor {p.name!r} is {tuple(t.shape)}, the config says "
                                      f"{p.full_shape}")
            p.data[...] = model.xp.asarray(p.shard(t) if p.sharded else t)
        model.tokenizer = tok
        model.vocab_size = tok.vocab_size if tok is not None else config.vocab_size
        return model
