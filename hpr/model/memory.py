"""The memory model of one GPT stage, read from the code of hpr.nn.layers and hpr.model.gpt: every
parameter tensor this rank holds and every workspace buffer a training step allocates, by the same
names and shapes the layers use (tests/test_plan.py holds it equal, key by key, to a real model's
Workspace after a step). Owns the arithmetic of what a stage holds; not the process grid, the ranks'
other memory or the choice of a layout (hpr.plan).

A buffer is an "activation" when forward writes it and backward reads it (kept across forward ->
backward: what activation recomputation removes) and "workspace" when it lives within one layer's
backward or is an output consumed at once (keys "tmp.*", the head's dx / dxf / dwte): those are shared
by every block (hpr.nn.Block).

Dimensions: B micro-batch, T time, C d_model, H heads, V padded vocabulary, N = B*T rows, tp the
tensor-parallel ranks (each holds H/tp heads, 4C/tp MLP columns, V/tp vocabulary rows).
Usage: ``bufs = stage_buffers(config, b=4, t=128, tp=2, stage=0, pp=2, recompute="block")``"""
import numpy as np

from ..errors import ConfigError
from ..nn import RECOMPUTE
from .gpt import stage_blocks

WORKSPACE_PREFIXES = ("tmp.",)
WORKSPACE_KEYS = ("dx", "dxf", "dwte")


def is_workspace(key):
    """True for a buffer that lives within one backward (or an output added at once), not an activation."""
    return key.startswith(WORKSPACE_PREFIXES) or key in WORKSPACE_KEYS


def block_param_elements(config, tp=1):
    """Elements of one block's parameters on one tp rank: 2 LayerNorms (2C each), qkv (C x 3C/tp +
    3C/tp), the attention's proj (C/tp x C + C), fc (C x 4C/tp + 4C/tp), the MLP's proj (4C/tp x C + C)."""
    c = config.d_model
    return 4 * c + (3 * c * c + 3 * c) // tp + c * c // tp + c + (4 * c * c + 4 * c) // tp + 4 * c * c // tp + c


def stage_param_elements(config, tp=1, stage=0, pp=1):
    """Elements of this rank's flat parameter buffer (GPT.layout.size): its blocks, the embedding on
    the first stage (wte, wpe), wte on the last too (the tied head), the final norm on the last. No
    QuantumLayer (config.n_qubits must be 0)."""
    c, vl = config.d_model, config.padded_vocab // tp
    lo, hi = stage_blocks(config.n_layers, pp)[stage]
    n = (hi - lo) * block_param_elements(config, tp)
    if stage == 0:
        n += vl * c + config.context * c
    if stage == pp - 1:
        n += 2 * c + (vl * c if stage != 0 else 0)
    return n


def largest_init_draw(config, tp=1, stage=0, pp=1):
    """Elements of the largest whole tensor ParamLayout.build draws in float64 at init (every layout
    draws every tensor whole, held or not): wte (V, C) or the fc weight (C, 4C)."""
    c = config.d_model
    return max(config.padded_vocab * c, 4 * c * c, config.context * c)


def stage_buffers(config, b, t, tp=1, stage=0, pp=1, recompute="none", grad=True):
    """{workspace key: shape} of one GPT replica of `stage` after a training step on (b, t) tokens
    (grad=False: a forward without backward, evaluation's). Mirrors Embedding, Block, LayerNorm,
    Linear, CausalSelfAttention, MLP and GPT.stage_forward / stage_backward on the CPU."""
    if recompute not in RECOMPUTE:
        raise ConfigError(f"recompute {recompute!r}: use one of {', '.join(RECOMPUTE)}")
    if config.n_qubits:
        raise ConfigError("the memory model does not cover the QuantumLayer (n_qubits > 0)")
    c, n, hl = config.d_model, b * t, config.n_heads // tp
    bufs = {}
    if stage == 0:
        bufs["emb.out"] = (b, t, c)
    lo, hi = stage_blocks(config.n_layers, pp)[stage]
    for i in range(lo, hi):
        a = "shared" if recompute in ("attn", "block") else f"h{i}"
        m = "shared" if recompute == "block" else f"h{i}"
        g = "shared" if recompute == "block" else f"h{i}"  # the LayerNorms' statistics
        # "mlp": ln1's, ln2's and the GELU's outputs live in qkv's, fc's and the MLP proj's backward dx
        # buffers (hpr.nn.Block)
        ln1_out, ln2_out, h = (("tmp.attn.qkv.dx", "tmp.mlp.fc.dx", "tmp.mlp.proj.dx") if recompute == "mlp"
                               else (f"{g}.ln1.out", f"{g}.ln2.out", f"{m}.mlp.h"))
        for key, shape in (
                (ln1_out, (n, c)), (f"{g}.ln1.mean", (n,)), (f"{g}.ln1.rstd", (n,)),
                (f"{a}.attn.qkv.y", (n, 3 * c // tp)), (f"{a}.attn.saved", (b, hl, t)),
                (f"{a}.attn.y", (n, c // tp)), ("tmp.attn.proj.y", (n, c)),
                (("shared" if recompute == "block" else f"h{i}") + ".x1", (n, c)),
                (ln2_out, (n, c)), (f"{g}.ln2.mean", (n,)), (f"{g}.ln2.rstd", (n,)),
                (f"{m}.mlp.fc.y", (n, 4 * c // tp)), (h, (n, 4 * c // tp)),
                ("tmp.mlp.proj.y", (n, c)), (f"h{i}.x2", (n, c))):
            bufs[key] = shape
        if grad:
            bufs.update({"tmp.mlp.proj.dw": (4 * c // tp, c), "tmp.mlp.proj.dx": (n, 4 * c // tp),
                         "tmp.mlp.fc.dw": (c, 4 * c // tp), "tmp.mlp.fc.dx": (n, c),
                         "tmp.attn.proj.dw": (c // tp, c), "tmp.attn.proj.dx": (n, c // tp),
                         "tmp.attn.dqkv": (n, 3 * c // tp), "tmp.attn.qkv.dw": (c, 3 * c // tp),
                         "tmp.attn.qkv.dx": (n, c)})
    if stage == pp - 1:
        vl = config.padded_vocab // tp
        bufs.update({"ln_f.out": (n, c), "ln_f.mean": (n,), "ln_f.rstd": (n,), "logits": (n, vl), "losses": (n,)})
        if grad:
            bufs.update({"dx": (n, c), "dxf": (n, c), "dwte": (vl, c)})
    elif grad:
        bufs["dx"] = (n, c)
    return bufs


def split_bytes(bufs, itemsize):
    """(activation bytes, workspace bytes) of a stage_buffers dict."""
    act = ws = 0
    for key, shape in bufs.items():
        nb = int(np.prod(shape)) * itemsize
        if is_workspace(key):
            ws += nb
        else:
            act += nb
    return act, ws


def measured_split(ws):
    """(activation bytes, workspace bytes) a real Workspace holds now, split as split_bytes splits."""
    act = sum(a.nbytes for key, a in ws.buffers().items() if not is_workspace(key))
    return act, ws.nbytes - act


def loss_transient(config, b, t, tp=1):
    """Bytes of the temporaries the vocabulary-parallel loss allocates for a moment on the last stage
    (logits - max and its exp, (N, V/tp) each); 0 without tp (one fused kernel)."""
    return 0 if tp == 1 else 2 * b * t * (config.padded_vocab // tp) * np.dtype(config.dtype).itemsize
