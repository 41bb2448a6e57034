"""Where a rank's arrays live (DESIGN.md decision 5): the host (numpy, the compiled CPU kernels) or one
GPU (CuPy, the CUDA kernels of hpr/kernels/cuda). Owns the choice of GPU for a rank (its node-local
rank modulo the GPUs it can see, as Horovod and Megatron do), moving arrays between host and device,
whether the MPI library takes device buffers (CUDA-aware), and the one test of where an array lives,
is_device_array. Owns nothing about what the arrays mean, nor which kernel serves them
(hpr.kernels.dispatch). Settings (HPR_GPU, HPR_CUDA_AWARE) come from hpr.config. CuPy stays optional:
nothing here imports it until a GPU is asked for; with hpr/kernels/gpu.py this is the only module
that imports cupy or cupyx.

Usage::

    dev = hpr.device.select("gpu", comm)   # or "cpu"
    x = dev.asarray(host_batch)            # numpy -> cupy (a no-op on the CPU device)
    y = hpr.device.to_host(x)              # cupy -> numpy (a no-op for numpy)
"""
import ctypes

import numpy as np

from . import config
from .errors import ConfigError, KernelsMissing

KINDS = ("cpu", "gpu")


def is_device_array(x):
    """True for a CuPy array (decided by type, without importing cupy): hpr's one test of where an
    array lives."""
    return type(x).__module__.split(".")[0] == "cupy"


def cupy():
    """The cupy module, or KernelsMissing saying how to get it."""
    try:
        import cupy as cp  # lazy: CuPy is optional, and importing it initialises CUDA
    except ImportError:
        raise KernelsMissing("hpr's GPU path needs CuPy: pip install cupy-cuda12x (or the wheel that matches "
                             "your CUDA), or run with --device cpu") from None
    return cp


def xp_of(a):
    """The array module of `a`: cupy for a CuPy array, else numpy."""
    return cupy() if is_device_array(a) else np


def to_host(a):
    """A numpy array with a's values: a CuPy array is copied off the device, anything else is
    numpy.asarray'd (no copy when it already is one)."""
    return a.get() if is_device_array(a) else np.asarray(a)


class Device:
    """One rank's device: kind "cpu" or "gpu", the GPU's index on its node, and `xp`, the array module
    (numpy or cupy) its arrays come from."""

    def __init__(self, kind="cpu", index=None):
        self.kind, self.index = kind, index
        self.xp = cupy() if kind == "gpu" else np

    @property
    def is_gpu(self):
        return self.kind == "gpu"

    def __repr__(self):
        return f"<hpr.Device {self.kind}{'' if self.index is None else ':%d' % self.index}>"

    def is_array(self, a):
        """Whether a is an array of this device's kind."""
        return is_device_array(a) if self.is_gpu else isinstance(a, np.ndarray)

    def asarray(self, a, dtype=None):
        """a on this device (a copy only when it has to move or change dtype)."""
        return self.xp.asarray(a, dtype=dtype)

    def synchronize(self):
        """Wait for the device's queued work (timings; a no-op on the CPU)."""
        if self.is_gpu:
            self.xp.cuda.Device(self.index).synchronize()

    def name(self):
        """A human name: the GPU's model, or "cpu"."""
        if not self.is_gpu:
            return "cpu"
        props = self.xp.cuda.runtime.getDeviceProperties(self.index)
        n = props.get("name", b"GPU")
        return n.decode() if isinstance(n, bytes) else str(n)

    def memory_bytes(self):
        """The GPU's memory, or None on the CPU."""
        if not self.is_gpu:
            return None
        return int(self.xp.cuda.runtime.getDeviceProperties(self.index)["totalGlobalMem"])

    def free_bytes(self):
        """The GPU's free memory now (CUDA's count plus what CuPy's pool holds unused), or None."""
        if not self.is_gpu:
            return None
        with self.xp.cuda.Device(self.index):
            pool = self.xp.get_default_memory_pool()
            return int(self.xp.cuda.runtime.memGetInfo()[0]) + int(pool.total_bytes() - pool.used_bytes())


CPU = Device("cpu")


def cupy_status():
    """One line on CuPy for ``python -m hpr config``: its version and GPUs, or why the GPU path is
    unavailable (not installed, not importable, no usable device)."""
    try:
        import cupy as cp  # lazy: CuPy is optional, and importing it initialises CUDA
    except ImportError:
        return "not installed (the GPU path needs cupy)"
    except Exception as e:  # a broken CUDA install raises other errors at import
        return f"installed but not importable: {e}"
    try:
        n = cp.cuda.runtime.getDeviceCount()
        return f"cupy {cp.__version__}, {n} device(s)"
    except Exception as e:  # CUDA's own error types differ between CuPy versions
        return f"cupy {cp.__version__} installed, no usable device: {e}"


def gpu_count():
    """GPUs this process can see (0 when CuPy is missing or CUDA finds none)."""
    try:
        cp = cupy()
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, or CUDA_VISIBLE_DEVICES empty
        return 0


def select(kind, comm=None, local_rank=None, settings=None):
    """The Device for this rank. kind "cpu" gives CPU; "gpu" makes GPU (node-local rank) mod (visible
    GPUs) current on this thread. HPR_GPU=i (settings.gpu; settings: an hpr.config.Config, by default
    hpr.config.current()) picks GPU i instead (a launcher that binds one GPU per rank by
    CUDA_VISIBLE_DEVICES needs nothing: every rank sees one GPU, index 0). Raises KernelsMissing
    without CuPy and ConfigError without a GPU, on every rank alike when every node lacks them."""
    if kind not in KINDS:
        raise ConfigError(f"device {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "cpu":
        return CPU
    cp = cupy()
    try:
        n = int(cp.cuda.runtime.getDeviceCount())
    except Exception as e:  # CUDA's own error types differ between CuPy versions
        raise ConfigError(f"--device gpu: CUDA finds no usable GPU here ({e}); run with --device cpu") from None
    if n < 1:
        raise ConfigError("--device gpu: no GPU is visible to this process (CUDA_VISIBLE_DEVICES?); "
                          "run with --device cpu")
    forced = (config.current() if settings is None else settings).gpu
    if forced is not None:
        if not 0 <= forced < n:
            raise ConfigError(f"HPR_GPU={forced} must be a GPU index below {n}; unset it to pick by local rank")
        index = forced
    else:
        if local_rank is None:
            local_rank = comm.local_rank if comm is not None else 0
        index = local_rank % n
    cp.cuda.Device(index).use()
    return Device("gpu", index)


def _mpi_library():
    from mpi4py import MPI  # lazy: importing mpi4py.MPI initialises MPI, which `import hpr` must not

    return ctypes.CDLL(MPI.__file__)  # the extension's symbols include its MPI library's


def cuda_aware(comm_settings=None):
    """(bool, how it was decided): whether the MPI library takes CUDA device buffers. HPR_CUDA_AWARE
    (comm_settings.cuda_aware; comm_settings: an hpr.config.CommConfig, by default
    hpr.config.current().comm) overrides when set; else MPICH's MPIX_GPU_query_support, or Open MPI's
    MPIX_Query_cuda_support; else no. Without it hpr stages device buffers through pinned host memory."""
    forced = (config.current().comm if comm_settings is None else comm_settings).cuda_aware
    if forced is not None:
        return bool(forced), f"HPR_CUDA_AWARE={int(forced)}"
    try:
        lib = _mpi_library()
    except OSError as e:
        return False, f"MPI library not inspectable ({e})"
    if not hasattr(lib, "MPIX_GPU_query_support") and not hasattr(lib, "MPIX_Query_cuda_support"):
        lib = ctypes.CDLL(None)  # an mpi4py that dlopens its MPI: search everything loaded
    f = getattr(lib, "MPIX_GPU_query_support", None)
    if f is not None:  # MPICH >= 4: (gpu type, *supported); type 0 is CUDA
        f.argtypes, f.restype = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)], ctypes.c_int
        ok = ctypes.c_int(0)
        if f(0, ctypes.byref(ok)) == 0:
            return bool(ok.value), "MPIX_GPU_query_support(CUDA)"
    f = getattr(lib, "MPIX_Query_cuda_support", None)
    if f is not None:  # Open MPI (MPICH has a stub too)
        f.restype = ctypes.c_int
        return bool(f()), "MPIX_Query_cuda_support()"
    return False, "no query function in the MPI library"


class Staging:
    """Pinned host buffers, one per (role, dtype), grown on demand, to move device arrays through an MPI
    that only takes host memory. `host(x, role)` is a host array of x's shape and dtype (not yet filled)."""

    def __init__(self):
        self._bufs = {}
        self._free = []  # buffers of finished background operations, for take()

    @staticmethod
    def _pinned(n, dtype):
        try:
            import cupyx  # lazy: CuPy is optional

            return cupyx.empty_pinned(max(n, 1), dtype)
        except Exception:  # pinning can fail (limits); pageable memory still works, only slower
            return np.empty(max(n, 1), dtype)

    def host(self, x, role="in"):
        key = (role, np.dtype(x.dtype).str)
        buf = self._bufs.get(key)
        if buf is None or buf.size < x.size:
            buf = self._bufs[key] = self._pinned(x.size, x.dtype)
        return buf[:x.size].reshape(x.shape)

    def take(self, x):
        """A host buffer of x's shape for an operation still in flight after this call; give() it back."""
        for i, buf in enumerate(self._free):
            if buf.dtype == x.dtype and buf.size >= x.size:
                del self._free[i]
                return buf[:x.size].reshape(x.shape)
        return self._pinned(x.size, x.dtype)[:x.size].reshape(x.shape)

    def give(self, view):
        base = view
        while isinstance(base.base, np.ndarray):
            base = base.base
        if len(self._free) < 64:
            self._free.append(base.reshape(-1))

    def down(self, x, role="in"):
        """A host copy of device array x, in a staging buffer."""
        h = self.host(x, role)
        x.get(out=h)
        return h
