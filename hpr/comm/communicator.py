"""hpr's Communicator: an mpi4py communicator underneath (``.mpi``), point-to-point on arrays with
polite deadline waits, and collectives written by hpr — allreduce, reduce_scatter, allgather, broadcast,
iallreduce, barrier — on top of MPI point-to-point or an MPI-3 shared window inside a node, never MPI's
collective of the same name. The algorithm is chosen per call by the cost model (cost.py).

Collectives run on a duplicate of the user's communicator (their messages never meet the user's), and
iallreduce on a second duplicate driven by a background thread, so it progresses while the caller
computes. Usage::

    comm = hpr.init()
    comm.allreduce(grad, op="avg")
    h = comm.iallreduce(bucket); ...; h.wait()
"""
import os
import pickle
import queue
import socket
import threading
import weakref
from time import perf_counter_ns

import numpy as np
from mpi4py import MPI

from ..cpu import cpu_kernels, num_threads
from ..device import is_device_array
from ..errors import CommMismatch, ConfigError
from ..kernels.reduce import dtype_code, op_code
from . import algorithms as alg
from .cost import CostModel, forced_algorithm
from .shm import NodeShm, node_layout, slot_bytes, split_node
from . import wait
from .wait import OpContext, default_timeout, wait_all

_live = weakref.WeakSet()
DIRECT_MIN_BYTES = 512 << 10  # shared buffers at least this large are reduced in place
_KINDS = {"allreduce": 1, "reduce_scatter": 2, "allgather": 3, "broadcast": 4, "barrier": 5, "iallreduce": 6}
_DTYPE_NAMES = {0: "float16", 1: "bfloat16", 2: "float32", 3: "float64", 4: "int32", 5: "int64", -1: "-"}
_OP_NAMES = {0: "sum", 1: "max", 2: "min", 3: "avg", -1: "-"}
_P2P = {"recursive_doubling": alg.recursive_doubling_allreduce, "rabenseifner": alg.rabenseifner_allreduce,
        "ring": alg.ring_allreduce}


def _bytes(x):
    return x if x.dtype == np.uint8 else x.view(np.uint8)


def _flat(x, what, writable=True):
    """A 1-D view of a C-contiguous numpy array, or a ConfigError saying what to pass instead (CuPy arrays
    take Communicator._device)."""
    if not isinstance(x, np.ndarray):
        raise ConfigError(f"{what} takes a numpy array, not {type(x).__name__}; wrap it with numpy.asarray")
    if not x.flags.c_contiguous:
        raise ConfigError(f"{what} needs a C-contiguous array; pass numpy.ascontiguousarray(x) "
                          "(and copy the result back)")
    if writable and not x.flags.writeable:
        raise ConfigError(f"{what} works in place and needs a writable array")
    return x.reshape(-1)


def _op(op, dcode, what):
    """(kernel op code, is_avg) of a reduction op given by name, or ConfigError naming the ops."""
    if not isinstance(op, str):
        raise ConfigError(f"{what}: op {op!r} is not a reduction name; use one of sum, max, min, avg")
    return op_code(op, dcode)


class Link:
    """Point-to-point messages of one collective context, waited on politely under its deadline."""

    __slots__ = ("mpi", "rank", "size", "ctx")

    def __init__(self, mpi):
        self.mpi, self.rank, self.size, self.ctx = mpi, mpi.Get_rank(), mpi.Get_size(), None

    def sendrecv(self, sbuf, dest, rbuf, src):
        rr = self.mpi.Irecv(_bytes(rbuf), src, alg.TAG)
        rs = self.mpi.Isend(_bytes(sbuf), dest, alg.TAG)
        wait_all([rr, rs], [src, dest], self.ctx)

    def send(self, buf, dest):
        wait_all([self.mpi.Isend(_bytes(buf), dest, alg.TAG)], [dest], self.ctx)

    def recv(self, buf, src):
        wait_all([self.mpi.Irecv(_bytes(buf), src, alg.TAG)], [src], self.ctx)


class Channel:
    """One context for collectives: its own MPI communicator, node split, shared window (made on first
    use) and sequence numbers. The Communicator has one for blocking calls and one for iallreduce."""

    def __init__(self, mpi, timeout, world_ranks, allocs, procs=None):
        self.mpi = mpi
        self.procs = procs  # [(host, pid)] per rank: a timeout tells a dead peer from a stuck one
        self.allocs = allocs  # the Communicator's shared allocations (SharedAlloc), for the direct path
        self.link = Link(mpi)
        self.rank, self.size = self.link.rank, self.link.size
        self.timeout = timeout
        self.seq = 0
        self.world_ranks = world_ranks
        self.node_comm = split_node(mpi)
        self.layout = node_layout(mpi, self.node_comm)
        wait.set_spin(wait.spin_seconds(self.node_comm.Get_size()))
        wait.short_sleeps()
        # node rank -> rank in this communicator, for naming a missing peer
        self.node_to_rank = MPI.Group.Translate_ranks(self.node_comm.Get_group(), list(range(self.node_comm.Get_size())),
                                                      mpi.Get_group())
        self.cost = CostModel(slot_bytes=slot_bytes())
        self.forced = forced_algorithm()
        self.check = os.environ.get("HPR_CHECK", "0").strip() not in ("", "0", "false", "no")
        self._node = None
        self._cross = None
        self.choices = {}
        self.threads = num_threads()
        if self.forced == "shm" and not self.layout.single_node:
            raise ConfigError("HPR_ALLREDUCE=shm needs every rank on one node; use hierarchical or auto")
        if self.forced == "hierarchical" and not (self.layout.uniform and self.layout.per_node > 1
                                                  and not self.layout.single_node):
            raise ConfigError("HPR_ALLREDUCE=hierarchical needs several nodes with the same number (>1) of "
                              "ranks each; set HPR_NODE_SIZE to test it on one machine, or use auto")

    # -- helpers ---------------------------------------------------------------------------------
    def _name(self, r):
        w = self.world_ranks[r] if self.world_ranks is not None else r
        return str(r) if w == r else f"{r} (world rank {w})"

    def begin(self, op, count=True):
        if count:
            self.seq += 1
        ctx = OpContext(op, self.seq, self.rank, self.size, self.timeout, self._name, self.procs)
        self.link.ctx = ctx
        return ctx

    def node(self):
        if self._node is None:
            self._node = NodeShm(self.node_comm, self.cost.slot_bytes)
        return self._node

    def cross(self):
        """Ranks with the same node rank on every node, ordered by node (for hierarchical)."""
        if self._cross is None:
            c = self.mpi.Split(self.node_comm.Get_rank(), self.rank)
            self._cross = Link(c)
        return self._cross

    def find_alloc(self, x):
        """(SharedAlloc, byte offset) when x lies inside one of the shared allocations, else None."""
        addr = x.__array_interface__["data"][0]
        for rec in self.allocs:
            if rec.lo <= addr and addr + x.nbytes <= rec.hi:
                return rec, addr - rec.lo
        return None

    def shm_missing(self, ctx, missing_node_rank):
        return ctx.timeout_error([self.node_to_rank[missing_node_rank]])

    def verify(self, ctx, kind, dcode, ocode, count, extra=0):
        """HPR_CHECK=1: every rank sees every rank's call signature; any difference raises everywhere."""
        sig = np.array([_KINDS[kind], dcode, ocode, count, extra], np.int64)
        table = np.zeros(5 * self.size, np.int64)
        table[5 * self.rank:5 * self.rank + 5] = sig
        ctx_op = ctx.op
        ctx.op = f"{ctx_op} (HPR_CHECK)"
        alg.ring_allgather_blocks(self.link, table, [5 * i for i in range(self.size + 1)])
        ctx.op = ctx_op
        rows = table.reshape(self.size, 5)
        if (rows == rows[0]).all():
            return
        names = {v: k for k, v in _KINDS.items()}
        lines = [f"  rank {r}: {names.get(int(k), '?')} op={_OP_NAMES.get(int(o), o)} "
                 f"dtype={_DTYPE_NAMES.get(int(d), d)} count={int(n)} root/shape={int(e)}"
                 for r, (k, d, o, n, e) in enumerate(rows)]
        raise CommMismatch(f"{ctx_op} #{ctx.seq}: ranks called it differently (HPR_CHECK=1):\n" + "\n".join(lines)
                           + "\nEvery rank must make the same collective call with the same op, dtype and "
                             "length; fix the rank that differs.")

    # -- allreduce -------------------------------------------------------------------------------
    def choose(self, nbytes):
        """The algorithm for a message of nbytes, remembered per size (a static plan per size)."""
        if self.size == 1:
            return "none"
        algo = self.forced or self.cost.choose(nbytes, self.size, self.layout)
        if len(self.choices) < 4096:
            self.choices[nbytes] = algo
        return algo

    def allreduce(self, x, dcode, ocode, avg, op_name="allreduce", gpu=None):
        """gpu: the device index when x is a CuPy array and MPI takes device buffers: then a
        point-to-point algorithm runs on the device buffer, reducing with the GPU kernels."""
        self.seq += 1
        if self.check:
            self.verify(self.begin(op_name, False), "allreduce", dcode, ocode + (3 if avg else 0) * (ocode == 0), x.size)
        p = self.size
        if p == 1 or x.size == 0:
            return x
        n = x.nbytes
        if gpu is not None:
            self.begin(op_name, False)
            return self._allreduce_device(x, ocode, avg, gpu)
        algo = self.choices.get(n) or self.choose(n)
        if algo == "shm":
            sc = 1.0 / p if avg else 1.0
            node = self._node or self.node()
            # the direct path's three meetings pay off from about half a MiB (measured at 2-8 ranks)
            found = self.find_alloc(x) if self.allocs and n >= DIRECT_MIN_BYTES else None
            if found is not None:
                rec, off = found
                missing = node.engine.allreduce_direct(rec.bases, off, n, dcode, ocode, sc, self.timeout)
                if missing == -3:
                    raise CommMismatch(
                        f"{op_name} #{self.seq}: ranks passed different parts of a comm.alloc() buffer (or "
                        "different lengths); every rank must pass the same slice of its own buffer")
            else:
                missing = node.engine.allreduce(x, dcode, ocode, sc, self.timeout, self.threads)
            if missing >= 0:
                raise self.shm_missing(self.begin(op_name, False), missing)
            return x
        ctx = self.begin(op_name, False)
        if algo == "hierarchical":
            return self._hierarchical(ctx, x, dcode, ocode, avg, self.threads)
        k, nt = cpu_kernels(), self.threads

        def red(a, b):
            k.reduce_into(a, b, dcode, ocode, nt)

        def scale(v):
            k.scale(v, dcode, 1.0 / p, nt)

        fn = {"recursive_doubling": alg.recursive_doubling_allreduce,
              "rabenseifner": alg.rabenseifner_allreduce, "ring": alg.ring_allreduce}[algo]
        fn(self.link, x, red, scale if avg else None)
        return x

    def _allreduce_device(self, x, ocode, avg, index):
        """The point-to-point algorithms on a device buffer (CUDA-aware MPI): the shared-memory engines
        work on host memory only. Runs with x's GPU current (iallreduce calls it from the progress
        thread, and CUDA's current device is per thread); each reduction finishes before the next
        message reads its result."""
        from ..device import cupy
        from ..kernels import reduce as R

        cp = cupy()
        op = _OP_NAMES[ocode]
        algo = self.forced if self.forced in _P2P else self.cost.choose(x.nbytes, self.size, None)
        stream = cp.cuda.get_current_stream

        def red(a, b):
            R.reduce_into(a, b, op)
            stream().synchronize()

        def scale(v):
            R.scale(v, 1.0 / self.size)
            stream().synchronize()

        with cp.cuda.Device(index):
            _P2P[algo](self.link, x, red, scale if avg else None)
        return x

    def _hierarchical(self, ctx, x, dcode, ocode, avg, nt):
        """Per slot-sized round: reduce inside the node (each node rank ends with one part), allreduce
        that part with the same node rank on every other node, then gather the parts inside the node."""
        node, cross, k = self.node(), self.cross(), cpu_kernels()
        cross.ctx = ctx
        per = self.cost.slot_bytes // x.itemsize
        seg = node.segment

        def red(a, b):
            k.reduce_into(a, b, dcode, ocode, nt)

        for off in range(0, x.size, per):
            chunk = x[off:off + per]
            missing, poff, plen, pbyte = node.engine.reduce_part(chunk, dcode, ocode, self.timeout, nt)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
            part = seg[pbyte:pbyte + plen * x.itemsize].view(x.dtype)
            if plen:
                algo = self.cost.choose(part.nbytes, cross.size, None)
                fn = {"recursive_doubling": alg.recursive_doubling_allreduce,
                      "rabenseifner": alg.rabenseifner_allreduce, "ring": alg.ring_allreduce}[algo]
                fn(cross, part, red, None)
                if avg:
                    k.scale(part, dcode, 1.0 / self.size, nt)
            missing = node.engine.finish_round(chunk, dcode, self.timeout)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
        return x

    # -- the other collectives -------------------------------------------------------------------
    def reduce_scatter(self, x, dcode, ocode, avg, row_elems):
        ctx = self.begin("reduce_scatter")
        rows = x.size // row_elems if row_elems else 0
        if self.check:
            self.verify(ctx, "reduce_scatter", dcode, ocode + (3 if avg else 0) * (ocode == 0), x.size)
        rb = alg.block_bounds(rows, self.size)
        b = [r * row_elems for r in rb]
        if self.size == 1:
            return x.copy(), rb
        k, nt, p = cpu_kernels(), num_threads(), self.size
        work = x.copy()
        alg.ring_reduce_scatter(self.link, work, lambda a, c: k.reduce_into(a, c, dcode, ocode, nt), b)
        mine = work[b[self.rank]:b[self.rank + 1]].copy()
        if avg:
            k.scale(mine, dcode, 1.0 / p, nt)
        return mine, rb

    def allgather(self, x, dcode, row_elems):
        ctx = self.begin("allgather")
        rows = x.size // row_elems if row_elems else 0
        meta = np.zeros(3 * self.size, np.int64)
        meta[3 * self.rank:3 * self.rank + 3] = (rows, row_elems, dcode)
        alg.ring_allgather_blocks(self.link, meta, [3 * i for i in range(self.size + 1)])
        meta = meta.reshape(self.size, 3)
        if (meta[:, 1] != row_elems).any() or (meta[:, 2] != dcode).any():
            raise CommMismatch(
                f"allgather #{ctx.seq}: ranks passed arrays of different row shape or dtype "
                f"(elements per row {meta[:, 1].tolist()}, dtype codes {meta[:, 2].tolist()}); only the "
                "length along axis 0 may differ between ranks")
        bounds = [0]
        for r in range(self.size):
            bounds.append(bounds[-1] + int(meta[r, 0]) * row_elems)
        out = np.empty(bounds[-1], x.dtype)
        out[bounds[self.rank]:bounds[self.rank + 1]] = x
        if self.size > 1:
            alg.ring_allgather_blocks(self.link, out, bounds)
        return out, int(meta[:, 0].sum())

    def broadcast(self, x, root, dcode):
        ctx = self.begin("broadcast")
        if self.check:
            self.verify(ctx, "broadcast", dcode, -1, x.size, root)
        if self.size == 1 or x.size == 0:
            return x
        if x.nbytes >= (512 << 10) and self.size > 2:
            alg.scatter_allgather_broadcast(self.link, x, root)
        else:
            alg.binomial_broadcast(self.link, x, root)
        return x

    def gather_bytes(self, data, root):
        """Every rank's bytes, unpickled, in rank order on root (None elsewhere): a length, then the
        bytes, from each rank to root, under the deadline."""
        ctx = self.begin("gather")
        if self.rank != root:
            self.link.send(np.array([len(data)], np.int64), root)
            self.link.send(np.frombuffer(data, np.uint8), root)
            return None
        others = [r for r in range(self.size) if r != root]
        sizes = np.zeros(self.size, np.int64)
        wait_all([self.mpi.Irecv(sizes[r:r + 1].view(np.uint8), r, alg.TAG) for r in others], others, ctx)
        bufs = {r: np.empty(int(sizes[r]), np.uint8) for r in others}
        wait_all([self.mpi.Irecv(bufs[r], r, alg.TAG) for r in others], others, ctx)
        return [pickle.loads(data if r == root else bufs[r]) for r in range(self.size)]

    def barrier(self):
        ctx = self.begin("barrier")
        if self.size == 1:
            return
        if self.layout.single_node:
            missing = self.node().engine.barrier(self.timeout)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
        else:
            alg.dissemination_barrier(self.link, np.zeros(1, np.uint8))

    def free(self):
        if self._node is not None:
            self._node.free()
            self._node = None
        for c in (self._cross.mpi if self._cross else None, self.node_comm, self.mpi):
            if c is not None and c != MPI.COMM_NULL:
                try:
                    c.Free()
                except MPI.Exception:
                    pass
        self._cross = None


class SharedAlloc:
    """An array that each rank of a node holds in one MPI-3 shared window, so collectives read the
    neighbours' copies in place. bases: the address of every node rank's copy, in node-rank order."""

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


class Handle:
    """A background collective in flight: ``done()`` tests, ``wait()`` blocks (sleeping, not spinning)
    and returns the array, or raises what the collective raised. t_start / t_done: when the background
    thread began and ended it (perf_counter_ns; for timelines, hpr.trace)."""

    __slots__ = ("_event", "_exc", "_x", "t_start", "t_done")

    def __init__(self, x):
        self._event, self._exc, self._x = threading.Event(), None, x
        self.t_start = self.t_done = 0

    def done(self):
        return self._event.is_set()

    def wait(self):
        self._event.wait()
        if self._exc is not None:
            raise self._exc
        return self._x


class _StagedHandle(Handle):
    """An iallreduce of a device array through a pinned host buffer: wait() copies the result back to
    the device (in the waiting thread, which owns the device) and returns the buffer to the pool."""

    __slots__ = ("_dev", "_host", "_pool")

    def __init__(self, x, flat, host, pool):
        super().__init__(x)
        self._dev, self._host, self._pool = flat, host, pool

    def wait(self):
        try:
            super().wait()
        finally:
            if self._host is not None:
                host, self._host = self._host, None
                if self._exc is None:
                    self._dev.set(host)
                self._pool.give(host)
        return self._x


class _Progress:
    """The background thread that runs iallreduce calls in submission order on its own Channel."""

    def __init__(self, channel):
        self.channel = channel
        self.queue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="hpr-progress", daemon=True)
        self.thread.start()

    def _run(self):
        wait.short_sleeps()
        while True:
            item = self.queue.get()
            if item is None:
                return
            h, x, dcode, ocode, avg, gpu = item
            h.t_start = perf_counter_ns()
            try:
                self.channel.allreduce(x, dcode, ocode, avg, "iallreduce", gpu)
            except BaseException as e:  # handed to the waiter
                h._exc = e
            h.t_done = perf_counter_ns()
            h._event.set()

    def stop(self):
        self.queue.put(None)
        self.thread.join(timeout=5)


class Request:
    """A point-to-point operation in flight; ``wait()`` is polite and has the deadline. A receive into
    a device array staged through host memory copies it to the device when waited on."""

    __slots__ = ("_req", "_peer", "_ctx", "_dev", "_host")

    def __init__(self, req, peer, ctx, dev=None, host=None):
        self._req, self._peer, self._ctx = req, peer, ctx
        self._dev, self._host = dev, host

    def done(self):
        return bool(self._req.Test())

    def wait(self):
        wait_all([self._req], [self._peer], self._ctx)
        if self._dev is not None:
            dev, self._dev = self._dev, None
            dev.set(self._host)


class Communicator:
    """A group of ranks and hpr's collectives over it. Creating one is collective over ``mpi``."""

    def __init__(self, mpi, timeout=None):
        if not isinstance(mpi, MPI.Intracomm) or mpi == MPI.COMM_NULL:
            raise ConfigError(f"Communicator needs an mpi4py intracommunicator, not {mpi!r}")
        self.mpi = mpi
        self.rank, self.size = mpi.Get_rank(), mpi.Get_size()
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self.world_ranks = MPI.Group.Translate_ranks(mpi.Get_group(), list(range(self.size)),
                                                     MPI.COMM_WORLD.Get_group())
        self._allocs = []
        self.procs = mpi.allgather((socket.gethostname(), os.getpid()))  # setup only: names the dead
        self._main = Channel(mpi.Dup(), self.timeout, self.world_ranks, self._allocs, self.procs)
        self._bg = None
        self._p2p_seq = 0
        self._cuda_aware = self._staging = None
        _live.add(self)

    def __repr__(self):
        return f"<hpr.Communicator rank {self.rank} of {self.size}>"

    @property
    def layout(self):
        """How the ranks sit on nodes (nodes, ranks per node)."""
        return self._main.layout

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
        rec = SharedAlloc(self._main.node_comm, nbytes)
        self._allocs.append(rec)
        arr = np.frombuffer(rec.memory, np.uint8, count=nbytes).view(dt).reshape(shape)
        arr[...] = 0
        self._main.node_comm.Barrier()  # setup only: nobody reads a neighbour's copy before it is zeroed
        return arr

    def split(self, color, key=0):
        """Ranks with the same color form a new Communicator, ordered by key (then by rank)."""
        sub = self.mpi.Split(color, key)
        return None if sub == MPI.COMM_NULL else Communicator(sub, self.timeout)

    # -- point to point --------------------------------------------------------------------------
    def _p2p_ctx(self, op):
        self._p2p_seq += 1
        return OpContext(op, self._p2p_seq, self.rank, self.size, self.timeout, self._main._name, self.procs)

    def _peer(self, r, what):
        if not (0 <= r < self.size):
            raise ConfigError(f"{what}: rank {r} is outside this communicator of {self.size} ranks")
        return r

    # -- device (CuPy) arrays: straight to MPI when it takes device buffers, else via host memory ----
    @property
    def local_rank(self):
        """This rank's index among the ranks on its node (picks its GPU)."""
        return self._main.node_comm.Get_rank()

    @property
    def cuda_aware(self):
        """Whether device arrays go to MPI as they are (hpr.device.cuda_aware, agreed by every rank of
        this communicator at the first device call: one rank staging while another does not would run
        different algorithms)."""
        if self._cuda_aware is None:
            from ..device import cuda_aware

            self._cuda_aware = bool(self.mpi.allreduce(int(cuda_aware()[0]), op=MPI.MIN))  # setup only
        return self._cuda_aware

    def _device(self, x, what):
        """(flat view, direct?) of a device array whose queued kernels have finished."""
        from ..device import Staging, cupy

        if not x.flags.c_contiguous:
            raise ConfigError(f"{what} needs a C-contiguous array; pass cupy.ascontiguousarray(x) "
                              "(and copy the result back)")
        cupy().cuda.get_current_stream().synchronize()  # MPI and the staging copy read it next
        if self._staging is None:
            self._staging = Staging()
        # the GPU reduce kernels are float32 / float64: other dtypes stage even with a CUDA-aware MPI
        return x.reshape(-1), self.cuda_aware and x.dtype in (np.float32, np.float64)

    def isend(self, x, dest, tag=0):
        if is_device_array(x):
            buf, direct = self._device(x, "isend")
            buf = buf if direct else buf.get()  # a host copy the request keeps alive
        else:
            buf = _flat(x, "isend", writable=False)
        return Request(self.mpi.Isend(_bytes(buf), self._peer(dest, "isend"), tag), dest, self._p2p_ctx("isend"))

    def irecv(self, x, source, tag=0):
        dev = host = None
        if is_device_array(x):
            buf, direct = self._device(x, "irecv")
            if not direct:
                dev, host = buf, np.empty(buf.shape, buf.dtype)
                buf = host
        else:
            buf = _flat(x, "irecv")
        return Request(self.mpi.Irecv(_bytes(buf), self._peer(source, "irecv"), tag), source,
                       self._p2p_ctx("irecv"), dev, host)

    def send(self, x, dest, tag=0):
        self.isend(x, dest, tag).wait()

    def recv(self, x, source, tag=0):
        self.irecv(x, source, tag).wait()
        return x

    def sendrecv(self, sendbuf, dest, recvbuf, source, sendtag=0, recvtag=0):
        if is_device_array(sendbuf) or is_device_array(recvbuf):
            r = self.irecv(recvbuf, source, recvtag)
            s = self.isend(sendbuf, dest, sendtag)
            s.wait()
            r.wait()
            return recvbuf
        ctx = self._p2p_ctx("sendrecv")
        rr = self.mpi.Irecv(_bytes(_flat(recvbuf, "sendrecv")), self._peer(source, "sendrecv"), recvtag)
        rs = self.mpi.Isend(_bytes(_flat(sendbuf, "sendrecv", writable=False)), self._peer(dest, "sendrecv"), sendtag)
        wait_all([rr, rs], [source, dest], ctx)
        return recvbuf

    # -- collectives -----------------------------------------------------------------------------
    def barrier(self):
        """Every rank arrives before any leaves (waiting politely)."""
        self._main.barrier()

    def allreduce(self, x, op="sum"):
        """In place: x becomes the element-wise op over every rank's x; returns x."""
        if is_device_array(x):
            flat, direct = self._device(x, "allreduce")
            d = dtype_code(x.dtype)
            o, avg = _op(op, d, "allreduce")
            if direct:
                self._main.allreduce(flat, d, o, avg, gpu=x.device.id)
            else:
                host = self._staging.down(flat)
                self._main.allreduce(host, d, o, avg)
                flat.set(host)
            return x
        flat = _flat(x, "allreduce")
        d = dtype_code(x.dtype)
        o, avg = _op(op, d, "allreduce")
        self._main.allreduce(flat, d, o, avg)
        return x

    def iallreduce(self, x, op="sum"):
        """Start an in-place allreduce that progresses in the background; returns a Handle. A device
        array is copied to pinned host memory now and back in wait(), unless MPI is CUDA-aware."""
        dev = self._device(x, "iallreduce") if is_device_array(x) else None
        flat = dev[0] if dev else _flat(x, "iallreduce")
        d = dtype_code(x.dtype)
        o, avg = _op(op, d, "iallreduce")
        if self._bg is None:
            if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
                raise ConfigError("iallreduce needs MPI initialised with MPI_THREAD_MULTIPLE; "
                                  "do not lower mpi4py.rc.thread_level")
            self._bg = _Progress(Channel(self._main.mpi.Dup(), self.timeout, self.world_ranks, self._allocs,
                                         self.procs))
        if dev is None:
            h = Handle(x)
            self._bg.queue.put((h, flat, d, o, avg, None))
        elif dev[1]:
            h = Handle(x)
            self._bg.queue.put((h, flat, d, o, avg, x.device.id))
        else:
            host = self._staging.take(flat)
            flat.get(out=host)
            h = _StagedHandle(x, flat, host, self._staging)
            self._bg.queue.put((h, host, d, o, avg, None))
        return h

    def reduce_scatter(self, x, op="sum"):
        """This rank's block of the element-wise op over every rank's x, blocks along axis 0 as
        numpy.array_split makes them. x is not changed."""
        if is_device_array(x):
            return self._staged(x, "reduce_scatter", lambda h: self.reduce_scatter(h, op))
        flat = _flat(x, "reduce_scatter", writable=False)
        d = dtype_code(x.dtype)
        o, avg = _op(op, d, "reduce_scatter")
        row = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        mine, rb = self._main.reduce_scatter(flat, d, o, avg, row)
        return mine.reshape((rb[self.rank + 1] - rb[self.rank],) + x.shape[1:])

    def allgather(self, x):
        """Every rank's x concatenated along axis 0 (lengths along axis 0 may differ)."""
        if is_device_array(x):
            return self._staged(x, "allgather", self.allgather)
        flat = _flat(x, "allgather", writable=False)
        d = dtype_code(x.dtype)
        row = int(np.prod(x.shape[1:], dtype=np.int64)) if x.ndim > 1 else 1
        out, rows = self._main.allgather(flat, d, row)
        return out.reshape((rows,) + x.shape[1:])

    def broadcast(self, x, root=0):
        """In place: every rank's x becomes root's x; returns x."""
        if is_device_array(x):
            self._staged(x, "broadcast", lambda h: self.broadcast(h, root), back=True)
            return x
        flat = _flat(x, "broadcast")
        self._peer(root, "broadcast root")
        self._main.broadcast(flat, root, dtype_code(x.dtype))
        return x

    def _staged(self, x, what, fn, back=False):
        """reduce_scatter / allgather / broadcast of a device array: always through host memory (the
        hot paths, allreduce and point-to-point, take device buffers directly when MPI can). back:
        copy the host result into x; else return the result on x's device."""
        flat, _ = self._device(x, what)
        host = self._staging.down(flat).reshape(x.shape)
        out = fn(host)
        if back:
            flat.set(host.reshape(-1))
            return x
        from ..device import cupy

        with cupy().cuda.Device(x.device.id):
            return cupy().asarray(out)

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
        _live.discard(self)


def stop_progress_threads():
    """At exit, before mpi4py finalizes MPI: stop background threads so none is inside MPI then.
    (Windows and communicators are left to MPI_Finalize: freeing them is collective, and ranks may
    reach exit in different states.)"""
    for c in list(_live):
        if c._bg is not None:
            c._bg.stop()
