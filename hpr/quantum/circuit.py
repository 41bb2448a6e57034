"""Parameterised circuits over a batch of states, and their gradients by the adjoint method (Jones &
Gacon 2020): one forward pass keeps only the final states; one backward sweep walks the gates in
reverse, undoing each on the state and on the adjoint state, and reads every parameter's derivative
from an inner product. The upstream gradient g (B, n) of the outputs <Z_i> folds into one diagonal
observable O = sum_i g_i Z_i per state, so a whole batch costs one sweep, not one per output.

For a rotation U(theta) = exp(-i theta G / 2) (G = X, Y, Z or Z Z) at position k,
d<O>/dtheta = Im <lambda_k| G |psi_k>, with psi_k the state after gate k and lambda_k = U_N^+ ...
U_{k+1}^+ O psi_N. A parameter is a number, an input (one value per state: ("in", j)) or a shared
weight (("w", j)); gradients are returned for inputs (B, n_in) and weights (n_w,), summed over the
batch for weights.

Usage: ``c = Circuit(4, n_inputs=4, n_weights=8); c.add("ry", [0], ("in", 0)); z = c.forward(x, w)``"""
import numpy as np

from ..device import is_device_array, xp_of
from ..errors import ConfigError
from ..kernels import gpu
from ..kernels import statevec as K
from . import gates as G
from .statevec import state_zeros

GENERATORS = {"rx": "X", "ry": "Y", "rz": "Z", "rzz": "ZZ"}  # trainable: exp(-i theta G / 2)


def _int(v, what):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ConfigError(f"{what} must be an integer, got {v!r}")
    return int(v)


class Circuit:
    def __init__(self, n_qubits, n_inputs=0, n_weights=0):
        n_qubits, n_inputs = _int(n_qubits, "Circuit n_qubits"), _int(n_inputs, "Circuit n_inputs")
        n_weights = _int(n_weights, "Circuit n_weights")
        if n_qubits < 1 or n_inputs < 0 or n_weights < 0:
            raise ConfigError("Circuit wants n_qubits >= 1 and non-negative n_inputs, n_weights")
        self.n, self.n_inputs, self.n_weights = int(n_qubits), int(n_inputs), int(n_weights)
        self.ops = []  # (name, qubits, param) with param None, a float, ("in", j) or ("w", j)
        self._saved = None
        self._programs = {}

    def add(self, name, qubits, param=None):
        gate = G.GATES.get(str(name).lower())
        if gate is None:
            G.build(name)  # the error listing the known gates
        qs = []
        for q in np.atleast_1d(np.asarray(qubits, dtype=object)):
            if isinstance(q, (bool, np.bool_)) or not isinstance(q, (int, np.integer)):
                raise ConfigError(f"{name}: qubit {q!r} is not an integer; give qubit indices 0..{self.n - 1}")
            qs.append(int(q))
        if len(qs) != gate.n_qubits or len(set(qs)) != len(qs) or not all(0 <= q < self.n for q in qs):
            raise ConfigError(f"{name} on {qs}: needs {gate.n_qubits} distinct qubit(s) in 0..{self.n - 1}")
        ref = isinstance(param, tuple) and len(param) == 2 and isinstance(param[0], str)
        if not ref and param is not None:  # fixed numbers
            param = [float(v) for v in np.atleast_1d(param)]
            if len(param) != gate.n_params:
                raise ConfigError(f"{name} takes {gate.n_params} parameter(s), got {len(param)}")
        elif param is None and gate.n_params:
            raise ConfigError(f"{name} needs {gate.n_params} parameter(s)")
        if ref:
            kind, j = param
            lim = {"in": self.n_inputs, "w": self.n_weights}.get(kind)
            if lim is None or not 0 <= j < lim:
                raise ConfigError(f"{name}: parameter {param!r} must be ('in', 0..{self.n_inputs - 1}) or "
                                  f"('w', 0..{self.n_weights - 1})")
            if gate.name not in GENERATORS:
                raise ConfigError(f"{name}: only {', '.join(GENERATORS)} can take inputs or weights")
        self.ops.append((gate.name, qs, param))
        self._programs = {}
        return self

    # -- the packed program: what the kernels run in one call per batch --------------------------
    def compile(self, fuse=0):
        """The circuit as a Program (ops, matrices and their inverses; layout in csrc/statevec.h),
        cached until the next add. fuse=k (2..5) merges runs of constant gates on at most k qubits into
        one dense block each. Off by default: the kernels already apply a run of gates on low qubits
        chunk by chunk in cache, which measured faster on this CPU than dense blocks (python -m
        hpr.bench quantum-kernels prints both)."""
        fuse = min(int(fuse or 0), self.n, 5)
        key = fuse if fuse >= 2 else 0
        if self._programs.get(key) is None:
            self._programs[key] = Program.build(self.n, self.ops, key)
        return self._programs[key]

    def _check(self, inputs, weights, dtype):
        """(inputs, weights) as float64 arrays, on the GPU when either came as a CuPy array (the states
        then live and run there)."""
        xp = gpu.cupy() if is_device_array(inputs) or is_device_array(weights) else np
        inputs = xp.zeros((1, 0)) if inputs is None else xp.asarray(inputs, np.float64)
        weights = xp.zeros(0) if weights is None else xp.asarray(weights, np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs or inputs.shape[0] < 1:
            raise ConfigError(f"inputs must have shape (batch, {self.n_inputs}), got {inputs.shape}")
        if weights.shape != (self.n_weights,):
            raise ConfigError(f"weights must have shape ({self.n_weights},), got {weights.shape}")
        if np.dtype(dtype) not in (np.dtype(np.complex64), np.dtype(np.complex128)):
            raise ConfigError(f"dtype {dtype}: use complex64 or complex128")
        return inputs, weights

    def _final(self, inputs, weights, dtype, fuse):
        """(program, final states (B, 2**n)) from |0...0>: one kernel call for the whole batch."""
        inputs, weights = self._check(inputs, weights, dtype)
        prog = self.compile(fuse)
        s = state_zeros((inputs.shape[0], 1 << self.n), dtype, xp_of(inputs))  # (B, 2**n)
        s[:, 0] = 1
        prog.run(s, inputs, weights)
        return prog, s, inputs, weights

    def run(self, inputs=None, weights=None, dtype=np.complex128, fuse=0):
        """The final states, (B, 2**n), from |0...0>: one kernel call for the whole batch."""
        return self._final(inputs, weights, dtype, fuse)[1]

    def forward(self, inputs=None, weights=None, dtype=np.complex128, fuse=0):
        """<Z_i> of every qubit for every state, (B, n); keeps the final states for backward. fuse: as
        compile (backward undoes fused blocks with their inverses)."""
        self._saved = self._final(inputs, weights, dtype, fuse)  # backward undoes the same program
        return K.expval_z(self._saved[1])

    def backward(self, d_expvals):
        """(d_inputs (B, n_inputs), d_weights (n_weights,)) of sum(d_expvals * <Z>) by one adjoint sweep
        (one kernel call for the batch)."""
        if self._saved is None:
            raise ConfigError("backward needs a forward first")
        prog, psi, inputs, weights = self._saved
        b = psi.shape[0]
        xp = xp_of(psi)
        g = xp.asarray(d_expvals, np.float64)
        if g.shape != (b, self.n):
            raise ConfigError(f"d_expvals must have shape ({b}, {self.n}), got {g.shape}")
        self._saved = None
        d_in, d_w = prog.adjoint(psi, xp.ascontiguousarray(g), inputs, weights)
        return d_in, d_w.sum(0)


OPS = {"1q": 0, "2q": 1, "diag1": 2, "diag2": 3, "x": 4, "swap": 5, "kq": 6, "rx": 7, "ry": 8, "rz": 9, "rzz": 10}
SRC = {None: 0, "fixed": 1, "in": 2, "w": 3}


class Program:
    """A circuit packed for the kernels: ops (nops, 8) int64 rows {kind, q0, q1, mask, src, idx, off, 0},
    the constant matrices (complex128, flat) and their inverses at the same offsets, and the fixed
    rotation angles. Rotations read their angle from fixed / inputs / weights at run time; every other
    gate is a constant matrix (or a move). With fuse = k >= 2, runs of constant gates on at most k
    qubits become one dense block (gates on other qubits commute past, so a gate may join an earlier
    block that no later block touches)."""

    def __init__(self, n, rows, mats, imats, fixed):
        self.n = n
        self.ops = np.array(rows, np.int64).reshape(-1, 8)
        self.mats = np.array(mats, np.complex128)
        self.imats = np.array(imats, np.complex128)
        self.fixed = np.array(fixed if fixed else [0.0], np.float64)
        self._cast = {}

    @classmethod
    def build(cls, n, ops, fuse=0):
        rows, mats, imats, fixed = [], [], [], []

        def put(kind, q0=0, q1=0, mask=0, src=None, idx=0, m=None, im=None):
            off = 0
            if m is not None:
                off = 2 * len(mats)  # in REALs
                mats.extend(np.ravel(m))
                imats.extend(np.ravel(im))
            rows.append([OPS[kind], q0, q1, mask, SRC[src], idx, off, 0])

        ops = [sub for op in ops for sub in _unfold(op)]
        for item in (_fuse(ops, fuse) if fuse >= 2 else ops):
            if item[0] == "block":
                _, qs, m = item
                if len(qs) == 1:
                    put("1q", qs[0], m=m, im=m.conj().T)
                elif len(qs) == 2:
                    put("2q", qs[0], qs[1], m=m, im=m.conj().T)
                else:
                    put("kq", qs[0], qs[1], sum(1 << q for q in qs), m=m, im=m.conj().T)
                continue
            name, qs, p = item
            gate = G.GATES[name]
            q1 = qs[1] if len(qs) > 1 else 0
            if name in GENERATORS and p is not None:
                if isinstance(p, tuple):
                    put(name, qs[0], q1, src=p[0], idx=p[1])
                else:
                    fixed.append(p[0])
                    put(name, qs[0], q1, src="fixed", idx=len(fixed) - 1)
                continue
            _, arr = G.build(name, [] if p is None else p)
            k = gate.kind
            if k in ("x", "controlled"):
                mask = sum(1 << q for q in qs[:gate.n_controls])
                if k == "x":
                    put("x", qs[-1], 0, mask)
                else:
                    put("1q", qs[-1], 0, mask, m=arr, im=arr.conj().T)
            elif k == "swap":
                put("swap", qs[0], q1)
            elif k.startswith("diag"):
                put(k, qs[0], q1, m=arr, im=arr.conj())
            else:
                put(k, qs[0], q1, m=arr, im=arr.conj().T)
        return cls(n, rows, mats, imats, fixed)

    def _mats(self, dtype, inverse=False):
        key = (np.dtype(dtype), inverse)
        if key not in self._cast:
            m = self.imats if inverse else self.mats
            self._cast[key] = np.ascontiguousarray(m if m.size else np.zeros(1), dtype)
        return self._cast[key]

    def _on_device(self, dtype, inverse=False):
        """(ops, matrices, fixed angles) as CuPy arrays on the current GPU, copied once per dtype."""
        cp = gpu.cupy()
        key = ("gpu", cp.cuda.Device().id, np.dtype(dtype), inverse)
        if key not in self._cast:
            self._cast[key] = (cp.asarray(self.ops), cp.asarray(self._mats(dtype, inverse)), cp.asarray(self.fixed))
        return self._cast[key]

    def run(self, state, inputs, weights):
        """state (B, 2**n) <- the program, in place (on the GPU when state is a CuPy array: one launch,
        a block per state in shared memory)."""
        if is_device_array(state):
            cp = gpu.cupy()
            ops, mats, fixed = self._on_device(state.dtype)
            return gpu.run_program(state, ops, mats, fixed, cp.ascontiguousarray(inputs, dtype=cp.float64),
                                   cp.ascontiguousarray(weights, dtype=cp.float64))
        K.run_program(state, self.ops, self._mats(state.dtype), self.fixed, np.ascontiguousarray(inputs),
                      np.ascontiguousarray(weights))
        return state

    def adjoint(self, psi, g, inputs, weights):
        """(d_inputs (B, n_in), d_weights per state (B, n_w)) by one adjoint sweep from the final states
        psi (undone in place)."""
        if is_device_array(psi):
            cp = gpu.cupy()
            ops, imats, fixed = self._on_device(psi.dtype, True)
            return gpu.adjoint_program(psi, g, ops, imats, fixed, cp.ascontiguousarray(inputs, dtype=cp.float64),
                                       cp.ascontiguousarray(weights, dtype=cp.float64))
        lam = state_zeros(psi.shape, psi.dtype)  # (B, 2**n) scratch
        return K.adjoint_program(psi, lam, g, self.ops, self._mats(psi.dtype, True), self.fixed,
                                 np.ascontiguousarray(inputs), np.ascontiguousarray(weights))


def _unfold(op):
    """[op], or the gates a "seq" gate (cswap, rccx, ...) is made of."""
    if G.GATES[op[0]].kind != "seq":
        return [op]
    return [(g, list(q), None) for g, q in G.expand(op[0], op[1])]


def _fuse(ops, kmax):
    """ops regrouped into ("block", sorted qubits, dense matrix) items and trainable ops left alone."""
    blocks = []  # [qubit set, [ops], open]
    for op in ops:
        name, qs, p = op
        qset = set(qs)
        if isinstance(p, tuple):  # a trainable rotation stays its own op
            blocks.append([qset, [op], False])
            continue
        last = max((i for i, b in enumerate(blocks) if b[0] & qset), default=0)
        for b in blocks[last:]:  # blocks[last] is the latest touching the gate's qubits; later ones commute
            if b[2] and len(b[0] | qset) <= kmax:
                b[0] |= qset
                b[1].append(op)
                break
        else:
            blocks.append([qset, [op], True])
    out = []
    for qset, members, open_ in blocks:
        if not open_ or len(members) == 1:
            out.extend(members)
            continue
        qs = sorted(qset)
        local = {q: i for i, q in enumerate(qs)}
        k = len(qs)
        sub = Program.build(k, [(nm, [local[q] for q in gq], p) for nm, gq, p in members])
        basis = np.eye(1 << k, dtype=np.complex128)  # row c = |c>; after the gates row c = U|c>
        sub.run(basis, np.zeros((1 << k, 0)), np.zeros(0))
        out.append(("block", qs, np.ascontiguousarray(basis.T)))
    return out
