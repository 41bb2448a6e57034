"""Which implementation serves an array: the compiled CPU kernels for numpy arrays, CuPy kernels for
cupy arrays (DESIGN.md decision 5). Owns the import of hpr._kernels and the thread count the CPU kernels
use; owns nothing else. Usage: ``from hpr.backend import cpu_kernels; cpu_kernels().info()``."""
import os

from .errors import KernelsMissing

_kernels = None
_threads = None


def cpu_kernels():
    """The compiled extension, or KernelsMissing with what to do about it."""
    global _kernels
    if _kernels is None:
        try:
            from . import _kernels as k
        except ImportError as e:  # source tree on sys.path, or a broken build
            here = os.path.dirname(os.path.abspath(__file__))
            raise KernelsMissing(
                f"hpr's compiled kernels (hpr._kernels) could not be imported from {here}: {e}. "
                "Install the package (pip install .) and run from outside the source tree, or use an "
                "editable install (pip install --no-build-isolation -e .)."
            ) from None
        _kernels = k
    return _kernels


def _threads_from_env():
    for var in ("HPR_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    return None


def num_threads():
    """Threads a CPU kernel may use: set_num_threads's choice, else HPR_NUM_THREADS, else
    OMP_NUM_THREADS (read once), else 1. hpr.init divides a node's cores among its ranks."""
    global _threads
    if _threads is None:
        _threads = _threads_from_env() or 1
    return _threads


def set_num_threads(n):
    global _threads
    _threads = max(1, int(n))


def is_device_array(x):
    """True for a CuPy array (decided by type, without importing cupy)."""
    return type(x).__module__.split(".")[0] == "cupy"
