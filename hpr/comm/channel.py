"""Channels: the contexts hpr's collectives run in, and which algorithm runs a call.

A Channel owns its own duplicate of the user's MPI communicator (its messages never meet the user's),
the node split and the node's shared window (made on first use), sequence numbers, the per-size
algorithm plan, the HPR_CHECK signature comparison, and the spin and deadline its waits use (from the
CommConfig it is given). It dispatches a call to the node engine ("shm"), the hierarchical scheme, or a
point-to-point algorithm from the one table, algorithms.ALLREDUCE, reducing with the compiled CPU
kernels on host buffers or the GPU kernels on device buffers. A Link is one context's point-to-point
messages under its deadline. Does not own the algorithms (algorithms.py), the cost model (cost.py),
user-facing checks and staging of arrays (buffers.py), or background progress (progress.py).

Usage: ``ch = Channel(mpi.Dup(), comm_config, world_ranks, allocs, procs)``, then
``ch.allreduce(x, dcode, ocode, avg)`` with x a 1-D array and codes from hpr.kernels.reduce."""
import functools
import pickle
import warnings

import numpy as np
from mpi4py import MPI

from ..cpu import cpu_count, cpu_kernels, num_threads
from ..device import cupy
from ..errors import CommError, CommMismatch, ConfigError
from ..kernels import reduce as reduce_kernels
from . import algorithms as alg
from . import wait
from .buffers import as_bytes, host_view
from .cost import CostModel
from .shm import NodeShm, SharedAlloc, allocate_shared, find_alloc, node_layout, split_node
from .wait import OpContext, wait_all

DIRECT_MIN_BYTES = 512 << 10  # shared buffers at least this large are reduced in place
_KINDS = {"allreduce": 1, "reduce_scatter": 2, "allgather": 3, "broadcast": 4, "barrier": 5, "iallreduce": 6}
_DTYPE_NAMES = {0: "float16", 1: "bfloat16", 2: "float32", 3: "float64", 4: "int32", 5: "int64", -1: "-"}
_OP_NAMES = {0: "sum", 1: "max", 2: "min", 3: "avg", -1: "-"}
_warned = set()  # the fallbacks already announced by this process (each once)
SETUP_TAG = 32000  # setup_meeting's messages on the user's communicator (MPI allows tags up to >= 32767)


class Link:
    """Point-to-point messages of one collective context, waited on politely under its deadline (the
    OpContext in ctx, set by the channel per operation, carries the deadline and the spin). tag: the
    tag of its messages (alg.TAG on a channel's own communicator; SETUP_TAG on the user's)."""

    __slots__ = ("mpi", "rank", "size", "ctx", "tag")

    def __init__(self, mpi, tag=alg.TAG):
        self.mpi, self.rank, self.size, self.ctx, self.tag = mpi, mpi.Get_rank(), mpi.Get_size(), None, tag

    def sendrecv(self, sbuf, dest, rbuf, src):
        rr = self.mpi.Irecv(as_bytes(rbuf), src, self.tag)
        rs = self.mpi.Isend(as_bytes(sbuf), dest, self.tag)
        wait_all([rr, rs], [src, dest], self.ctx)

    def send(self, buf, dest):
        wait_all([self.mpi.Isend(as_bytes(buf), dest, self.tag)], [dest], self.ctx)

    def recv(self, buf, src):
        wait_all([self.mpi.Irecv(as_bytes(buf), src, self.tag)], [src], self.ctx)


def rank_name(world_ranks, r):
    """Rank r of a communicator as a timeout message names it (with its world rank when it differs)."""
    w = world_ranks[r] if world_ranks is not None else r
    return str(r) if w == r else f"{r} (world rank {w})"


def setup_meeting(mpi, config, world_ranks, op):
    """A barrier of point-to-point messages on the user's communicator mpi, under config's deadline,
    before the blocking MPI calls that make a Communicator (allgather, Dup, the node split): past it
    every rank is in that setup, so those calls cannot wait forever for a rank that never comes; a
    rank that does not arrive is a CommTimeout naming it. Its messages carry SETUP_TAG, a tag of
    hpr's on the user's communicator (user messages with another tag never meet them)."""
    if mpi.Get_size() == 1:
        return
    link = Link(mpi, SETUP_TAG)
    link.ctx = OpContext(op, 1, link.rank, link.size, config.timeout, lambda r: rank_name(world_ranks, r),
                         None, config.spin_seconds(link.size, cpu_count()))
    alg.dissemination_barrier(link, np.zeros(1, np.uint8))


class Health:
    """Whether a Communicator's channels may still run collectives. The first error inside a collective
    (a timeout, an engine error, an interrupt) leaves the ranks' sequence numbers and shared-memory
    flags out of step, so a later call could meet a stale flag: it poisons the Health of every channel
    of that Communicator, and every later call raises CommError naming that first failure. A
    CommMismatch does not poison: it is raised on every rank at the same point, with the ranks in step."""

    __slots__ = ("failure",)

    def __init__(self):
        self.failure = None

    def check(self):
        if self.failure is not None:
            raise CommError(self.failure)

    def poison(self, rank, what, exc):
        if self.failure is None:
            first = (str(exc).splitlines() or [""])[0]
            self.failure = (f"this communicator is broken since {what} failed on rank {rank} "
                            f"({type(exc).__name__}: {first}); its ranks are out of step, so no collective "
                            "can run on it again. The job cannot go on: restart it (the trainer's --resume "
                            "continues from the last complete checkpoint).")


def guarded(method):
    """A Channel collective that refuses to run on a broken communicator and poisons it when it fails."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        self.health.check()
        try:
            return method(self, *args, **kwargs)
        except CommMismatch:
            raise
        except BaseException as e:
            ctx = self.link.ctx
            self.health.poison(self.rank, f"{ctx.op} #{ctx.seq}" if ctx else method.__name__, e)
            raise
    return call


def host_reduction(dcode, ocode, nt, factor):
    """(red, scale) with the compiled CPU kernels: red(a, b) is a = a op b, scale(v) is v *= factor."""
    k = cpu_kernels()

    def red(a, b):
        k.reduce_into(a, b, dcode, ocode, nt)

    def scale(v):
        k.scale(v, dcode, factor, nt)

    return red, scale


def device_reduction(ocode, factor):
    """(red, scale) with the GPU kernels; each finishes before the next message reads its result."""
    op, stream = _OP_NAMES[ocode], cupy().cuda.get_current_stream

    def red(a, b):
        reduce_kernels.reduce_into(a, b, op)
        stream().synchronize()

    def scale(v):
        reduce_kernels.scale(v, factor)
        stream().synchronize()

    return red, scale


class Channel:
    """One context for collectives: its own MPI communicator, node split, shared window (made on first
    use) and sequence numbers. The Communicator has one for blocking calls and one for iallreduce."""

    def __init__(self, mpi, config, world_ranks, allocs, procs=None, health=None):
        self.mpi = mpi
        self.health = Health() if health is None else health  # shared by the Communicator's channels
        self.config = config
        self.procs = procs  # [(host, pid)] per rank: a timeout tells a dead peer from a stuck one
        self.allocs = allocs  # the Communicator's shared allocations (SharedAlloc), for the direct path
        self.link = Link(mpi)
        self.rank, self.size = self.link.rank, self.link.size
        self.timeout = config.timeout
        self.seq = 0
        self._ctx = None  # the OpContext begin() renames per operation
        self.world_ranks = world_ranks
        self.node_comm = split_node(mpi, config.node_size)
        self.layout = node_layout(mpi, self.node_comm)
        self.spin = config.spin_seconds(self.node_comm.Get_size(), cpu_count())  # this channel's waits only
        wait.short_sleeps()
        # node rank -> rank in this communicator, for naming a missing peer
        self.node_to_rank = MPI.Group.Translate_ranks(self.node_comm.Get_group(), list(range(self.node_comm.Get_size())),
                                                      mpi.Get_group())
        self.cost = CostModel(slot_bytes=config.slot_bytes)
        self.forced = config.allreduce
        self.check = config.check
        self._node = None
        self._no_shm = None  # why the node's shared window could not be made: point-to-point instead
        self._cross = None
        self.allocs_made = 0
        self.choices = {}
        self.threads = num_threads()
        if self.forced == "shm" and not self.layout.single_node:
            raise ConfigError("HPR_ALLREDUCE=shm needs every rank on one node; use hierarchical or auto")
        if self.forced == "hierarchical" and not (self.layout.uniform and self.layout.per_node > 1
                                                  and not self.layout.single_node):
            raise ConfigError("HPR_ALLREDUCE=hierarchical needs several nodes with the same number (>1) of "
                              "ranks each; set HPR_NODE_SIZE to test it on one machine, or use auto")

    # -- contexts --------------------------------------------------------------------------------
    def name(self, r):
        """Rank r of this communicator as a timeout message names it (with its world rank)."""
        return rank_name(self.world_ranks, r)

    def context(self, op, seq):
        """An OpContext for operation op #seq over this communicator's ranks: its deadline and spin."""
        return OpContext(op, seq, self.rank, self.size, self.timeout, self.name, self.procs, self.spin)

    def begin(self, op, count=True):
        """The OpContext of the operation starting now (op #seq), which the link's waits use. One object
        per channel, renamed per operation: its deadline, spin and ranks do not change, and nothing
        keeps it past its operation (a failure formats its message at once)."""
        if count:
            self.seq += 1
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = self.context(op, self.seq)
        ctx.op, ctx.seq = op, self.seq
        self.link.ctx = ctx
        return ctx

    @guarded
    def meet(self, op):
        """A barrier of point-to-point messages under the deadline, before a setup step that MPI runs
        with blocking calls (a shared window, a split): past it every rank is in that step, so the
        blocking calls cannot wait for a rank that never comes."""
        self.begin(op, False)
        if self.size > 1:
            alg.dissemination_barrier(self.link, np.zeros(1, np.uint8))

    def node(self, op="allreduce"):
        """The node engine, made at the first call that needs it; None when the node's shared window
        cannot be made (on any rank): the channel then runs point-to-point inside the node too."""
        if self._node is None and self._no_shm is None:
            self.meet(op)
            c, p = self.config, self.node_comm.Get_size()
            nbytes = NodeShm.segment_bytes(p, c.slot_bytes)
            win, why = allocate_shared(self.node_comm, nbytes if self.node_comm.Get_rank() == 0 else 0, nbytes)
            if self.agree(win, why, "the node's shared window"):
                self._node = NodeShm(self.node_comm, win, c.slot_bytes, c.small_bytes, self.spin * 1e6)
            else:
                self._no_shm = why or "another rank could not make it"
                self.choices.clear()
        return self._node

    @property
    def no_shm(self):
        """Why the node's shared window could not be made, or None."""
        return self._no_shm

    def agree(self, win, why, what):
        """Whether every rank made its shared window (win; why it could not otherwise), agreed under the
        deadline so that every rank takes the same path. When not, windows are freed where a whole node
        made them and rank 0 says once (per process) that hpr falls back to point-to-point."""
        table = np.zeros(self.size, np.int64)
        table[self.rank] = win is not None
        if self.size > 1:
            alg.ring_allgather_blocks(self.link, table, list(range(self.size + 1)))
        if table.all():
            return True
        if win is not None and all(table[r] for r in self.node_to_rank):
            win.Free()
        if self.rank == 0 and what not in _warned:
            _warned.add(what)
            warnings.warn(f"hpr: {what} could not be made ({why or 'on another rank'}); collectives inside "
                          "a node use point-to-point messages instead (slower)", RuntimeWarning, stacklevel=2)
        return False

    @guarded
    def agree_min(self, value, op):
        """The smallest of every rank's integer value, under the deadline (op names the agreement in a
        timeout message): an agreement made once, e.g. whether MPI is CUDA-aware."""
        self.begin(op, False)
        table = np.zeros(self.size, np.int64)
        table[self.rank] = value
        if self.size > 1:
            alg.ring_allgather_blocks(self.link, table, list(range(self.size + 1)))
        return int(table.min())

    def cross(self):
        """Ranks with the same node rank on every node, ordered by node (for hierarchical)."""
        if self._cross is None:
            c = self.mpi.Split(self.node_comm.Get_rank(), self.rank)
            self._cross = Link(c)
        return self._cross

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
        if self._no_shm is not None:
            algo = self.forced if self.forced in alg.ALLREDUCE else self.cost.choose(nbytes, self.size, None)
        else:
            algo = self.forced or self.cost.choose(nbytes, self.size, self.layout)
        if len(self.choices) < 4096:
            self.choices[nbytes] = algo
        return algo

    def point_to_point(self, link, x, red, scale):
        """Allreduce x over link with a point-to-point algorithm: the forced one when it is one, else
        the cost model's choice for link's size (what runs between nodes and on device buffers)."""
        algo = self.forced if self.forced in alg.ALLREDUCE else self.cost.choose(x.nbytes, link.size, None)
        return alg.ALLREDUCE[algo](link, x, red, scale)

    def allreduce_array(self, x, dcode, ocode, avg):
        """Communicator.allreduce of a numpy array x (any shape), in place. A message that the plan
        sends through the node engine's staged path (no comm.alloc buffer can take it) goes to the
        engine straight from here: small messages' hot path, where each Python layer costs as much as
        the engine's own work. The engine's buffer request is the check that x is C-contiguous and
        writable (it fails before any rank is met; host_view then says what to pass instead), and the
        operation's context is made only when the call fails. Anything else: allreduce."""
        n = x.nbytes
        node = self._node
        if node is None or self.check or n >= DIRECT_MIN_BYTES or (self.choices.get(n) or self.choose(n)) != "shm":
            return self.allreduce(host_view(x, "allreduce"), dcode, ocode, avg)
        if self.health.failure is not None:
            self.health.check()
        self.seq += 1
        try:
            missing = node.engine.allreduce(x, dcode, ocode, 1.0 / self.size if avg else 1.0, self.timeout,
                                            self.threads)
            if missing >= 0:
                raise self.shm_missing(self.begin("allreduce", False), missing)
        except BaseException as e:
            if isinstance(e, (BufferError, ValueError)) and not (x.flags.c_contiguous and x.flags.writeable):
                self.seq -= 1  # refused before any rank was met: the ranks stay in step
                host_view(x, "allreduce")  # raises the ConfigError users see; nothing is poisoned
            self.health.poison(self.rank, f"allreduce #{self.seq}", e)
            raise
        return x

    @guarded
    def allreduce(self, x, dcode, ocode, avg, op_name="allreduce", gpu=None):
        """x (1-D, contiguous) becomes the op over every rank's x. gpu: the device index when x is
        device memory (CUDA-aware MPI): a point-to-point algorithm then runs on it with the GPU kernels,
        with that GPU current (iallreduce calls this from the progress thread, and CUDA's current
        device is per thread); the node engines work on host memory only."""
        self.seq += 1
        ctx = self.begin(op_name, False)
        if self.check:
            self.verify(ctx, "allreduce", dcode, ocode + (3 if avg else 0) * (ocode == 0), x.size)
        p = self.size
        if p == 1 or x.size == 0:
            return x
        if gpu is not None:
            self.begin(op_name, False)
            red, scale = device_reduction(ocode, 1.0 / p)
            with cupy().cuda.Device(gpu):
                self.point_to_point(self.link, x, red, scale if avg else None)
            return x
        n = x.nbytes
        algo = self.choices.get(n) or self.choose(n)
        if algo == "shm":
            return self._shm(x, dcode, ocode, avg, op_name)
        ctx = self.begin(op_name, False)
        if algo == "hierarchical":
            return self._hierarchical(ctx, x, dcode, ocode, avg, self.threads)
        red, scale = host_reduction(dcode, ocode, self.threads, 1.0 / p)
        alg.ALLREDUCE[algo](self.link, x, red, scale if avg else None)
        return x

    def _shm(self, x, dcode, ocode, avg, op_name):
        """The node engine: from a comm.alloc() buffer in place (large messages), else staged through
        the node's shared window."""
        n, sc = x.nbytes, 1.0 / self.size if avg else 1.0
        node = self._node or self.node(op_name)
        if node is None:
            return self._point_to_point_host(x, dcode, ocode, avg)
        # the direct path's three meetings pay off from about half a MiB (measured at 2-8 ranks)
        found = find_alloc(self.allocs, x) if self.allocs and n >= DIRECT_MIN_BYTES else None
        if found is not None:
            rec, off = found
            missing = node.engine.allreduce_direct(rec.bases, off, n, dcode, ocode, sc, self.timeout)
            if missing == -3:
                raise CommMismatch(
                    f"{op_name} #{self.seq}: ranks passed different parts of a comm.alloc() buffer (or "
                    "different lengths, dtypes or ops); every rank must pass the same slice of its own buffer "
                    "with the same op")
        else:
            missing = node.engine.allreduce(x, dcode, ocode, sc, self.timeout, self.threads)
        if missing >= 0:
            raise self.shm_missing(self.begin(op_name, False), missing)
        return x

    def _point_to_point_host(self, x, dcode, ocode, avg):
        red, scale = host_reduction(dcode, ocode, self.threads, 1.0 / self.size)
        self.point_to_point(self.link, x, red, scale if avg else None)
        return x

    def _hierarchical(self, ctx, x, dcode, ocode, avg, nt):
        """Per slot-sized round: reduce inside the node (each node rank ends with one part), allreduce
        that part with the same node rank on every other node, then gather the parts inside the node."""
        node = self.node(ctx.op)
        if node is None:
            return self._point_to_point_host(x, dcode, ocode, avg)
        cross, k = self.cross(), cpu_kernels()
        cross.ctx = ctx
        per = self.cost.slot_bytes // x.itemsize
        seg = node.segment
        red, _ = host_reduction(dcode, ocode, nt, 1.0)
        for off in range(0, x.size, per):
            chunk = x[off:off + per]
            missing, poff, plen, pbyte = node.engine.reduce_part(chunk, dcode, ocode, self.timeout, nt)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
            part = seg[pbyte:pbyte + plen * x.itemsize].view(x.dtype)
            if plen:
                self.point_to_point(cross, part, red, None)
                if avg:
                    k.scale(part, dcode, 1.0 / self.size, nt)
            missing = node.engine.finish_round(chunk, dcode, self.timeout)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
        return x

    # -- the other collectives -------------------------------------------------------------------
    @guarded
    def reduce_scatter(self, x, dcode, ocode, avg, row_elems):
        """(this rank's reduced block, block row bounds): blocks along rows as numpy.array_split makes
        them; x is not changed."""
        ctx = self.begin("reduce_scatter")
        rows = x.size // row_elems if row_elems else 0
        if self.check:
            self.verify(ctx, "reduce_scatter", dcode, ocode + (3 if avg else 0) * (ocode == 0), x.size)
        rb = alg.block_bounds(rows, self.size)
        b = [r * row_elems for r in rb]
        if self.size == 1:
            return x.copy(), rb
        red, scale = host_reduction(dcode, ocode, num_threads(), 1.0 / self.size)
        work = x.copy()
        alg.ring_reduce_scatter(self.link, work, red, b)
        mine = work[b[self.rank]:b[self.rank + 1]].copy()
        if avg:
            scale(mine)
        return mine, rb

    @guarded
    def allgather(self, x, dcode, row_elems, out=None):
        """(every rank's rows concatenated, total rows); only the row count may differ between ranks.
        out: a flat array of the total size to gather into (else a new one)."""
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
        if out is None or out.size != bounds[-1] or out.dtype != x.dtype:
            if out is not None:
                raise CommMismatch(f"allgather #{ctx.seq}: the output holds {out.size} {out.dtype} elements; "
                                   f"the ranks' arrays total {bounds[-1]} {x.dtype}")
            out = np.empty(bounds[-1], x.dtype)
        out[bounds[self.rank]:bounds[self.rank + 1]] = x
        if self.size > 1:
            alg.ring_allgather_blocks(self.link, out, bounds)
        return out, int(meta[:, 0].sum())

    @guarded
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

    @guarded
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

    @guarded
    def barrier(self):
        ctx = self.begin("barrier")
        if self.size == 1:
            return
        node = self.node("barrier") if self.layout.single_node else None
        if node is not None:
            missing = node.engine.barrier(self.timeout)
            if missing >= 0:
                raise self.shm_missing(ctx, missing)
        else:
            alg.dissemination_barrier(self.link, np.zeros(1, np.uint8))

    @guarded
    def shared_alloc(self, nbytes, dcode):
        """A SharedAlloc of nbytes on every rank of the node (Communicator.alloc), or None when the
        window cannot be made (the array is then private and reduced through the staged paths).
        First every rank says what it asks for, under the deadline (so a rank that never comes is
        named, not waited for in MPI's blocking window); a rank asking for a different size or dtype
        is a CommMismatch on every rank (the direct path would read past a smaller neighbour's copy)."""
        self.agree_alloc(nbytes, dcode)
        room = max(nbytes, 1)
        win, why = allocate_shared(self.node_comm, room, room * self.node_comm.Get_size())
        if not self.agree(win, why, "a shared array (comm.alloc)"):
            return None
        return SharedAlloc(self.node_comm, win, nbytes)

    def agree_alloc(self, nbytes, dcode):
        self.allocs_made += 1
        self.link.ctx = self.context("alloc", self.allocs_made)
        table = np.zeros(2 * self.size, np.int64)
        table[2 * self.rank:2 * self.rank + 2] = (nbytes, dcode)
        if self.size > 1:
            alg.ring_allgather_blocks(self.link, table, [2 * i for i in range(self.size + 1)])
        rows = table.reshape(self.size, 2)
        if (rows == rows[0]).all():
            return
        lines = [f"  rank {r}: {int(n)} bytes of {_DTYPE_NAMES.get(int(d), d)}" for r, (n, d) in enumerate(rows)]
        raise CommMismatch(f"alloc #{self.allocs_made}: ranks asked for different shared arrays:\n" + "\n".join(lines)
                           + "\nEvery rank must call alloc with the same shape and dtype, in the same order.")

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
