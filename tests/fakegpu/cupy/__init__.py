"""A numpy-backed stand-in for CuPy, to test hpr's GPU plumbing on machines without a GPU (see
tests/fakegpu/README.md). A `cupy.ndarray` wraps a numpy array (`._a`) and is as strict as real CuPy
about host arrays: no implicit conversion to numpy (np.asarray(x) raises; use .get()), no numpy
arrays (ndim > 0) in device ufuncs and functions, all device arrays of an operation on the current
device (thread-local, cupy.cuda.Device). New uninitialised float arrays (empty, empty_like, ndarray)
are filled with NaN unless FAKECUPY_POISON=0, so reads of memory nobody wrote show up. CUDA code
cannot run: RawModule / RawKernel / ElementwiseKernel / ReductionKernel raise; hpr's launchers are
replaced by CPU calls with tests/fakegpu/route.py."""
import os
import sys

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from . import cuda
from .cuda import runtime as _rt
from .cuda import get_default_memory_pool, get_default_pinned_memory_pool, is_available  # noqa: F401

__version__ = "0.0+fake"
_NO_CUDA = "fake cupy cannot compile CUDA; route the launchers with tests/fakegpu/route.py"


def _host_refused(x):
    return TypeError(f"Unsupported type {type(x)}")


def _dev(x):
    """The numpy array of a device array on the current device (ValueError otherwise, as CuPy's kernels)."""
    cur = _rt.getDevice()
    if x._dev != cur:
        raise ValueError(f"The device where the array resides ({x._dev}) is different from the current device "
                         f"({cur}). Peer access is unavailable between these devices.")
    return x._a


def _arg(x, seq_ok=True):
    """An argument of a device operation: device arrays unwrapped, host arrays (ndim > 0) refused."""
    if isinstance(x, ndarray):
        return _dev(x)
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise _host_refused(x)
    if isinstance(x, (list, tuple)):
        if not seq_ok:  # CuPy's ufuncs take arrays and scalars only
            raise _host_refused(x)
        return type(x)(_arg(v) for v in x)
    if isinstance(x, dict):
        return {k: _arg(v) for k, v in x.items()}
    return x


def _host(x):
    """Device arrays (also inside lists) to their numpy arrays, for host -> device transfers."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v) for v in x)
    return x


def _poison(a):
    if a.dtype.kind in "fc" and os.environ.get("FAKECUPY_POISON", "1") != "0":
        a.fill(np.nan)
    return a


def _wrap(r):
    """A numpy result as device arrays: arrays and numpy scalars (CuPy gives 0-d arrays), in tuples too."""
    if isinstance(r, np.ndarray):
        return ndarray._wrap(r)
    if isinstance(r, (np.number, np.bool_)):
        return ndarray._wrap(np.asarray(r))
    if isinstance(r, (tuple, list)):
        return type(r)(_wrap(v) for v in r)
    if isinstance(r, (np.random.Generator, np.random.RandomState)):
        return _Namespace(r)
    return r


class _Flags:
    def __init__(self, a):
        self.c_contiguous, self.f_contiguous, self.owndata = a.flags.c_contiguous, a.flags.f_contiguous, a.flags.owndata
        self.writeable = True  # not in CuPy's flags; here for code written against numpy's

    def __getitem__(self, key):
        return getattr(self, {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous"}.get(key, key.lower()))

    def __repr__(self):
        return f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n  OWNDATA : {self.owndata}"


class _MemoryPointer:
    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id

    def __int__(self):
        return self.ptr


class ndarray(NDArrayOperatorsMixin):
    """A device array: a numpy array `_a` and the id `_dev` of the device it was made on."""

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("fake cupy.ndarray: memptr and strides are not supported")
        self._dev, self._base = _rt.getDevice(), None
        self._a = _poison(np.empty(shape, dtype, order))

    @classmethod
    def _wrap(cls, a, dev=None, base=None):
        x = object.__new__(cls)
        x._a, x._dev, x._base = a, _rt.getDevice() if dev is None else dev, base
        return x

    def _view(self, a):
        """A result that may share this array's memory: a view on the same device (base = the owner)."""
        base = (self._base if self._base is not None else self) if np.may_share_memory(a, self._a) else None
        return ndarray._wrap(a, self._dev, base)

    # ---- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: self._view(self._a.T))
    real = property(lambda self: self._view(self._a.real))
    imag = property(lambda self: self._view(self._a.imag))
    base = property(lambda self: self._base)
    device = property(lambda self: cuda.Device(self._dev))
    data = property(lambda self: _MemoryPointer(self._a.ctypes.data, self._dev))

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "descr": [("", a.dtype.str)],
                "data": (a.ctypes.data if a.size else 0, False),
                "strides": None if a.flags.c_contiguous else a.strides, "version": 3, "stream": 1}

    # ---- no implicit host conversion; numpy's ufuncs and functions run on the wrapped arrays
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "at":  # ufunc.at(a, indices[, b]): the indices may be host data, as in indexing
            a, idx, *b = inputs
            ufunc.at(_arg(a), _index(idx), *(_arg(v, False) for v in b))
            return None
        outs = kwargs.pop("out", None)
        args = [_arg(x, seq_ok=False) for x in inputs]
        kwargs = _arg(kwargs)
        if outs is not None:
            for o in outs:
                if o is not None and not isinstance(o, ndarray):
                    raise _host_refused(o)
            kwargs["out"] = tuple(None if o is None else _dev(o) for o in outs)
        r = getattr(ufunc, method)(*args, **kwargs)
        if outs is None:
            return _wrap(r)
        res = tuple(o if o is not None else _wrap(v) for o, v in zip(outs, r if isinstance(r, tuple) else (r,)))
        return res if len(res) > 1 else res[0]

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        r = func(*_arg(args), **_arg(kwargs))
        out = kwargs.get("out")
        if isinstance(out, ndarray):
            return out
        if func is np.empty_like:
            _poison(r)
        return _wrap(r)

    # ---- shape and views
    def reshape(self, *shape, order="C"):
        return self._view(self._a.reshape(*shape, order=order))

    def view(self, dtype=None):
        return self._view(self._a.view() if dtype is None else self._a.view(dtype))

    def ravel(self, order="C"):
        return self._view(self._a.ravel(order))

    def flatten(self, order="C"):
        return self.copy(order).ravel()

    def transpose(self, *axes):
        return self._view(self._a.transpose(*axes))

    def swapaxes(self, a1, a2):
        return self._view(self._a.swapaxes(a1, a2))

    def squeeze(self, axis=None):
        return self._view(self._a.squeeze(axis))

    def __getitem__(self, key):
        key = _index(key)
        key = key if isinstance(key, tuple) else (key,)
        if not any(k is Ellipsis for k in key):
            key += (Ellipsis,)  # numpy gives a 0-d view, not a scalar, for a full integer index
        return self._view(self._a[key])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _dev(value) if isinstance(value, ndarray) else value  # host values: a transfer

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    # ---- copies, transfers, scalars
    def copy(self, order="C"):
        return ndarray._wrap(self._a.copy(order))  # CuPy copies onto the current device from any device

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        a = _dev(self)
        if not copy and a.dtype == np.dtype(dtype):
            return self
        return ndarray._wrap(a.astype(dtype, order=order))

    def fill(self, value):
        _dev(self).fill(value.item() if isinstance(value, ndarray) else value)

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is None:
            return np.array(self._a, order=order, copy=True)
        if not isinstance(out, np.ndarray):
            raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
        if out.dtype != self.dtype:
            raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
        if out.shape != self.shape:
            raise ValueError("Shape mismatch. Old shape: {}, new shape: {}".format(out.shape, self.shape))
        np.copyto(out, self._a)
        return out

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        np.copyto(self._a, arr)

    def item(self, *args):
        return self._a.item(*args)

    def tolist(self):
        return self._a.tolist()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __bool__(self):
        return bool(self._a)

    def __index__(self):
        return self._a.__index__()

    def __format__(self, spec):
        return format(self._a, spec)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def sort(self, axis=-1):
        _dev(self).sort(axis)

    def dot(self, b, out=None):
        return np.dot(self, b, out=out)


def _method(fn):
    def m(self, *args, **kwargs):
        return fn(self, *args, **kwargs)  # dispatches to ndarray.__array_function__ / __array_ufunc__
    m.__name__ = fn.__name__
    return m


for _n in ("sum", "prod", "max", "min", "mean", "var", "std", "argmax", "argmin", "any", "all", "cumsum",
           "clip", "round", "conj", "conjugate", "nonzero", "take", "repeat", "diagonal", "trace", "argsort",
           "ptp"):
    if hasattr(np, _n):
        setattr(ndarray, _n, _method(getattr(np, _n)))


def _index(key):
    """An index for the wrapped array: device arrays unwrapped; host index arrays and lists are allowed."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return _dev(key) if isinstance(key, ndarray) else key


# ---- creation and transfers -------------------------------------------------------------------------
def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order=order)


def zeros(shape, dtype=float, order="C"):
    return ndarray._wrap(np.zeros(shape, dtype, order))


def ones(shape, dtype=float, order="C"):
    return ndarray._wrap(np.ones(shape, dtype, order))


def full(shape, fill_value, dtype=None, order="C"):
    return ndarray._wrap(np.full(shape, _host(fill_value), dtype, order))


def _like(fn, poison=False):
    def like(a, *args, dtype=None, order="K", subok=None, shape=None):
        if not isinstance(a, ndarray):  # CuPy's *_like take a cupy.ndarray prototype
            raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")
        r = fn(a._a, *_host(args), dtype=dtype, order=order, shape=shape)
        return ndarray._wrap(_poison(r) if poison else r)
    like.__name__ = fn.__name__
    return like


empty_like = _like(np.empty_like, poison=True)
zeros_like, ones_like, full_like = _like(np.zeros_like), _like(np.ones_like), _like(np.full_like)


def arange(start, stop=None, step=None, dtype=None):
    return ndarray._wrap(np.arange(start, stop, step, dtype=dtype) if stop is not None
                         else np.arange(start, dtype=dtype) if step is None else np.arange(0, start, step, dtype=dtype))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    return _wrap(np.linspace(start, stop, num, endpoint, retstep, dtype, axis))


def eye(N, M=None, k=0, dtype=float, order="C"):
    return ndarray._wrap(np.eye(N, M, k, dtype, order))


def identity(n, dtype=float):
    return ndarray._wrap(np.identity(n, dtype))


def asarray(a, dtype=None, order=None, blocking=False):
    """A device array: `a` itself when it is one of the dtype, else a copy (host data: a transfer)."""
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype) and \
            (order not in ("C", "c") or a.flags.c_contiguous) and (order not in ("F", "f") or a.flags.f_contiguous):
        return a
    return array(a, dtype, copy=True, order=order or "K")


asanyarray = asarray


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    if not copy and isinstance(obj, ndarray) and ndmin <= obj.ndim:
        return asarray(obj, dtype, None if order in ("K", "A") else order)
    return ndarray._wrap(np.array(_host(obj), dtype, copy=True, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    return asarray(a, dtype, "C")


def asfortranarray(a, dtype=None):
    return asarray(a, dtype, "F")


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream, order, out, blocking)
    if out is None:
        return np.asarray(a, order=order)
    out[...] = a
    return out


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def fuse(*args, **kwargs):
    """Identity decorator: a fused function just runs its operations on the fake arrays."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


def show_config():
    print(f"fake CuPy {__version__} (numpy {np.__version__}), {_rt.getDeviceCount()} fake device(s)")


class RawModule:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(_NO_CUDA)


RawKernel = ElementwiseKernel = ReductionKernel = RawModule


# ---- everything else: numpy's function of the same name, on device arrays only -------------------------
def _device_fn(fn):
    def f(*args, **kwargs):
        out = kwargs.get("out")
        for o in out if isinstance(out, tuple) else (out,):
            if o is not None and not isinstance(o, ndarray):
                raise _host_refused(o)
        r = fn(*_arg(args), **_arg(kwargs))
        return out if out is not None else _wrap(r)
    f.__name__ = getattr(fn, "__name__", "function")
    f.__doc__ = f"numpy.{f.__name__} on device arrays (host arrays refused)."
    return f


class _Ufunc:
    """A numpy ufunc on device arrays, with its methods (reduce, accumulate, outer, at)."""

    def __init__(self, uf):
        self._uf, self.__name__ = uf, uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __call__(self, *args, **kwargs):
        _check_ufunc_args(args)
        return _device_fn(self._uf)(*args, **kwargs)

    def __getattr__(self, name):
        return _device_fn(getattr(self._uf, name))

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise _host_refused(a)
        self._uf.at(a, indices, *(() if b is None else (b,)))


def _check_ufunc_args(args):
    for x in args:
        if isinstance(x, (list, tuple)):
            raise _host_refused(x)


class _Namespace:
    """A numpy submodule (or Generator) whose functions take and give device arrays."""

    def __init__(self, mod):
        self._mod = mod

    def __getattr__(self, name):
        obj = getattr(self._mod, name)
        if callable(obj) and not (isinstance(obj, type) and issubclass(obj, BaseException)):
            return _device_fn(obj)
        return obj


random, linalg, fft = _Namespace(np.random), _Namespace(np.linalg), _Namespace(np.fft)


class _Testing:
    """numpy.testing on device or host arrays (as cupy.testing's assertions)."""

    def __getattr__(self, name):
        fn = getattr(np.testing, name)
        return lambda *args, **kwargs: fn(*_to_host(args), **_to_host(kwargs))


def _to_host(x):
    if isinstance(x, ndarray):
        return x.get()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_host(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_host(v) for k, v in x.items()}
    return x


testing = _Testing()


def __getattr__(name):
    obj = getattr(np, name)  # AttributeError as numpy's
    if isinstance(obj, np.ufunc):
        obj = _Ufunc(obj)
    elif callable(obj) and not isinstance(obj, type):  # types (float32, dtype, ...) are numpy's own
        obj = _device_fn(obj)
    globals()[name] = obj
    return obj
