"""hpr's kernels on the GPU: CuPy launchers for the CUDA sources in hpr/kernels/cuda/ (nn.cu,
statevec.cu, reduce.cu), with the same arguments and semantics as the CPU functions in nn.py,
statevec.py and reduce.py that hand a call here when its first argument is a CuPy array
(hpr.kernels.dispatch, DESIGN.md decision 5); hpr.quantum.Circuit calls run_program and adjoint_program
itself, with its program moved to the GPU. The few things CuPy already does well are CuPy's own:
matmuls (`@`, cuBLAS), column sums, scatter_add (cupyx), probabilities. CuPy is optional: importing
this module never imports it; the first launch does, and a missing CuPy or device is a KernelsMissing
saying what to install. With hpr/device.py, the only module that imports cupy or cupyx.

Each .cu is compiled once per process by NVRTC (CuPy's RawModule, cached on disk by CuPy) with the
folder on the include path; kernels are named hpr_<kernel>_f32 / _f64. Launch shapes: row kernels one
block of ROW_THREADS per row, element kernels a grid-stride loop over at most ELEM_BLOCKS blocks of 256
threads.

Usage: ``from hpr.kernels import gpu; gpu.layernorm_forward(x, w, b, out, mean, rstd)`` (cupy arrays)."""
import os

import numpy as np

from ..device import cupy
from ..errors import ConfigError

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
SOURCES = ("nn.cu", "statevec.cu", "reduce.cu")
ROW_THREADS = 256
ELEM_BLOCKS = 1024
_modules = {}
_functions = {}


def module(name):
    """The compiled RawModule of hpr/kernels/cuda/<name>."""
    if name not in _modules:
        cp = cupy()
        with open(os.path.join(HERE, name)) as f:
            code = f.read()
        _modules[name] = cp.RawModule(code=code, options=("-std=c++17", f"-I{HERE}"))
    return _modules[name]


def kernel(src, name, dtype):
    """The kernel hpr_<name>_f32 / _f64 of a source for float32 / float64 (complex64 / complex128) data
    (looked up once per process and GPU)."""
    cp = cupy()
    d = cp.dtype(dtype)
    sfx = {"float32": "_f32", "complex64": "_f32", "float64": "_f64", "complex128": "_f64"}.get(d.name)
    if sfx is None:
        raise ConfigError(f"GPU kernels take float32/float64 (complex64/complex128) arrays, not {d.name}")
    key = (src, name, sfx, cp.cuda.Device().id)
    f = _functions.get(key)
    if f is None:
        f = _functions[key] = module(src).get_function(f"hpr_{name}{sfx}")
    return f


_i, _f = np.int64, np.float64  # kernel arguments: i64 and double
_i32 = np.int32  # a C int (CuPy would pass a Python int as 64 bits)


def _rows(x):
    return x.size // x.shape[-1], x.shape[-1]


def _elem_grid(n):
    return (max(1, min(ELEM_BLOCKS, (n + 255) // 256)),), (256,)


# ---- nn ------------------------------------------------------------------------------------------
def layernorm_forward(x, w, b, out, mean, rstd, eps=1e-5):
    n, c = _rows(x)
    kernel("nn.cu", "layernorm_forward", x.dtype)((n,), (ROW_THREADS,), (out, mean, rstd, x, w, b, _i(n), _i(c), _f(eps)))
    return out


def layernorm_backward(dout, x, w, mean, rstd, dx, dw, db):
    n, c = _rows(x)
    kernel("nn.cu", "layernorm_backward", x.dtype)((n,), (ROW_THREADS,),
                                                   (dx, dw, db, dout, x, w, mean, rstd, _i(n), _i(c)))
    return dx


def softmax_causal_forward(pre, scale, out):
    bh, t = pre.size // (pre.shape[-1] ** 2), pre.shape[-1]
    kernel("nn.cu", "softmax_causal_forward", pre.dtype)((bh * t,), (ROW_THREADS,), (out, pre, _i(bh), _i(t), _f(scale)))
    return out


def softmax_causal_backward(datt, att, scale, out):
    bh, t = att.size // (att.shape[-1] ** 2), att.shape[-1]
    kernel("nn.cu", "softmax_causal_backward", att.dtype)((bh * t,), (ROW_THREADS,),
                                                         (out, datt, att, _i(bh), _i(t), _f(scale)))
    return out


def gelu_forward(x, out, bias=None):
    n, c = _rows(x)
    g, t = _elem_grid(x.size)
    kernel("nn.cu", "gelu_forward", x.dtype)(g, t, (out, x, x if bias is None else bias, _i32(bias is not None),
                                                    _i(n), _i(c)))
    return out


def gelu_backward(dout, x, out):
    g, t = _elem_grid(x.size)
    kernel("nn.cu", "gelu_backward", x.dtype)(g, t, (out, x, dout, _i(x.size)))
    return out


def crossentropy(logits, targets, losses, dlogits=None, dscale=1.0):
    cp = cupy()
    n, v = _rows(logits)
    bad = cp.zeros(1, cp.uint64)
    kernel("nn.cu", "crossentropy", logits.dtype)((n,), (ROW_THREADS,),
                                                  (losses, logits if dlogits is None else dlogits, logits,
                                                   targets, _i(n), _i(v), _f(dscale), _i32(dlogits is not None), bad))
    nbad = int(bad.get()[0])
    if nbad:
        raise ConfigError(f"{nbad} target(s) outside the vocabulary [0, {v}); check the data's token ids")
    return losses


def embedding_forward(tokens, wte, wpe, out):
    cp = cupy()
    b, t = tokens.shape
    v, c = wte.shape
    bad = cp.zeros(1, cp.uint64)
    kernel("nn.cu", "embedding_forward", wte.dtype)((b * t,), (ROW_THREADS,),
                                                    (out, tokens, wte, wpe, _i(b), _i(t), _i(c), _i(v), bad))
    nbad = int(bad.get()[0])
    if nbad:
        raise ConfigError(f"{nbad} token(s) outside the vocabulary [0, {v}); check the data's token ids")
    return out


def embedding_backward(dout, tokens, dwte, dwpe):
    b, t = tokens.shape
    c = dwte.shape[1]
    kernel("nn.cu", "embedding_backward", dwte.dtype)((b * t,), (ROW_THREADS,),
                                                     (dwte, dwpe, dout, tokens, _i(b), _i(t), _i(c)))


def scatter_add(a, indices, values):
    """a[indices] += values, repeats accumulated: cupyx's atomic scatter."""
    import cupyx  # lazy: CuPy is optional (see the module docstring)

    cupyx.scatter_add(a, indices, values)
    return a


def bias_backward(dout, db):
    """db += dout summed over the rows: CuPy's own column reduction (every SM busy, deterministic)."""
    n, c = _rows(dout)
    db += dout.reshape(n, c).sum(axis=0)
    return db


def adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, gscale=1.0):
    gr, t = _elem_grid(p.size)
    kernel("nn.cu", "adamw", p.dtype)(gr, t, (p, g, m, v, _i(p.size), _f(lr), _f(beta1), _f(beta2), _f(eps),
                                             _f(weight_decay), _f(1.0 - beta1 ** step), _f(1.0 - beta2 ** step),
                                             _f(gscale)))


def sumsq(x):
    cp = cupy()
    out = cp.zeros(1, cp.float64)
    g, t = _elem_grid(x.size)
    kernel("nn.cu", "sumsq", x.dtype)(g, t, (out, x, _i(x.size)))
    return float(out.get()[0])


# ---- reduce --------------------------------------------------------------------------------------
def reduce_into(a, b, op="sum", nthreads=None):
    """a = a op b, elementwise (sum, max, min; avg is sum here, as on the CPU: the caller scales).
    nthreads (the CPU's) is ignored."""
    if op == "avg":
        op = "sum"
    if op not in ("sum", "max", "min"):
        raise ConfigError(f"GPU reduce op {op!r}: use sum, max or min (avg = sum, then scale)")
    g, t = _elem_grid(a.size)
    kernel("reduce.cu", f"reduce_{op}", a.dtype)(g, t, (a, b, _i(a.size)))
    return a


def scale(x, s, nthreads=None):
    """x *= s; nthreads (the CPU's) is ignored."""
    g, t = _elem_grid(x.size)
    kernel("reduce.cu", "scale", x.dtype)(g, t, (x, _f(s), _i(x.size)))
    return x


# ---- state vectors ------------------------------------------------------------------------------
def _sv(state):
    b, m = state.shape
    return b, m.bit_length() - 1


def apply_1q(state, q, u, nu, cmask=0):
    """u: (nu, 2, 2) in the state's dtype, nu = 1 (shared) or B."""
    b, n = _sv(state)
    g, t = _elem_grid(b << max(n - 1, 0))
    kernel("statevec.cu", "sv_apply_1q", state.dtype)(g, t, (state, _i(b), _i32(n), _i32(q), _i(cmask), u, _i(0 if nu == 1 else 8)))
    return state


def apply_2q(state, q1, q2, u, nu):
    b, n = _sv(state)
    g, t = _elem_grid(b << max(n - 2, 0))
    kernel("statevec.cu", "sv_apply_2q", state.dtype)(g, t, (state, _i(b), _i32(n), _i32(q1), _i32(q2), u, _i(0 if nu == 1 else 32)))
    return state


def apply_diag(state, q1, q2, m, d, nu):
    """amplitude *= d[b(q1) (+ 2 b(q2) when m = 2)]; d (nu, 2**m)."""
    b, n = _sv(state)
    g, t = _elem_grid(b << n)
    kernel("statevec.cu", "sv_apply_diag", state.dtype)(g, t, (state, _i(b), _i32(n), _i32(q1), _i32(q2), _i32(m), d,
                                                               _i(0 if nu == 1 else 2 << m)))
    return state


def apply_x(state, q, cmask=0):
    b, n = _sv(state)
    g, t = _elem_grid(b << max(n - 1, 0))
    kernel("statevec.cu", "sv_apply_x", state.dtype)(g, t, (state, _i(b), _i32(n), _i32(q), _i(cmask)))
    return state


def apply_swap(state, q1, q2):
    b, n = _sv(state)
    g, t = _elem_grid(b << max(n - 2, 0))
    kernel("statevec.cu", "sv_apply_swap", state.dtype)(g, t, (state, _i(b), _i32(n), _i32(q1), _i32(q2)))
    return state


def expval_z(state):
    """(B, n) float64. Many states: one block per state (the kernel); a few large ones: per qubit, a
    reduction over all the GPU's SMs of the probabilities with that qubit 0 minus with it 1."""
    cp = cupy()
    b, n = _sv(state)
    if b >= 128 or n < 12:
        out = cp.empty((b, n), cp.float64)
        kernel("statevec.cu", "sv_expval_z", state.dtype)((b,), (ROW_THREADS,), (out, state, _i(b), _i32(n)))
        return out
    p = (state.real.astype(cp.float64) ** 2 + state.imag.astype(cp.float64) ** 2)
    cols = []
    for q in range(n):
        v = p.reshape(b, 1 << (n - 1 - q), 2, 1 << q)
        cols.append(v[:, :, 0].sum(axis=(1, 2)) - v[:, :, 1].sum(axis=(1, 2)))
    return cp.stack(cols, axis=1)


def probabilities(state):
    """|psi|^2 elementwise, in the state's real dtype: CuPy's own elementwise kernel."""
    return abs(state) ** 2


def _shared_limit(n, itemsize, copies):
    need = copies * (1 << n) * itemsize
    if need > 48 * 1024:
        raise ConfigError(f"a compiled circuit of {n} qubits needs {need // 1024} KiB of shared memory per state "
                          f"on the GPU (limit 48 KiB): use StateVector gate by gate for states this large")
    return need


def run_program(state, ops, mats, fixed, inputs, weights):
    """state <- a compiled program (hpr.quantum.circuit.Program) on every state: one launch, one block per
    state, the state in shared memory. ops, mats, fixed, inputs, weights: device arrays."""
    b, n = _sv(state)
    shm = _shared_limit(n, state.itemsize, 1)
    kernel("statevec.cu", "sv_run", state.dtype)((b,), (ROW_THREADS,), (state, _i(b), _i32(n), ops, _i(len(ops)), mats, fixed,
                                                                       inputs, _i(inputs.shape[1]), weights),
                                                 shared_mem=shm)
    return state


def adjoint_program(state, g, ops, imats, fixed, inputs, weights):
    """The adjoint sweep (one launch): (d_inputs (B, n_in), d_weights per state (B, n_w)) as device arrays."""
    cp = cupy()
    b, n = _sv(state)
    shm = _shared_limit(n, state.itemsize, 2)
    din = cp.zeros(inputs.shape, cp.float64)
    dw = cp.zeros((b, len(weights)), cp.float64)
    kernel("statevec.cu", "sv_adjoint", state.dtype)((b,), (ROW_THREADS,), (state, _i(b), _i32(n), g, ops, _i(len(ops)), imats,
                                                                           fixed, inputs, _i(inputs.shape[1]), weights,
                                                                           _i(len(weights)), din, dw),
                                                     shared_mem=shm)
    return din, dw
