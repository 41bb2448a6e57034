"""Which implementation serves an array: the compiled CPU kernels for numpy arrays, CuPy kernels for
cupy arrays (DESIGN.md decision 5). Owns the import of hpr._kernels and the thread count the CPU kernels
use; owns nothing else. Usage: ``from hpr.backend import cpu_kernels; cpu_kernels().info()``."""
import os

from .errors import ConfigError, KernelsMissing

_kernels = None
_threads = None
set_wait_policy = False  # True when hpr chose OMP_WAIT_POLICY (child processes should not inherit it)


def cpu_kernels():
    """The compiled extension, or KernelsMissing with what to do about it."""
    global _kernels
    if _kernels is None:
        # OpenMP threads that spin after a parallel region (libgomp's default) take the cores BLAS's
        # threads need next: measured 2.2x slower training steps at 2 threads. Sleep instead, unless the
        # user chose otherwise. Read by the OpenMP runtime when the extension loads it, so set here.
        global set_wait_policy
        if "OMP_WAIT_POLICY" not in os.environ:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            set_wait_policy = True
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
    v = os.environ.get("HPR_NUM_THREADS", "").strip()
    if v:
        if not v.isdigit() or int(v) < 1:
            raise ConfigError(f"HPR_NUM_THREADS={v!r} must be a whole number of threads >= 1; unset it to "
                              "share the node's cores among its ranks")
        return int(v)
    v = os.environ.get("OMP_NUM_THREADS", "").strip()  # OpenMP's own syntax ("4,2") stays lenient
    return int(v) if v.isdigit() and int(v) > 0 else None


def num_threads():
    """Threads a CPU kernel may use: set_num_threads's choice, else HPR_NUM_THREADS, else
    OMP_NUM_THREADS (read once), else 1. hpr.init divides a node's cores among its ranks."""
    global _threads
    if _threads is None:
        _threads = _threads_from_env() or 1
    return _threads


_blas_limit = None


def set_num_threads(n, blas=True):
    """Threads for hpr's kernels and, with blas=True, for the BLAS numpy's matmuls call (through
    threadpoolctl), so a rank never runs more threads than it was given."""
    global _threads, _blas_limit
    _threads = max(1, int(n))
    if blas:
        from threadpoolctl import threadpool_limits

        _blas_limit = threadpool_limits(limits=_threads, user_api="blas")  # stays applied


def blas_info():
    """[(library, threads)] of the BLAS libraries numpy has loaded."""
    from threadpoolctl import threadpool_info

    return [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info() if i.get("user_api") == "blas"]


def matmul_flops(dtype="float32", n=1024, repeats=7, device=None):
    """The machine's matmul FLOP/s as this process sees it now: the best of `repeats` n x n x n
    products through numpy's BLAS (with the current thread limit), or cuBLAS through CuPy on a GPU
    device (n raised to 8192 there: a GPU needs a large product to reach its peak), after one warm-up.
    The reference MFU is measured against (best, not median: a peak, and robust to a neighbour's burst)."""
    import time

    import numpy as np

    gpu = device is not None and device.is_gpu
    xp = device.xp if gpu else np
    n = max(n, 8192) if gpu else n
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    c = xp.empty((n, n), dtype)
    xp.matmul(a, b, out=c)
    sync = device.synchronize if gpu else (lambda: None)
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        xp.matmul(a, b, out=c)
        sync()
        ts.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / min(ts)


def cpu_count():
    """Cores this process may run on (its affinity mask), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

