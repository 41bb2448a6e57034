"""The host/device buffer adapter: how the array a user hands a Communicator (numpy, or CuPy on a GPU)
becomes what a channel or MPI works on, and how the result gets back into it.

  numpy array                    its 1-D view, checked (C-contiguous, writable when the call writes)
  CuPy array, CUDA-aware MPI     its 1-D device view ("direct"): MPI moves device memory and the GPU
                                 reduce kernels reduce it (float32 / float64; other dtypes are staged)
  CuPy array, otherwise          a pinned host copy ("staged"), copied back to the device when done

Owns the checks users see on arrays (type, contiguity, writability) and on reduction names, the
CUDA-aware answer every rank of a communicator agrees on, and the communicator's pinned staging
buffers. Does not own the collectives (channel.py), where pinned memory comes from (hpr.device.Staging)
or how MPI is asked whether it is CUDA-aware (hpr.device.cuda_aware; CommConfig.cuda_aware overrides).

Usage::

    buf = buffers.adapt(x, "allreduce")        # buf.data: what the channel reduces; buf.gpu: device or None
    channel.allreduce(buf.data, dcode, ocode, avg, gpu=buf.gpu)
    buf.finish()                               # a staged result goes back into x
"""
import numpy as np

from ..device import Staging, cuda_aware, cupy, is_device_array
from ..errors import ConfigError
from ..kernels.reduce import dtype_code, op_code

DEVICE_DTYPES = (np.float32, np.float64)  # what the GPU reduce kernels take; other dtypes stage


def as_bytes(x):
    """x's bytes as the uint8 view MPI is handed (x contiguous, host or device)."""
    return x if x.dtype == np.uint8 else x.view(np.uint8)


def host_view(x, what, writable=True):
    """A 1-D view of a C-contiguous numpy array, or a ConfigError saying what to pass instead."""
    if not isinstance(x, np.ndarray):
        raise ConfigError(f"{what} takes a numpy array, not {type(x).__name__}; wrap it with numpy.asarray")
    flags = x.flags  # a new object at every access: read once (this is every collective's hot path)
    if not flags.c_contiguous:
        raise ConfigError(f"{what} needs a C-contiguous array; pass numpy.ascontiguousarray(x) "
                          "(and copy the result back)")
    if writable and not flags.writeable:
        raise ConfigError(f"{what} works in place and needs a writable array")
    return x if x.ndim == 1 else x.reshape(-1)


_codes = {}  # dtype -> {op: the codes of a valid reduction} (every collective call asks; two plain
# lookups cost less than one with a (dtype, op) key, whose tuple and dtype hash are made anew each call)


def reduction_codes(dtype, op, what):
    """(kernel dtype code, kernel op code, is_avg) of a reduction, or ConfigError naming what is allowed."""
    try:
        return _codes[dtype][op]
    except (KeyError, TypeError):  # TypeError: an unhashable op, refused below
        pass
    d = dtype_code(dtype)
    if not isinstance(op, str):
        raise ConfigError(f"{what}: op {op!r} is not a reduction name; use one of sum, max, min, avg")
    o, avg = op_code(op, d)
    if len(_codes) < 64:
        _codes.setdefault(dtype, {})[op] = (d, o, avg)
    return d, o, avg


class Buffer:
    """One user array as a channel or MPI sees it. data: the 1-D array to communicate (the user's own
    memory, or a host copy of it); gpu: the device index when data is device memory, else None."""

    __slots__ = ("data", "gpu", "_device", "_pool")

    def __init__(self, data, gpu=None, device=None, pool=None):
        self.data, self.gpu = data, gpu
        self._device = device  # the user's device array (1-D) a staged result is copied back into
        self._pool = pool  # the Staging pool a kept host copy goes back to

    def finish(self, ok=True):
        """After the operation: copy a staged result back into the user's device array (only when ok),
        and give a pooled host copy back. Calling it again does nothing."""
        dev, self._device = self._device, None
        if dev is not None and ok:
            dev.set(self.data)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.give(self.data)


class Buffers:
    """The adapter of one Communicator: turns its users' arrays into Buffers. agree_min(value, op): the
    smallest of every rank's integer value, agreed under the communicator's deadline (Channel.agree_min)."""

    def __init__(self, config, agree_min):
        self._agree_min = agree_min  # the CUDA-aware answer is agreed over the communicator's ranks
        self._config = config
        self._aware = None
        self._staging = None

    @property
    def cuda_aware(self):
        """Whether device arrays go to MPI as they are: CommConfig.cuda_aware, else hpr.device.cuda_aware,
        agreed by every rank at the first device call (one rank staging while another does not would
        run different algorithms)."""
        if self._aware is None:
            mine = self._config.cuda_aware
            if mine is None:
                mine = cuda_aware()[0]
            self._aware = bool(self._agree_min(int(mine), "cuda-aware agreement"))  # under the deadline
        return self._aware

    def adapt(self, x, what, *, read=True, write=True, keep=False, host=False):
        """The Buffer for array x in the operation named `what`.
        read / write: whether the operation reads x / leaves its result in x.
        keep: the operation is still in flight when the call returns (iallreduce, isend, irecv): a
          staged copy comes from the pool and goes back at finish().
        host: stage a device array even when MPI is CUDA-aware (the collectives with no device path)."""
        if isinstance(x, np.ndarray) or not is_device_array(x):
            return Buffer(host_view(x, what, write))
        if not x.flags.c_contiguous:
            raise ConfigError(f"{what} needs a C-contiguous array; pass cupy.ascontiguousarray(x) "
                              "(and copy the result back)")
        cupy().cuda.get_current_stream().synchronize()  # MPI and the staging copy read it next
        flat = x.reshape(-1)
        if self._staging is None:
            self._staging = Staging()
        aware = self.cuda_aware  # asked at every device call: the first one, whichever, agrees it
        if aware and not host and x.dtype in DEVICE_DTYPES:
            return Buffer(flat, gpu=x.device.id)
        pool = self._staging
        h = pool.take(flat) if keep else pool.host(flat)
        if read:
            flat.get(out=h)
        return Buffer(h, device=flat if write else None, pool=pool if keep else None)

    @staticmethod
    def like(x, out):
        """A result computed on the host, on x's device (out itself when x is a numpy array)."""
        if not is_device_array(x):
            return out
        cp = cupy()
        with cp.cuda.Device(x.device.id):
            return cp.asarray(out)
