"""hpr's settings, read from the environment in one place, once, into frozen dataclasses.

This module is the only one under hpr/ (beside the programs' command lines) that reads ``os.environ``.
``hpr.init()`` calls ``from_env()`` and makes the result current; everything below takes a ``Config``
(or its ``CommConfig``) as an argument or asks ``current()``. A bad value is a ConfigError naming the
variable and what it accepts, raised at ``hpr.init()`` on every rank, before any work.

Every boolean variable has one meaning: 1, true, yes, on are on; 0, false, no, off and empty are off;
anything else is refused. The table (also in the README):

  variable              field                      meaning                                    default
  HPR_TIMEOUT           comm.timeout               seconds any wait may take (finite, > 0)    300
  HPR_ALLREDUCE         comm.allreduce             force an allreduce algorithm, or auto      auto (None)
  HPR_CHECK             comm.check / check         compare collective signatures; check
                                                   matrices given to state vectors (bool)     off
  HPR_SPIN_US           comm.spin_us               microseconds a wait spins before sleeping  None: auto
  HPR_SHM_SLOT_KB       comm.shm_slot_kb           staging slot per rank in the node window   512
  HPR_SHM_SMALL_KB      comm.shm_small_kb          one-barrier threshold of the node engine   32
  HPR_NODE_SIZE         comm.node_size             pretend nodes of k consecutive ranks       0: real nodes
  HPR_CUDA_AWARE        comm.cuda_aware            MPI takes device buffers (bool)            None: ask MPI
  HPR_NUM_THREADS       num_threads                CPU kernel threads per rank (>= 1)         None
  OMP_NUM_THREADS       num_threads (fallback)     OpenMP's own syntax; a plain count is used None
  OMP_WAIT_POLICY       omp_wait_policy            hpr sets PASSIVE when unset                PASSIVE
                                                   (and GOMP_SPINCOUNT=5000 when that is unset)
  HPR_CACHE_DIR         cache_dir                  where tokenised corpora are cached         $XDG_CACHE_HOME/hpr
  HPR_TRACE             trace                      write the job's timeline to this file      None
                                                   (hpr.init starts hpr.trace)
  HPR_FAULT             fault                      tests only: faults to inject (hpr.faults)  None
  HPR_GPU               gpu                        GPU index for --device gpu                 None: local rank
  HPR_ISA               isa                        instruction-set level of the CPU kernels:  None: widest
                                                   baseline (x86-64), avx2 (x86-64-v3: AVX2,
                                                   FMA) or avx512 (x86-64-v4); auto = widest;
                                                   a level above the CPU's is refused at load
  HPR_BLAS_KERNELS      blas_kernels               which of OpenBLAS's kernel sets numpy's    None: auto
                                                   matmuls run: auto (hpr's table by CPU,
                                                   hpr.cpu.BLAS_PREFERRED), keep (OpenBLAS's
                                                   own pick) or a set's name (Haswell,
                                                   SkylakeX, ...; refused if OpenBLAS lacks it)
  OPENBLAS_CORETYPE     openblas_coretype          OpenBLAS's own; when set, auto keeps it    None

Usage: ``cfg = hpr.config.from_env(); cfg.comm.timeout``."""
import contextlib
import dataclasses
import math
import os
from typing import Optional

from .errors import ConfigError

ALGORITHMS = ("recursive_doubling", "rabenseifner", "ring", "shm", "hierarchical")
ISA_LEVELS = ("baseline", "avx2", "avx512")  # csrc/hpr_clones.h, narrowest first
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
MAX_TIMEOUT = 1e7  # seconds (~115 days): beyond this the deadline arithmetic in the C engine overflows


def parse_bool(name, value):
    """The one meaning of a boolean variable (see the table above)."""
    v = (value or "").strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a yes/no value; use 1 or 0 (also true/false, yes/no, on/off)")


def _optional_bool(name, value):
    return None if value is None or not value.strip() else parse_bool(name, value)


def _number(name, value, default, unit, *, minimum=0.0, strict=False, maximum=math.inf):
    v = (value or "").strip()
    if not v:
        return default
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of {unit}") from None
    if not math.isfinite(f) or f > maximum:
        raise ConfigError(f"{name}={value!r} must be a finite number of {unit} at most {maximum:g}")
    if f < minimum or (strict and f == minimum):
        raise ConfigError(f"{name}={value!r} must be {'>' if strict else '>='} {minimum:g} {unit}")
    return f


def _whole(name, value, default, minimum):
    v = (value or "").strip()
    if not v:
        return default
    if not v.isdigit() or int(v) < minimum:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {minimum}")
    return int(v)


@dataclasses.dataclass(frozen=True)
class CommConfig:
    """What hpr.comm needs: handed to every Communicator, never read from the environment below."""

    timeout: float = 300.0
    allreduce: Optional[str] = None  # a name from ALGORITHMS, None for the cost model's choice
    check: bool = False
    spin_us: Optional[float] = None  # None: 50 µs, or 0 when a node has more ranks than cores
    shm_slot_kb: int = 512
    shm_small_kb: int = 32
    node_size: int = 0
    cuda_aware: Optional[bool] = None

    def __post_init__(self):
        if not (self.timeout > 0 and self.timeout <= MAX_TIMEOUT):
            raise ConfigError(f"timeout {self.timeout!r} must be a finite number of seconds in (0, {MAX_TIMEOUT:g}]")
        if self.allreduce is not None and self.allreduce not in ALGORITHMS:
            raise ConfigError(f"allreduce algorithm {self.allreduce!r} is unknown; use one of {', '.join(ALGORITHMS)}")
        if self.spin_us is not None and not (0 <= self.spin_us <= 1e6 * self.timeout):
            raise ConfigError(f"spin {self.spin_us!r} µs must be >= 0 and no longer than the timeout")

    @property
    def slot_bytes(self):
        """Bytes each rank stages per round in the node's shared window (whole pages)."""
        return self.shm_slot_kb * 1024 // 4096 * 4096 or 4096

    @property
    def small_bytes(self):
        """Messages up to this size take the node engine's one-barrier path."""
        return min(self.slot_bytes, self.shm_small_kb * 1024)

    def spin_seconds(self, ranks_on_node, cores):
        """How long a wait spins before it sleeps: HPR_SPIN_US, else 50 µs, or none when the node has
        more ranks than this process may use cores (a spinning waiter holds the core its peer needs)."""
        if self.spin_us is not None:
            return self.spin_us * 1e-6
        return 50e-6 if ranks_on_node <= cores else 0.0

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting hpr reads from the environment (see the module's table)."""

    comm: CommConfig = CommConfig()
    num_threads: Optional[int] = None
    omp_wait_policy: Optional[str] = None  # the user's OMP_WAIT_POLICY; None: hpr sets PASSIVE
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "hpr")
    trace: Optional[str] = None
    fault: Optional[str] = None
    gpu: Optional[int] = None
    isa: Optional[str] = None  # a name from ISA_LEVELS, None for the widest the CPU has
    blas_kernels: Optional[str] = None  # "keep", an OpenBLAS kernel set's name, None: auto (hpr.cpu)
    openblas_coretype: Optional[str] = None  # the user's OPENBLAS_CORETYPE (OpenBLAS read it at load)

    def __post_init__(self):
        if self.isa is not None and self.isa not in ISA_LEVELS:
            raise ConfigError(f"instruction-set level {self.isa!r} is unknown; use one of {', '.join(ISA_LEVELS)}")
        if self.blas_kernels is not None and not _blas_name_ok(self.blas_kernels):
            raise ConfigError(f"BLAS kernel set {self.blas_kernels!r} is not a name; use auto, keep, or one of "
                              "OpenBLAS's kernel sets (e.g. Haswell, SkylakeX)")

    @property
    def check(self):
        return self.comm.check

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _blas_name_ok(name):
    return name == "keep" or (0 < len(name) <= 32 and name.replace("(", "").replace(")", "").isalnum())


def from_env(env=None):
    """A Config from the environment (os.environ, or the mapping given), every value validated."""
    env = os.environ if env is None else env
    g = env.get
    algo = (g("HPR_ALLREDUCE") or "").strip().lower()
    if algo not in ("", "auto") and algo not in ALGORITHMS:
        raise ConfigError(f"HPR_ALLREDUCE={algo!r} is not an algorithm; use auto or one of {', '.join(ALGORITHMS)}")
    timeout = _number("HPR_TIMEOUT", g("HPR_TIMEOUT"), 300.0, "seconds", strict=True, maximum=MAX_TIMEOUT)
    spin = _number("HPR_SPIN_US", g("HPR_SPIN_US"), None, "microseconds", maximum=1e6 * timeout)
    comm = CommConfig(
        timeout=timeout,
        allreduce=None if algo in ("", "auto") else algo,
        check=parse_bool("HPR_CHECK", g("HPR_CHECK")),
        spin_us=spin,
        shm_slot_kb=_whole("HPR_SHM_SLOT_KB", g("HPR_SHM_SLOT_KB"), 512, 1),
        shm_small_kb=_whole("HPR_SHM_SMALL_KB", g("HPR_SHM_SMALL_KB"), 32, 0),
        node_size=_whole("HPR_NODE_SIZE", g("HPR_NODE_SIZE"), 0, 0),
        cuda_aware=_optional_bool("HPR_CUDA_AWARE", g("HPR_CUDA_AWARE")),
    )
    threads = _whole("HPR_NUM_THREADS", g("HPR_NUM_THREADS"), None, 1)
    if threads is None:
        omp = (g("OMP_NUM_THREADS") or "").strip()  # OpenMP's own syntax ("4,2") stays lenient
        threads = int(omp) if omp.isdigit() and int(omp) > 0 else None
    cache = (g("HPR_CACHE_DIR") or "").strip()
    if not cache:
        base = g("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache = os.path.join(base, "hpr")
    gpu = (g("HPR_GPU") or "").strip()
    if gpu and not gpu.isdigit():
        raise ConfigError(f"HPR_GPU={gpu!r} must be a GPU index (0, 1, ...); unset it to pick by local rank")
    isa = (g("HPR_ISA") or "").strip().lower()
    if isa not in ("", "auto") and isa not in ISA_LEVELS:
        raise ConfigError(f"HPR_ISA={isa!r} is not an instruction-set level; use auto or one of {', '.join(ISA_LEVELS)}")
    blas = (g("HPR_BLAS_KERNELS") or "").strip()
    blas = "keep" if blas.lower() == "keep" else None if blas.lower() in ("", "auto") else blas
    if blas is not None and not _blas_name_ok(blas):
        raise ConfigError(f"HPR_BLAS_KERNELS={blas!r} is not a kernel set; use auto, keep, or one of OpenBLAS's "
                          "kernel sets (e.g. Haswell, SkylakeX)")
    return Config(comm=comm, num_threads=threads, isa=None if isa in ("", "auto") else isa, omp_wait_policy=g("OMP_WAIT_POLICY") or None,
                  blas_kernels=blas, openblas_coretype=(g("OPENBLAS_CORETYPE") or "").strip() or None,
                  cache_dir=cache, trace=(g("HPR_TRACE") or "").strip() or None,
                  fault=(g("HPR_FAULT") or "").strip() or None, gpu=int(gpu) if gpu else None)


_current = None


def current():
    """The Config hpr.init() made current; before init, the environment's, read on first use."""
    global _current
    if _current is None:
        _current = from_env()
    return _current


def set_current(cfg):
    """Make cfg the Config every module below sees (hpr.init does this; tests may too)."""
    global _current
    if not isinstance(cfg, Config):
        raise ConfigError(f"set_current takes an hpr.config.Config, not {type(cfg).__name__}")
    _current = cfg
    return cfg


OMP_SPINCOUNT = "5000"  # libgomp's GOMP_SPINCOUNT under hpr's PASSIVE: ~0.15 ms of polling here (prepare_openmp)


def prepare_openmp():
    """OpenMP threads that spin for long after a parallel region (libgomp's default: ~3 ms) take the
    cores BLAS's threads need next: measured 2.2x slower training steps at 2 threads. Ask them to sleep,
    unless the user chose otherwise, but only after a short spin (GOMP_SPINCOUNT=OMP_SPINCOUNT, unless
    set): a sleeping thread joins the next region tens to hundreds of microseconds late, and during a
    step the next region follows within tens of microseconds (the matmul splits run on the same OpenMP
    threads, hpr.kernels.nn.matmul, so no other thread of the rank wants those cores). Preset S at 2
    threads, alone on 2 cores: 88 ms a step without the spin, 85 with it (83 at 20000); but when another
    process holds one of the cores the spin costs ~25% (a rank should not have more threads than free
    cores). The OpenMP runtime reads this when the kernels load it, so it is set in the environment
    before hpr._kernels is imported. Returns True when hpr set it (child processes that should not
    inherit hpr's choice may drop it)."""
    if current().omp_wait_policy is None and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", OMP_SPINCOUNT)
        return True
    return False


@contextlib.contextmanager
def openblas_coretype(name):
    """OPENBLAS_CORETYPE=name in the environment for the duration (OpenBLAS reads it when it (re)chooses
    its kernels, hpr.cpu.choose_blas_kernels), then as it was: child processes do not inherit hpr's
    choice."""
    old = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OPENBLAS_CORETYPE", None)
        else:
            os.environ["OPENBLAS_CORETYPE"] = old
