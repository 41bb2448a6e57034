"""The node-local side of hpr's collectives: which ranks share a node, the MPI-3 shared window the
engine in csrc/shm.c works in, and the shared allocations (``Communicator.alloc``) that collectives
reduce in place. Owns no algorithm between nodes (algorithms.py does) and no choice of algorithm
(channel.py does); reads no settings (the caller passes them from its CommConfig).

A node_size k > 0 (HPR_NODE_SIZE) pretends that every k consecutive ranks form a node, so the
hierarchical path can be tested on one machine.
Usage: ``node = NodeShm(split_node(mpi_comm, 0), slot_bytes, small_bytes, spin_us)`` then
``node.engine.allreduce``."""
import numpy as np
from mpi4py import MPI

from ..cpu import cpu_kernels
from .cost import NodeLayout


def split_node(mpi_comm, node_size=0):
    """The sub-communicator of ranks on this rank's node, or, for node_size k > 0, of the k consecutive
    ranks rank // k."""
    if node_size:
        return mpi_comm.Split(mpi_comm.Get_rank() // node_size, mpi_comm.Get_rank())
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
    """A shared window over the node's ranks and the C engine over it (created collectively).
    slot: bytes each rank stages per round; small: the one-barrier threshold; spin_us: how long the
    engine's waits spin before they sleep."""

    def __init__(self, node_comm, slot, small, spin_us):
        k = cpu_kernels()
        p, me = node_comm.Get_size(), node_comm.Get_rank()
        nbytes = k.shm_segment_bytes(p, slot)
        self.win = MPI.Win.Allocate_shared(nbytes if me == 0 else 0, 1, comm=node_comm)
        mem, _ = self.win.Shared_query(0)
        self.segment = np.frombuffer(mem, np.uint8, count=nbytes)
        if me == 0:
            self.segment[:nbytes - 2 * p * slot].fill(0)  # flags and wake word; data needs no clearing
        node_comm.Barrier()  # setup only: everyone sees zeroed flags before the first wait
        self.engine = k.ShmEngine(self.segment, p, me, slot, small, spin_us)
        self.p, self.me = p, me

    def free(self):
        self.engine = None
        self.segment = None
        try:
            self.win.Free()
        except MPI.Exception:
            pass


class SharedAlloc:
    """An array that each rank of a node holds in one MPI-3 shared window, so collectives read the
    neighbours' copies in place. bases: the address of every node rank's copy, in node-rank order;
    [lo, hi): this rank's copy's addresses."""

    def __init__(self, node_comm, nbytes):
        self.win = MPI.Win.Allocate_shared(max(nbytes, 1), 1, comm=node_comm)
        self.bases = []
        for r in range(node_comm.Get_size()):
            mem, _ = self.win.Shared_query(r)
            self.bases.append(mem.address)
        mem, _ = self.win.Shared_query(node_comm.Get_rank())
        self.memory = mem
        self.lo = mem.address
        self.hi = self.lo + nbytes


def find_alloc(allocs, x):
    """(SharedAlloc, byte offset) when host array x lies inside one of allocs, else None."""
    addr = x.__array_interface__["data"][0]
    for rec in allocs:
        if rec.lo <= addr and addr + x.nbytes <= rec.hi:
            return rec, addr - rec.lo
    return None
