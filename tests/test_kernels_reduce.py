"""The reduction kernels against their numpy twins (hpr.kernels._ref), over dtypes, ops and odd sizes."""
import ml_dtypes
import numpy as np
import pytest

from hpr.cpu import cpu_kernels
from hpr.errors import ConfigError
from hpr.kernels import _ref, reduce

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64]
SIZES = [0, 1, 7, 64, 1000, 2049, 70001]


def sample(rng, n, dtype):
    if np.dtype(dtype).kind == "i":
        return rng.integers(-1000, 1000, n).astype(dtype)
    return (rng.standard_normal(n) * 10).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_reduce_into_matches_ref(rng, dtype, op):
    for n in SIZES:
        a, b = sample(rng, n, dtype), sample(rng, n, dtype)
        want = _ref.reduce_into(a, b, op)
        got = reduce.reduce_into(a.copy(), b, op)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_reduce_many_matches_ref(rng, dtype, op, k):
    for n in SIZES:
        ins = [sample(rng, n, dtype) for _ in range(k)]
        want = _ref.reduce_many(ins, op)
        out = np.empty_like(ins[0])
        reduce.reduce_many(out, ins, op)
        np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_reduce_many_scaled_and_aliased(rng, dtype):
    ins = [sample(rng, 5003, dtype) for _ in range(3)]
    want = _ref.reduce_many(ins, "sum", scale=1 / 3)
    out = ins[1].copy()
    reduce.reduce_many(out, [ins[0], out, ins[2]], "sum", scale=1 / 3)  # out aliases an input
    np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))


def test_threads_give_identical_results(rng):
    a, b = sample(rng, 300001, np.float32), sample(rng, 300001, np.float32)
    one = reduce.reduce_into(a.copy(), b, "sum", nthreads=1)
    two = reduce.reduce_into(a.copy(), b, "sum", nthreads=2)
    np.testing.assert_array_equal(one, two)


def test_integer_sums_wrap_like_numpy():
    a = np.array([2**31 - 1, -(2**31)], np.int32)
    b = np.array([1, -1], np.int32)
    np.testing.assert_array_equal(reduce.reduce_into(a.copy(), b), a + b)


def test_half_conversions_exhaustive():
    k = cpu_kernels()
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    for bfloat in (False, True):
        out = np.empty(bits.size, np.float32)
        k.half_to_float(bits, out, bfloat)
        want = _ref.half_to_float(bits, bfloat)
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(out), nan)
        np.testing.assert_array_equal(out[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_float_to_half_rounding(rng):
    k = cpu_kernels()
    x = np.concatenate([
        rng.standard_normal(200000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 200000),
        np.array([0.0, -0.0, 65504, 65519.99, 65520, 1e9, -1e9, np.inf, -np.inf, 5.96e-8, 2.98e-8, 2.99e-8,
                  6.1e-5, 1 + 2**-11, 1 + 3 * 2**-11], np.float32),
    ]).astype(np.float32)
    for bfloat in (False, True):
        out = np.empty(x.size, np.uint16)
        k.float_to_half(x, out, bfloat)
        np.testing.assert_array_equal(out, _ref.float_to_half(x, bfloat))


def test_bad_arguments_are_clear():
    with pytest.raises(ConfigError, match="not supported"):
        reduce.reduce_into(np.zeros(3, np.complex64), np.zeros(3, np.complex64))
    with pytest.raises(ConfigError, match="unknown reduction op"):
        reduce.reduce_into(np.zeros(3, np.float32), np.zeros(3, np.float32), "prod")
    with pytest.raises(ConfigError, match="differ"):
        reduce.reduce_into(np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ConfigError, match="avg"):
        reduce.op_code("avg", reduce.dtype_code(np.int32))
