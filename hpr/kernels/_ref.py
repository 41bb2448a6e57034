"""numpy twins of hpr's kernels: slow, obvious, and the executable spec the compiled and CUDA kernels
are tested against. Usage: ``np.testing.assert_array_equal(fast(...), _ref.reduce_many(...))``."""
import numpy as np

_NP_OPS = {"sum": np.add, "max": np.maximum, "min": np.minimum, "avg": np.add}


def _wide(dtype):
    """The dtype a reduction accumulates in: float32 for the half types, else the dtype itself."""
    return np.float32 if np.dtype(dtype).itemsize == 2 and np.dtype(dtype).kind != "i" else dtype


def reduce_many(ins, op="sum", scale=1.0):
    """(ins[0] op ins[1] op ...) * scale in list order, accumulated as the kernel does."""
    acc = np.asarray(ins[0]).astype(_wide(ins[0].dtype))
    f = _NP_OPS[op]
    for x in ins[1:]:
        acc = f(acc, np.asarray(x).astype(acc.dtype))
    if scale != 1.0:
        acc = acc * acc.dtype.type(scale)
    return acc.astype(ins[0].dtype)


def reduce_into(a, b, op="sum"):
    return reduce_many([a, b], op)


def half_to_float(bits, bfloat):
    """uint16 bit patterns of float16 (or bfloat16) widened to float32."""
    if bfloat:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def float_to_half(x, bfloat):
    """float32 rounded to float16 (or bfloat16) bit patterns, nearest-even."""
    if bfloat:
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16).view(np.uint16)
    with np.errstate(over="ignore"):  # overflow to inf is the rounding we want
        return x.astype(np.float16).view(np.uint16)
