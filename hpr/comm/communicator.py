"""hpr's Communicator: the public face of hpr.comm. An mpi4py communicator underneath (``.mpi``),
point-to-point on arrays with polite deadline waits, and collectives written by hpr — allreduce,
reduce_scatter, allgather, broadcast, iallreduce, barrier — on top of MPI point-to-point or an MPI-3
shared window inside a node, never MPI's collective of the same name. The algorithm is chosen per call
by the cost model (cost.py), or forced by the CommConfig.

This module owns the API users call, the checks on their arguments (ranks, shapes) and the settings
a communicator runs with (a frozen hpr.config.CommConfig, handed on to its splits). It does not own
how a call runs (channel.py: collectives run on a duplicate of the user's communicator, so their
messages never meet the user's; iallreduce on a second duplicate driven by the progress thread in
progress.py) or how a numpy or CuPy array becomes what the channel works on (buffers.py). Usage::

    comm = hpr.init()                      # or Communicator(mpi_comm, config=CommConfig(...))
    comm.allreduce(grad, op="avg")
    h = comm.iallreduce(bucket); ...; h.wait()
"""
import os
import pickle
import socket

import numpy as np
from mpi4py import MPI

from .. import config as hpr_config
from ..errors import ConfigError
from ..kernels.reduce import dtype_code
from .buffers import Buffers, as_bytes, reduction_codes
from .channel import Channel, Health, setup_meeting
from .progress import Handle, Progress, Request
from .wait import wait_all


class Communicator:
    """A group of ranks and hpr's collectives over it. Creating one is collective over ``mpi``, under
    the deadline: a rank that never comes is a CommTimeout naming it (channel.setup_meeting).

    config: the hpr.config.CommConfig it runs with (algorithm, deadline, checks, node engine sizes,
    CUDA-aware MPI); default ``hpr.config.current().comm``. timeout: seconds, overrides config.timeout."""

    def __init__(self, mpi, timeout=None, config=None):
        if not isinstance(mpi, MPI.Intracomm) or mpi == MPI.COMM_NULL:
            raise ConfigError(f"Communicator needs an mpi4py intracommunicator, not {mpi!r}")
        if config is None:
            config = hpr_config.current().comm
        elif isinstance(config, hpr_config.Config):
            config = config.comm
        if not isinstance(config, hpr_config.CommConfig):
            raise ConfigError(f"Communicator's config must be an hpr.config.CommConfig, not {type(config).__name__}")
        if timeout is not None:
            config = config.replace(timeout=float(timeout))
        self.mpi, self.config = mpi, config
        self.rank, self.size = mpi.Get_rank(), mpi.Get_size()
        self.timeout = config.timeout
        self.world_ranks = MPI.Group.Translate_ranks(mpi.Get_group(), list(range(self.size)),
                                                     MPI.COMM_WORLD.Get_group())
        self._allocs = []
        # the setup below is MPI's blocking collectives: a meeting under the deadline comes first, so a
        # rank that never arrives is a CommTimeout naming it, not a hang
        setup_meeting(mpi, config, self.world_ranks, "communicator setup")
        self.procs = mpi.allgather((socket.gethostname(), os.getpid()))  # setup only: names the dead
        self._health = Health()  # broken after the first failed collective, for every channel
        self._main = Channel(mpi.Dup(), config, self.world_ranks, self._allocs, self.procs, self._health)
        self._bg = None  # the Progress thread of iallreduce, made on first use
        self._p2p_seq = 0
        self._buffers = Buffers(config, self._main.agree_min)

    def __repr__(self):
        return f"<hpr.Communicator rank {self.rank} of {self.size}>"

    # -- what the communicator is ----------------------------------------------------------------
    @property
    def layout(self):
        """How the ranks sit on nodes (nodes, ranks per node)."""
        return self._main.layout

    @property
    def local_rank(self):
        """This rank's index among the ranks on its node (picks its GPU)."""
        return self._main.node_comm.Get_rank()

    @property
    def local_size(self):
        """How many ranks of this communicator share this rank's node (HPR_NODE_SIZE: the pretended
        node)."""
        return self._main.node_comm.Get_size()

    @property
    def cost_model(self):
        """The CostModel this communicator chooses its allreduce algorithms with."""
        return self._main.cost

    @property
    def cuda_aware(self):
        """Whether device arrays go to MPI as they are (CommConfig.cuda_aware, else
        hpr.device.cuda_aware, agreed by every rank of this communicator at the first device call: one
        rank staging while another does not would run different algorithms)."""
        return self._buffers.cuda_aware

    @property
    def shared_memory_missing(self):
        """Why this communicator's node shared window could not be made (its collectives then run
        point-to-point inside the node too), or None: made, or not tried yet."""
        return self._main.no_shm

    def algorithm_for(self, nbytes):
        """The allreduce algorithm this communicator uses for a message of nbytes (same on all ranks)."""
        return self._main.choose(nbytes)

    def alloc(self, shape, dtype=np.float32):
        """A zeroed array in memory the ranks of a node share (collective: every rank calls it with the
        same shape and dtype, in the same order). allreduce/iallreduce of such an array, or of a
        contiguous slice of it at the same place on every rank, reduce straight from the neighbours'
        copies with no staging copies: hpr's flat gradient buffers live here. Freed with the
        Communicator."""
        dt = np.dtype(dtype)
        dtype_code(dt)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        if any(int(d) < 0 for d in shape):
            raise ConfigError(f"alloc: shape {shape} has a negative dimension")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        rec = self._main.shared_alloc(nbytes, dtype_code(dt))
        if rec is None:  # no shared window on this node (said once on rank 0): a private array
            return np.zeros(shape, dt)
        self._allocs.append(rec)
        arr = np.frombuffer(rec.memory, np.uint8, count=nbytes).view(dt).reshape(shape)
        arr[...] = 0
        self._main.node_comm.Barrier()  # setup only: nobody reads a neighbour's copy before it is zeroed
        return arr

    def split(self, color, key=0):
        """Ranks with the same color form a new Communicator, ordered by key (then by rank), with this
        one's config."""
        self._main.meet("split")  # under the deadline: MPI's Split blocks until every rank calls it
        sub = self.mpi.Split(color, key)
        if sub == MPI.COMM_NULL:
            return None
        made = Communicator(sub, config=self.config)
        made._owns_mpi = True  # made here, so free() releases it too
        return made

    # -- point to point --------------------------------------------------------------------------
    def _p2p_ctx(self, op):
        self._p2p_seq += 1
        return self._main.context(op, self._p2p_seq)

    def _peer(self, r, what):
        self._health.check()  # a broken communicator refuses point-to-point calls too
        if not (0 <= r < self.size):
            raise ConfigError(f"{what}: rank {r} is outside this communicator of {self.size} ranks")
        return r

    def isend(self, x, dest, tag=0):
        buf = self._buffers.adapt(x, "isend", write=False, keep=True)
        req = self.mpi.Isend(as_bytes(buf.data), self._peer(dest, "isend"), tag)
        return Request(req, dest, self._p2p_ctx("isend"), buf)

    def irecv(self, x, source, tag=0):
        buf = self._buffers.adapt(x, "irecv", read=False, keep=True)
        req = self.mpi.Irecv(as_bytes(buf.data), self._peer(source, "irecv"), tag)
        return Request(req, source, self._p2p_ctx("irecv"), buf)

    def send(self, x, dest, tag=0):
        self.isend(x, dest, tag).wait()

    def recv(self, x, source, tag=0):
        self.irecv(x, source, tag).wait()
        return x

    def sendrecv(self, sendbuf, dest, recvbuf, source, sendtag=0, recvtag=0):
        ctx = self._p2p_ctx("sendrecv")
        r = self._buffers.adapt(recvbuf, "sendrecv", read=False, keep=True)
        rr = self.mpi.Irecv(as_bytes(r.data), self._peer(source, "sendrecv"), recvtag)
        s = self._buffers.adapt(sendbuf, "sendrecv", write=False, keep=True)
        rs = self.mpi.Isend(as_bytes(s.data), self._peer(dest, "sendrecv"), sendtag)
        wait_all([rr, rs], [source, dest], ctx)
        r.finish()
        s.finish()
        return recvbuf

    # -- collectives -----------------------------------------------------------------------------
    def barrier(self):
        """Every rank arrives before any leaves (waiting politely)."""
        self._main.barrier()

    def allreduce(self, x, op="sum"):
        """In place: x becomes the element-wise op over every rank's x; returns x."""
        if type(x) is np.ndarray:  # the common case, without a Buffer (nothing to stage or copy back)
            d, o, avg = reduction_codes(x.dtype, op, "allreduce")
            self._main.allreduce_array(x, d, o, avg)
            return x
        buf = self._buffers.adapt(x, "allreduce")
        d, o, avg = reduction_codes(x.dtype, op, "allreduce")
        self._main.allreduce(buf.data, d, o, avg, gpu=buf.gpu)
        buf.finish()
        return x

    def iallreduce(self, x, op="sum"):
        """Start an in-place allreduce that progresses in the background; returns a Handle. A device
        array is copied to pinned host memory now and back in wait(), unless MPI is CUDA-aware."""
        buf = self._buffers.adapt(x, "iallreduce", keep=True)
        d, o, avg = reduction_codes(x.dtype, op, "iallreduce")
        h = Handle(x, buf)
        self._background("iallreduce").submit(h, buf.data, d, o, avg, buf.gpu)
        return h

    def _background(self, what):
        """The progress thread and its channel (made on first use, collectively: every rank of the
        group makes its first background call in the same order)."""
        if self._bg is None:
            if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
                raise ConfigError(f"{what} needs MPI initialised with MPI_THREAD_MULTIPLE; "
                                  "do not lower mpi4py.rc.thread_level")
            self._health.check()
            self._main.meet(what)  # under the deadline: the new channel's setup blocks in MPI
            self._bg = Progress(Channel(self._main.mpi.Dup(), self.config, self.world_ranks, self._allocs,
                                        self.procs, self._health))
        return self._bg

    def ireduce_scatter(self, x, op="sum"):
        """Start reduce_scatter(x, op) on the background thread (after the iallreduce / ireduce_scatter /
        iallgather calls before it); Handle.wait() returns this rank's block (numpy.array_split bounds
        along axis 0 of a 1-D x). x must stay unchanged until the handle is done. numpy arrays only."""
        self._host_only(x, "ireduce_scatter")
        d, o, avg = reduction_codes(x.dtype, op, "ireduce_scatter")
        h = Handle(None)
        self._background("ireduce_scatter").submit_call(h, lambda ch: ch.reduce_scatter(x, d, o, avg, 1)[0])
        return h

    def iallgather(self, x, out=None):
        """Start allgather(x) of a 1-D x on the background thread; Handle.wait() returns every rank's x
        concatenated (lengths may differ), in out when given (a contiguous 1-D array of the total
        length, written by the thread: leave it alone until the handle is done). x must stay unchanged
        until then too. numpy only."""
        self._host_only(x, "iallgather")
        if out is not None:
            self._host_only(out, "iallgather (out)")
        d = dtype_code(x.dtype)
        h = Handle(None)
        self._background("iallgather").submit_call(h, lambda ch: ch.allgather(x, d, 1, out)[0])
        return h

    @staticmethod
    def _host_only(x, what):
        if not isinstance(x, np.ndarray) or x.ndim != 1 or not x.flags.c_contiguous:
            raise ConfigError(f"{what} takes a contiguous 1-D numpy array, got {type(x).__name__} "
                              f"{getattr(x, 'shape', '')}")

    def reduce_scatter(self, x, op="sum"):
        """This rank's block of the element-wise op over every rank's x, blocks along axis 0 as
        numpy.array_split makes them. x is not changed. A device array goes through host memory."""
        buf = self._buffers.adapt(x, "reduce_scatter", write=False, host=True)
        d, o, avg = reduction_codes(x.dtype, op, "reduce_scatter")
        row = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        mine, rb = self._main.reduce_scatter(buf.data, d, o, avg, row)
        return self._buffers.like(x, mine.reshape((rb[self.rank + 1] - rb[self.rank],) + x.shape[1:]))

    def allgather(self, x):
        """Every rank's x concatenated along axis 0 (lengths along axis 0 may differ). A device array
        goes through host memory."""
        buf = self._buffers.adapt(x, "allgather", write=False, host=True)
        d = dtype_code(x.dtype)
        row = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        out, rows = self._main.allgather(buf.data, d, row)
        return self._buffers.like(x, out.reshape((rows,) + x.shape[1:]))

    def broadcast(self, x, root=0):
        """In place: every rank's x becomes root's x; returns x. A device array goes through host
        memory."""
        buf = self._buffers.adapt(x, "broadcast", host=True)
        self._peer(root, "broadcast root")
        self._main.broadcast(buf.data, root, dtype_code(x.dtype))
        buf.finish()
        return x

    # -- small Python objects (metadata, checkpoint pieces), with the deadline mpi4py's bcast lacks ----
    def bcast_obj(self, obj, root=0):
        """root's picklable obj, on every rank."""
        self._peer(root, "bcast_obj root")
        if self.size == 1:
            return obj
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.rank == root else b""
        n = np.array([len(data)], np.int64)
        self._main.broadcast(n, root, dtype_code(n.dtype))
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self._main.broadcast(buf, root, -1)
        return obj if self.rank == root else pickle.loads(buf)

    def gather_obj(self, obj, root=0):
        """[every rank's picklable obj] in rank order on root, None elsewhere."""
        self._peer(root, "gather_obj root")
        if self.size == 1:
            return [obj]
        return self._main.gather_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), root)

    def free(self):
        """Release the duplicated communicators, windows and background thread (collective). Arrays from
        alloc() must not be used afterwards."""
        for rec in self._allocs:
            rec.win.Free()
        self._allocs.clear()
        if self._bg is not None:
            self._bg.stop()
            self._bg.channel.free()
            self._bg = None
        if self._main is not None:
            self._main.free()
            self._main = None
        if getattr(self, "_owns_mpi", False):  # a split's communicator: hpr made it, hpr frees it
            self.mpi.Free()
            self._owns_mpi = False
