"""Route hpr's GPU launchers (hpr/kernels/gpu.py) to the CPU kernels, for tests with the fake CuPy in
this folder. Each routed launcher keeps the GPU signature and return value, refuses what a CUDA launch
cannot take (a host numpy array: TypeError; a device array on another device: ValueError; a
non-C-contiguous device array, which a raw kernel would misread: ValueError; dtypes the .cu kernels
would misread: TypeError), then runs the CPU face on the wrapped numpy arrays (same memory, so outputs
land in the device arrays) and counts the call in `calls` when it returns.

Usage::

    import route                      # tests/fakegpu on sys.path; imports the fake cupy
    route.route_kernels()             # ... hpr on cupy arrays now runs through the CPU kernels
    assert route.calls["layernorm_forward"] == 1
    route.unroute()

or ``with route.installed(): ...``, which also takes the fake cupy off sys.path / sys.modules afterwards."""
import collections
import contextlib
import functools
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import cupy  # noqa: E402
import cupyx  # noqa: E402,F401  (snapshotted for installed())

if getattr(cupy, "__version__", "") != "0.0+fake":
    raise ImportError(f"route.py needs the fake cupy of {HERE}, but `import cupy` gave {cupy.__file__}")

from hpr.errors import ConfigError  # noqa: E402
from hpr.kernels import gpu, nn  # noqa: E402
from hpr.kernels import reduce as R  # noqa: E402
from hpr.kernels import statevec as SV  # noqa: E402

calls = collections.Counter()  # launcher name -> routed calls that returned (not those that raised)
_originals = {}
_fake_modules = {m: mod for m, mod in sys.modules.items() if m.split(".")[0] in ("cupy", "cupyx")}

NN = ("layernorm_forward", "layernorm_backward", "softmax_causal_forward", "softmax_causal_backward",
      "gelu_forward", "gelu_backward", "crossentropy", "embedding_forward", "embedding_backward",
      "bias_backward", "adamw", "sumsq")


def _launch_arg(name, i, x):
    """What a CUDA launch would pass for x: a device array's numpy array, after the launch's checks."""
    if isinstance(x, cupy.ndarray):
        if not x.flags.c_contiguous:
            raise ValueError(f"gpu.{name}: argument {i} is a non-C-contiguous device array (shape {x.shape}, "
                             f"strides {x.strides}); a raw CUDA kernel would read the wrong elements")
        return cupy._dev(x)  # ValueError when it lives on another device
    if isinstance(x, np.ndarray):
        raise TypeError(f"gpu.{name}: argument {i} is a host numpy array {x.dtype}{list(x.shape)}: a CUDA kernel "
                        f"takes device arrays (Unsupported type {type(x)})")
    return x


def _unwrap(name, args, kwargs):
    return ([_launch_arg(name, i, x) for i, x in enumerate(args)],
            {k: _launch_arg(name, k, v) for k, v in kwargs.items()})


def _kernel_dtype(name, dtype):
    """gpu.kernel's dtype check: float32/float64 (complex64/complex128) only."""
    if np.dtype(dtype).name not in ("float32", "float64", "complex64", "complex128"):
        raise ConfigError(f"GPU kernels take float32/float64 (complex64/complex128) arrays, not {np.dtype(dtype).name}")


def _same_dtype(name, want, **arrays):
    for k, a in arrays.items():
        if a.dtype != np.dtype(want):
            raise TypeError(f"gpu.{name}: {k} is {a.dtype}; the CUDA kernel reads it as {np.dtype(want)}")


def _back(r, args, kwargs):
    """The CPU face's result with its arrays as device arrays: the caller's own when it is one of them."""
    if isinstance(r, tuple):
        return tuple(_back(v, args, kwargs) for v in r)
    if isinstance(r, np.ndarray):
        for x in list(args) + list(kwargs.values()):
            if isinstance(x, cupy.ndarray) and x._a is r:
                return x
        return cupy.ndarray._wrap(r)
    return r


def _nn(name):
    cpu = getattr(nn, name).__wrapped__  # the undecorated CPU face (dispatch.device_twin keeps it)

    def launch(*args, **kwargs):
        a, k = _unwrap(name, args, kwargs)
        r = _back(cpu(*a, **k), args, kwargs)
        return args[1] if name == "bias_backward" else r  # gpu.bias_backward returns db
    return launch


def reduce_into(a, b, op="sum", nthreads=None):
    op = "sum" if op == "avg" else op  # as gpu.reduce_into: the caller scales
    if op not in ("sum", "max", "min"):
        raise ConfigError(f"GPU reduce op {op!r}: use sum, max or min (avg = sum, then scale)")
    (x, y), _ = _unwrap("reduce_into", (a, b), {})
    _kernel_dtype("reduce_into", x.dtype)
    R.reduce_into(x, y, op)
    return a


def scale(x, s, nthreads=None):
    (y, s), _ = _unwrap("scale", (x, s), {})
    _kernel_dtype("scale", y.dtype)
    R.scale(y, s)
    return x


def _controls(mask):
    return tuple(q for q in range(mask.bit_length()) if mask >> q & 1)


def _params(name, s, p, nu, shape):
    """Gate parameters ((nu, *shape), or shape when nu = 1: the kernel reads nu blocks) as the CPU face
    takes them: shape (shared) or (B, *shape)."""
    _same_dtype(name, s.dtype, params=p)
    if nu not in (1, s.shape[0]) or p.shape not in ((nu,) + shape, shape if nu == 1 else None):
        raise ValueError(f"gpu.{name}: parameters of shape {p.shape} for nu={nu}; expected {(nu,) + shape}")
    return p.reshape(shape) if nu == 1 else p


def apply_1q(state, q, u, nu, cmask=0):
    (s, q, u, nu, cmask), _ = _unwrap("apply_1q", (state, q, u, nu, cmask), {})
    u = _params("apply_1q", s, u, nu, (2, 2))
    SV.apply_controlled(s, _controls(cmask), q, u) if cmask else SV.apply_1q(s, q, u)
    return state


def apply_2q(state, q1, q2, u, nu):
    (s, q1, q2, u, nu), _ = _unwrap("apply_2q", (state, q1, q2, u, nu), {})
    SV.apply_2q(s, q1, q2, _params("apply_2q", s, u, nu, (4, 4)))
    return state


def apply_diag(state, q1, q2, m, d, nu):
    (s, q1, q2, m, d, nu), _ = _unwrap("apply_diag", (state, q1, q2, m, d, nu), {})
    if m == 1:
        SV.apply_diag_1q(s, q1, _params("apply_diag", s, d, nu, (2,)))
    elif m == 2:
        SV.apply_diag_2q(s, q1, q2, _params("apply_diag", s, d, nu, (4,)))
    else:
        raise ValueError(f"gpu.apply_diag: m={m}; the kernel takes m = 1 or 2")
    return state


def apply_x(state, q, cmask=0):
    (s, q, cmask), _ = _unwrap("apply_x", (state, q, cmask), {})
    SV.apply_x(s, q, controls=_controls(cmask))
    return state


def apply_swap(state, q1, q2):
    (s, q1, q2), _ = _unwrap("apply_swap", (state, q1, q2), {})
    SV.apply_swap(s, q1, q2)
    return state


def expval_z(state):
    (s,), _ = _unwrap("expval_z", (state,), {})
    return cupy.ndarray._wrap(SV.expval_z(s))


def _program(name, s, mats, copies, ops, fixed, inputs, weights, **more):
    gpu._shared_limit(s.shape[1].bit_length() - 1, s.itemsize, copies)  # the GPU's 48 KiB limit
    _same_dtype(name, s.dtype, mats=mats)
    _same_dtype(name, np.int64, ops=ops)
    _same_dtype(name, np.float64, fixed=fixed, inputs=inputs, weights=weights, **more)


def run_program(state, ops, mats, fixed, inputs, weights):
    (s, ops, mats, fixed, inputs, weights), _ = _unwrap("run_program", (state, ops, mats, fixed, inputs, weights), {})
    _program("run_program", s, mats, 1, ops, fixed, inputs, weights)
    SV.run_program(s, ops, mats, fixed, inputs, weights)
    return state


def adjoint_program(state, g, ops, imats, fixed, inputs, weights):
    args = (state, g, ops, imats, fixed, inputs, weights)
    (s, g, ops, imats, fixed, inputs, weights), _ = _unwrap("adjoint_program", args, {})
    _program("adjoint_program", s, imats, 2, ops, fixed, inputs, weights, g=g)
    din, dw = SV.adjoint_program(s, np.empty_like(s), g, ops, imats, fixed, inputs, weights)
    return cupy.ndarray._wrap(din), cupy.ndarray._wrap(dw)


_OTHERS = ("reduce_into", "scale", "apply_1q", "apply_2q", "apply_diag", "apply_x", "apply_swap", "expval_z",
           "run_program", "adjoint_program")
LAUNCHERS = NN + _OTHERS


def route_kernels():
    """Replace every launcher of hpr.kernels.gpu by its counted CPU route (idempotent)."""
    for name in LAUNCHERS:
        orig = _originals.setdefault(name, getattr(gpu, name))
        impl = _nn(name) if name in NN else globals()[name]

        @functools.wraps(orig)
        def routed(*args, _impl=impl, _name=name, **kwargs):
            r = _impl(*args, **kwargs)
            calls[_name] += 1
            return r
        routed.routed = True
        setattr(gpu, name, routed)


def unroute():
    """Put the real launchers back (calls keeps its counts; calls.clear() resets them)."""
    for name, orig in _originals.items():
        setattr(gpu, name, orig)
    _originals.clear()


@contextlib.contextmanager
def installed():
    """Routed launchers with the fake cupy importable; afterwards both are gone again: launchers
    restored, tests/fakegpu off sys.path, cupy/cupyx out of sys.modules (so a later `import cupy` in the
    same process, e.g. by test_gpu.py, does not find the fake). Re-entrant after exit."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    sys.modules.update(_fake_modules)
    route_kernels()
    try:
        yield sys.modules[__name__]
    finally:
        unroute()
        sys.path[:] = [p for p in sys.path if p != HERE]
        for m in [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx")]:
            del sys.modules[m]
