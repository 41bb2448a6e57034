"""The faces of the fused layer kernels (csrc/nn.c): LayerNorm, causal softmax, GELU, cross-entropy,
embeddings, bias gradients (and the bias with the residual add, bias_residual), AdamW (per slice, or
every segment of the flat buffers in one call), the sum of squares, attention, the LSTM cell and the
matmul split over the rank's OpenMP threads, on C-contiguous float32 or float64 arrays. Outputs are
passed in (hpr's layers own their buffers); backward kernels add into parameter gradients. Shapes are read from the arrays. A CuPy first argument sends the call to the
GPU twin in hpr/kernels/gpu.py (hpr.kernels.dispatch); the LSTM cell is CPU only. The numpy twin of
each kernel is in _ref.py.

Dimensions: N rows (= B*T), C channels, V vocabulary, B batch, T time, H heads, D = C / H head size.
Usage: ``nn.layernorm_forward(x, w, b, out, mean, rstd)``."""
import ctypes

import numpy as np

from .. import cpu
from ..cpu import cpu_kernels, num_threads
from ..device import xp_of
from ..errors import ConfigError
from .dispatch import device_twin, host_only

_scratch = {}


def _isz(*arrays):
    a = arrays[0]
    isz = a.dtype.itemsize
    if a.dtype not in (np.float32, np.float64):
        raise ConfigError(f"hpr's layer kernels take float32 or float64 arrays, not {a.dtype}")
    for b in arrays[1:]:
        if b.dtype != a.dtype:
            raise ConfigError(f"mixed dtypes: {a.dtype} and {b.dtype}; pass arrays of one float type")
    return isz


def _rows(x):
    """(N, C) of an array whose last axis is C."""
    c = x.shape[-1]
    return x.size // c if c else 0, c


@device_twin
def layernorm_forward(x, w, b, out, mean, rstd, eps=1e-5):
    """out = (x - mean) / sqrt(var + eps) * w + b over the last axis; mean, rstd (N) for backward."""
    n, c = _rows(x)
    cpu_kernels().layernorm_forward(out, mean, rstd, x, w, b, n, c, eps, _isz(x, w, b, out), num_threads())
    return out


@device_twin
def layernorm_backward(dout, x, w, mean, rstd, dx, dw, db):
    """dx += dL/dx, dw += dL/dw, db += dL/db."""
    n, c = _rows(x)
    nt = num_threads()
    key = (c, nt, x.dtype)
    s = _scratch.get(key)
    if s is None:
        s = _scratch[key] = np.empty(2 * c * nt, x.dtype)
    cpu_kernels().layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, s, n, c, _isz(x, dout, dx, dw), nt)
    return dx


@device_twin
def softmax_causal_forward(pre, scale, out):
    """out[..., i, j] = softmax over j <= i of scale * pre[..., i, j]; 0 above the diagonal.
    pre and out: (..., T, T); out may be pre."""
    t = pre.shape[-1]
    bh = pre.size // (t * t) if t else 0
    cpu_kernels().softmax_causal_forward(out, pre, bh, t, scale, _isz(pre, out), num_threads())
    return out


@device_twin
def softmax_causal_backward(datt, att, scale, out):
    """out = dL/dpre given dL/datt and the forward's att; out may be datt."""
    t = att.shape[-1]
    bh = att.size // (t * t) if t else 0
    cpu_kernels().softmax_causal_backward(out, datt, att, bh, t, scale, _isz(att, datt, out), num_threads())
    return out


@device_twin
def gelu_forward(x, out, bias=None):
    """x += bias (in place, when given); out = gelu_tanh(x)."""
    n, c = _rows(x)
    isz = _isz(x, out) if bias is None else _isz(x, out, bias)
    cpu_kernels().gelu_forward(out, x, bias, n, c, isz, num_threads())
    return out


@device_twin
def gelu_backward(dout, x, out):
    """out = dout * gelu_tanh'(x); out may be dout."""
    cpu_kernels().gelu_backward(out, x, dout, x.size, _isz(x, dout, out), num_threads())
    return out


@device_twin
def crossentropy(logits, targets, losses, dlogits=None, dscale=1.0):
    """losses[n] = -log softmax(logits[n])[targets[n]]; if dlogits is given (it may be logits),
    dlogits = (softmax - onehot) * dscale. targets: int32 (N). Returns losses."""
    n, v = _rows(logits)
    isz = _isz(logits, losses) if dlogits is None else _isz(logits, losses, dlogits)
    bad = cpu_kernels().crossentropy(losses, dlogits, logits, targets, n, v, dscale, isz, num_threads())
    if bad:
        raise ConfigError(f"{bad} target(s) outside the vocabulary [0, {v}); check the data's token ids")
    return losses


@device_twin
def embedding_forward(tokens, wte, wpe, out):
    """out[b, t] = wte[tokens[b, t]] + wpe[t]. tokens: int32 (B, T); wpe has at least T rows."""
    b, t = tokens.shape
    v, c = wte.shape
    if wpe.shape[0] < t:
        raise ConfigError(f"sequence of {t} tokens is longer than the model's context {wpe.shape[0]}")
    bad = cpu_kernels().embedding_forward(out, tokens, wte, wpe, b, t, c, v, _isz(wte, wpe, out), num_threads())
    if bad:
        raise ConfigError(f"{bad} token(s) outside the vocabulary [0, {v}); check the data's token ids")
    return out


@device_twin
def embedding_backward(dout, tokens, dwte, dwpe):
    """dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += sum over b of dout[b, t]."""
    b, t = tokens.shape
    v, c = dwte.shape
    cpu_kernels().embedding_backward(dwte, dwpe, dout, tokens, b, t, c, v, _isz(dwte, dwpe, dout))


@device_twin
def scatter_add(a, indices, values):
    """a[indices] += values with repeated indices each added (numpy's add.at; the vocab-parallel
    embedding's gradient rows). Returns a."""
    np.add.at(a, indices, values)
    return a


def _bias_residual_any(a, bias, out, x=None):
    """bias_residual with a's array module (on a GPU two element-wise kernels, the same two roundings)."""
    xp = xp_of(a)
    if x is None:
        return xp.add(a, bias, out=out)
    t = xp.add(a, bias, out=a if out is not x else None)  # a + bias first, then x + that: numpy's order
    return xp.add(x, t, out=out)


@device_twin(twin=_bias_residual_any)
def bias_residual(a, bias, out, x=None):
    """out = x + (a + bias) (a Linear's bias and the residual add after it, one pass over memory), or
    out = a + bias when x is None; bias (C) over the rows of a (N, C). The bits of numpy's a += bias then
    x + a. out may be a or x; a itself may be left holding a + bias or not (device-dependent)."""
    n, c = _rows(a)
    isz = _isz(a, bias, out) if x is None else _isz(a, bias, out, x)
    cpu_kernels().bias_residual(out, a, bias, x, n, c, isz, num_threads())
    return out


@device_twin
def bias_backward(dout, db):
    """db += dout summed over every axis but the last (threads take whole columns: the same sums)."""
    n, c = _rows(dout)
    cpu_kernels().bias_backward(db, dout, n, c, _isz(dout, db), num_threads())


@device_twin
def adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, gscale=1.0):
    """One AdamW step (t = step >= 1) on flat slices: g is scaled by gscale (clipping) first;
    p = p * (1 - lr wd) - lr * mhat / (sqrt(vhat) + eps), as PyTorch's AdamW."""
    cpu_kernels().adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, 1.0 - beta1 ** step,
                        1.0 - beta2 ** step, gscale, _isz(p, g, m, v), num_threads())


def _adamw_segments_any(p, g, m, v, seg, wd, mlo, lr, beta1, beta2, eps, step, gscale=1.0):
    """adamw_segments as one adamw call per segment (a GPU's way: each its own element-wise kernel)."""
    for k, w in enumerate(wd.tolist()):
        a, b = int(seg[2 * k]), int(seg[2 * k + 1])
        adamw(p[a:b], g[a:b], m[a - mlo:b - mlo], v[a - mlo:b - mlo], lr, beta1, beta2, eps, w, step, gscale)


@device_twin(twin=_adamw_segments_any)
def adamw_segments(p, g, m, v, seg, wd, mlo, lr, beta1, beta2, eps, step, gscale=1.0):
    """adamw on the segments [seg[2k], seg[2k+1]) of the flat p and g, with the moments m, v of element i
    at i - mlo (a ZeRO-1 shard's moments start at its lo), segment k decayed by wd[k]: the bits of one
    adamw call per segment, in one call (one thread team, one Python crossing). seg: int64 (2 nseg) host
    array, wd: float64 (nseg) host array."""
    cpu_kernels().adamw_segments(p, g, m, v, seg, wd, mlo, lr, beta1, beta2, eps, 1.0 - beta1 ** step,
                                 1.0 - beta2 ** step, gscale, _isz(p, g, m, v), num_threads())


@device_twin
def sumsq(x):
    """sum(x**2), accumulated in float64."""
    return cpu_kernels().sumsq(x, _isz(x), num_threads())


def _matmul_any(a, b, out, acc=None):
    """a @ b into out with a's array module (on a GPU one cuBLAS call), then acc += out if given."""
    xp_of(a).matmul(a, b, out=out)
    if acc is not None:
        acc += out
    return out


# numpy's BLAS's CBLAS gemm with 64-bit integers (OpenBLAS's ILP64 interface, as numpy >= 1.22 bundles it)
GEMM_SYMBOLS = {np.dtype(np.float32): ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
                np.dtype(np.float64): ("scipy_cblas_dgemm64_", "cblas_dgemm64_")}
_gemm = None  # {dtype: address} once looked up ({} when numpy's BLAS has no such symbol)


def blas_gemm():
    """{dtype: address of numpy's BLAS's ILP64 CBLAS gemm} for float32 and float64, looked up once in the
    OpenBLAS numpy loaded (threadpoolctl names its file); {} when numpy's BLAS is another library or has no
    ILP64 CBLAS symbols, or when hpr's kernels were built without OpenMP (matmul then splits the product
    with hpr.cpu.matmul's Python threads)."""
    global _gemm
    if _gemm is None:
        _gemm = {}
        if not cpu_kernels().info()["openmp"]:
            return _gemm
        dll = cpu.openblas_library()[0]
        for dtype, names in GEMM_SYMBOLS.items() if dll is not None else ():
            fn = next((getattr(dll, n) for n in names if hasattr(dll, n)), None)
            if fn is None:
                _gemm = {}
                break
            _gemm[dtype] = ctypes.cast(fn, ctypes.c_void_p).value
    return _gemm


def _blas_layout(x):
    """(transposed, leading dimension) of a 2-D operand as row-major CBLAS sees it, or None when it is
    neither C- nor Fortran-contiguous (a slice with gaps)."""
    if x.flags.c_contiguous:
        return 0, max(1, x.shape[1])
    if x.flags.f_contiguous:
        return 1, max(1, x.shape[0])
    return None


def _split_product(a, b, out, plan, nt, acc=None):
    """out = a @ b cut as hpr.cpu.split_plan says (plan: (by_rows, step)), each block one single-threaded
    gemm call on the rank's OpenMP threads (csrc/nn.c hpr_matmul_split), the same team the layer kernels
    use: no Python thread to wake, no GIL to pass. acc, if given (C-contiguous, out's shape and type), gets
    acc += out, each block by its own thread. Returns False (nothing written) when the operands do not
    suit (then hpr.cpu.matmul runs it)."""
    gemm = blas_gemm().get(out.dtype)
    if gemm is None or a.dtype != out.dtype or b.dtype != out.dtype or not out.flags.c_contiguous:
        return False
    if acc is not None and (acc.dtype != out.dtype or acc.shape != out.shape or not acc.flags.c_contiguous):
        return False
    la, lb = _blas_layout(a), _blas_layout(b)
    if la is None or lb is None:
        return False
    by_rows, step = plan
    m_rows, n_cols = out.shape
    cpu_kernels().matmul_split(gemm, out, a, b, m_rows, n_cols, a.shape[1], la[0], la[1], lb[0], lb[1],
                               n_cols, by_rows, step, out.dtype.itemsize, nt, acc)
    return True


@device_twin(twin=_matmul_any)
def matmul(a, b, out, acc=None):
    """out = a @ b (2-D; transposed views welcome), one cuBLAS call on CuPy arrays. On numpy arrays with
    more than one thread: out cut along its longer side into one block per thread of the rank, each block
    one single-threaded BLAS call, on the rank's OpenMP threads (_split_product), or on hpr.cpu.matmul's
    Python threads where numpy's BLAS offers no ILP64 CBLAS gemm; the same blocks, the same bits. One
    thread, or a product under hpr.cpu.SPLIT_MIN_FLOPS: numpy's product, whole. acc, if given: then
    acc += out (a weight gradient; on the OpenMP threads each block's share right after its product,
    the same additions). Returns out."""
    nt = num_threads()
    plan = cpu.split_plan(a, b, out, nt)
    if plan is None:
        np.matmul(a, b, out=out)
    elif _split_product(a, b, out, plan, nt, acc):
        return out
    else:
        cpu.matmul(a, b, out)
    if acc is not None:
        acc += out
    return out


def _heads(a, b, t, parts, h):
    """Views (B, H, T, D) of the `parts` head groups side by side in the rows of a (B*T, parts*H*D)."""
    d = a.shape[1] // (parts * h)
    a5 = a.reshape(b, t, parts, h, d)
    return [a5[:, :, i].transpose(0, 2, 1, 3) for i in range(parts)]


def attention_saved_shape(b, h, t, xp=np):
    """Shape of what attention_forward keeps for attention_backward: on the CPU (numpy) the row
    log-sum-exp, (B, H, T), O(T) (the flash kernel recomputes the probabilities from it); on a GPU
    (cupy: the batched-matmul twins) the probabilities themselves, (B, H, T, T)."""
    return (b, h, t) if xp is np else (b, h, t, t)


def attention_bmm_forward(qkv, b, t, h, att, y):
    """attention_forward as batched matmuls (the GPU's way: one cuBLAS call per product, the whole
    (T, T) score block, its upper half zeroed by the causal softmax kernel); keeps the probabilities
    att (B, H, T, T). Any array module."""
    xp = xp_of(qkv)
    q, k, v = _heads(qkv, b, t, 3, h)
    xp.matmul(q, k.swapaxes(-1, -2), out=att)  # raw scores; the kernel scales, masks and normalises
    softmax_causal_forward(att, 1.0 / np.sqrt(q.shape[-1]), att)
    _heads(y, b, t, 1, h)[0][...] = xp.matmul(att, v)
    return y


def attention_bmm_backward(dy, y, att, qkv, b, t, h, dqkv):
    """attention_backward as batched matmuls from the kept probabilities att (y is not needed);
    dqkv written whole. Any array module."""
    xp = xp_of(qkv)
    q, k, v = _heads(qkv, b, t, 3, h)
    g = _heads(dy, b, t, 1, h)[0]
    dq, dk, dv = _heads(dqkv, b, t, 3, h)
    dv[...] = xp.matmul(att.swapaxes(-1, -2), g)
    dpre = xp.matmul(g, v.swapaxes(-1, -2))  # dL/datt, then in place dL/dscores
    softmax_causal_backward(dpre, att, 1.0 / np.sqrt(q.shape[-1]), dpre)
    dq[...] = xp.matmul(dpre, k)
    dk[...] = xp.matmul(dpre.swapaxes(-1, -2), q)
    return dqkv


ATTENTION_MAX_HEAD = 128


def _attn_scratch(t, d, dtype):
    """The kernels' per-thread scratch, O(T D) each, kept per (T, D, threads, dtype)."""
    if d > ATTENTION_MAX_HEAD:
        raise ConfigError(f"head size {d} is above the attention kernel's {ATTENTION_MAX_HEAD}; use more heads")
    nt = num_threads()
    key = ("attn", t, d, nt, np.dtype(dtype))
    s = _scratch.get(key)
    if s is None:
        s = _scratch[key] = np.empty(nt * cpu_kernels().attention_scratch(t, d), dtype)
    return s, nt


def attention_scratch_bytes(t, d, dtype):
    """Bytes of scratch the CPU attention kernels hold for (T, D) at the current thread count: O(T D)."""
    return num_threads() * cpu_kernels().attention_scratch(t, d) * np.dtype(dtype).itemsize


@device_twin(twin=attention_bmm_forward)
def attention_forward(qkv, b, t, h, saved, y):
    """Causal multi-head attention: qkv (B*T, 3C) rows [q | k | v] with heads side by side, into
    y (B*T, C) and `saved` (attention_saved_shape) for backward: on the CPU the row log-sum-exp of the
    scores q.k / sqrt(D), (B, H, T), from the flash-style kernel (tiles of queries against tiles of
    keys, online softmax, O(T) memory). CuPy arrays take attention_bmm_forward (cuBLAS batched
    matmuls around the causal softmax kernel), where `saved` is the probabilities (B, H, T, T)."""
    c = qkv.shape[1] // 3
    d = c // h
    s, nt = _attn_scratch(t, d, qkv.dtype)
    cpu_kernels().attention_forward(y, saved, qkv, s, b, t, h, d, 1.0 / np.sqrt(d), _isz(qkv, saved, y), nt)
    return y


@device_twin(twin=attention_bmm_backward)
def attention_backward(dy, y, saved, qkv, b, t, h, dqkv):
    """dqkv (B*T, 3C), written whole, from dy (B*T, C) and the forward's y, saved and qkv (the CPU
    kernel recomputes the probabilities from the log-sum-exp). CuPy arrays take attention_bmm_backward."""
    c = qkv.shape[1] // 3
    d = c // h
    s, nt = _attn_scratch(t, d, qkv.dtype)
    cpu_kernels().attention_backward(dqkv, dy, y, saved, qkv, s, b, t, h, d, 1.0 / np.sqrt(d),
                                     _isz(qkv, saved, dy, y, dqkv), nt)
    return dqkv


@host_only()
def lstm_cell_forward(a, c_prev, c, tc, h):
    """One LSTM step: a (B, 4H) pre-activations [i | f | g | o] become the activated gates (in place);
    c = f c_prev + i g, tc = tanh(c), h = o tc (all (B, H), written)."""
    b, h4 = a.shape
    cpu_kernels().lstm_cell_forward(a, c, tc, h, c_prev, b, h4 // 4, _isz(a, c, tc, h, c_prev))
    return h


@host_only()
def lstm_cell_backward(dh, dc_next, gates, c_prev, tc, da, dc_prev):
    """Backward of one step: da (B, 4H) and dc_prev (B, H) (may be dc_next) from dh and dc_next."""
    b, h4 = gates.shape
    cpu_kernels().lstm_cell_backward(da, dc_prev, dh, dc_next, gates, c_prev, tc, b, h4 // 4,
                                     _isz(gates, da, dc_prev, dh, dc_next, c_prev, tc))
    return da
