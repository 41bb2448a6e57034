"""The CPU side of a rank: the compiled extension (hpr._kernels), how many threads its kernels and
numpy's BLAS may use, how many cores this process has, and the matmul rate MFU is measured against.
Which kernel serves an array (numpy or CuPy) is decided in hpr.kernels (the one seam is
hpr.kernels.dispatch), not here. Usage: ``from hpr.cpu import cpu_kernels; cpu_kernels().info()``."""
import os
import platform
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import config
from .errors import KernelsMissing

_kernels = None
_threads = None
set_wait_policy = False  # True when hpr chose OMP_WAIT_POLICY (child processes should not inherit it)


def cpu_kernels():
    """The compiled extension, or KernelsMissing with what to do about it."""
    global _kernels
    if _kernels is None:
        global set_wait_policy
        set_wait_policy = config.prepare_openmp() or set_wait_policy
        try:
            from . import _kernels as k  # lazy: loads OpenMP, which reads OMP_WAIT_POLICY set just above
        except ImportError as e:  # source tree on sys.path, or a broken build
            raise KernelsMissing.at(os.path.dirname(os.path.abspath(__file__)), e) from None
        _kernels = k
    return _kernels


def num_threads():
    """Threads a CPU kernel may use: set_num_threads's choice, else the configured HPR_NUM_THREADS /
    OMP_NUM_THREADS (hpr.config), else 1. hpr.init divides a node's cores among its ranks."""
    global _threads
    if _threads is None:
        _threads = config.current().num_threads or 1
    return _threads


_blas_limit = None
_warned_serial = False


def warn_if_serial(n):
    """Once per process: a warning when n > 1 threads are asked of kernels compiled without OpenMP (they
    then run on one thread, and a timing would silently measure that)."""
    global _warned_serial
    if n <= 1 or _warned_serial:
        return
    try:
        openmp = cpu_kernels().info()["openmp"]
    except KernelsMissing:
        return  # said where the kernels are first used
    if not openmp:
        _warned_serial = True
        warnings.warn(f"{n} threads per rank were asked for, but hpr's compiled kernels were built without "
                      "OpenMP: they run on one thread. Rebuild with a compiler that has OpenMP (e.g. gcc, or "
                      "clang with libomp) to use the threads.", RuntimeWarning, stacklevel=3)


def set_num_threads(n, blas=True):
    """Threads for hpr's kernels and, with blas=True, for the BLAS numpy's matmuls call (through
    threadpoolctl), so a rank never runs more threads than it was given. Warns once per process when
    n > 1 and the kernels have no OpenMP."""
    global _threads, _blas_limit
    _threads = max(1, int(n))
    warn_if_serial(_threads)
    if blas:
        _blas_limit = threadpool_limits(limits=_threads, user_api="blas")  # stays applied


def blas_info():
    """[(library, threads)] of the BLAS libraries numpy has loaded."""
    return [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info() if i.get("user_api") == "blas"]


def matmul_flops(dtype="float32", n=1024, repeats=7, device=None):
    """The machine's matmul FLOP/s as this process sees it now: the best of `repeats` n x n x n
    products through numpy's BLAS (with the current thread limit), or cuBLAS through CuPy on a GPU
    device (n raised to 8192 there: a GPU needs a large product to reach its peak), after one warm-up.
    The reference MFU is measured against (best, not median: a peak, and robust to a neighbour's burst)."""
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


def cpu_model():
    """The processor's name as the kernel reports it (/proc/cpuinfo), for benchmark headers."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
