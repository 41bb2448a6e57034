"""hpr: a small hybrid-parallel runtime for training compact language models on MPI.

``comm = hpr.init()`` gives the world Communicator (or wraps a communicator you pass, so hpr can run
embedded in a larger MPI program). Kernels live in hpr.kernels, collectives in hpr.comm. ``import hpr``
does not start MPI (init does), and imports only the floor (errors, config, trace, device, cpu); the
layers are drawn in docs/architecture.md and checked by tests/test_layering.py.
Usage::

    import hpr, numpy as np
    comm = hpr.init()
    x = np.ones(1000, np.float32); comm.allreduce(x)
"""
import sys
import threading
import time

from . import config, device, trace  # noqa: F401  (hpr.device.select: where a rank's arrays live)
from .cpu import cpu_count, set_num_threads
from .errors import (CheckpointError, CommError, CommMismatch, CommTimeout, ConfigError, DataError, HprError,
                     KernelsMissing)

__version__ = "0.1.0"
__all__ = ["init", "world", "HprError", "ConfigError", "CommError", "CommTimeout", "CommMismatch",
           "KernelsMissing", "DataError", "CheckpointError", "__version__"]

_world = None
_hook_installed = False


def init(comm=None, *, abort_on_exception=True, threads=None, settings=None):
    """The Communicator for ``comm`` (default MPI.COMM_WORLD), made once and remembered as hpr's world.

    comm: an mpi4py intracommunicator (e.g. a sub-communicator of a larger job) or a Communicator.
    abort_on_exception: an uncaught exception on any rank prints its traceback and aborts the job, so
      the other ranks do not wait for it until their deadline.
    threads: CPU threads per rank for hpr's kernels; default HPR_NUM_THREADS / OMP_NUM_THREADS, else
      the node's cores divided among the node's ranks.
    settings: an hpr.config.Config to use instead of reading the environment (HPR_*), which init
      otherwise reads here, once, and makes current for everything below."""
    global _world
    settings = config.set_current(settings if settings is not None else config.from_env())
    # importing mpi4py.MPI initialises MPI, so `import hpr` leaves it to here: a program that embeds hpr
    # sets mpi4py.rc (thread level, initialize=False) before MPI starts, and single-process uses of hpr
    # (schedules, checkpoints, kernels) pay no MPI start (about 0.1 s with MPICH here)
    from mpi4py import MPI  # lazy: initialises MPI (see above)
    from .comm import Communicator  # lazy: hpr.comm imports mpi4py.MPI

    if isinstance(comm, Communicator):
        _world = comm
    else:
        mpi = MPI.COMM_WORLD if comm is None else comm
        if _world is not None and _world.mpi == mpi:
            return _world
        _world = Communicator(mpi)
    if threads is not None:
        set_num_threads(threads)
    elif settings.num_threads is None:
        set_num_threads(max(1, cpu_count() // max(1, _world.local_size)))
    else:
        set_num_threads(settings.num_threads)  # and holds BLAS to 1 thread: hpr.cpu.matmul splits rows itself
    if settings.trace:
        trace.start(settings.trace)  # HPR_TRACE: rank 0 writes every rank's timeline at exit
    trace.set_world(_world)  # at exit, an unfinished trace is gathered over this world
    if abort_on_exception and _world.size > 1:
        _install_abort_hook(_world)
    return _world



def world():
    """The Communicator made by hpr.init(); HprError if init() has not been called."""
    if _world is None:
        raise HprError("hpr.init() has not been called on this rank; call comm = hpr.init() first")
    return _world


def _install_abort_hook(comm):
    """Uncaught exceptions (main thread or any other) print and then abort the whole job."""
    global _hook_installed
    if _hook_installed:
        return
    prev = sys.excepthook

    def hook(kind, value, tb):
        prev(kind, value, tb)
        sys.stderr.write(f"hpr: rank {comm.rank} of {comm.size} raised {kind.__name__}; aborting the job "
                         "so the other ranks do not wait for it\n")
        sys.stderr.flush()
        time.sleep(0.3)  # the launcher tears the job down at Abort: let the traceback reach it first
        comm.mpi.Abort(1)

    def thread_hook(args):
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
    _hook_installed = True
