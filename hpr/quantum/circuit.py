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

from ..errors import ConfigError
from ..kernels import statevec as K
from . import gates as G

GENERATORS = {"rx": "X", "ry": "Y", "rz": "Z", "rzz": "ZZ"}  # trainable: exp(-i theta G / 2)


class Circuit:
    def __init__(self, n_qubits, n_inputs=0, n_weights=0):
        if int(n_qubits) < 1 or int(n_inputs) < 0 or int(n_weights) < 0:
            raise ConfigError("Circuit wants n_qubits >= 1 and non-negative n_inputs, n_weights")
        self.n, self.n_inputs, self.n_weights = int(n_qubits), int(n_inputs), int(n_weights)
        self.ops = []  # (name, qubits, param) with param None, a float, ("in", j) or ("w", j)
        self._saved = None

    def add(self, name, qubits, param=None):
        gate = G.GATES.get(str(name).lower())
        if gate is None:
            G.build(name)  # the error listing the known gates
        qs = [int(q) for q in np.atleast_1d(qubits)]
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
        return self

    # -- applying one gate (or its inverse) to a (B, 2**n) array ---------------------------------
    def _angle(self, param, inputs, weights):
        """The gate's parameters: [] , [fixed numbers], or [an input column / a weight]."""
        if isinstance(param, tuple):
            return [inputs[:, param[1]] if param[0] == "in" else float(weights[param[1]])]
        return [] if param is None else param

    def _apply(self, s, name, qs, params, inverse=False):
        gate = G.GATES[name]
        if inverse and gate.name in GENERATORS:  # exp(-i theta G / 2)^-1 = the same gate at -theta
            _, arr = G.build(name, [-params[0]])
        else:
            _, arr = G.build(name, params)
            if inverse and arr is not None:
                arr = np.conj(arr) if gate.kind.startswith("diag") else np.conj(np.swapaxes(arr, -1, -2))
        arr = None if arr is None else np.ascontiguousarray(arr, s.dtype)
        k = gate.kind
        if k == "1q":
            K.apply_1q(s, qs[0], arr)
        elif k == "2q":
            K.apply_2q(s, qs[0], qs[1], arr)
        elif k == "diag1":
            K.apply_diag_1q(s, qs[0], arr)
        elif k == "diag2":
            K.apply_diag_2q(s, qs[0], qs[1], arr)
        elif k == "x":
            K.apply_x(s, qs[-1], controls=tuple(qs[:-1]))
        elif k == "swap":
            K.apply_swap(s, qs[0], qs[1])
        else:
            K.apply_controlled(s, tuple(qs[:gate.n_controls]), qs[-1], arr)

    def _check(self, inputs, weights, dtype):
        inputs = np.zeros((1, 0)) if inputs is None else np.asarray(inputs, np.float64)
        weights = np.zeros(0) if weights is None else np.asarray(weights, np.float64)
        if inputs.ndim != 2 or inputs.shape[1] != self.n_inputs or inputs.shape[0] < 1:
            raise ConfigError(f"inputs must have shape (batch, {self.n_inputs}), got {inputs.shape}")
        if weights.shape != (self.n_weights,):
            raise ConfigError(f"weights must have shape ({self.n_weights},), got {weights.shape}")
        if np.dtype(dtype) not in (np.dtype(np.complex64), np.dtype(np.complex128)):
            raise ConfigError(f"dtype {dtype}: use complex64 or complex128")
        return inputs, weights

    def run(self, inputs=None, weights=None, dtype=np.complex128):
        """The final states, (B, 2**n), from |0...0>."""
        inputs, weights = self._check(inputs, weights, dtype)
        s = np.zeros((inputs.shape[0], 1 << self.n), dtype)
        s[:, 0] = 1
        for name, qs, p in self.ops:
            self._apply(s, name, qs, self._angle(p, inputs, weights))
        return s

    def forward(self, inputs=None, weights=None, dtype=np.complex128):
        """<Z_i> of every qubit for every state, (B, n); keeps the final states for backward."""
        inputs, weights = self._check(inputs, weights, dtype)
        s = self.run(inputs, weights, dtype)
        self._saved = (s, inputs, weights)
        return K.expval_z(s)

    def backward(self, d_expvals):
        """(d_inputs (B, n_inputs), d_weights (n_weights,)) of sum(d_expvals * <Z>) by one adjoint sweep."""
        if self._saved is None:
            raise ConfigError("backward needs a forward first")
        psi, inputs, weights = self._saved
        self._saved = None
        b = psi.shape[0]
        g = np.asarray(d_expvals, np.float64)
        if g.shape != (b, self.n):
            raise ConfigError(f"d_expvals must have shape ({b}, {self.n}), got {g.shape}")
        idx = np.arange(1 << self.n)
        zsign = 1.0 - 2.0 * ((idx[None, :] >> np.arange(self.n)[:, None]) & 1)  # (n, 2**n): z_i of each basis state
        lam = psi * (g @ zsign).astype(psi.real.dtype)  # O psi, O = sum_i g_i Z_i (diagonal)
        d_in = np.zeros((b, self.n_inputs))
        d_w = np.zeros(self.n_weights)
        for name, qs, p in reversed(self.ops):
            theta = self._angle(p, inputs, weights)
            if isinstance(p, tuple):
                d = self._generator_overlap(lam, psi, GENERATORS[name], qs)  # (B,) Im <lam|G|psi>
                if p[0] == "in":
                    d_in[:, p[1]] += d
                else:
                    d_w[p[1]] += d.sum()
            self._apply(psi, name, qs, theta, inverse=True)
            self._apply(lam, name, qs, theta, inverse=True)
        return d_in, d_w

    def _generator_overlap(self, lam, psi, gen, qs):
        """Im <lam| G |psi> per state, G a Pauli X, Y, Z on qs[0] or Z Z on qs[0], qs[1] (one kernel pass)."""
        letters = ["I"] * self.n
        if gen == "ZZ":
            letters[qs[0]] = letters[qs[1]] = "Z"
        else:
            letters[qs[0]] = gen
        return np.imag(K.pauli_overlap(lam, psi, "".join(letters)))
