"""The named gates of OpenQASM 2's qelib1 (and Qiskit's spellings), each as what the state-vector
kernels need: a dense 2x2 or 4x4 matrix, a diagonal, a permutation, or a controlled 2x2. Parameters
may be one number or one value per state of a batch (shape (B,)): the builders broadcast, so a
token-dependent angle is still one kernel call for the whole batch.

Conventions (fixed once, tested against dense Kronecker products): qubit 0 is the least significant
bit of the amplitude index; a two-qubit gate on (q1, q2) has q1 as the low bit of its 4x4 index; for a
controlled gate the controls come first (cx c, t).

Usage: ``kind, arrays = build("rx", [0.3]); GATES["cx"].n_qubits``"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Gate:
    name: str
    n_qubits: int
    n_params: int
    kind: str  # "1q", "2q", "diag1", "diag2", "x", "swap", "controlled"
    n_controls: int = 0


def _c(*xs):
    return [np.asarray(x, np.complex128) for x in xs]


def _mat2(a, b, c, d):
    """(..., 2, 2) from four broadcastable entries."""
    a, b, c, d = np.broadcast_arrays(*_c(a, b, c, d))
    return np.stack([np.stack([a, b], -1), np.stack([c, d], -1)], -2)


def u3(theta, phi, lam):
    ct, st = np.cos(np.asarray(theta) / 2), np.sin(np.asarray(theta) / 2)
    return _mat2(ct, -np.exp(1j * np.asarray(lam)) * st, np.exp(1j * np.asarray(phi)) * st,
                 np.exp(1j * (np.asarray(phi) + np.asarray(lam))) * ct)


def rx(t):
    c, s = np.cos(np.asarray(t) / 2), np.sin(np.asarray(t) / 2)
    return _mat2(c, -1j * s, -1j * s, c)


def ry(t):
    c, s = np.cos(np.asarray(t) / 2), np.sin(np.asarray(t) / 2)
    return _mat2(c, -s, s, c)


def rz_diag(t):
    t = np.asarray(t, np.float64)
    return np.stack(np.broadcast_arrays(*_c(np.exp(-0.5j * t), np.exp(0.5j * t))), -1)


def phase_diag(lam):
    lam = np.asarray(lam, np.float64)
    return np.stack(np.broadcast_arrays(*_c(np.ones_like(lam), np.exp(1j * lam))), -1)


_H = np.array([[1, 1], [1, -1]], np.complex128) / np.sqrt(2)
_X = np.array([[0, 1], [1, 0]], np.complex128)
_Y = np.array([[0, -1j], [1j, 0]], np.complex128)
_SX = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], np.complex128) / 2

# name -> (Gate, builder(params) -> array(s) for the kernel)
_DEFS = {
    "id": (Gate("id", 1, 0, "diag1"), lambda: np.ones(2, np.complex128)),
    "h": (Gate("h", 1, 0, "1q"), lambda: _H),
    "x": (Gate("x", 1, 0, "x"), lambda: None),
    "y": (Gate("y", 1, 0, "1q"), lambda: _Y),
    "z": (Gate("z", 1, 0, "diag1"), lambda: np.array([1, -1], np.complex128)),
    "s": (Gate("s", 1, 0, "diag1"), lambda: np.array([1, 1j], np.complex128)),
    "sdg": (Gate("sdg", 1, 0, "diag1"), lambda: np.array([1, -1j], np.complex128)),
    "t": (Gate("t", 1, 0, "diag1"), lambda: np.array([1, np.exp(0.25j * np.pi)], np.complex128)),
    "tdg": (Gate("tdg", 1, 0, "diag1"), lambda: np.array([1, np.exp(-0.25j * np.pi)], np.complex128)),
    "sx": (Gate("sx", 1, 0, "1q"), lambda: _SX),
    "rx": (Gate("rx", 1, 1, "1q"), rx),
    "ry": (Gate("ry", 1, 1, "1q"), ry),
    "rz": (Gate("rz", 1, 1, "diag1"), rz_diag),
    "u1": (Gate("u1", 1, 1, "diag1"), phase_diag),
    "p": (Gate("p", 1, 1, "diag1"), phase_diag),
    "u2": (Gate("u2", 1, 2, "1q"), lambda phi, lam: u3(np.pi / 2, phi, lam)),
    "u3": (Gate("u3", 1, 3, "1q"), u3),
    "u": (Gate("u", 1, 3, "1q"), u3),
    "cx": (Gate("cx", 2, 0, "x", 1), lambda: None),
    "cy": (Gate("cy", 2, 0, "controlled", 1), lambda: _Y),
    "cz": (Gate("cz", 2, 0, "diag2"), lambda: np.array([1, 1, 1, -1], np.complex128)),
    "ch": (Gate("ch", 2, 0, "controlled", 1), lambda: _H),
    "crx": (Gate("crx", 2, 1, "controlled", 1), rx),
    "cry": (Gate("cry", 2, 1, "controlled", 1), ry),
    # crz on (c, t): c is the low bit of the diagonal's index b(c) + 2 b(t)
    "crz": (Gate("crz", 2, 1, "diag2"), lambda t: _diag4(1, rz_diag(t)[..., 0], 1, rz_diag(t)[..., 1])),
    "cu1": (Gate("cu1", 2, 1, "diag2"), lambda lam: _diag4(1, 1, 1, np.exp(1j * np.asarray(lam)))),
    "cp": (Gate("cp", 2, 1, "diag2"), lambda lam: _diag4(1, 1, 1, np.exp(1j * np.asarray(lam)))),
    "cu3": (Gate("cu3", 2, 3, "controlled", 1), u3),
    "swap": (Gate("swap", 2, 0, "swap"), lambda: None),
    "rzz": (Gate("rzz", 2, 1, "diag2"), lambda t: _diag4(np.exp(-0.5j * np.asarray(t)), np.exp(0.5j * np.asarray(t)),
                                                         np.exp(0.5j * np.asarray(t)), np.exp(-0.5j * np.asarray(t)))),
    "ccx": (Gate("ccx", 3, 0, "x", 2), lambda: None),
}
_DEFS["cnot"] = _DEFS["cx"]
_DEFS["toffoli"] = _DEFS["ccx"]
GATES = {k: v[0] for k, v in _DEFS.items()}


def _diag4(a, b, c, d):
    """(..., 4) diagonal over the index b(q1) + 2 b(q2)."""
    return np.stack(np.broadcast_arrays(*_c(a, b, c, d)), -1)


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
