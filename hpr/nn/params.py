"""One flat buffer per role (DESIGN.md decision 1): the layout table that maps each named parameter
to a slice of the flat parameter and gradient arrays, and the views layers hold. Owns offsets, init
and the decay flags; does not own the arrays' meaning (layers) or their sync (hpr.parallel).

Layers register their parameters in forward order; offsets are assigned in REVERSE registration
order, so the parameters backward finishes first sit at the front of the buffer: gradient buckets
taken from the front fill one after another while backward runs. A parameter used twice (the tied
token embedding) sits where its last use in backward puts it: at the end.

Usage: ``lay = ParamLayout(); w = lay.add("h0.fc.w", (C, 4*C), std=0.02); lay.build(np.float32, seed)``"""
import numpy as np

from ..errors import ConfigError


class Param:
    """One named parameter: shape, init (normal with `std`, or the constant `fill`), decay flag; after
    `ParamLayout.build`, `.data` and `.grad` are views into the flat arrays. A sharded parameter (tensor
    parallelism) has `full_shape`, the whole tensor's shape, and `shard(full) -> this rank's part`;
    `shape` is then the local part's shape."""
    __slots__ = ("name", "shape", "std", "fill", "decay", "offset", "size", "data", "grad", "full_shape",
                 "shard", "owned")

    def __init__(self, name, shape, std, fill, decay, full_shape=None, shard=None):
        self.name, self.shape, self.std, self.fill, self.decay = name, tuple(shape), std, fill, decay
        self.size = int(np.prod(self.shape))
        self.full_shape = tuple(full_shape) if full_shape is not None else self.shape
        self.shard = shard
        self.offset = None
        self.data = self.grad = None

    @property
    def sharded(self):
        return self.shard is not None


class ParamLayout:
    def __init__(self):
        self.entries = []  # registration (forward) order, the parameters this rank holds
        self.skipped = []  # registered but held by another pipeline stage
        self._draws = []   # everything registered, in order: the random stream at init
        self._by_name = {}
        self.owning = True
        self.params = self.grads = None

    def add(self, name, shape, *, std=None, fill=0.0, decay=False, shard=None, owned=None):
        """Register a parameter; normal(0, std) init when std is given, else the constant fill.
        shard: for a tensor-parallel part, a function from the whole tensor (of `shape`) to this rank's
        part; the whole tensor is drawn (so every layout draws the same numbers) and only the part kept.
        owned=False: a parameter another pipeline stage holds; it is drawn at init (keeping the random
        stream the same in every layout) but gets no storage here. Default: the layout's `owning`
        (a pipeline stage sets it False while the other stages' layers register)."""
        owned = self.owning if owned is None else owned
        if name in self._by_name:
            raise ConfigError(f"parameter {name!r} registered twice")
        if any(int(d) <= 0 for d in shape):
            raise ConfigError(f"parameter {name!r} has a non-positive dimension in {tuple(shape)}")
        local = shard(np.empty(shape, np.uint8)).shape if shard is not None else shape
        p = Param(name, local, std, fill, decay, full_shape=shape, shard=shard)
        p.owned = bool(owned)
        (self.entries if owned else self.skipped).append(p)
        self._draws.append(p)
        self._by_name[name] = p
        return p

    def __getitem__(self, name):
        return self._by_name[name]

    def __contains__(self, name):
        p = self._by_name.get(name)
        return p is not None and p.owned

    @property
    def size(self):
        """Elements this rank holds."""
        return sum(p.size for p in self.entries)

    @property
    def full_size(self):
        """Elements of the whole model: every registered tensor at its whole shape, held here or not."""
        return sum(int(np.prod(p.full_shape)) for p in self._draws)

    def order(self):
        """Parameters in buffer order (reverse registration: backward's order)."""
        return list(reversed(self.entries))

    def build(self, dtype, seed, params=None, grads=None, device=None):
        """Assign offsets, allocate (or adopt) the flat params and grads, point every Param at its
        slice, and initialise params from `seed` (drawn in registration order, so the values do not
        depend on the buffer order). Pass `params`/`grads` to place them in memory the caller owns
        (e.g. a node-shared buffer from comm.alloc). device: a GPU hpr.device.Device puts both there
        (initialised on the host, the same numbers, then copied). seed None: no initialisation at all
        (params zero), for a caller that overwrites every parameter next (loading weights)."""
        off = 0
        for p in self.order():
            p.offset = off
            off += p.size
        n = off
        on_gpu = device is not None and device.is_gpu
        given = (params, grads) if on_gpu else (None, None)  # a GPU's are filled after the host init
        if on_gpu:
            params = grads = None
        self.params = np.empty(n, dtype) if params is None else params
        self.grads = np.zeros(n, dtype) if grads is None else grads
        for a, what in ((self.params, "params"), (self.grads, "grads")):
            if a.shape != (n,) or a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
                raise ConfigError(f"{what} must be a contiguous ({n},) {np.dtype(dtype).name} array")
        self.grads[:] = 0
        if seed is None:
            self.params[:] = 0
        rng = np.random.default_rng(seed) if seed is not None else None
        for p in self._draws:
            drawn = rng is not None and p.std is not None
            full = rng.standard_normal(p.full_shape) * p.std if drawn else None
            if not p.owned:
                continue  # drawn only to keep the stream the same as in every other layout
            p.data = self.params[p.offset:p.offset + p.size].reshape(p.shape)
            p.grad = self.grads[p.offset:p.offset + p.size].reshape(p.shape)
            if rng is None:
                continue  # seed None: left zero, the caller loads every parameter
            if full is not None:  # float64 draw of the whole tensor, then cast: same in f32/f64, any layout
                p.data[...] = p.shard(full) if p.sharded else full
            else:
                p.data[...] = p.fill
        if on_gpu:
            self._to(device, *given)
        return self.params, self.grads

    def _to(self, device, params=None, grads=None):
        """Copy the initialised flat arrays to the device (into the given device buffers, if any) and
        point every Param's views at the copies."""
        host = self.params
        self.params = device.xp.empty(host.shape, host.dtype) if params is None else params
        self.grads = device.xp.empty(host.shape, host.dtype) if grads is None else grads
        for a, what in ((self.params, "params"), (self.grads, "grads")):
            if not device.is_array(a) or a.shape != host.shape or a.dtype != host.dtype:
                raise ConfigError(f"{what} must be a ({host.size},) {host.dtype.name} array on {device}")
        self.params[...] = device.asarray(host)
        self.grads[...] = 0
        for p in self.entries:
            p.data = self.params[p.offset:p.offset + p.size].reshape(p.shape)
            p.grad = self.grads[p.offset:p.offset + p.size].reshape(p.shape)

    def segments(self, lo=0, hi=None):
        """[(start, stop, decay)] covering [lo, hi) of the flat buffer, neighbours with the same decay
        flag merged: what the optimizer loops over (and ZeRO-1 shards cut)."""
        hi = self.size if hi is None else hi
        out = []
        for p in self.order():
            a, b = max(lo, p.offset), min(hi, p.offset + p.size)
            if a >= b:
                continue
            if out and out[-1][2] == p.decay and out[-1][1] == a:
                out[-1] = (out[-1][0], b, p.decay)
            else:
                out.append((a, b, p.decay))
        return out

    def segments_by_sharding(self, lo=0, hi=None):
        """([(start, stop)] of tensor-parallel parts, [(start, stop)] of replicated parameters) within
        [lo, hi): a global gradient norm sums the first over the tensor-parallel group, the second once."""
        hi = self.size if hi is None else hi
        parts, repl = [], []
        for p in self.order():
            a, b = max(lo, p.offset), min(hi, p.offset + p.size)
            if a < b:
                (parts if p.sharded else repl).append((a, b))
        return parts, repl

    def table(self):
        """Printable layout: name, shape, offset, size, decay."""
        return [(p.name, p.shape, p.offset, p.size, p.decay) for p in self.order()]
