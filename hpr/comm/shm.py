"""The node-local side of hpr's collectives: which ranks share a node, the MPI-3 shared window the
engine in csrc/shm.c works in, and the hierarchical allreduce that runs the engine inside each node and
a point-to-point algorithm between nodes. Owns no algorithm between nodes (algorithms.py does).

HPR_NODE_SIZE=k pretends that every k consecutive ranks form a node, so the hierarchical path can be
tested on one machine. Usage: ``node = NodeShm(mpi_comm, slot_bytes)`` then ``node.engine.allreduce``."""
import os

import numpy as np
from mpi4py import MPI

from ..cpu import cpu_kernels
from ..errors import ConfigError
from .cost import NodeLayout
from . import wait


def _env_int(name, default, minimum=1):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    if not v.isdigit() or int(v) < minimum:
        raise ConfigError(f"{name}={v!r} must be a whole number >= {minimum}")
    return int(v)


def slot_bytes():
    """HPR_SHM_SLOT_KB: bytes each rank stages per round in the shared window (default 512 KiB)."""
    return _env_int("HPR_SHM_SLOT_KB", 512) * 1024 // 4096 * 4096 or 4096


def small_bytes(slot):
    """HPR_SHM_SMALL_KB: messages up to this size take the one-barrier path (default 32 KiB)."""
    return min(slot, _env_int("HPR_SHM_SMALL_KB", 32, 0) * 1024)


def split_node(mpi_comm):
    """The sub-communicator of ranks on this rank's node (or of HPR_NODE_SIZE consecutive ranks)."""
    fake = _env_int("HPR_NODE_SIZE", 0, 0)
    if fake:
        return mpi_comm.Split(mpi_comm.Get_rank() // fake, mpi_comm.Get_rank())
    return mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, mpi_comm.Get_rank())


def node_layout(mpi_comm, node_comm):
    """NodeLayout of the communicator, the same on every rank (setup-time metadata, pickled)."""
    leader = node_comm.bcast(mpi_comm.Get_rank(), root=0)
    pairs = mpi_comm.allgather((leader, node_comm.Get_size()))
    sizes = {}
    for lead, sz in pairs:
        sizes[lead] = sz
    per = set(sizes.values())
    return NodeLayout(len(sizes), per.pop() if len(per) == 1 else 0)


class NodeShm:
    """A shared window over the node's ranks and the C engine over it (created collectively)."""

    def __init__(self, node_comm, slot):
        k = cpu_kernels()
        p, me = node_comm.Get_size(), node_comm.Get_rank()
        nbytes = k.shm_segment_bytes(p, slot)
        self.win = MPI.Win.Allocate_shared(nbytes if me == 0 else 0, 1, comm=node_comm)
        mem, _ = self.win.Shared_query(0)
        self.segment = np.frombuffer(mem, np.uint8, count=nbytes)
        if me == 0:
            self.segment[:nbytes - 2 * p * slot].fill(0)  # flags and wake word; data needs no clearing
        node_comm.Barrier()  # setup only: everyone sees zeroed flags before the first wait
        self.engine = k.ShmEngine(self.segment, p, me, slot, small_bytes(slot), wait.SPIN * 1e6)
        self.p, self.me = p, me

    def free(self):
        self.engine = None
        self.segment = None
        try:
            self.win.Free()
        except MPI.Exception:
            pass
