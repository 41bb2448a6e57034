"""hpr.comm: the Communicator and hpr's own collectives over MPI (see communicator.py).
Imports kernels.reduce only, never nn. Usage: ``comm = hpr.init(); comm.allreduce(x)``."""
import atexit

from .communicator import Communicator, Handle, Request, stop_progress_threads
from .cost import ALGORITHMS, CostModel

atexit.register(stop_progress_threads)

__all__ = ["Communicator", "Handle", "Request", "CostModel", "ALGORITHMS"]
