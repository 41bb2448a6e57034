"""A batch of state vectors on one rank: B states of n qubits as one (B, 2**n) complex array, advanced
gate by gate with one vectorised kernel call for the whole batch (hpr.kernels.statevec). Owns the
state and the gate vocabulary's dispatch; not the circuits' gradients or the sharded state.

Usage: ``sv = StateVector(3, batch=4); sv.apply("h", [0]); sv.apply("rx", [1], params=angles); sv.expval_z()``"""
import mmap
import os

import numpy as np

from .. import config
from ..device import CPU, to_host
from ..errors import ConfigError
from ..kernels import statevec as K
from . import gates as G

DTYPES = (np.complex64, np.complex128)


def _memory_available():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# Where a state's amplitudes live (measured on the AMD EPYC here, 1 thread, CPU time; see
# csrc/statevec.c, "far pairs"). numpy's own buffers start 16 bytes past an allocation's page (glibc's
# chunk header), so every 64-byte vector load of the AVX-512 kernels straddles two cache lines: RY on the
# top qubit at n = 25 ran at 15 GB/s from such a buffer and at 22 GB/s (32 staged) from one aligned to 64
# bytes. States of >= STATE_HUGE_FROM bytes get their own anonymous mapping, page aligned, advised onto
# transparent huge pages (MADV_HUGEPAGE; THP is often in "madvise" mode): a dense gate on the middle and low
# qubits ran 15-25% faster on 2 MiB pages than on 4 KiB ones, and the top qubit the same on both. Smaller
# states (a batch of small circuits, made anew per forward) stay numpy buffers, 64-byte aligned: a fresh
# mapping per call measured ~2% slower there (its pages faulted in every time).
STATE_ALIGN = 64              # bytes: a cache line, one AVX-512 vector
STATE_HUGE_FROM = 32 << 20    # bytes: from here (n >= 21 in complex128) a state is a huge-page mapping


def state_zeros(shape, dtype, xp=np):
    """A zeroed C-contiguous array of complex amplitudes, shape e.g. (B, 2**n), whose first amplitude
    lies on a STATE_ALIGN-byte boundary (page-aligned and huge-page advised from STATE_HUGE_FROM
    bytes). A device's array module (xp, e.g. cupy) allocates as it does."""
    if xp is not np:
        return xp.zeros(shape, dtype)
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes >= STATE_HUGE_FROM and hasattr(mmap, "MAP_PRIVATE"):
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)  # anonymous: zero pages, faulted in on first touch
        if hasattr(mmap, "MADV_HUGEPAGE"):
            buf.madvise(mmap.MADV_HUGEPAGE)
        return np.frombuffer(buf, dt).reshape(shape)
    raw = np.zeros(nbytes + STATE_ALIGN, np.uint8)
    start = -raw.ctypes.data % STATE_ALIGN
    return raw[start:start + nbytes].view(dt).reshape(shape)


def check_dtype(dtype):
    """The numpy dtype of a state: complex64 or complex128, else ConfigError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in [np.dtype(d) for d in DTYPES]:
        raise ConfigError(f"state dtype {getattr(dt, 'name', dtype)!r}: use complex64 or complex128")
    return dt


def check_size(n_qubits, batch, dtype, avail=None):
    """ConfigError, before anything is allocated, for sizes that cannot be held in `avail` bytes
    (default: the host's free memory)."""
    for what, v in (("n_qubits", n_qubits), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    dt = check_dtype(dtype)
    need = batch * (1 << int(n_qubits)) * dt.itemsize
    if n_qubits > 40:
        raise ConfigError(f"{n_qubits} qubits is beyond one rank's memory: {batch} state(s) of 2**{n_qubits} "
                          f"amplitudes in {dt.name} need {need / 2**30:,.0f} GiB. Use fewer qubits, or "
                          "hpr.quantum.DistributedStateVector over many ranks")
    where = "this machine has" if avail is None else "the GPU has"
    avail = _memory_available() if avail is None else avail
    if avail is not None and need > avail:
        raise ConfigError(f"{batch} state(s) of {n_qubits} qubits in {dt.name} need "
                          f"{need / 2**30:.2f} GiB; {where} {avail / 2**30:.2f} GiB free. Use fewer "
                          "qubits, a smaller batch, complex64, or a sharded state over several ranks")
    return need


def check_matrix(U, batch):
    """(U as an array, its qubit count 1 or 2) for apply_matrix, or ConfigError: a (2, 2) / (4, 4)
    matrix or one per state, unitary when HPR_CHECK=1 (hpr.config.current().check)."""
    U = to_host(U)
    k = {2: 1, 4: 2}.get(U.shape[-1] if U.ndim >= 2 else 0)
    if k is None or U.shape[-2:] != (1 << k, 1 << k) or U.ndim not in (2, 3) or \
            (U.ndim == 3 and U.shape[0] != batch):
        raise ConfigError(f"apply_matrix wants a (2, 2) or (4, 4) matrix, or one per state ({batch}, 2, 2) "
                          f"/ ({batch}, 4, 4); got shape {U.shape}")
    if config.current().check:
        m = U.reshape(-1, 1 << k, 1 << k)
        err = np.abs(m @ np.conj(np.swapaxes(m, -1, -2)) - np.eye(1 << k)).max()
        if err > 1e-6:
            raise ConfigError(f"apply_matrix: the matrix is not unitary (|U U^H - I| = {err:.2e})")
    return U, k


def _gate(name):
    """The Gate named `name` (any case), or ConfigError naming the gates hpr knows."""
    if not isinstance(name, str):
        raise ConfigError(f"a gate is named by a string such as 'h' or 'cx', not {name!r}; for a matrix use "
                          "apply_matrix")
    gate = G.GATES.get(name.lower())
    if gate is None:
        G.build(name)  # the error naming the gates hpr knows
    return gate


class StateVector:
    def __init__(self, n_qubits, batch=1, dtype=np.complex128, device=None):
        """device: an hpr.device.Device; a GPU holds the state there (a CuPy array) and every gate,
        expectation and probability runs on it."""
        device = CPU if device is None else device
        check_size(n_qubits, batch, dtype, device.free_bytes() if device.is_gpu else None)
        self.n, self.batch, self.dtype = int(n_qubits), int(batch), np.dtype(dtype)
        self.device = device
        self.state = state_zeros((self.batch, 1 << self.n), self.dtype, device.xp)  # (B, 2**n)
        self.state[:, 0] = 1  # |0...0>

    @property
    def amplitudes(self):
        """The (B, 2**n) amplitudes (a view: the live state)."""
        return self.state

    def _params(self, gate, params):
        """Parameters as a list of n_params items, each a float or a (B,) array."""
        if gate.n_params == 0:
            if params not in (None, (), []):
                raise ConfigError(f"gate {gate.name} takes no parameters")
            return []
        if params is None:
            raise ConfigError(f"gate {gate.name} needs {gate.n_params} parameter(s)")
        if isinstance(params, (list, tuple)) and len(params) == gate.n_params:
            items = list(params)  # one entry per parameter (each a number or a per-state array)
        elif gate.n_params == 1:
            items = [params]      # the one parameter: a number or a per-state array
        else:
            items = list(params) if np.ndim(params) else [params]
        if len(items) != gate.n_params:
            raise ConfigError(f"gate {gate.name} takes {gate.n_params} parameter(s), got {len(items)}")
        out = []
        for p in items:
            a = np.asarray(to_host(p), np.float64)
            if a.ndim == 0:
                out.append(float(a))
            elif a.shape == (self.batch,):
                out.append(a)
            else:
                raise ConfigError(f"gate {gate.name}: a parameter must be one number or one per state "
                                  f"({self.batch}), got shape {a.shape}")
        return out

    def _qubits(self, qubits, k, what):
        qs = []
        for q in np.atleast_1d(np.asarray(qubits, dtype=object)):
            if isinstance(q, (bool, np.bool_)) or not isinstance(q, (int, np.integer)):
                raise ConfigError(f"{what}: qubit {q!r} is not an integer; give qubit indices from 0 to "
                                  f"{self.n - 1}")
            qs.append(int(q))
        if len(qs) != k:
            raise ConfigError(f"{what} acts on {k} qubit(s), got {len(qs)}: {qs}")
        for q in qs:
            if not 0 <= q < self.n:
                raise ConfigError(f"{what}: qubit {q} is out of range for {self.n} qubits (0..{self.n - 1})")
        if len(set(qs)) != len(qs):
            raise ConfigError(f"{what}: qubits {qs} repeat a qubit")
        return qs

    def apply(self, name, qubits, params=None):
        """A named gate (qelib1 spelling) on the given qubits (controls first); params: numbers or
        per-state arrays. Returns self."""
        gate = _gate(name)
        qs = self._qubits(qubits, gate.n_qubits, name)
        _, arr = G.build(name, self._params(gate, params))
        s, k = self.state, gate.kind
        if k == "seq":  # exactly a sequence of other gates (cswap, rccx, ...)
            for sub, sq in G.expand(gate.name, qs):
                self.apply(sub, list(sq))
            return self
        if k == "1q":
            K.apply_1q(s, qs[0], self._cast(arr))
        elif k == "2q":
            K.apply_2q(s, qs[0], qs[1], self._cast(arr))
        elif k == "diag1":
            K.apply_diag_1q(s, qs[0], self._cast(arr))
        elif k == "diag2":
            K.apply_diag_2q(s, qs[0], qs[1], self._cast(arr))
        elif k == "x":
            K.apply_x(s, qs[-1], controls=tuple(qs[:-1]))
        elif k == "swap":
            K.apply_swap(s, qs[0], qs[1])
        elif k == "controlled":
            K.apply_controlled(s, tuple(qs[:gate.n_controls]), qs[-1], self._cast(arr))
        return self

    def _cast(self, a):
        return np.ascontiguousarray(a, self.dtype)

    def apply_matrix(self, U, qubits):
        """A dense 1- or 2-qubit unitary, (2, 2) / (4, 4), or one per state (B, 2, 2) / (B, 4, 4).
        With HPR_CHECK=1 the matrix is checked to be unitary."""
        U, k = check_matrix(U, self.batch)
        qs = self._qubits(qubits, k, "apply_matrix")
        if k == 1:
            K.apply_1q(self.state, qs[0], self._cast(U))
        else:
            K.apply_2q(self.state, qs[0], qs[1], self._cast(U))
        return self

    def expval_z(self):
        """<Z_i> of every qubit, (B, n), in one pass."""
        return K.expval_z(self.state)

    def expval(self, pauli):
        """<P> of a Pauli string, (B,); see hpr.kernels.statevec.expval_pauli for the qubit order."""
        if not isinstance(pauli, str) or len(pauli) != self.n or set(pauli.upper()) - set("IXYZ"):
            raise ConfigError(f"Pauli string {pauli!r}: give {self.n} letters from I, X, Y, Z")
        return K.expval_pauli(self.state, pauli.upper())

    def probabilities(self):
        return K.probabilities(self.state)

    def sample(self, shots, seed=0):
        """(B, shots) basis-state indices drawn from each state's probabilities."""
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
            raise ConfigError(f"shots must be a positive integer, got {shots!r}")
        p = to_host(self.probabilities())
        rng = np.random.default_rng(seed)
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random((self.batch, shots))
        return np.stack([np.searchsorted(cdf[b], u[b], side="right") for b in range(self.batch)])
