"""hpr.comm: the Communicator and hpr's own collectives over MPI. Imports kernels.reduce only, never nn.

  communicator.py  Communicator: the public API (the facade) and the checks on its arguments
  buffers.py       the host/device buffer adapter: numpy, CuPy direct (CUDA-aware MPI) or staged
  channel.py       Channel and Link: one context's messages, the per-size plan, the dispatch
  algorithms.py    the point-to-point algorithms as pure functions over a Link (ALLREDUCE: the table)
  shm.py           the node: which ranks share one, its shared window, comm.alloc() memory
  cost.py          the alpha-beta model that chooses an allreduce algorithm
  progress.py      Handle, Request and the progress thread of iallreduce
  wait.py          polite deadline waits and the timeout message

Settings come from an hpr.config.CommConfig handed to each Communicator (default
``hpr.config.current().comm``); nothing here reads the environment.
Usage: ``comm = hpr.init(); comm.allreduce(x)``."""
import atexit

from .communicator import Communicator
from .cost import ALGORITHMS, CostModel
from .progress import Handle, Request, stop_progress_threads

atexit.register(stop_progress_threads)

__all__ = ["Communicator", "Handle", "Request", "CostModel", "ALGORITHMS"]
