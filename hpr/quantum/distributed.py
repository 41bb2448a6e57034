"""One state vector of n qubits sharded over P = 2**g ranks: the g most significant PHYSICAL qubits are
"global" (rank r holds the 2**(n-g) amplitudes whose top g index bits equal r), the rest are local and
handled by hpr's state-vector kernels on this rank's (1, 2**(n-g)) slice. A logical -> physical qubit
map (initially the identity) lets a global qubit trade places with a local one by one pairwise
exchange between partner ranks, after which the gate runs locally. Not batched (one state), not
differentiated; StateVector is the single-rank twin and owns the gate vocabulary.

What moves data and what does not:
- a gate whose qubits are all local: the local kernel, no messages;
- diagonal gates (z, s, t, rz, p, cz, crz, cp, rzz, ...) on global qubits: no messages; each rank
  multiplies by the diagonal entry its rank bits select;
- swap: no messages at all, only the qubit map changes;
- x / cx / ccx / controlled gates (any number of controls): a global CONTROL is no message (a rank
  whose control bit is 0 does nothing, the others drop that control); a global TARGET is first swapped
  with a local qubit the gate does not use, or, when every local qubit is one of its controls, with
  one of those controls (which then becomes a rank predicate in turn);
- dense 1- and 2-qubit gates (h, rx, u3, ecr, apply_matrix, ...) on global qubits: each such qubit is
  first swapped with the highest local physical qubit the gate does not use;
- gates made of others (cswap, rccx, ...) run as those gates.
An exchange sends half of this rank's amplitudes to its partner (rank ^ 2**j) and receives as many,
in chunks of at most ``chunk_elems`` amplitudes, so it needs only two chunk-sized buffers beyond the
state (about 1.0x the state plus 2 * 2**20 amplitudes by default).

At least 1 local qubit per rank (n >= g + 1). With exactly one, a dense two-qubit gate on two global
qubits has no two local places to go to: the whole state (2 amplitudes per rank, so small) is then
gathered on every rank, the gate applied, and each rank keeps its slice again; where the whole state
does not fit one rank's memory that is a ConfigError, raised on every rank before any work.

Measurements (measure, reset: collective, every rank gets the same outcome, drawn on rank 0) collapse
the state in place; hpr.quantum.simulate runs shots on a sharded state one trajectory at a time, or
samples the final probabilities rank by rank (sample).

On GPUs (device=hpr.device.select("gpu", comm)) each rank's slice lives on its GPU, the gates are the
GPU kernels, and the exchanges go through hpr's point-to-point on device buffers (straight to a
CUDA-aware MPI, else through host memory).

Usage: ``comm = hpr.init(); sv = DistributedStateVector(30, comm); sv.apply("h", [29]);
sv.apply("cx", [29, 0]); z = sv.expval_z(); full = sv.gather()  # on rank 0, small n only``"""

import numpy as np

from ..device import CPU, to_host
from ..errors import ConfigError
from ..kernels import statevec as K
from . import gates as G
from .statevec import StateVector, _gate, check_dtype, check_matrix, check_size, state_zeros

CHUNK_ELEMS = 1 << 20  # amplitudes per message of an exchange or gather (far below MPI's 2**31 count limit)
_GATHER_TAG = 1  # the exchanges use tag 0


class DistributedStateVector:
    """One state of n_qubits over the 2**g ranks of ``comm`` (an hpr Communicator). Creating one is
    collective; so is every method (every rank calls the same methods with the same arguments)."""

    chunk_elems = CHUNK_ELEMS

    def __init__(self, n_qubits, comm, dtype=np.complex128, device=None):
        from ..comm import Communicator  # lazy: hpr.comm loads mpi4py, which a single-rank user never needs

        if not isinstance(comm, Communicator):
            raise ConfigError(f"DistributedStateVector needs an hpr Communicator (hpr.init()), not "
                              f"{type(comm).__name__}")
        if isinstance(n_qubits, bool) or not isinstance(n_qubits, (int, np.integer)) or n_qubits < 1:
            raise ConfigError(f"n_qubits must be a positive integer, got {n_qubits!r}")
        check_dtype(dtype)
        p = comm.size
        if p & (p - 1):
            raise ConfigError(f"DistributedStateVector needs 2**g ranks (1, 2, 4, 8, ...); this communicator "
                              f"has {p}. Run with a power-of-two rank count or comm.split a sub-communicator")
        g = p.bit_length() - 1
        n = int(n_qubits)
        if n - g < 1:
            raise ConfigError(f"{n} qubits over {p} ranks leaves {n - g} local qubit(s) per rank; at least 1 "
                              f"is needed. Use >= {g + 1} qubits or fewer ranks")
        # memory per rank: agreed collectively so that every rank raises, or none
        err = None
        device = CPU if device is None else device
        try:
            check_size(n - g, 1, dtype, device.free_bytes() if device.is_gpu else None)
        except ConfigError as e:
            err = e
        flag = comm.allreduce(np.array([0 if err is None else 1], np.int64), "max")
        if flag[0]:
            raise err or ConfigError(f"another rank cannot hold its slice of {n} qubits over {p} ranks "
                                     f"(2**{n - g} amplitudes each)")
        self.comm, self.n, self.n_global, self.n_local = comm, n, g, n - g
        self.rank, self.size = comm.rank, p
        self.dtype = np.dtype(dtype)
        self.batch = 1  # for StateVector's parameter checks
        self._l2p = list(range(n))  # logical qubit -> physical qubit
        self.device, self.xp = device, device.xp
        self.local = state_zeros((1, 1 << self.n_local), self.dtype, self.xp)  # (1, 2**(n-g)): this rank's slice
        if self.rank == 0:
            self.local[0, 0] = 1  # |0...0>

    # StateVector's argument checks (same messages), with batch = 1
    _params = StateVector._params
    _qubits = StateVector._qubits
    _cast = StateVector._cast

    @property
    def qubit_map(self):
        """logical qubit -> physical qubit (physical >= n_local: global, rank bit physical - n_local)."""
        return list(self._l2p)

    def _bit(self, p):
        """This rank's value of global physical qubit p."""
        return (self.rank >> (p - self.n_local)) & 1

    # -- gates ----------------------------------------------------------------------------------
    def apply(self, name, qubits, params=None):
        """A named gate (hpr.quantum.GATES) on the given LOGICAL qubits (controls first); params:
        numbers. Returns self."""
        gate = _gate(name)
        qs = self._qubits(qubits, gate.n_qubits, name)
        _, arr = G.build(name, self._params(gate, params))
        if gate.kind == "seq":  # exactly a sequence of other gates (cswap, rccx, ...)
            for sub, sq in G.expand(gate.name, qs):
                self.apply(sub, list(sq))
            return self
        self._run(gate.kind, gate.n_controls, qs, arr)
        return self

    def apply_matrix(self, U, qubits):
        """A dense (2, 2) or (4, 4) unitary on 1 or 2 LOGICAL qubits (q1 the low bit of the 4x4 index).
        With HPR_CHECK=1 the matrix is checked to be unitary."""
        U, k = check_matrix(U, 1)
        qs = self._qubits(qubits, k, "apply_matrix")
        self._run("1q" if k == 1 else "2q", 0, qs, U)
        return self

    def _run(self, kind, n_controls, qs, arr):
        s, L = self.local, self.n_local
        if kind == "swap":  # relabel only
            a, b = qs
            self._l2p[a], self._l2p[b] = self._l2p[b], self._l2p[a]
            return
        ph = [self._l2p[q] for q in qs]
        if kind == "diag1":
            p = ph[0]
            if p < L:
                K.apply_diag_1q(s, p, self._cast(arr))
            else:
                s *= self.dtype.type(arr[..., self._bit(p)])  # a scalar: host or device state alike
            return
        if kind == "diag2":
            p1, p2 = ph
            a = np.asarray(arr)
            if p1 < L and p2 < L:
                K.apply_diag_2q(s, p1, p2, self._cast(a))
            elif p1 >= L and p2 >= L:
                s *= self.dtype.type(a[..., self._bit(p1) + 2 * self._bit(p2)])
            elif p1 >= L:  # d[b1 + 2 b2] with b1 fixed: a diagonal on the local p2
                b1 = self._bit(p1)
                K.apply_diag_1q(s, p2, self._cast(np.stack([a[..., b1], a[..., b1 + 2]], -1)))
            else:
                b2 = self._bit(p2)
                K.apply_diag_1q(s, p1, self._cast(np.stack([a[..., 2 * b2], a[..., 1 + 2 * b2]], -1)))
            return
        # non-diagonal: the qubits that must be local (controls may stay global), then the local kernel
        if kind == "2q" and L < 2 and any(p >= L for p in ph):
            return self._apply_whole(qs, arr)  # one local qubit: no room for two
        must = range(len(qs)) if kind in ("1q", "2q") else [len(qs) - 1]
        for i in must:
            if ph[i] >= L:
                free = [p for p in range(L - 1, -1, -1) if p not in ph]  # local qubits the gate does not use
                if not free:  # every local qubit is a control: trade places with one, which goes global
                    free = [p for p in ph[:n_controls] if p < L]
                self._swap_global(ph[i], free[0])
                ph = [self._l2p[q] for q in qs]
        if kind == "1q":
            K.apply_1q(s, ph[0], self._cast(arr))
            return
        if kind == "2q":
            K.apply_2q(s, ph[0], ph[1], self._cast(arr))
            return
        controls = []
        for c in ph[:n_controls]:
            if c < L:
                controls.append(c)
            elif not self._bit(c):
                return  # a global control that is 0 on this rank: nothing to do here
        if kind == "x":
            K.apply_x(s, ph[-1], controls=tuple(controls))
        elif controls:
            K.apply_controlled(s, tuple(controls), ph[-1], self._cast(arr))
        else:
            K.apply_1q(s, ph[-1], self._cast(arr))

    def _apply_whole(self, qs, U):
        """A dense two-qubit U on LOGICAL qubits qs, through the whole state gathered on every rank
        (only with one local qubit, when the state is 2 amplitudes per rank)."""
        err = None
        try:
            check_size(self.n, 1, self.dtype)
        except ConfigError as e:
            err = e
        flag = self.comm.allreduce(np.array([0 if err is None else 1], np.int64), "max")
        if flag[0]:
            raise ConfigError(f"a dense two-qubit gate on global qubits with one local qubit per rank needs the "
                              f"whole state of {self.n} qubits on each rank, which does not fit: use fewer ranks")
        full = self.gather(0)
        if full is None:
            full = np.empty(1 << self.n, self.dtype)
        full = np.ascontiguousarray(full)[None]  # (1, 2**n) logical order
        self.comm.broadcast(full.view(full.real.dtype), root=0)  # as (re, im) pairs: reductions' dtypes
        K.apply_2q(full, qs[0], qs[1], np.ascontiguousarray(U, self.dtype))
        m = 1 << self.n_local
        self.local[...] = self.xp.asarray(full[0, self.rank * m:(self.rank + 1) * m])[None]
        self._l2p = list(range(self.n))

    def _swap_global(self, pg, pl):
        """Exchange global physical qubit pg with local physical qubit pl (pairwise with the partner
        rank), then swap the logical qubits that sit there."""
        self._exchange(pg - self.n_local, pl)
        l2p = self._l2p
        a, b = l2p.index(pg), l2p.index(pl)
        l2p[a], l2p[b] = pl, pg

    def _exchange(self, j, l):
        """This rank keeps the amplitudes whose local bit l equals its rank bit j and trades the other
        half with rank ^ 2**j, chunk by chunk through two chunk-sized buffers."""
        rb = (self.rank >> j) & 1
        partner = self.rank ^ (1 << j)
        L = self.n_local
        half = self.local.reshape(1 << (L - 1 - l), 2, 1 << l)[:, 1 - rb, :]  # (hi, lo) strided view
        hi, lo = half.shape
        ch = max(1, int(self.chunk_elems))
        m = min(ch, hi * lo)
        sbuf, rbuf = self.xp.empty(m, self.dtype), self.xp.empty(m, self.dtype)  # on the state's device
        if lo <= ch:  # whole rows per message
            rows = ch // lo
            blocks = (half[r:r + rows] for r in range(0, hi, rows))
        else:  # pieces of one row per message
            blocks = (half[r, c:c + ch] for r in range(hi) for c in range(0, lo, ch))
        for blk in blocks:
            k = blk.size
            sb, rv = sbuf[:k].reshape(blk.shape), rbuf[:k]
            self.xp.copyto(sb, blk)
            self.comm.sendrecv(sb, partner, rv, partner)
            blk[...] = rv.reshape(blk.shape)

    # -- measurements -----------------------------------------------------------------------------
    def gather(self, root=0):
        """The full (2**n,) amplitudes in LOGICAL qubit order (qubit 0 the least significant bit) on
        root, None elsewhere. Collective; root must hold the whole state (small n)."""
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.size:
            raise ConfigError(f"gather: root {root!r} is outside this communicator of {self.size} ranks")
        n, m, ch = self.n, 1 << self.n_local, max(1, int(self.chunk_elems))
        mine = self.local.reshape(-1)
        if self.rank != root:  # point to point through hpr (waits politely, under its deadline), in chunks
            for c in range(0, m, ch):
                self.comm.send(mine[c:c + ch], root, tag=_GATHER_TAG)
            return None
        recv = np.empty((self.size, m), self.dtype)  # (P, 2**(n-g)): row r is rank r's slice
        recv[root] = to_host(mine)
        for r in range(self.size):
            if r != root:
                for c in range(0, m, ch):
                    self.comm.recv(recv[r, c:c + ch], r, tag=_GATHER_TAG)
        phys = recv.reshape((2,) * n)  # axis k: physical qubit n-1-k (rank bits on top)
        axes = [n - 1 - self._l2p[n - 1 - k] for k in range(n)]
        return np.ascontiguousarray(np.transpose(phys, axes)).reshape(-1)

    def probabilities(self):
        """|amplitude|^2 of the full state, (2**n,) in logical order, on rank 0 (None elsewhere): by
        gather, so for small n only."""
        a = self.gather(0)
        return None if a is None else (np.abs(a) ** 2).astype(a.real.dtype)

    def expval_z(self):
        """<Z_q> of every LOGICAL qubit, (n,) float64, the same on every rank (one allreduce). Not
        divided by the norm, like StateVector's."""
        L = self.n_local
        part = np.empty(self.n, np.float64)
        part[:L] = to_host(K.expval_z(self.local))[0]
        nrm2 = float(self.xp.vdot(self.local, self.local).real)
        for p in range(L, self.n):
            part[p] = nrm2 * (1 - 2 * self._bit(p))
        self.comm.allreduce(part, "sum")
        return part[self._l2p]

    def norm(self):
        """The 2-norm of the whole state (sqrt of the sum of |amplitude|^2), the same on every rank."""
        s = np.array([float(self.xp.vdot(self.local, self.local).real)], np.float64)
        self.comm.allreduce(s, "sum")
        return float(np.sqrt(s[0]))

    # -- measurement and reset (collective) ---------------------------------------------------------
    def prob_one(self, q):
        """P(LOGICAL qubit q is 1), the same on every rank (one allreduce; the state is normalised)."""
        p, L = self._l2p[q], self.n_local
        if p < L:  # the amplitudes whose local bit p is 1: the upper half of each 2**(p+1) block
            upper = self.local.reshape(-1, 2, 1 << p)[:, 1, :]
            part = float(self.xp.vdot(upper, upper).real)
        else:
            part = float(self.xp.vdot(self.local, self.local).real) if self._bit(p) else 0.0
        s = self.comm.allreduce(np.array([part], np.float64), "sum")
        return min(max(float(s[0]), 0.0), 1.0)

    def measure(self, q, u):
        """Measure LOGICAL qubit q: outcome 1 when u (a uniform number in [0, 1)) < P(1), decided on rank 0
        and broadcast, so every rank agrees; the state collapses and is renormalised. Returns 0 or 1."""
        p1 = self.prob_one(q)
        d = self.comm.broadcast(np.array([float(u < p1), p1], np.float64), root=0)
        out, p1 = int(d[0]), float(d[1])
        scale = 1.0 / np.sqrt(max(p1 if out else 1.0 - p1, 1e-300))
        p, L = self._l2p[q], self.n_local
        if p < L:
            diag = np.zeros(2, self.dtype)
            diag[out] = scale
            K.apply_diag_1q(self.local, p, diag)
        else:
            self.local *= self.dtype.type(scale if self._bit(p) == out else 0.0)
        return out

    def reset(self, q, u):
        """LOGICAL qubit q back to |0>: measured (u as in measure), then flipped where it gave 1."""
        if self.measure(q, u):
            self.apply("x", [q])

    def snapshot(self):
        """A copy of this rank's slice and the qubit map (restore puts them back)."""
        return self.local.copy(), list(self._l2p)

    def restore(self, snap):
        self.local[...] = snap[0]
        self._l2p = list(snap[1])

    def sample(self, shots, seed):
        """(logical basis-state indices (k,), counts (k,)) of `shots` draws from the whole state's
        probabilities, gathered on rank 0 (None elsewhere); no rank holds more than its own slice: rank 0
        splits the shots over the ranks by their probability mass (a multinomial), then each rank draws
        its share from its slice. seed must be the same on every rank."""
        rng = np.random.default_rng(seed)
        prob = np.abs(to_host(self.local[0])) ** 2  # (2**(n-g),) this rank's slice
        mass = np.zeros(self.size, np.float64)
        mass[self.rank] = prob.sum()
        self.comm.allreduce(mass, "sum")
        share = rng.multinomial(shots, mass / mass.sum()).astype(np.int64)
        self.comm.broadcast(share, root=0)
        seeds = rng.integers(0, 2 ** 62, self.size)
        mine = share[self.rank]
        hits = np.random.default_rng(int(seeds[self.rank])).multinomial(mine, prob / prob.sum()) if mine else prob * 0
        idx = np.flatnonzero(hits)
        phys = (self.rank << self.n_local) | idx  # physical index: the rank's bits on top
        logical = np.zeros_like(phys)
        for q, p in enumerate(self._l2p):
            logical |= ((phys >> p) & 1) << q
        got = self.comm.gather_obj((logical, hits[idx].astype(np.int64)), root=0)
        if got is None:
            return None
        return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
