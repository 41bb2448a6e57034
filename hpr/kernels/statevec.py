"""The faces of hpr's state-vector kernels (csrc/statevec.c): gates, in place, and measurements on a
batch of B states of N qubits held as one C-contiguous (B, 2**N) complex64 or complex128 array. The
faces own the checks (shapes, qubits, dtypes: ConfigError, raised before the state is touched), then
make one kernel call with the arguments of hpr.kernels.gpu's launcher: a CuPy state runs there
(hpr.kernels.dispatch), a numpy one in the C, with the GIL released, over OpenMP threads when a call
has >= 2**15 amplitudes. pauli_overlap, apply_kq and the compiled programs' faces are CPU only (a
Circuit sends its programs to the GPU itself). The numpy twin of each kernel is in _ref.py. Circuits,
parameter shifts and sampling live above this module.

Conventions (those of Qiskit and Qulacs):
- qubit 0 is the LEAST significant bit of the amplitude index: amplitude i of a state has qubit q in
  bit (i >> q) & 1;
- a two-qubit matrix or diagonal on (q1, q2) has q1 as its LOW bit: its index is b(q1) + 2 b(q2), so
  U = kron(V, W) applies W to q1 and V to q2 (the Kronecker factor of q1 is the RIGHT one);
- Pauli strings are read left to right from qubit 0: pauli[i] acts on qubit i ("ZI" is Z on qubit 0).
  This is the REVERSE of Qiskit's labels, whose rightmost letter is qubit 0.
- matrices are not checked for unitarity (Kraus operators and other non-unitary maps are allowed).
- gate parameters are one shared matrix, (2, 2) / (4, 4) / (2,) / (4,), or one per state, with a
  leading B axis; they are cast to the state's dtype.

Dimensions: B states, N qubits, 2**N amplitudes per state.
Usage: ``s = np.zeros((B, 2**N), np.complex128); s[:, 0] = 1; statevec.apply_1q(s, 0, H)``."""
import operator

import numpy as np

from ..cpu import cpu_kernels, num_threads
from ..device import is_device_array, to_host, xp_of
from ..errors import ConfigError
from .dispatch import device_twin, host_only

_NO_GPU = "pass a numpy state (cupy.asnumpy), or use hpr.quantum.Circuit (its programs run on the GPU)"


def _state(state, writable=True):
    """(B, N, itemsize) of a valid state array (numpy, or CuPy: the face then runs the GPU kernel)."""
    dev = is_device_array(state)
    if not (dev or isinstance(state, np.ndarray)):
        raise ConfigError(f"state must be a numpy array of shape (B, 2**N), not {type(state).__name__}")
    if state.dtype not in (np.complex64, np.complex128):
        raise ConfigError(f"state must be complex64 or complex128, not {state.dtype}")
    if state.ndim != 2:
        raise ConfigError(f"state must have shape (B, 2**N), got {state.shape}")
    m = state.shape[1]
    if m < 1 or m & (m - 1):
        raise ConfigError(f"state's second axis must be a power of two (2**N amplitudes), got {m}")
    if not state.flags.c_contiguous:
        raise ConfigError("state must be C-contiguous (np.ascontiguousarray, then apply in place)")
    if writable and not dev and not state.flags.writeable:
        raise ConfigError("state is read-only; gates work in place")
    return state.shape[0], m.bit_length() - 1, state.dtype.itemsize


def _qubit(q, n, name="qubit"):
    if isinstance(q, (bool, np.bool_)):
        raise ConfigError(f"{name} must be an integer, not {q!r}")
    try:
        q = operator.index(q)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, not {q!r}") from None
    if not 0 <= q < n:
        raise ConfigError(f"{name} {q} outside [0, {n}) for a {n}-qubit state")
    return q


def _distinct(qs, n, names):
    qs = [_qubit(q, n, nm) for q, nm in zip(qs, names)]
    if len(set(qs)) != len(qs):
        raise ConfigError(f"repeated qubits in {dict(zip(names, qs))}; each must be distinct")
    return qs


def _params(u, b, shape, dtype, name, state=None):
    """u cast to the state's dtype, C-contiguous (on the state's GPU for a CuPy state), and how many
    blocks it holds (1 shared or b)."""
    if state is not None and is_device_array(state):
        a, nu = _params(to_host(u), b, shape, dtype, name)
        return xp_of(state).asarray(a), nu
    a = np.asarray(u)
    if a.dtype.kind not in "biufc":
        raise ConfigError(f"{name} must be numeric, not {a.dtype}")
    if a.shape == shape:
        nu = 1
    elif a.shape == (b,) + shape:
        nu = b
    else:
        raise ConfigError(f"{name} must have shape {shape} or {(b,) + shape} (one per state), got {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype), nu


def _controls(controls, n, target):
    if isinstance(controls, (int, np.integer)) and not isinstance(controls, (bool, np.bool_)):
        controls = (controls,)
    try:
        controls = tuple(controls)
    except TypeError:
        raise ConfigError(f"controls must be a tuple of qubits, not {controls!r}") from None
    qs = _distinct(tuple(controls) + (target,), n, [f"controls[{i}]" for i in range(len(controls))] + ["target"])
    mask = 0
    for q in qs[:-1]:
        mask |= 1 << q
    return mask, qs[-1]


def apply_1q(state, q, U):
    """state <- U on qubit q. U: (2, 2) for all states or (B, 2, 2) one per state. Returns state."""
    b, n, _ = _state(state)
    q = _qubit(q, n)
    u, nu = _params(U, b, (2, 2), state.dtype, "U", state)
    return _apply_1q(state, q, u, nu)


def apply_2q(state, q1, q2, U):
    """state <- U on (q1, q2), q1 the low bit of U's index b(q1) + 2 b(q2). U: (4, 4) or (B, 4, 4)."""
    b, n, _ = _state(state)
    q1, q2 = _distinct((q1, q2), n, ("q1", "q2"))
    u, nu = _params(U, b, (4, 4), state.dtype, "U", state)
    return _apply_2q(state, q1, q2, u, nu)


def apply_controlled(state, controls, target, U):
    """state <- U on target where every qubit of `controls` (a tuple of >= 1 qubits) is 1.
    U: (2, 2) or (B, 2, 2)."""
    b, n, _ = _state(state)
    mask, target = _controls(controls, n, target)
    if mask == 0:
        raise ConfigError("apply_controlled needs at least one control qubit; use apply_1q")
    u, nu = _params(U, b, (2, 2), state.dtype, "U", state)
    return _apply_1q(state, target, u, nu, mask)


def apply_diag_1q(state, q, d):
    """amplitude *= d[bit q] (RZ, phase, Z, S, T): d (2,) or (B, 2). Entries equal to 1 are skipped."""
    b, n, _ = _state(state)
    q = _qubit(q, n)
    dd, nu = _params(d, b, (2,), state.dtype, "d", state)
    return _apply_diag(state, q, 0, 1, dd, nu)


def apply_diag_2q(state, q1, q2, d):
    """amplitude *= d[b(q1) + 2 b(q2)] (CZ, RZZ, controlled phase): d (4,) or (B, 4)."""
    b, n, _ = _state(state)
    q1, q2 = _distinct((q1, q2), n, ("q1", "q2"))
    dd, nu = _params(d, b, (4,), state.dtype, "d", state)
    return _apply_diag(state, q1, q2, 2, dd, nu)


def apply_x(state, q, controls=()):
    """X on qubit q where all `controls` are 1 (X, CNOT, Toffoli): a swap of amplitude pairs."""
    b, n, _ = _state(state)
    mask, q = _controls(controls, n, q)
    return _apply_x(state, q, mask)


def apply_swap(state, q1, q2):
    """Exchange qubits q1 and q2."""
    b, n, _ = _state(state)
    q1, q2 = _distinct((q1, q2), n, ("q1", "q2"))
    return _apply_swap(state, q1, q2)


def expval_z(state):
    """<psi_b| Z_q |psi_b> for every state b and qubit q in one pass: (B, N) float64. Not divided by
    the norm: an unnormalised state gives sum_i |psi_i|^2 (1 - 2 bit_q(i))."""
    _state(state, writable=False)
    return _expval_z(state)


def probabilities(state):
    """|psi_b[i]|^2: (B, 2**N), float32 for complex64 states, float64 for complex128."""
    _state(state, writable=False)
    return _probabilities(state)


# ---- the kernel calls, checked above: the arguments of hpr.kernels.gpu's launchers, one for one ----
def _dims(state):
    """(B, N, itemsize) of a state the faces have checked."""
    return state.shape[0], state.shape[1].bit_length() - 1, state.dtype.itemsize


@device_twin(twin="apply_1q")
def _apply_1q(state, q, u, nu, cmask=0):
    """u (nu, 2, 2) (nu = 1: shared) on qubit q where every qubit of the bit mask cmask is 1."""
    b, n, isz = _dims(state)
    cpu_kernels().sv_apply_1q(state, b, n, q, cmask, u, nu, isz, num_threads())
    return state


@device_twin(twin="apply_2q")
def _apply_2q(state, q1, q2, u, nu):
    b, n, isz = _dims(state)
    cpu_kernels().sv_apply_2q(state, b, n, q1, q2, u, nu, isz, num_threads())
    return state


@device_twin(twin="apply_diag")
def _apply_diag(state, q1, q2, m, d, nu):
    """amplitude *= d[b(q1) (+ 2 b(q2) when m = 2)]; d (nu, 2**m). q2 is unused when m = 1."""
    b, n, isz = _dims(state)
    if m == 1:
        cpu_kernels().sv_apply_diag_1q(state, b, n, q1, d, nu, isz, num_threads())
    else:
        cpu_kernels().sv_apply_diag_2q(state, b, n, q1, q2, d, nu, isz, num_threads())
    return state


@device_twin(twin="apply_x")
def _apply_x(state, q, cmask=0):
    b, n, isz = _dims(state)
    cpu_kernels().sv_apply_x(state, b, n, q, cmask, isz, num_threads())
    return state


@device_twin(twin="apply_swap")
def _apply_swap(state, q1, q2):
    b, n, isz = _dims(state)
    cpu_kernels().sv_apply_swap(state, b, n, q1, q2, isz, num_threads())
    return state


@device_twin(twin="expval_z")
def _expval_z(state):
    b, n, isz = _dims(state)
    out = np.empty((b, n), np.float64)  # (B, N)
    cpu_kernels().sv_expval_z(out, state, b, n, isz, num_threads())
    return out


@device_twin(twin="probabilities")
def _probabilities(state):
    b, n, isz = _dims(state)
    out = np.empty(state.shape, state.real.dtype)  # (B, 2**N)
    cpu_kernels().sv_probabilities(out, state, b, n, isz, num_threads())
    return out


def pauli_masks(pauli, n):
    """(xmask, zmask, ny) of a Pauli string whose letter i (I, X, Y or Z) acts on qubit i."""
    if not isinstance(pauli, str):
        raise ConfigError(f"pauli must be a string of I, X, Y, Z, not {type(pauli).__name__}")
    if len(pauli) != n:
        raise ConfigError(f"pauli {pauli!r} has {len(pauli)} letters for a {n}-qubit state")
    x = z = ny = 0
    for i, c in enumerate(pauli):
        if c not in "IXYZ":
            raise ConfigError(f"pauli letter {c!r} at qubit {i}: use I, X, Y or Z")
        if c in "XY":
            x |= 1 << i
        if c in "ZY":
            z |= 1 << i
        ny += c == "Y"
    return x, z, ny


def expval_pauli_xp(state, x, z, ny):
    """expval_pauli by array operations of the state's own module (numpy or cupy): with P = i^ny X^x Z^z,
    (P psi)_j = i^ny (-1)^popcount((j ^ x) & z) psi_(j ^ x); the result is Re sum_j conj(psi_j) (P psi)_j."""
    xp = xp_of(state)
    k = xp.arange(state.shape[1], dtype=np.int64) ^ x
    odd = xp.zeros(k.shape, np.int64)
    for q in range(int(z).bit_length()):
        if z >> q & 1:
            odd ^= (k >> q) & 1
    p_psi = state[:, k] * (1 - 2 * odd).astype(state.real.dtype)
    v = (state.conj() * p_psi).sum(axis=1, dtype=np.complex128) * (1j ** (ny % 4))
    return xp.ascontiguousarray(v.real)


@device_twin(twin=expval_pauli_xp)
def _expval_pauli(state, x, z, ny):
    b, n, isz = _dims(state)
    out = np.empty(b, np.float64)  # (B,)
    cpu_kernels().sv_expval_pauli(out, state, b, n, x, z, ny, isz, num_threads())
    return out


def expval_pauli(state, pauli):
    """Re <psi_b| P |psi_b> for the Pauli string P, pauli[i] acting on qubit i (qubit 0 FIRST, the
    reverse of Qiskit's labels): (B,) float64, one pass. Not divided by the norm. A CuPy state takes
    expval_pauli_xp (array operations on the GPU)."""
    b, n, _ = _state(state, writable=False)
    return _expval_pauli(state, *pauli_masks(pauli, n))


@host_only(_NO_GPU)
def pauli_overlap(lam, state, pauli):
    """<lam_b| P |psi_b> for the Pauli string P (pauli[i] on qubit i, as expval_pauli): (B,) complex128,
    one pass over the two states. The adjoint gradients read Im of it for each rotation's generator."""
    b, n, isz = _state(state, writable=False)
    if lam.shape != state.shape or lam.dtype != state.dtype or not lam.flags.c_contiguous:
        raise ConfigError(f"lam must be a C-contiguous {state.dtype} array of shape {state.shape}")
    x, z, ny = pauli_masks(pauli, n)
    out = np.empty(b, np.complex128)  # (B,)
    cpu_kernels().sv_pauli_overlap(out, lam, state, b, n, x, z, ny, isz, num_threads())
    return out


@host_only(_NO_GPU)
def apply_kq(state, qubits, U):
    """state <- U on 2 to 5 distinct qubits, qubits[0] the LOW bit of U's index (as apply_2q): U
    (2**k, 2**k), shared by the batch. The kernel under fused gate blocks."""
    b, n, isz = _state(state)
    qs = _distinct(tuple(qubits), n, [f"qubits[{i}]" for i in range(len(qubits))])
    k = len(qs)
    if not 2 <= k <= 5:
        raise ConfigError(f"apply_kq takes 2 to 5 qubits, got {k}")
    u, _ = _params(U, b, (1 << k, 1 << k), state.dtype, "U")
    order = sorted(range(k), key=lambda t: qs[t])  # the kernel wants ascending qubits
    if order != list(range(k)):  # axis a of the (2,)*2k tensor is bit k-1-a of the row/column index
        axes = [k - 1 - order[k - 1 - a] for a in range(k)]
        u = np.ascontiguousarray(u.reshape((2,) * 2 * k).transpose(axes + [k + a for a in axes]).reshape(u.shape))
    mask = sum(1 << q for q in qs)
    cpu_kernels().sv_apply_kq(state, b, n, mask, u, isz, num_threads())
    return state


@host_only(_NO_GPU)
def run_program(state, ops, mats, fixed, inputs, weights):
    """state <- a compiled program (hpr.quantum.Circuit.compile; layout in csrc/statevec.h) on every
    state: ops (nops, 8) int64, mats the matrices in the state's complex dtype, fixed / weights float64
    vectors, inputs (B, n_inputs) float64. One call for the whole batch."""
    b, n, isz = _state(state)
    try:
        cpu_kernels().sv_run(state, b, n, ops, len(ops), mats, fixed, inputs, inputs.shape[1], weights, isz,
                             num_threads())
    except ValueError as e:  # checked before any state is touched
        raise ConfigError(f"bad program: {e} (build programs with hpr.quantum.Circuit.compile)") from None
    return state


@host_only(_NO_GPU)
def adjoint_program(state, lam, g, ops, imats, fixed, inputs, weights):
    """The adjoint sweep of a compiled program from its final states (undone in place; lam is scratch
    of the same shape) for the upstream gradient g (B, N) of <Z_q>: (d_inputs (B, n_in), d_weights per
    state (B, n_w)), both float64. One call for the whole batch."""
    b, n, isz = _state(state)
    din = np.zeros(inputs.shape, np.float64)
    dw = np.zeros((b, len(weights)), np.float64)
    try:
        cpu_kernels().sv_adjoint(state, lam, b, n, g, ops, len(ops), imats, fixed, inputs, inputs.shape[1],
                                 weights, len(weights), din, dw, isz, num_threads())
    except ValueError as e:
        raise ConfigError(f"bad program: {e} (build programs with hpr.quantum.Circuit.compile)") from None
    return din, dw
