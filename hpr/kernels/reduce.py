"""Element-wise reductions for the collectives: ``reduce_into(a, b, op)`` (a = a op b),
``reduce_many(out, [a, b, ...], op, scale)`` and ``scale(x, s)``, on contiguous numpy arrays of float16,
bfloat16 (ml_dtypes), float32, float64, int32 or int64 (csrc/reduce.c). float16/bfloat16 are accumulated
in float32 and rounded once per call. reduce_into and scale on a CuPy first argument run their GPU twins
in hpr/kernels/gpu.py (float32/float64; hpr.kernels.dispatch); reduce_many and convert are CPU only.
Usage: ``reduce_into(acc, incoming, "sum")``."""
import numpy as np

from ..cpu import cpu_kernels, num_threads
from ..errors import ConfigError
from .dispatch import device_twin, host_only

# dtype and op codes shared with csrc/reduce.h
DTYPE_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3, "int32": 4, "int64": 5}
FLOAT_CODES = {0, 1, 2, 3}
OP_CODES = {"sum": 0, "max": 1, "min": 2, "avg": 0}
_by_dtype = {}


def dtype_code(dtype):
    """The kernel code for a numpy dtype, or ConfigError naming the supported ones."""
    try:
        return _by_dtype[dtype]
    except KeyError:
        pass
    code = DTYPE_CODES.get(np.dtype(dtype).name)
    if code is None:
        raise ConfigError(
            f"dtype {np.dtype(dtype).name} is not supported by hpr's reductions; use one of "
            f"{', '.join(DTYPE_CODES)} (bfloat16 from ml_dtypes)"
        )
    _by_dtype[dtype] = code
    return code


def op_code(op, dcode):
    """(kernel op code, is_avg) for an op name; avg only for floating dtypes."""
    code = OP_CODES.get(op)
    if code is None:
        raise ConfigError(f"unknown reduction op {op!r}; use one of sum, max, min, avg")
    if op == "avg" and dcode not in FLOAT_CODES:
        raise ConfigError("op 'avg' needs a floating dtype; use 'sum' and divide, or cast to float first")
    return code, op == "avg"


def _check_pair(a, b):
    if a.dtype != b.dtype or a.size != b.size:
        raise ConfigError(f"arrays differ: {a.dtype}[{a.size}] vs {b.dtype}[{b.size}]")


@device_twin
def reduce_into(a, b, op="sum", nthreads=None):
    """a = a (op) b, in place; returns a. avg adds (the caller scales by 1/n). CuPy arrays are reduced
    on their GPU (sum, max, min, avg)."""
    _check_pair(a, b)
    d = dtype_code(a.dtype)
    o, _ = op_code(op if op != "avg" else "sum", d)
    cpu_kernels().reduce_into(a, b, d, o, nthreads or num_threads())
    return a


@host_only()
def reduce_many(out, ins, op="sum", scale=1.0, nthreads=None):
    """out = (ins[0] op ins[1] op ...) * scale, reduced in list order; out may be one of ins."""
    for x in ins:
        _check_pair(out, x)
    d = dtype_code(out.dtype)
    o, _ = op_code(op if op != "avg" else "sum", d)
    cpu_kernels().reduce_many(out, list(ins), d, o, float(scale), nthreads or num_threads())
    return out


@device_twin
def scale(x, s, nthreads=None):
    """x *= s, in place, for floating x; returns x."""
    cpu_kernels().scale(x, dtype_code(x.dtype), float(s), nthreads or num_threads())
    return x


@host_only()
def convert(src, dst):
    """dst[...] = src, between float32 and float16 or bfloat16 (round to nearest even when narrowing),
    by the compiled conversions the reductions use. Returns dst."""
    if src.size != dst.size:
        raise ConfigError(f"convert: {src.size} elements into {dst.size}")
    names = (src.dtype.name, dst.dtype.name)
    k = cpu_kernels()
    if names[0] == "float32" and names[1] in ("float16", "bfloat16"):
        k.float_to_half(src, dst.view(np.uint16), names[1] == "bfloat16")
    elif names[1] == "float32" and names[0] in ("float16", "bfloat16"):
        k.half_to_float(src.view(np.uint16), dst, names[0] == "bfloat16")
    else:
        raise ConfigError(f"convert: {names[0]} -> {names[1]} is not a float32/half conversion")
    return dst
