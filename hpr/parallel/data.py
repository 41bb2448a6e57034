"""Data parallelism over one group of ranks: each rank runs the whole model on its share of the batch,
and the flat gradient buffer is averaged across the group in buckets while backward still runs.

Buckets are consecutive slices of the flat gradient buffer. The buffer is laid out in backward's order
(hpr.nn.params), so the model's `on_ready(k)` callback (grads[:k] final) releases buckets front to
back, and each is handed to `comm.iallreduce(op="avg")`, which reduces it on a background thread while
the main thread goes on with backward. The average is folded into the reduction (no extra pass), and
the buffer, allocated with `comm.alloc`, is reduced in place straight from the node neighbours'
copies: no copies in or out. With --grad-comm-dtype bfloat16/float16 each bucket is rounded into a
half-precision twin, reduced there (float32 accumulation, one rounding), and widened back.

ZeRO-1 (zero=1): the optimizer state is split into dp contiguous shards of the flat buffer (the
array_split bounds of comm.reduce_scatter). After backward the gradients are reduce-scattered, each
rank updates its own shard of the parameters, and the shards are allgathered.

ZeRO-2 (zero=2) and ZeRO-3 (zero=3), hpr.parallel.zero: each rank owns a piece of every chunk of the
model's units; gradients are reduce-scattered chunk by chunk while backward runs (each micro-batch's)
and only the rank's shard of them is kept; the full gradient buffer is paged memory whose pages go back
to the OS once their chunk is reduced. ZeRO-3 also keeps only the shard of the parameters and gathers a
block's just before its forward and its backward, the next two prefetched. The optimizer then runs over
shard-space arrays (optimizer_buffers).

With hpr.trace on, each bucket gets a track of the timeline: "queued" (launched, waiting for the
background thread), "reduce" (being reduced), and the main thread's "wait bucket k" where finish()
waited for it.

Usage::

    dp = DataParallel(comm, model.layout, bucket_mb=4)
    dp.begin(); model.backward(on_ready=dp.ready); dp.finish()   # grads now averaged
"""
import time
import zlib

import numpy as np

from .. import trace
from ..device import is_device_array, to_host, xp_of as _xp
from ..errors import ConfigError, HprError
from ..kernels import reduce as R
from .zero import ZeroShards

COMM_DTYPES = ("float32", "bfloat16", "float16")
ZERO_STAGES = (0, 1, 2, 3)


def _half_dtype(name):
    if name == "bfloat16":
        try:
            import ml_dtypes  # lazy: optional (the test extra); only --grad-comm-dtype bfloat16 needs it
        except ImportError:
            raise ConfigError("--grad-comm-dtype bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(np.float16)


class DataParallel:
    def __init__(self, comm, layout, bucket_mb=4.0, comm_dtype="float32", zero=0, tp=None, pp=None,
                 norm_skip=(), units=None):
        """units: [(name, lo, hi)] tiling the flat buffer (GPT.param_units), needed for zero 2 and 3."""
        if zero not in ZERO_STAGES:
            raise ConfigError(f"--zero {zero} is not supported; use 0 (replicated), 1 (sharded optimizer "
                              "state), 2 (and gradients) or 3 (and parameters)")
        if comm_dtype not in COMM_DTYPES:
            raise ConfigError(f"--grad-comm-dtype {comm_dtype!r}: use one of {', '.join(COMM_DTYPES)}")
        if not bucket_mb > 0:
            raise ConfigError(f"--bucket-mb must be positive, got {bucket_mb}")
        self.comm, self.layout, self.zero = comm, layout, zero
        # for the global gradient norm: the tp group (sharded parts summed), the pp group (stages
        # summed), and ranges of this rank's buffer another stage already counts (the tied wte)
        self.tp = tp if tp is not None and tp.size > 1 else None
        self.pp = pp if pp is not None and pp.size > 1 else None
        self.norm_skip = list(norm_skip)
        self.size, self.rank = comm.size, comm.rank
        grads = layout.grads
        self.grads = grads
        n = grads.size
        per = max(1, int(bucket_mb * 2 ** 20) // grads.itemsize)
        self.buckets = [(lo, min(n, lo + per)) for lo in range(0, n, per)]
        self.comm_dtype = comm_dtype
        self.half = None
        self.on_device = is_device_array(grads)
        if comm_dtype != "float32" and self.size > 1:
            if self.on_device and comm_dtype == "bfloat16":
                raise ConfigError("--grad-comm-dtype bfloat16: CuPy has no bfloat16 arrays; on a GPU use float16 "
                                  "or float32")
            if grads.dtype != np.float32:
                raise ConfigError(f"--grad-comm-dtype {comm_dtype} rounds float32 gradients; this model is "
                                  f"{grads.dtype}: use --grad-comm-dtype float32")
            if self.on_device:  # rounded by CuPy's cast (nearest-even, as R.convert), reduced staged
                self.half = _xp(grads).zeros(n, np.float16)
            else:
                self.half = comm.alloc(n, _half_dtype(comm_dtype))
        # ZeRO-1 shards: the same bounds comm.reduce_scatter uses (numpy.array_split of n elements)
        q, r = divmod(n, self.size)
        self.bounds = [i * q + min(i, r) for i in range(self.size + 1)]
        self.lo, self.hi = self.bounds[self.rank], self.bounds[self.rank + 1]
        self._next = 0
        self._handles = []
        self._wait_s = 0.0  # time finish() spent waiting: communication backward did not hide
        self.shards = None  # ZeRO-2/3 (hpr.parallel.zero.ZeroShards)
        if zero >= 2:
            if comm_dtype != "float32" or self.on_device:
                raise ConfigError(f"--zero {zero} runs on the CPU with --grad-comm-dtype float32 (got "
                                  f"{comm_dtype}{', a GPU' if self.on_device else ''}); use --zero 1 there")
            if units is None:
                raise ConfigError(f"--zero {zero} needs the model's parameter units (GPT.param_units())")
            self.shards = ZeroShards(comm, layout, units, per, zero)

    @property
    def wait_s(self):
        """Time spent waiting for gradient (and, ZeRO-3, parameter) communication compute did not hide."""
        extra = 0.0
        if self.shards is not None:
            extra = self.shards.wait_s + (self.shards.gather.wait_s if self.shards.gather else 0.0)
        return self._wait_s + extra

    def param_gather(self):
        """ZeRO-3: the ParamGather the model calls around each unit (set it as model.gather); else None."""
        return self.shards.gather if self.shards is not None else None

    def attach(self, models):
        """ZeRO-3: every model sharing these buffers (a pipeline stage's replicas) gathers its units
        through this rank's ParamGather."""
        for m in models:
            m.gather = self.param_gather()

    def optimizer_buffers(self, params, grads):
        """(params, grads, lo, hi, segments) for AdamW: the flat buffers and this rank's range of them
        (ZeRO 0/1; segments None), or ZeRO-2/3's shard-space arrays and their decay segments."""
        if self.shards is None:
            lo, hi = self.opt_range()
            return params, grads, lo, hi, None
        sh = self.shards
        return sh.params, sh.grads, 0, sh.plan.size, sh.plan.segments(self.layout)

    def zero_grad(self, model):
        """Clear the model's gradients before a step (ZeRO-2/3: the shard, and the paged buffer's pages
        go back to the OS)."""
        if self.shards is not None:
            self.shards.zero_grad()
        else:
            model.zero_grad()

    @property
    def every_micro(self):
        """Whether backward's on_ready should be passed to every micro-batch (ZeRO-2/3 reduce each
        micro-batch's gradients to their owners, so no full gradient buffer accumulates)."""
        return self.shards is not None

    def plan(self):
        """The static bucket plan, the same on every rank: [(first element, end element)]."""
        return list(self.buckets)

    # -- replicated optimizer: bucketed, overlapped allreduce ------------------------------------
    def begin(self, hold=None):
        """Before the (last) backward. hold (ZeRO-2/3): the flat offset from which gradients wait for
        finish() (the tied wte, still to be summed with the other pipeline stage's)."""
        self._next = 0
        self._handles = []
        if self.shards is not None:
            self.shards.begin(hold)

    def ready(self, k):
        """Backward's callback: grads[:k] are final; launch every bucket that lies inside."""
        if self.shards is not None:
            self.shards.ready(k)
            return
        if self.zero or self.size == 1:
            return
        while self._next < len(self.buckets) and self.buckets[self._next][1] <= k:
            lo, hi = self.buckets[self._next]
            self._handles.append(self._launch(lo, hi) + (self._next, trace.now() if trace.on else 0))
            self._next += 1

    def _launch(self, lo, hi):
        g = self.grads[lo:hi]
        if self.half is None:
            return (self.comm.iallreduce(g, op="avg"), None)
        h = self.half[lo:hi]
        if self.on_device:
            h[...] = g  # round to half on the GPU (nearest-even)
        else:
            R.convert(g, h)  # round to half (nearest-even), reduce with float32 accumulation, widen back
        return (self.comm.iallreduce(h, op="avg"), (g, h))

    def finish(self):
        """After backward: every bucket averaged over the group (replicated), or, with ZeRO-1, this
        rank's shard of the averaged gradient in grads[lo:hi] (the rest of grads is stale)."""
        if self.shards is not None:
            self.shards.finish()
            return
        if self.size == 1:
            return
        t0 = time.perf_counter()
        if self.zero:
            with trace.span("reduce_scatter grads"):
                mine = self.comm.reduce_scatter(self.grads, op="avg")
            self.grads[self.lo:self.hi] = mine
        else:
            self.ready(self.grads.size)
            for h, pair, k, queued in self._handles:
                w0 = trace.now() if trace.on else 0
                h.wait()
                if trace.on:
                    track, (lo, hi) = f"grad bucket {k}", self.buckets[k]
                    trace.add("queued", track, queued, h.t_start)
                    trace.add("reduce", track, h.t_start, h.t_done, elements=hi - lo)
                    trace.add(f"wait bucket {k}", "compute", w0, trace.now())
                if pair is not None:
                    if self.on_device:
                        pair[0][...] = pair[1]
                    else:
                        R.convert(pair[1], pair[0])
            self._handles = []
        self._wait_s += time.perf_counter() - t0

    # -- ZeRO-1 ------------------------------------------------------------------------------------
    def gather_params(self, params):
        """After the optimizer updated params[lo:hi] on every rank: everyone gets every shard (ZeRO-3:
        the gathered units are released, to be gathered again)."""
        if self.shards is not None:
            self.shards.gather_params(params)
        elif self.zero and self.size > 1:
            with trace.span("allgather params"):
                params[...] = self.comm.allgather(params[self.lo:self.hi])

    def grad_norm_sq(self, sumsq):
        """Global squared gradient norm of the whole model: over this rank's range (everything, or its
        ZeRO-1 shard, then summed over the dp group); with tensor parallelism the tp parts are summed
        over the tp group and replicated parameters counted once.

        A NaN or Inf anywhere in the model's gradient makes the result non-finite on every rank of the
        job, with no collective of its own: replicated (dp-averaged) gradients carry it to every dp
        rank, the sums over dp (ZeRO-1), tp and pp carry it along those groups, and a replicated
        tensor's NaN on one tp rank is moved into the part that is summed over tp."""
        lo, hi = self.opt_range()
        parts, repl = self.layout.segments_by_sharding(lo, hi)
        if self.tp is None:
            repl, parts = sorted(repl + parts), []
        grads, skip = self.grads, self.norm_skip
        if self.shards is not None:  # the same ranges in shard space
            plan = self.shards.plan
            grads, skip = self.shards.grads, plan.shard_ranges(skip)
            parts, repl = plan.shard_ranges(parts), plan.shard_ranges(repl)

        def total(ranges):
            out = 0.0
            for x, y in ranges:
                out += sumsq(grads[x:y])
                for sx, sy in skip:  # counted on another stage
                    a_, b_ = max(x, sx), min(y, sy)
                    if a_ < b_:
                        out -= sumsq(grads[a_:b_])
            return out
        a = np.array([total(repl), total(parts)])
        if not np.isfinite(a[0]):
            a[1] = np.nan
        if self.zero and self.size > 1:
            self.comm.allreduce(a, op="sum")
        if self.tp is not None:
            a[1:] = self.tp.allreduce_sum(a[1:].copy())
        if self.pp is not None:
            self.pp.allreduce(a, op="sum")
        return float(a[0] + a[1])

    def opt_range(self):
        """The slice of the flat buffers this rank's optimizer owns (ZeRO 0/1; ZeRO-2/3 own shard-space
        arrays instead, optimizer_buffers)."""
        return (self.lo, self.hi) if self.zero == 1 else (0, self.grads.size)

    def whole_moments(self, a):
        """A moment (m or v) of this rank's optimizer as the full flat array (collective over dp when
        sharded): for checkpoints."""
        if self.shards is not None:
            return self.shards.plan.unshard(self.comm, a)
        if self.zero and self.size > 1:
            return self.comm.allgather(a)
        return a

    def own_moments(self, full):
        """The inverse of whole_moments: this rank's part of a full flat moment."""
        if self.shards is not None:
            return self.shards.plan.take(full)
        lo, hi = self.opt_range()
        return full[lo:hi]

    def whole_params(self, params):
        """The full flat parameters (ZeRO-3: gathered from the shards, collective over dp)."""
        return self.shards.whole_params(params) if self.shards is not None else params

    def load_params(self, full):
        """Restored full flat parameters into this rank's buffers (and its ZeRO-2/3 shard)."""
        if self.shards is not None:
            self.shards.load_params(full)
        else:
            self.layout.params[...] = _xp(self.layout.params).asarray(full)


def param_checksum(params):
    """A crc32 of the parameter bytes: equal on every rank exactly when the parameters are."""
    return zlib.crc32(memoryview(np.ascontiguousarray(to_host(params))).cast("B"))


def check_replicas(world, params, replica_group, step):
    """HprError on every rank of world when data-parallel replicas no longer hold bit-identical
    parameters (the periodic --check-every test). replica_group(r): the key of world rank r's dp group
    (its tp and pp coordinates); ranks with the same key must agree. One small allgather over world,
    so every rank reaches the same verdict."""
    sums = world.allgather(np.array([param_checksum(params)], np.int64)).tolist()
    groups = {}
    for r, v in enumerate(sums):
        groups.setdefault(replica_group(r), []).append(r)
    odd = []
    for ranks in groups.values():
        vals = [sums[r] for r in ranks]
        ref = max(vals, key=vals.count)  # the majority's (on a tie, the lowest rank's)
        odd += [(r, ranks[vals.index(ref)]) for r in ranks if sums[r] != ref]
    if odd:
        which = "; ".join(f"world rank {r} differs from world rank {q}" for r, q in odd)
        raise HprError(f"data-parallel replicas drifted apart by step {step}: parameter checksums (crc32) "
                       f"differ ({which}). Their updates were not identical (faulty memory or hardware, or "
                       "a nondeterministic kernel); the run cannot go on consistently. Resume from the last "
                       "checkpoint with --resume; if it recurs, exclude the node of the rank that differs.")


def check_same_params(comm, params):
    """ConfigError on every rank unless every rank holds bit-identical parameters."""
    sums = comm.allgather(np.array([param_checksum(params)], np.int64)).tolist()
    if len(set(sums)) != 1:
        raise ConfigError(f"parameters differ between ranks (crc32 per rank: {sums}); every rank must build "
                          "the model from the same --seed with the same hpr and numpy")
