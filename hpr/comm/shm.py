"""The node-local side of hpr's collectives: which ranks share a node, the MPI-3 shared window the
engine in csrc/shm.c works in, and the shared allocations (``Communicator.alloc``) that collectives
reduce in place. Owns no algorithm between nodes (algorithms.py does) and no choice of algorithm
(channel.py does); reads no settings (the caller passes them from its CommConfig).

A node_size k > 0 (HPR_NODE_SIZE) pretends that every k consecutive ranks form a node, so the
hierarchical path can be tested on one machine. When a window cannot be made (ranks MPI does not
see as sharing memory, or a /dev/shm too small for it: Docker's default is 64 MiB), allocate_shared
says why instead of failing, and the channel falls back to point-to-point messages.
Usage: ``node = NodeShm(split_node(mpi_comm, 0), slot_bytes, small_bytes, spin_us)`` then
``node.engine.allreduce``."""
import os

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


SHM_DIR = "/dev/shm"  # where MPICH (and Open MPI) map the files behind shared windows


def shm_shortfall(node_bytes, folder=SHM_DIR):
    """None when folder has room for node_bytes more, else a sentence saying it does not and how to
    enlarge it (no folder: nothing to check)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if node_bytes <= free:
        return None
    return (f"{folder} has {free / 2**20:.1f} MiB free but the node's shared window needs "
            f"{node_bytes / 2**20:.1f} MiB; enlarge it (Docker: docker run --shm-size=1g ...; "
            f"elsewhere: mount -o remount,size=2G {folder})")


def allocate_shared(node_comm, nbytes, node_bytes):
    """(window, None) with an MPI-3 shared window holding nbytes of this rank (node_bytes on the whole
    node), or (None, why) when it cannot be made here. Collective over node_comm."""
    why = shm_shortfall(node_bytes)
    if why is not None:
        return None, why
    try:
        return MPI.Win.Allocate_shared(nbytes, 1, comm=node_comm), None
    except MPI.Exception as e:
        return None, f"MPI could not make a shared window over the node's ranks ({e.Get_error_string().strip()})"


class NodeShm:
    """A shared window over the node's ranks and the C engine over it (created collectively).
    win: the window from allocate_shared(node_comm, segment_bytes(...) on node rank 0, else 0, ...);
    slot: bytes each rank stages per round; small: the one-barrier threshold; spin_us: how long the
    engine's waits spin before they sleep."""

    @staticmethod
    def segment_bytes(p, slot):
        return cpu_kernels().shm_segment_bytes(p, slot)

    def __init__(self, node_comm, win, slot, small, spin_us):
        k = cpu_kernels()
        p, me = node_comm.Get_size(), node_comm.Get_rank()
        nbytes = k.shm_segment_bytes(p, slot)
        self.win = win
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

    def __init__(self, node_comm, win, nbytes):
        self.win = win  # from allocate_shared(node_comm, max(nbytes, 1), ...)
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
