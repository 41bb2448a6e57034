"""The named gates of OpenQASM 2's qelib1.inc (every gate of Qiskit's qelib1), OpenQASM 3's
stdgates.inc and the other gates Qiskit exports (ecr, r, rzx, ryy, iswap, dcx, cs, ccz, ...), each as
what the state-vector kernels need: a dense 2x2 or 4x4 matrix, a diagonal, a permutation, a
controlled 2x2 (any number of controls), or an exact sequence of other gates. Parameters may be one
number or one value per state of a batch (shape (B,)): the builders broadcast, so a token-dependent
angle is still one kernel call for the whole batch.

The matrices are Qiskit's (qiskit.quantum_info.Operator of the gate of the same name), global phase
included: u, u3 and U are [[c, -e^{i l} s], [e^{i p} s, e^{i (p + l)} c]], rz is diag(e^{-i t/2},
e^{i t/2}) (not qelib1's u1), cu(t, p, l, g) is the controlled e^{i g} u3(t, p, l).

Conventions (fixed once, tested against dense Kronecker products): qubit 0 is the least significant
bit of the amplitude index; a two-qubit gate on (q1, q2) has q1 as the low bit of its 4x4 index; for a
controlled gate the controls come first (cx c, t).

Usage: ``gate, arrays = build("rx", [0.3]); GATES["cx"].n_qubits; matrix("ecr")``"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

PI = np.pi


@dataclass(frozen=True)
class Gate:
    name: str
    n_qubits: int
    n_params: int
    kind: str  # "1q", "2q", "diag1", "diag2", "x", "swap", "controlled", "seq"
    n_controls: int = 0


def _c(*xs):
    return [np.asarray(x, np.complex128) for x in xs]


def _mat2(a, b, c, d):
    """(..., 2, 2) from four broadcastable entries."""
    a, b, c, d = np.broadcast_arrays(*_c(a, b, c, d))
    return np.stack([np.stack([a, b], -1), np.stack([c, d], -1)], -2)


def _cs(t):
    t = np.asarray(t, np.float64)
    return np.cos(t / 2), np.sin(t / 2)


def u3(theta, phi, lam):
    ct, st = _cs(theta)
    phi, lam = np.asarray(phi, np.float64), np.asarray(lam, np.float64)
    return _mat2(ct, -np.exp(1j * lam) * st, np.exp(1j * phi) * st, np.exp(1j * (phi + lam)) * ct)


def rx(t):
    c, s = _cs(t)
    return _mat2(c, -1j * s, -1j * s, c)


def ry(t):
    c, s = _cs(t)
    return _mat2(c, -s, s, c)


def r(theta, phi):
    """Qiskit's RGate: a rotation by theta about cos(phi) X + sin(phi) Y."""
    c, s = _cs(theta)
    phi = np.asarray(phi, np.float64)
    return _mat2(c, -1j * np.exp(-1j * phi) * s, -1j * np.exp(1j * phi) * s, c)


def rz_diag(t):
    t = np.asarray(t, np.float64)
    return np.stack(np.broadcast_arrays(*_c(np.exp(-0.5j * t), np.exp(0.5j * t))), -1)


def phase_diag(lam):
    lam = np.asarray(lam, np.float64)
    return np.stack(np.broadcast_arrays(*_c(np.ones_like(lam), np.exp(1j * lam))), -1)


def cphase_diag(lam):
    """diag(1, 1, 1, e^{i lam}): cp and cu1 (one table entry's function for both)."""
    return _diag4(1, 1, 1, np.exp(1j * np.asarray(lam, np.float64)))


def _diag4(a, b, c, d):
    """(..., 4) diagonal over the index b(q1) + 2 b(q2)."""
    return np.stack(np.broadcast_arrays(*_c(a, b, c, d)), -1)


def _mat4(rows):
    """(..., 4, 4) from 16 broadcastable entries, row-major."""
    flat = np.broadcast_arrays(*_c(*rows))
    return np.stack(flat, -1).reshape(flat[0].shape + (4, 4))


def rxx(t):
    """exp(-i t/2 X X)."""
    c, s = _cs(t)
    z, m = np.zeros_like(c), -1j * s
    return _mat4([c, z, z, m, z, c, m, z, z, m, c, z, m, z, z, c])


def ryy(t):
    """exp(-i t/2 Y Y)."""
    c, s = _cs(t)
    z = np.zeros_like(c)
    return _mat4([c, z, z, 1j * s, z, c, -1j * s, z, z, -1j * s, c, z, 1j * s, z, z, c])


def rzx(t):
    """Qiskit's RZXGate on (q1, q2): exp(-i t/2 X_q2 Z_q1) (Z on the first, the low qubit)."""
    c, s = _cs(t)
    z, m = np.zeros_like(c), -1j * s
    return _mat4([c, z, m, z, z, c, z, -m, m, z, c, z, z, -m, z, c])


def rzz_diag(t):
    e = np.exp(-0.5j * np.asarray(t, np.float64))
    return _diag4(e, np.conj(e), np.conj(e), e)


def xx_minus_yy(theta, beta):
    c, s = _cs(theta)
    beta = np.asarray(beta, np.float64)
    z, o = np.zeros_like(c * beta), np.ones_like(c * beta)
    a, b = -1j * s * np.exp(-1j * beta), -1j * s * np.exp(1j * beta)
    return _mat4([c, z, z, a, z, o, z, z, z, z, o, z, b, z, z, c])


def xx_plus_yy(theta, beta):
    c, s = _cs(theta)
    beta = np.asarray(beta, np.float64)
    z, o = np.zeros_like(c * beta), np.ones_like(c * beta)
    a, b = -1j * s * np.exp(-1j * beta), -1j * s * np.exp(1j * beta)
    return _mat4([o, z, z, z, z, c, a, z, z, b, c, z, z, z, z, o])


_H = np.array([[1, 1], [1, -1]], np.complex128) / np.sqrt(2)
_Y = np.array([[0, -1j], [1j, 0]], np.complex128)
_SX = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], np.complex128) / 2
_SXDG = _SX.conj().T
_ECR = np.array([[0, 1, 0, 1j], [1, 0, -1j, 0], [0, 1j, 0, 1], [-1j, 0, 1, 0]], np.complex128) / np.sqrt(2)
_ISWAP = np.array([[1, 0, 0, 0], [0, 0, 1j, 0], [0, 1j, 0, 0], [0, 0, 0, 1]], np.complex128)


# ---- gates that are exactly a sequence of others (qelib1's definitions, which Qiskit's matrices equal)
def _rccx(a, b, c):
    """Qiskit's RCCXGate (qelib1 rccx): a Toffoli up to relative phases."""
    return [("h", (c,)), ("t", (c,)), ("cx", (b, c)), ("tdg", (c,)), ("cx", (a, c)), ("t", (c,)),
            ("cx", (b, c)), ("tdg", (c,)), ("h", (c,))]


def _rc3x(a, b, c, d):
    """Qiskit's RC3XGate (qelib1 rc3x, Qiskit's name rcccx): a 3-controlled X up to relative phases."""
    return [("h", (d,)), ("t", (d,)), ("cx", (c, d)), ("tdg", (d,)), ("h", (d,)),
            ("cx", (a, d)), ("t", (d,)), ("cx", (b, d)), ("tdg", (d,)), ("cx", (a, d)), ("t", (d,)),
            ("cx", (b, d)), ("tdg", (d,)), ("h", (d,)), ("t", (d,)), ("cx", (c, d)), ("tdg", (d,)),
            ("h", (d,))]


_SEQS = {
    "cswap": lambda a, b, c: [("cx", (c, b)), ("ccx", (a, b, c)), ("cx", (c, b))],
    "ccz": lambda a, b, c: [("h", (c,)), ("ccx", (a, b, c)), ("h", (c,))],
    "dcx": lambda a, b: [("cx", (a, b)), ("cx", (b, a))],
    "rccx": _rccx,
    "rc3x": _rc3x,
}


def expand(name, qubits):
    """The gates of a "seq" gate on the given qubits: [(name, qubits)] (none takes parameters)."""
    return _SEQS[name](*qubits)


def _g(name, nq, npar, kind, nc=0):
    return Gate(name, nq, npar, kind, nc)


# name -> (Gate, builder(params) -> array for the kernel, or None)
_DEFS = {
    "id": (_g("id", 1, 0, "diag1"), lambda: np.ones(2, np.complex128)),
    "u0": (_g("u0", 1, 1, "diag1"), lambda gamma: np.ones(np.shape(gamma) + (2,), np.complex128)),
    # OpenQASM 3's gphase(t): the global phase e^{i t}, applied as a diagonal on any one qubit
    "gphase": (_g("gphase", 1, 1, "diag1"), lambda t: np.exp(1j * np.asarray(t, np.float64))[..., None] * np.ones(2)),
    "h": (_g("h", 1, 0, "1q"), lambda: _H),
    "x": (_g("x", 1, 0, "x"), lambda: None),
    "y": (_g("y", 1, 0, "1q"), lambda: _Y),
    "z": (_g("z", 1, 0, "diag1"), lambda: np.array([1, -1], np.complex128)),
    "s": (_g("s", 1, 0, "diag1"), lambda: np.array([1, 1j], np.complex128)),
    "sdg": (_g("sdg", 1, 0, "diag1"), lambda: np.array([1, -1j], np.complex128)),
    "t": (_g("t", 1, 0, "diag1"), lambda: np.array([1, np.exp(0.25j * PI)], np.complex128)),
    "tdg": (_g("tdg", 1, 0, "diag1"), lambda: np.array([1, np.exp(-0.25j * PI)], np.complex128)),
    "sx": (_g("sx", 1, 0, "1q"), lambda: _SX),
    "sxdg": (_g("sxdg", 1, 0, "1q"), lambda: _SXDG),
    "rx": (_g("rx", 1, 1, "1q"), rx),
    "ry": (_g("ry", 1, 1, "1q"), ry),
    "rz": (_g("rz", 1, 1, "diag1"), rz_diag),
    "r": (_g("r", 1, 2, "1q"), r),
    "u1": (_g("u1", 1, 1, "diag1"), phase_diag),
    "p": (_g("p", 1, 1, "diag1"), phase_diag),
    "u2": (_g("u2", 1, 2, "1q"), lambda phi, lam: u3(PI / 2, phi, lam)),
    "u3": (_g("u3", 1, 3, "1q"), u3),
    "u": (_g("u", 1, 3, "1q"), u3),
    "cx": (_g("cx", 2, 0, "x", 1), lambda: None),
    "cy": (_g("cy", 2, 0, "controlled", 1), lambda: _Y),
    "cz": (_g("cz", 2, 0, "diag2"), lambda: np.array([1, 1, 1, -1], np.complex128)),
    "ch": (_g("ch", 2, 0, "controlled", 1), lambda: _H),
    "csx": (_g("csx", 2, 0, "controlled", 1), lambda: _SX),
    "cs": (_g("cs", 2, 0, "diag2"), lambda: np.array([1, 1, 1, 1j], np.complex128)),
    "csdg": (_g("csdg", 2, 0, "diag2"), lambda: np.array([1, 1, 1, -1j], np.complex128)),
    "crx": (_g("crx", 2, 1, "controlled", 1), rx),
    "cry": (_g("cry", 2, 1, "controlled", 1), ry),
    # crz on (c, t): c is the low bit of the diagonal's index b(c) + 2 b(t)
    "crz": (_g("crz", 2, 1, "diag2"), lambda t: _diag4(1, rz_diag(t)[..., 0], 1, rz_diag(t)[..., 1])),
    "cu1": (_g("cu1", 2, 1, "diag2"), cphase_diag),
    "cp": (_g("cp", 2, 1, "diag2"), cphase_diag),
    "cu3": (_g("cu3", 2, 3, "controlled", 1), u3),
    "cu": (_g("cu", 2, 4, "controlled", 1),
           lambda t, p, lam, gam: np.exp(1j * np.asarray(gam, np.float64))[..., None, None] * u3(t, p, lam)),
    "swap": (_g("swap", 2, 0, "swap"), lambda: None),
    "iswap": (_g("iswap", 2, 0, "2q"), lambda: _ISWAP),
    "ecr": (_g("ecr", 2, 0, "2q"), lambda: _ECR),
    "dcx": (_g("dcx", 2, 0, "seq"), lambda: None),
    "rxx": (_g("rxx", 2, 1, "2q"), rxx),
    "ryy": (_g("ryy", 2, 1, "2q"), ryy),
    "rzx": (_g("rzx", 2, 1, "2q"), rzx),
    "rzz": (_g("rzz", 2, 1, "diag2"), rzz_diag),
    "xx_minus_yy": (_g("xx_minus_yy", 2, 2, "2q"), xx_minus_yy),
    "xx_plus_yy": (_g("xx_plus_yy", 2, 2, "2q"), xx_plus_yy),
    "ccx": (_g("ccx", 3, 0, "x", 2), lambda: None),
    "ccz": (_g("ccz", 3, 0, "seq"), lambda: None),
    "cswap": (_g("cswap", 3, 0, "seq"), lambda: None),
    "rccx": (_g("rccx", 3, 0, "seq"), lambda: None),
    "c3x": (_g("c3x", 4, 0, "x", 3), lambda: None),
    "c3sqrtx": (_g("c3sqrtx", 4, 0, "controlled", 3), lambda: _SX),
    "rc3x": (_g("rc3x", 4, 0, "seq"), lambda: None),
    "c4x": (_g("c4x", 5, 0, "x", 4), lambda: None),
}
# other spellings of the same gates: Qiskit's names (cnot, toffoli, rcccx, c3sx, mcx-like), and
# OpenQASM 3 stdgates.inc's phase / cphase
ALIASES = {"cnot": "cx", "toffoli": "ccx", "rcccx": "rc3x", "c3sx": "c3sqrtx", "phase": "p", "cphase": "cp",
           "fredkin": "cswap"}
for _alias, _name in ALIASES.items():
    _DEFS[_alias] = _DEFS[_name]
GATES = {k: v[0] for k, v in _DEFS.items()}

# the gates of Qiskit's qelib1.inc (OpenQASM 2): a file's own definition of one of these keeps the
# built-in, as Qiskit's reader does for the standard library
QELIB1 = ("u3", "u2", "u1", "cx", "id", "u0", "u", "p", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "rx",
          "ry", "rz", "sx", "sxdg", "cz", "cy", "swap", "ch", "ccx", "cswap", "crx", "cry", "crz", "cu1",
          "cp", "cu3", "csx", "cu", "rxx", "rzz", "rccx", "rc3x", "c3x", "c3sqrtx", "c4x")
# OpenQASM 3's stdgates.inc (the matrices are still Qiskit's, as Qiskit's reader maps them)
STDGATES = ("p", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "cx", "cy", "cz", "cp",
            "crx", "cry", "crz", "ch", "swap", "ccx", "cswap", "cu", "phase", "cphase", "id", "u1", "u2", "u3")


def build(name, params=()):
    """(Gate, array or None) for a named gate with its parameters (numbers or per-state arrays)."""
    key = name.lower()
    if key not in _DEFS:
        raise ConfigError(f"unknown gate {name!r}; hpr knows {', '.join(sorted(set(GATES)))} (or use apply_matrix)")
    gate, fn = _DEFS[key]
    params = list(params)
    if len(params) != gate.n_params:
        raise ConfigError(f"gate {key} takes {gate.n_params} parameter(s), got {len(params)}")
    return gate, fn(*params)


def embed(m, qubits, n):
    """The 2**n x 2**n operator of the k-qubit matrix m acting on `qubits` (qubits[0] is m's low bit)."""
    k = len(qubits)
    t = np.asarray(m, np.complex128).reshape((2,) * (2 * k))  # axis a: bit k-1-a of the row (then column)
    full = np.eye(1 << n, dtype=np.complex128).reshape((2,) * (2 * n))  # axis a: bit n-1-a
    rows = [n - 1 - qubits[k - 1 - a] for a in range(k)]
    moved = np.moveaxis(full, rows, list(range(k)))  # (row bits of the gate's qubits, other row bits, cols)
    out = np.tensordot(t, moved, axes=(list(range(k, 2 * k)), list(range(k))))
    return np.moveaxis(out, list(range(k)), rows).reshape(1 << n, 1 << n)


def matrix(name, params=()):
    """The dense 2**k x 2**k operator of a named gate on k qubits (its first qubit the low bit): what
    the kernels apply, for tests and for small dense fallbacks."""
    gate, arr = build(name, params)
    k, kind = gate.n_qubits, gate.kind
    if kind in ("1q", "2q"):
        return np.array(arr, np.complex128)
    if kind.startswith("diag"):
        return np.diag(arr)
    if kind == "swap":
        return embed(np.eye(4)[[0, 2, 1, 3]], [0, 1], 2)
    if kind == "seq":
        out = np.eye(1 << k, dtype=np.complex128)
        for sub, qs in expand(gate.name, list(range(k))):
            out = embed(matrix(sub), list(qs), k) @ out
        return out
    u = np.array([[0, 1], [1, 0]], np.complex128) if kind == "x" else np.asarray(arr, np.complex128)
    out = np.eye(1 << k, dtype=np.complex128)
    on = (1 << gate.n_controls) - 1  # every control (the low bits) set; the target is the top bit
    tb = 1 << (k - 1)
    for a in range(2):
        for b in range(2):
            out[on + a * tb, on + b * tb] = u[a, b]
    return out
