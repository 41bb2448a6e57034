"""ZeRO-2 and ZeRO-3 over one data-parallel group: the shard plan (which elements of the flat buffers
each rank owns), the paged gradient and parameter buffers whose memory is handed back to the OS, the
gradients reduce-scattered chunk by chunk while backward runs, and the parameters gathered a unit (a
block) at a time with the next one prefetched. Owns the arithmetic of shards and the timing of their
collectives; not the step's order (hpr.train.step), the optimizer's math (hpr.optim) nor the layers.

Shards. The flat buffer [0, n) is cut into the model's units (hpr.model.GPT.param_units: the final norm
and head, each block, the embedding; contiguous, in backward's order), each unit into chunks of at most
bucket_mb or one block, whichever is larger (the tied wte starting a chunk of its own, so both pipeline
stages holding it cut it alike). A block is never cut: backward finishes a block's gradients at once
(on_ready fires per block) and need() gathers a block at once, so its chunks would start together
anyway, and each chunk is one more collective whose latency (an allgather: a ring of the sizes, then
of the data) an oversubscribed node pays in scheduling delays (measured at M, 4 ranks on 2 cores, 4
MiB buckets: blocks of 2 chunks -> 1 took ZeRO-3 from 0.89x to 1.09x ZeRO-1's tokens/s). Every chunk
is split dp ways as numpy.array_split splits it (comm.reduce_scatter's bounds):
rank r owns piece r of every chunk. A rank's shard is its pieces concatenated in buffer order, one
contiguous array ("shard space"); ShardPlan maps flat ranges to shard ranges. With dp = 2 and a chunk
[100, 107): rank 0 owns [100, 104), rank 1 [104, 107).

Paged buffers. The model's full-size gradient buffer (ZeRO-2, 3) and parameter buffer (ZeRO-3) are
anonymous memory maps: the layers keep writing and reading their views where they always did, and
`release(a, lo, hi)` zeroes a[lo:hi] by giving its whole pages back to the OS (madvise MADV_DONTNEED;
the next touch maps a fresh zero page). A page costs memory only between its first touch and its
release, so a chunk's full gradients live from the layer's write until its reduce-scatter is done, and
a block's whole parameters from its gather until the block's forward (or backward) is done.

ZeRO-3 gathers (ParamGather). The model calls need(unit) before a unit's layers run and drop(unit)
after; need waits for the unit's allgathers (started earlier as a prefetch, or now) and then starts
the next DEPTH (2) units' in the same direction that are not gathered or in flight yet, so the gathers
of blocks i+1 and i+2 run on the progress thread while block i computes. The head and the embedding
(the tied wte: used at the start and at the end of both forward and backward) stay gathered until the
next optimizer update, when every gathered unit is released (its values are then stale) and the first
DEPTH + 1 units of the next forward start gathering at once. The last stage keeps its last DEPTH
blocks between its forward and its backward (backward starts there: its first gather is then one
started as a prefetch while the last of these computes). Every rank of the dp group issues the same
collectives in the same order: the schedule depends only on the model and the pipeline stage, the
same on every replica.

Usage::

    dp = DataParallel(comm, model.layout, zero=3, units=model.param_units())   # makes a ZeroShards
    model.gather = dp.param_gather(model.params)                                # ZeRO-3 only
"""
import ctypes
import mmap
import time

import numpy as np

from .. import trace
from ..errors import ConfigError

PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def paged_zeros(n, dtype):
    """A zeroed (n,) array in an anonymous memory map of its own: pages cost memory once touched, and
    release() gives them back."""
    dtype = np.dtype(dtype)
    # private (not the default shared): released pages then come back as zeros, not as the old data
    mm = mmap.mmap(-1, max(1, n * dtype.itemsize), flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        # transparent huge pages where the kernel allows them: a released range comes back with one fault
        # per 2 MiB instead of one per 4 KiB (measured here: touching 44 MB of fresh pages 85 -> 26 ms)
        mm.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(mm, dtype, count=n)  # keeps mm alive (its .base)


def _is_paged(a):
    """Whether array a views an anonymous memory map (through numpy bases and memoryviews)."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return a is not None


def release(a, lo, hi):
    """a[lo:hi] = 0, with the whole pages inside the range returned to the OS when a is paged (the
    partial pages at its ends are zeroed in place: a neighbour may still be using them)."""
    if hi <= lo:
        return
    if _DONTNEED is None or not _is_paged(a):
        a[lo:hi] = 0
        return
    isz = a.itemsize
    start = a.ctypes.data + lo * isz
    end = start + (hi - lo) * isz
    p0 = -(-start // PAGE) * PAGE  # first page boundary at or after start
    p1 = end // PAGE * PAGE        # last page boundary at or before end
    if p1 - p0 < PAGE or (p0 - start) % isz or (end - p1) % isz:
        a[lo:hi] = 0
        return
    a[lo:lo + (p0 - start) // isz] = 0
    a[hi - (end - p1) // isz:hi] = 0
    if _LIBC.madvise(ctypes.c_void_p(p0), ctypes.c_size_t(p1 - p0), _DONTNEED) != 0:
        a[lo:hi] = 0  # not returned: zero it the ordinary way


class ShardPlan:
    """The chunks of the flat buffer and this rank's piece of each (module docstring). The same on every
    rank of the group but for which piece is whose."""

    def __init__(self, units, n, size, rank, chunk_elems):
        self.n, self.size_dp, self.rank = n, size, rank
        at = 0
        self.units = {}  # name -> [chunk indices]
        self.unit_range = {}
        self.chunks = []  # (lo, hi) in buffer order
        units_seen = []
        for name, a, b in units:  # a name may come twice in a row: one unit, chunked in two ranges
            if a != at or b <= a or (name in self.units and name != units_seen[-1]):
                raise ConfigError(f"parameter units must tile the buffer in order: {name} is [{a}, {b}) "
                                  f"after {at}")
            self.unit_range[name] = (self.unit_range.get(name, (a, b))[0], b)
            self.units.setdefault(name, [])
            units_seen.append(name)
            for lo in range(a, b, chunk_elems):
                self.units[name].append(len(self.chunks))
                self.chunks.append((lo, min(b, lo + chunk_elems)))
            at = b
        if at != n:
            raise ConfigError(f"parameter units cover [0, {at}) of a {n}-element buffer")
        self.bounds = []  # per chunk: the dp+1 array_split bounds, flat
        self.pieces = []  # per chunk: (flat lo, flat hi, shard offset) of this rank's piece
        off = 0
        for lo, hi in self.chunks:
            q, r = divmod(hi - lo, size)
            b = [lo + i * q + min(i, r) for i in range(size + 1)]
            self.bounds.append(b)
            self.pieces.append((b[rank], b[rank + 1], off))
            off += b[rank + 1] - b[rank]
        self.size = off  # elements of this rank's shard

    def take(self, flat):
        """This rank's shard of a full flat array (a new contiguous array)."""
        out = np.empty(self.size, flat.dtype)
        for a, b, s in self.pieces:
            out[s:s + b - a] = flat[a:b]
        return out

    def shard_ranges(self, ranges):
        """Flat [(lo, hi)] -> the shard-space [(lo, hi)] of the elements this rank owns inside them."""
        out = []
        for x, y in ranges:
            for a, b, s in self.pieces:
                u, v = max(a, x), min(b, y)
                if u < v:
                    out.append((s + u - a, s + v - a))
        return out

    def segments(self, layout):
        """The optimizer's [(lo, hi, decay)] in shard space (layout.segments cut to this rank's pieces)."""
        out = []
        for x, y, decay in layout.segments():
            for u, v in self.shard_ranges([(x, y)]):
                if out and out[-1][2] == decay and out[-1][1] == u:
                    out[-1] = (out[-1][0], v, decay)
                else:
                    out.append((u, v, decay))
        return out

    def unshard(self, comm, shard, out=None):
        """Every rank's shard joined back into the full flat array (collective over the dp group)."""
        out = np.empty(self.n, shard.dtype) if out is None else out
        hs = [comm.iallgather(shard[s:s + b - a], out=out[lo:hi])
              for (a, b, s), (lo, hi) in zip(self.pieces, self.chunks)]
        for h in hs:
            h.wait()
        return out


class ZeroShards:
    """ZeRO-2/3 state of one rank: its shard of the parameters (the optimizer's master copy) and of the
    averaged gradients, the chunks' reduce-scatters in flight, and, for ZeRO-3, the ParamGather."""

    def __init__(self, comm, layout, units, bucket_elems, zero):
        self.comm, self.layout, self.zero = comm, layout, zero
        # chunks of at least one block (module docstring): every unit but ParamGather.KEEP's is a block, all
        # of one size, so the stages holding the tied wte cut it alike
        block = max((b - a for name, a, b in units if name not in ParamGather.KEEP), default=0)
        self.plan = ShardPlan(units, layout.size, comm.size, comm.rank, max(bucket_elems, block))
        self.params = self.plan.take(layout.params)  # the master copy the optimizer updates
        self.grads = np.zeros(self.plan.size, layout.params.dtype)  # the averaged gradient shard
        self.hold = None
        self._next, self._ended = 0, False
        self._flight = []  # (chunk index, handle, queued at)
        self.wait_s = 0.0
        self.gather = None
        release(layout.grads, 0, layout.size)
        if zero == 3:
            self.gather = ParamGather(comm, self.plan, layout.params, self.params)
            self.gather.invalidate()  # the full parameters built at init go back to the OS

    # -- gradients: reduce-scattered chunk by chunk while backward runs -------------------------------
    def zero_grad(self):
        self.grads[:] = 0
        release(self.layout.grads, 0, self.layout.size)

    def begin(self, hold=None):
        """Before a backward: hold = the flat offset from which chunks wait for finish() (the tied wte,
        whose gradient the other pipeline stage still adds to), or None."""
        self.hold, self._next, self._ended = hold, 0, False

    def ready(self, k):
        """grads[:k] are final for this backward: reduce-scatter every chunk inside (below the hold);
        collect the ones done; at the end of the backward (k = n), wait for all that were started, so
        the next micro-batch's backward writes into released pages only."""
        if k is None:
            return
        if self._ended:  # the first call of the next micro-batch's backward: its chunks start again at 0
            self._next, self._ended = 0, False
        lim = k if self.hold is None else min(k, self.hold)
        self._launch_upto(lim)
        if k >= self.layout.size:  # this backward is done; held chunks (from _next on) wait for finish
            self._ended = True
            t0 = time.perf_counter()
            self._collect(wait=True)
            self.wait_s += time.perf_counter() - t0
        else:
            self._collect(wait=False)

    def finish(self):
        """After the step's last backward (and the tied-gradient sum): every chunk reduced into the shard."""
        t0 = time.perf_counter()
        self._launch_upto(self.layout.size)
        self._collect(wait=True)
        self.wait_s += time.perf_counter() - t0

    def _launch_upto(self, lim):
        chunks, grads = self.plan.chunks, self.layout.grads
        while self._next < len(chunks) and chunks[self._next][1] <= lim:
            lo, hi = chunks[self._next]
            h = self.comm.ireduce_scatter(grads[lo:hi], op="avg")
            self._flight.append((self._next, h, trace.now() if trace.on else 0))
            self._next += 1

    def _collect(self, wait):
        """Add the finished chunks' pieces into the shard and release their full gradients."""
        keep = []
        for c, h, queued in self._flight:
            if not (wait or h.done()):
                keep.append((c, h, queued))
                continue
            w0 = trace.now() if trace.on else 0
            mine = h.wait()
            lo, hi = self.plan.chunks[c]
            a, b, s = self.plan.pieces[c]
            self.grads[s:s + b - a] += mine
            release(self.layout.grads, lo, hi)
            if trace.on:
                track = f"grad bucket {c}"
                trace.add("queued", track, queued, h.t_start)
                trace.add("reduce_scatter", track, h.t_start, h.t_done, elements=hi - lo)
                if wait:
                    trace.add(f"wait chunk {c}", "compute", w0, trace.now())
        self._flight = keep

    # -- parameters ----------------------------------------------------------------------------------
    def gather_params(self, params):
        """After the optimizer updated this rank's shard: ZeRO-2 puts every rank's shard back into the
        replicated parameters; ZeRO-3 releases the gathered units (gathered again when next needed)."""
        if self.gather is not None:
            self.gather.invalidate()
            self.gather.warm()
        else:
            with trace.span("allgather params"):
                self.plan.unshard(self.comm, self.params, out=params)

    def whole_params(self, params):
        """The full flat parameters (collective for ZeRO-3; the replicated array for ZeRO-2)."""
        if self.gather is None:
            return params
        return self.plan.unshard(self.comm, self.params)

    def load_params(self, full):
        """A full flat parameter array (a restored checkpoint) becomes this rank's shard (and, for
        ZeRO-2, the replicated parameters)."""
        self.params[...] = self.plan.take(full)
        if self.gather is not None:
            self.gather.invalidate()
        else:
            self.layout.params[...] = full


class ParamGather:
    """ZeRO-3's gathers: a unit's parameters allgathered from the dp shards into the paged full buffer
    before its layers run, the next unit prefetched, released after (module docstring)."""

    KEEP = ("head", "embedding")  # gathered once per optimizer step (used at both ends of each pass)
    # units kept gathered or in flight ahead of the one computing. 2, not 1: a backward gather queues on
    # the progress thread behind the reduce-scatters of the blocks before it, and on an oversubscribed
    # node one block's compute does not cover both (measured at M, 4 ranks on 2 cores: the waits for
    # gathers were ~half of ZeRO-3's exposed communication with 1); costs one block's parameters
    DEPTH = 2

    def __init__(self, comm, plan, params, shard):
        self.comm, self.plan, self.params, self.shard = comm, plan, params, shard
        self.state = {}  # unit -> "ready" | [(chunk, handle, started)]
        blocks = [u for u in plan.units if u not in self.KEEP]  # buffer order: the last block first
        self.order = {"forward": ["embedding"] + blocks[::-1] + ["head"],
                      "backward": ["head"] + blocks + ["embedding"]}
        self.order = {k: [u for u in v if u in plan.units] for k, v in self.order.items()}
        self.wait_s = 0.0  # time need() waited for a gather: communication compute did not hide
        self.gathers = 0

    def _start(self, unit):
        if unit in self.state or unit not in self.plan.units:
            return
        t = trace.now() if trace.on else 0
        # each chunk gathered straight into its place in the paged buffer (touching its pages there)
        self.state[unit] = [(c, self.comm.iallgather(self.shard[s:s + b - a], out=self.params[lo:hi]), t)
                            for c in self.plan.units[unit] for a, b, s in [self.plan.pieces[c]]
                            for lo, hi in [self.plan.chunks[c]]]
        self.gathers += 1

    def need(self, unit, direction="forward"):
        """Make the unit's whole parameters present (waiting for its gather), then prefetch the next
        unit in this direction ("forward", "backward"; None: no prefetch)."""
        if unit not in self.plan.units:
            return  # not on this pipeline stage
        self._start(unit)
        st = self.state[unit]
        if st != "ready":
            t0 = time.perf_counter()
            w0 = trace.now() if trace.on else 0
            for c, h, started in st:
                lo, hi = self.plan.chunks[c]
                h.wait()  # gathered into params[lo:hi]
                if trace.on:
                    trace.add(f"gather {unit}", "param gather", h.t_start, h.t_done, elements=hi - lo)
            self.state[unit] = "ready"
            self.wait_s += time.perf_counter() - t0
            if trace.on:
                trace.add(f"wait gather {unit}", "compute", w0, trace.now())
        order = self.order.get(direction, ())
        for nxt in order[order.index(unit) + 1:][:self.DEPTH] if unit in order else ():
            self._start(nxt)  # the next DEPTH units in this direction: gathered, in flight, or started now

    def warm(self):
        """Start the gathers of forward's first unit and the DEPTH after it (after an update: they overlap
        the end of the step and the start of the next)."""
        for unit in self.order["forward"][:1 + self.DEPTH]:
            self._start(unit)

    def drop(self, unit):
        """The unit's layers are done: give its whole parameters' memory back (kept units stay)."""
        if unit in self.KEEP or self.state.get(unit) != "ready":
            return
        lo, hi = self.plan.unit_range[unit]
        release(self.params, lo, hi)
        del self.state[unit]

    def invalidate(self):
        """After an optimizer update: every gathered (or prefetched) unit is stale; release them all."""
        for unit, st in list(self.state.items()):
            if st != "ready":
                for _, h, _ in st:
                    h.wait()  # a gather in flight still has to finish (every rank runs it)
        self.state = {}
        release(self.params, 0, self.params.size)
