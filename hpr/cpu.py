"""The CPU side of a rank: the compiled extension (hpr._kernels) and the instruction-set level its layer
kernels run at (isa, set_isa: HPR_ISA), how many threads its kernels and matmuls may use (matmul splits
a product's rows, or columns, over them, each part one single-threaded BLAS call), which of OpenBLAS's
kernel sets numpy's matmuls run (choose_blas_kernels: HPR_BLAS_KERNELS), how many cores this process
has, and the matmul rate MFU is measured against.
Which kernel serves an array (numpy or CuPy) is decided in hpr.kernels (the one seam is
hpr.kernels.dispatch), not here. Usage: ``from hpr.cpu import cpu_kernels; cpu_kernels().info()``."""
import concurrent.futures
import ctypes
import os
import platform
import threading
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from . import config
from .errors import ConfigError, KernelsMissing

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
        want = config.current().isa
        if want is not None and want not in k.isa()[1]:
            raise ConfigError(f"HPR_ISA={want} asks for kernels this CPU cannot run (it has "
                              f"{', '.join(k.isa()[1])}); unset HPR_ISA or choose one of those")
        k.set_isa(want or k.isa()[1][-1])
        _kernels = k
    return _kernels


def isa():
    """(level in use, [levels this CPU runs]) of the layer kernels, names from hpr.config.ISA_LEVELS
    narrowest first: e.g. ('avx512', ['baseline', 'avx2', 'avx512']). The widest unless HPR_ISA or
    set_isa chose a lower one. (The state-vector kernels pick their own clone when the library loads.)"""
    return cpu_kernels().isa()


def set_isa(level):
    """Run the layer kernels compiled for `level` from now on (one of isa()[1]; tests run each in turn).
    Returns the level that was in use. Not while kernels run on other threads."""
    k = cpu_kernels()
    was, have = k.isa()
    if level not in have:
        raise ConfigError(f"instruction-set level {level!r} is not available here; choose one of {', '.join(have)}")
    k.set_isa(level)
    return was


def isa_summary():
    """One line for ``python -m hpr config``: the level in use and those this CPU has."""
    now, have = isa()
    return f"instruction set: {now} (available here: {', '.join(have)}; HPR_ISA=<level> forces a lower one)"


def num_threads():
    """Threads a CPU kernel may use: set_num_threads's choice, else the configured HPR_NUM_THREADS /
    OMP_NUM_THREADS (hpr.config), else 1. hpr.init divides a node's cores among its ranks."""
    global _threads
    if _threads is None:
        _threads = config.current().num_threads or 1
    return _threads


_blas_limit = None
_pool = None  # (threads, ThreadPoolExecutor of threads - 1 workers): matmul's helpers
SPLIT_MIN_FLOPS = 4e6  # a product below this runs whole: handing a part to a thread costs ~20-50 µs
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


# OpenBLAS kernel sets hpr prefers to OpenBLAS's own pick, by (vendor, family, AVX-512F) of the CPU. AMD
# family 25 (0x19) with AVX-512 is Zen 4, which runs a 512-bit FMA as two 256-bit halves: OpenBLAS
# (0.3.31, numpy 2.4's) picks its SkylakeX (AVX-512) kernels there, and its Haswell (AVX2 + FMA) kernels
# were measured 4-8% faster, single-threaded, on every product of presets S and M (forward, dX, dW) and
# at 1024^3 and 2048^3 (AMD EPYC, family 25 model 17: 102-105 vs 105-111 GFLOP/s). Zen 3 (no AVX-512)
# already gets Haswell's kernels from OpenBLAS; Zen 5 (family 26) and Intel keep OpenBLAS's pick.
BLAS_PREFERRED = {("AuthenticAMD", 25, True): "Haswell"}
_blas_choice = None  # (kernel set in use or None, how it was chosen), once per process


def cpu_identity(path="/proc/cpuinfo"):
    """(vendor, family, has AVX-512F) of this processor from the kernel's cpuinfo; (None, None, False)
    where there is none (another OS)."""
    vendor, family, avx512 = None, None, False
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and vendor is None:
                    vendor = value.strip()
                elif key == "cpu family" and family is None and value.strip().isdigit():
                    family = int(value.strip())
                elif key == "flags":
                    avx512 = "avx512f" in value.split()
                    break  # the first processor's block says it all
    except OSError:
        pass
    return vendor, family, avx512


CORENAME_SYMBOLS = ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename")


def openblas_library():
    """numpy's OpenBLAS as (ctypes handle, or None where it cannot be opened; threadpoolctl's record of
    it), or (None, None) when numpy's BLAS is another library. The one place hpr finds it (the kernel
    set here, the CBLAS gemm of hpr.kernels.nn's split)."""
    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas" and lib.get("internal_api") == "openblas"]
    # numpy's own first: scipy (loaded by qiskit, say) brings an OpenBLAS of its own, numpy never calls it
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    libs.sort(key=lambda lib: not os.path.abspath(lib.get("filepath", "")).startswith(
        (os.path.join(numpy_dir, "numpy.libs"), os.path.join(numpy_dir, "numpy") + os.sep)))
    for lib in libs:
        try:
            return ctypes.CDLL(lib["filepath"]), lib
        except OSError:
            return None, lib
    return None, None


def _openblas():
    """(ctypes handle, kernel set in use) of the OpenBLAS numpy loaded, when it can choose its kernels
    again at run time (a DYNAMIC_ARCH build exports gotoblas_dynamic_init and _quit); else (None, the
    set's name or None). The name is asked of OpenBLAS each time (threadpoolctl keeps the first)."""
    dll, lib = openblas_library()
    name = lib.get("architecture") if lib else None
    if dll is None:
        return None, name
    for sym in CORENAME_SYMBOLS:
        fn = getattr(dll, sym, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            name = (fn() or b"").decode(errors="replace").strip() or name
            break
    if hasattr(dll, "gotoblas_dynamic_init") and hasattr(dll, "gotoblas_dynamic_quit"):
        return dll, name
    return None, name


def _rechoose(dll, name):
    """OpenBLAS chooses its kernel set again, with OPENBLAS_CORETYPE=name (it falls back to its own pick
    for a name it does not know); returns the set now in use."""
    with config.openblas_coretype(name):
        dll.gotoblas_dynamic_quit()
        dll.gotoblas_dynamic_init()
    return _openblas()[1]


def choose_blas_kernels():
    """Once per process, when hpr takes numpy's BLAS over (set_num_threads, hence hpr.init; split_plan):
    numpy's OpenBLAS runs the kernel set HPR_BLAS_KERNELS names, or (auto) the one BLAS_PREFERRED names
    for this CPU, or else its own pick; the user's OPENBLAS_CORETYPE and HPR_BLAS_KERNELS=keep keep
    OpenBLAS's. Applies to every numpy matmul of the process (the same results up to rounding). Not
    while another thread is inside BLAS. A set OpenBLAS lacks, or asking for one where numpy's BLAS
    cannot change, is a ConfigError. Returns blas_kernels()."""
    global _blas_choice
    if _blas_choice is None:
        _blas_choice = _switch_blas_kernels(config.current())
    return _blas_choice


def _switch_blas_kernels(cfg):
    """choose_blas_kernels's work: (kernel set in use, how it was chosen)."""
    want = cfg.blas_kernels
    dll, now = _openblas()
    if dll is None:
        if want not in (None, "keep"):
            raise ConfigError(f"HPR_BLAS_KERNELS={want} needs numpy's BLAS to be an OpenBLAS that chooses its "
                              f"kernels at run time (DYNAMIC_ARCH); numpy has {blas_info()}: unset HPR_BLAS_KERNELS")
        return now, "numpy's BLAS chose them"
    if want == "keep" or (want is None and cfg.openblas_coretype):
        why = "HPR_BLAS_KERNELS=keep" if want == "keep" else f"OPENBLAS_CORETYPE={cfg.openblas_coretype}"
        return now, f"OpenBLAS's ({why})"
    target = want or BLAS_PREFERRED.get(cpu_identity())
    if target is None or target.lower() == (now or "").lower():
        return now, "OpenBLAS's own pick for this CPU" if want is None else f"HPR_BLAS_KERNELS={want}"
    got = _rechoose(dll, target)
    if (got or "").lower() == (now or "").lower():  # a name it does not know: it chose as at load
        raise ConfigError(f"OpenBLAS has no kernel set {target!r} here (it kept {now}); set HPR_BLAS_KERNELS to "
                          "auto, keep, or a set this OpenBLAS has (its DYNAMIC_LIST: e.g. Haswell, SkylakeX)")
    # (some names are aliases: OPENBLAS_CORETYPE=Zen runs, and reports, the Haswell set)
    how = "hpr's choice for this CPU (hpr.cpu.BLAS_PREFERRED)" if want is None else f"HPR_BLAS_KERNELS={want}"
    return got, f"{how}; OpenBLAS picked {now}"


def blas_kernels():
    """(kernel set numpy's BLAS runs, how it was chosen), e.g. ('Haswell', "hpr's choice for this CPU ...");
    choose_blas_kernels's answer once it has run, else what is in use now."""
    if _blas_choice is not None:
        return _blas_choice
    return _openblas()[1], "not chosen by hpr yet"


def blas_summary():
    """One line for ``python -m hpr config`` and the benchmarks' headers."""
    name, how = blas_kernels()
    return f"BLAS kernels: {name or 'unknown'} ({how}; HPR_BLAS_KERNELS=keep|<set> overrides)"


def set_num_threads(n, blas=True):
    """Threads for hpr's kernels and matmuls. With blas=True numpy's BLAS is held to ONE thread
    (threadpoolctl) and matmul splits each product's rows over the n threads itself: OpenBLAS's own
    threads busy-wait for each other inside a product, which on a 2-core node doubled the CPU time of
    the model's matmuls (and far worse when a core is shared), while the split parts never wait. A rank
    still never runs more than n threads; and, the first time, numpy's OpenBLAS is set to the kernel
    set choose_blas_kernels picks. Warns once per process when n > 1 and the kernels have no OpenMP."""
    global _threads, _blas_limit
    _threads = max(1, int(n))
    warn_if_serial(_threads)
    if blas:
        choose_blas_kernels()
        _blas_limit = threadpool_limits(limits=1, user_api="blas")  # stays applied


def split_plan(a, b, out, nt):
    """How a matmul out = a @ b is cut over nt threads (hpr.cpu.matmul, and hpr.kernels.nn.matmul's split
    on the OpenMP threads, which must cut it the same way for the same bits): (by_rows, step), blocks of
    `step` rows (or columns, when out is wider than tall) whole multiples of 16, or None when the product
    runs whole (one thread, under SPLIT_MIN_FLOPS, too narrow, or not a 2-D product of matching shapes).
    Holds numpy's BLAS to one thread when it splits (each block is one single-threaded call)."""
    if (nt < 2 or a.ndim != 2 or b.ndim != 2 or out.shape != (a.shape[0], b.shape[1])
            or a.shape[1] != b.shape[0] or max(out.shape) < 2 * 16
            or 2.0 * a.shape[0] * a.shape[1] * out.shape[1] < SPLIT_MIN_FLOPS):
        return None
    global _blas_limit
    if _blas_limit is None:  # threads came from the config, not set_num_threads: BLAS must not add its own
        choose_blas_kernels()
        _blas_limit = threadpool_limits(limits=1, user_api="blas")
    by_rows = out.shape[0] >= out.shape[1]
    m = out.shape[0 if by_rows else 1]
    return by_rows, max(16, (-(-m // nt) + 15) // 16 * 16)  # ceil(m / nt) rounded up to 16


def matmul(a, b, out):
    """out = a @ b for 2-D numpy arrays (either may be a transposed view), on this rank's threads: out is
    cut along its longer side (rows, or columns when it is wider than tall: the weight gradient
    x^T dy of a Linear is (C, 4C)) into one block per thread, whole multiples of 16 (a cache line of
    float32), each block one single-threaded BLAS call (numpy releases the GIL for it). A row block
    reads all of b and a column block all of a, so more blocks than threads would read them again and
    again: 4 blocks a thread cost 1.4-1.6x the CPU time of one call on the (128, 2048) x (2048, 512)
    and (384, 2048) x (2048, 1536) weight gradients here, one block a thread 1.0-1.15x. The blocks are
    taken in turn by the caller and the process's pool of num_threads() - 1 helpers, so a helper that
    never gets a core (a core shared with another process) leaves its block to the caller, and the
    call returns when every block is written without waiting for it. Small products run whole.
    Returns out."""
    nt = num_threads()
    plan = split_plan(a, b, out, nt)
    if plan is None:
        return np.matmul(a, b, out=out)  # (a wrong shape raises numpy's own error here)
    by_rows, step = plan
    global _pool
    if _pool is None or _pool[0] != nt:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (nt, concurrent.futures.ThreadPoolExecutor(nt - 1, thread_name_prefix="hpr-matmul"))
    m = out.shape[0 if by_rows else 1]
    starts = range(0, m, step)
    blocks = iter(starts)  # next() on it is atomic under the GIL: each block is taken once
    state = {"done": 0, "error": None}
    lock, finished = threading.Lock(), threading.Event()

    def take():
        try:
            for lo in blocks:
                if by_rows:
                    np.matmul(a[lo:lo + step], b, out=out[lo:lo + step])
                else:
                    np.matmul(a, b[:, lo:lo + step], out=out[:, lo:lo + step])
                with lock:
                    state["done"] += 1
                    if state["done"] == len(starts):
                        finished.set()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            state["error"] = e
            finished.set()

    for _ in range(nt - 1):
        _pool[1].submit(take)  # a helper that starts late finds no block left; nobody waits for it
    take()
    finished.wait()  # every block written, whoever wrote it
    if state["error"] is not None:
        raise state["error"]
    return out


def blas_info():
    """[(library, threads)] of the BLAS libraries numpy has loaded."""
    return [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info() if i.get("user_api") == "blas"]


def matmul_flops(dtype="float32", n=1024, repeats=7, device=None, clock=time.perf_counter):
    """The machine's matmul FLOP/s as this process sees it now: the best of `repeats` n x n x n
    products through hpr.cpu.matmul (numpy's BLAS on num_threads() row blocks), or cuBLAS through CuPy on a GPU
    device (n raised to 8192 there: a GPU needs a large product to reach its peak), after one warm-up.
    The reference MFU is measured against (best, not median: a peak, and robust to a neighbour's burst).
    clock=time.process_time gives FLOP per CPU-second of this process (every thread): the peak a
    CPU-time MFU is measured against, steady on a machine whose cores other processes share."""
    gpu = device is not None and device.is_gpu
    xp = device.xp if gpu else np
    n = max(n, 8192) if gpu else n
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
    c = xp.empty((n, n), dtype)
    mm = xp.matmul if gpu else (lambda a, b, out: matmul(a, b, out))  # the CPU's as the model's layers run it
    mm(a, b, out=c)
    sync = device.synchronize if gpu else (lambda: None)
    ts = []
    for _ in range(repeats):
        sync()
        t0 = clock()
        mm(a, b, out=c)
        sync()
        ts.append(clock() - t0)
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
