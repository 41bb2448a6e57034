"""hpr.quantum.StateVector's named gates against dense matrices written out here from their textbook
definitions (Qiskit's conventions: qubit 0 is the low bit; a gate's first qubit is the low bit of its
matrix index; controls first), on every ordered choice of qubits of a 4-qubit register, in both
precisions, with shared and per-state parameters."""
import itertools

import numpy as np
import pytest

import hpr
from hpr.quantum import GATES, StateVector

N = 4
I2 = np.eye(2)
H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
X = np.array([[0, 1], [1, 0]])
Y = np.array([[0, -1j], [1j, 0]])
Z = np.diag([1, -1])


def rx(t):
    return np.array([[np.cos(t / 2), -1j * np.sin(t / 2)], [-1j * np.sin(t / 2), np.cos(t / 2)]])


def ry(t):
    return np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]])


def rz(t):
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def u3(t, p, lam):
    return np.array([[np.cos(t / 2), -np.exp(1j * lam) * np.sin(t / 2)],
                     [np.exp(1j * p) * np.sin(t / 2), np.exp(1j * (p + lam)) * np.cos(t / 2)]])


def controlled(u):
    """4x4 on (control, target), the control the low bit."""
    m = np.eye(4, dtype=complex)
    for a in range(2):
        for b in range(2):
            m[1 + 2 * a, 1 + 2 * b] = u[a, b]
    return m


def ccx():
    m = np.eye(8, dtype=complex)
    m[[3, 7]] = m[[7, 3]]  # controls bits 0 and 1 set: flip bit 2
    return m


def swap():
    m = np.zeros((4, 4))
    for i in range(4):
        m[((i & 1) << 1) | (i >> 1), i] = 1
    return m


def controlled_k(u, k):
    """2**(k+1) x 2**(k+1) on (controls..., target): u where every control (the low bits) is 1."""
    d = 1 << (k + 1)
    m = np.eye(d, dtype=complex)
    on, tb = (1 << k) - 1, 1 << k
    for a in range(2):
        for b in range(2):
            m[on + a * tb, on + b * tb] = u[a, b]
    return m


def kron_pair(a, b):
    """The 4x4 of a on the first (low) qubit and b on the second."""
    return np.kron(b, a)


def expm_pauli2(t, p, q):
    """exp(-i t/2 P_q P_p) for 2x2 Paulis p (first qubit) and q (second)."""
    return np.cos(t / 2) * np.eye(4) - 1j * np.sin(t / 2) * kron_pair(p, q)


def compose(n, seq):
    """The product of (matrix, qubits) factors applied left to right, on n qubits."""
    m = np.eye(1 << n, dtype=complex)
    for u, qs in seq:
        m = embed(np.asarray(u, complex), list(qs), n) @ m
    return m


SXM = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]]) / 2
T = np.diag([1, np.exp(0.25j * np.pi)])
TD = T.conj()


def rccx():
    return compose(3, [(H, [2]), (T, [2]), (controlled(X), [1, 2]), (TD, [2]), (controlled(X), [0, 2]), (T, [2]),
                       (controlled(X), [1, 2]), (TD, [2]), (H, [2])])


def rc3x():
    return compose(4, [(H, [3]), (T, [3]), (controlled(X), [2, 3]), (TD, [3]), (H, [3]), (controlled(X), [0, 3]),
                       (T, [3]), (controlled(X), [1, 3]), (TD, [3]), (controlled(X), [0, 3]), (T, [3]),
                       (controlled(X), [1, 3]), (TD, [3]), (H, [3]), (T, [3]), (controlled(X), [2, 3]), (TD, [3]),
                       (H, [3])])


CSWAP = np.eye(8)[[0, 1, 2, 5, 4, 3, 6, 7]]  # control bit 0: swap bits 1 and 2
ECR = np.array([[0, 1, 0, 1j], [1, 0, -1j, 0], [0, 1j, 0, 1], [-1j, 0, 1, 0]]) / np.sqrt(2)


def xx_yy(t, b, plus):
    c, s = np.cos(t / 2), np.sin(t / 2)
    m = np.eye(4, dtype=complex)
    i, j = (1, 2) if plus else (0, 3)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -1j * s * np.exp(-1j * b), -1j * s * np.exp(1j * b)
    return m


def r_gate(t, p):
    c, s = np.cos(t / 2), np.sin(t / 2)
    return np.array([[c, -1j * np.exp(-1j * p) * s], [-1j * np.exp(1j * p) * s, c]])


REF = {
    "id": lambda: I2, "h": lambda: H, "x": lambda: X, "y": lambda: Y, "z": lambda: Z,
    "s": lambda: np.diag([1, 1j]), "sdg": lambda: np.diag([1, -1j]), "t": lambda: np.diag([1, np.exp(0.25j * np.pi)]),
    "tdg": lambda: np.diag([1, np.exp(-0.25j * np.pi)]), "sx": lambda: np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]]) / 2,
    "rx": rx, "ry": ry, "rz": rz, "u1": lambda lam: np.diag([1, np.exp(1j * lam)]),
    "p": lambda lam: np.diag([1, np.exp(1j * lam)]), "u2": lambda p, lam: u3(np.pi / 2, p, lam), "u3": u3, "u": u3,
    "cx": lambda: controlled(X), "cnot": lambda: controlled(X), "cy": lambda: controlled(Y), "cz": lambda: controlled(Z),
    "ch": lambda: controlled(H), "crx": lambda t: controlled(rx(t)), "cry": lambda t: controlled(ry(t)),
    "crz": lambda t: controlled(rz(t)), "cu1": lambda lam: controlled(np.diag([1, np.exp(1j * lam)])),
    "cp": lambda lam: controlled(np.diag([1, np.exp(1j * lam)])), "cu3": lambda t, p, lam: controlled(u3(t, p, lam)),
    "swap": swap, "rzz": lambda t: np.diag(np.exp(-0.5j * t * np.array([1, -1, -1, 1]))),
    "ccx": ccx, "toffoli": ccx,
    # the rest of qelib1.inc and the gates Qiskit exports, written out from their definitions
    "u0": lambda g: I2, "gphase": lambda t: np.exp(1j * t) * I2, "sxdg": lambda: SXM.conj().T,
    "phase": lambda lam: np.diag([1, np.exp(1j * lam)]), "r": r_gate,
    "csx": lambda: controlled(SXM), "cs": lambda: np.diag([1, 1, 1, 1j]), "csdg": lambda: np.diag([1, 1, 1, -1j]),
    "cphase": lambda lam: controlled(np.diag([1, np.exp(1j * lam)])),
    "cu": lambda t, p, lam, g: controlled(np.exp(1j * g) * u3(t, p, lam)),
    "rxx": lambda t: expm_pauli2(t, X, X), "ryy": lambda t: expm_pauli2(t, Y, Y),
    "rzx": lambda t: expm_pauli2(t, Z, X),  # Z on the first qubit, X on the second
    "ecr": lambda: ECR, "iswap": lambda: np.array([[1, 0, 0, 0], [0, 0, 1j, 0], [0, 1j, 0, 0], [0, 0, 0, 1]]),
    "dcx": lambda: compose(2, [(controlled(X), [0, 1]), (controlled(X), [1, 0])]),
    "xx_minus_yy": lambda t, b: xx_yy(t, b, False), "xx_plus_yy": lambda t, b: xx_yy(t, b, True),
    "ccz": lambda: np.diag([1] * 7 + [-1]), "cswap": lambda: CSWAP, "fredkin": lambda: CSWAP,
    "rccx": rccx, "c3x": lambda: controlled_k(X, 3), "c3sqrtx": lambda: controlled_k(SXM, 3),
    "c3sx": lambda: controlled_k(SXM, 3), "rc3x": rc3x, "rcccx": rc3x,
    "c4x": lambda: controlled_k(X, 4),
}
# Qiskit's class of each gate (quantum_info.Operator of it must equal hpr's matrix, global phase included)
QISKIT = {"id": "IGate", "h": "HGate", "x": "XGate", "y": "YGate", "z": "ZGate", "s": "SGate", "sdg": "SdgGate",
          "t": "TGate", "tdg": "TdgGate", "sx": "SXGate", "sxdg": "SXdgGate", "rx": "RXGate", "ry": "RYGate",
          "rz": "RZGate", "r": "RGate", "u1": "U1Gate", "p": "PhaseGate", "phase": "PhaseGate", "u2": "U2Gate",
          "u3": "U3Gate", "u": "UGate", "cx": "CXGate", "cnot": "CXGate", "cy": "CYGate", "cz": "CZGate",
          "ch": "CHGate", "csx": "CSXGate", "cs": "CSGate", "csdg": "CSdgGate", "crx": "CRXGate", "cry": "CRYGate",
          "crz": "CRZGate", "cu1": "CU1Gate", "cp": "CPhaseGate", "cphase": "CPhaseGate", "cu3": "CU3Gate",
          "cu": "CUGate", "swap": "SwapGate", "iswap": "iSwapGate", "ecr": "ECRGate", "dcx": "DCXGate",
          "rxx": "RXXGate", "ryy": "RYYGate", "rzx": "RZXGate", "rzz": "RZZGate", "xx_minus_yy": "XXMinusYYGate",
          "xx_plus_yy": "XXPlusYYGate", "ccx": "CCXGate", "toffoli": "CCXGate", "ccz": "CCZGate",
          "cswap": "CSwapGate", "fredkin": "CSwapGate", "rccx": "RCCXGate", "c3x": "C3XGate", "c3sqrtx": "C3SXGate",
          "c3sx": "C3SXGate", "rc3x": "RC3XGate", "rcccx": "RC3XGate", "c4x": "C4XGate"}


def embed(m, qubits, n=N):
    """The 2**n x 2**n operator of a k-qubit matrix m on `qubits` (qubits[0] is m's low bit)."""
    dim = 1 << n
    full = np.zeros((dim, dim), complex)
    k = len(qubits)
    rest = [q for q in range(n) if q not in qubits]
    for i in range(dim):
        si = sum(((i >> q) & 1) << j for j, q in enumerate(qubits))
        for sj in range(1 << k):
            j = i
            for b, q in enumerate(qubits):
                j = (j & ~(1 << q)) | (((sj >> b) & 1) << q)
            if all(((i >> r) & 1) == ((j >> r) & 1) for r in rest):
                full[i, j] += m[si, sj]
    return full


def random_states(b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((b, 1 << N)) + 1j * rng.standard_normal((b, 1 << N))
    return (s / np.linalg.norm(s, axis=1, keepdims=True)).astype(dtype)


def tol(dtype):
    return dict(atol=2e-6) if dtype == np.complex64 else dict(atol=1e-13)


def test_the_reference_covers_every_gate():
    assert set(REF) == set(GATES)
    assert set(QISKIT) | {"u0", "gphase"} == set(GATES)


@pytest.mark.parametrize("name", sorted(QISKIT))
def test_gate_equals_qiskit_operator(name):
    """hpr's matrix (what the kernels apply, through StateVector on the basis states) equals
    qiskit.quantum_info.Operator of Qiskit's gate of the same name, global phase included."""
    lib = pytest.importorskip("qiskit.circuit.library")
    from qiskit.quantum_info import Operator

    gate = GATES[name]
    params = list(np.random.default_rng(len(name)).uniform(-3, 3, gate.n_params))
    k = gate.n_qubits
    sv = StateVector(k, batch=1 << k)
    sv.amplitudes[...] = np.eye(1 << k)  # state c = |c>; after the gate, row c = U|c>
    sv.apply(name, list(range(k)), [np.full(1 << k, p) for p in params] if params else None)
    want = Operator(getattr(lib, QISKIT[name])(*params)).data
    np.testing.assert_allclose(sv.amplitudes.T, want, atol=1e-13, err_msg=name)
    np.testing.assert_allclose(REF[name](*params), want, atol=1e-13, err_msg=f"{name}: the written-out reference")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("name", sorted(GATES))
def test_named_gate_against_dense(name, dtype):
    gate = GATES[name]
    rng = np.random.default_rng(hash(name) % 1000)
    params = list(rng.uniform(-3, 3, gate.n_params))
    m = np.asarray(REF[name](*params), complex)
    for qs in itertools.permutations(range(N), gate.n_qubits):
        sv = StateVector(N, batch=3, dtype=dtype)
        s0 = random_states(3, dtype)
        sv.amplitudes[...] = s0
        sv.apply(name, list(qs), params if params else None)
        want = s0.astype(np.complex128) @ embed(m, list(qs)).T
        np.testing.assert_allclose(sv.amplitudes, want, **tol(dtype), err_msg=f"{name} on {qs}")


@pytest.mark.parametrize("name", ["rx", "ry", "rz", "u1", "crx", "crz", "rzz", "cu1"])
def test_per_state_parameters(name):
    """One angle per state of the batch: one call, each state as if alone."""
    gate = GATES[name]
    angles = np.array([0.1, -1.2, 2.5])
    qs = [2, 0, 1][:gate.n_qubits]
    sv = StateVector(N, batch=3)
    s0 = random_states(3, np.complex128, 1)
    sv.amplitudes[...] = s0
    sv.apply(name, qs, angles)
    for b, a in enumerate(angles):
        want = embed(np.asarray(REF[name](a), complex), qs) @ s0[b]
        np.testing.assert_allclose(sv.amplitudes[b], want, atol=1e-13)


def test_apply_matrix_and_measurements():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4)))
    sv = StateVector(N, batch=2)
    s0 = random_states(2, np.complex128, 4)
    sv.amplitudes[...] = s0
    sv.apply_matrix(q, [3, 1])
    want = s0 @ embed(q, [3, 1]).T
    np.testing.assert_allclose(sv.amplitudes, want, atol=1e-13)
    p = np.abs(want) ** 2
    np.testing.assert_allclose(sv.probabilities(), p, atol=1e-13)
    zs = np.array([[np.sum(p[b] * [1 - 2 * ((i >> k) & 1) for i in range(1 << N)]) for k in range(N)] for b in range(2)])
    np.testing.assert_allclose(sv.expval_z(), zs, atol=1e-13)
    shots = sv.sample(20000, seed=1)
    assert shots.shape == (2, 20000)
    freq = np.stack([np.bincount(shots[b], minlength=1 << N) / 20000 for b in range(2)])
    assert np.abs(freq - p).max() < 0.02
    np.testing.assert_array_equal(shots, sv.sample(20000, seed=1))


def test_starts_in_zero_state_and_bell_pair():
    sv = StateVector(2)
    np.testing.assert_array_equal(sv.amplitudes, [[1, 0, 0, 0]])
    sv.apply("h", [0]).apply("cx", [0, 1])
    np.testing.assert_allclose(sv.amplitudes, [[2 ** -0.5, 0, 0, 2 ** -0.5]], atol=1e-15)
    np.testing.assert_allclose(sv.expval("ZZ"), [1.0], atol=1e-15)
    np.testing.assert_allclose(sv.expval("XX"), [1.0], atol=1e-15)
    np.testing.assert_allclose(sv.expval("ZI"), [0.0], atol=1e-15)


@pytest.mark.parametrize("call", [
    lambda sv: sv.apply("nope", [0]),
    lambda sv: sv.apply("h", [4]),
    lambda sv: sv.apply("cx", [1, 1]),
    lambda sv: sv.apply("h", [0, 1]),
    lambda sv: sv.apply("rx", [0]),
    lambda sv: sv.apply("rx", [0], [1.0, 2.0, 3.0]),
    lambda sv: sv.apply("h", [0], 0.5),
    lambda sv: sv.apply_matrix(np.eye(3), [0]),
    lambda sv: sv.apply_matrix(np.eye(2)[None].repeat(5, 0), [0]),
    lambda sv: sv.expval("ZZ"),
    lambda sv: sv.sample(0),
])
def test_bad_input_leaves_the_state_alone(call):
    sv = StateVector(N, batch=2)
    s0 = random_states(2, np.complex128, 5)
    sv.amplitudes[...] = s0
    with pytest.raises(hpr.ConfigError):
        call(sv)
    np.testing.assert_array_equal(sv.amplitudes, s0)


def test_non_unitary_is_refused_with_hpr_check(monkeypatch):
    """HPR_CHECK=1, read once into hpr.config (what hpr.init does), makes apply_matrix check unitarity."""
    monkeypatch.setenv("HPR_CHECK", "1")
    before = hpr.config.current()
    hpr.config.set_current(hpr.config.from_env())
    try:
        sv = StateVector(2)
        with pytest.raises(hpr.ConfigError, match="not unitary"):
            sv.apply_matrix(np.array([[1, 1], [0, 1]]), [0])
    finally:
        hpr.config.set_current(before)


def test_sizes_checked_before_allocating():
    with pytest.raises(hpr.ConfigError, match="GiB"):
        StateVector(36, batch=1)  # 1 TiB of complex128
    with pytest.raises(hpr.ConfigError):
        StateVector(0)
    with pytest.raises(hpr.ConfigError):
        StateVector(3, dtype=np.float64)


@pytest.mark.parametrize("huge_from", [32 << 20, 1024], ids=["default", "mapped"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_state_allocation_aligned_and_exact(huge_from, dtype, monkeypatch):
    """States come from hpr.quantum.statevec.state_zeros: zeroed, writable, C-contiguous, the first
    amplitude on a 64-byte line (page-aligned where a state is its own huge-page mapping: huge_from lowered
    so small states take that path too); gates on them equal the dense reference."""
    from hpr.quantum import statevec as S

    monkeypatch.setattr(S, "STATE_HUGE_FROM", huge_from)
    rng = np.random.default_rng(21)
    for n, b in [(1, 1), (3, 2), (6, 3)]:
        raw = S.state_zeros((b, 1 << n), dtype)
        assert raw.shape == (b, 1 << n) and raw.dtype == dtype and raw.flags.c_contiguous and raw.flags.writeable
        assert raw.ctypes.data % 64 == 0  # a 64-byte line: what the AVX-512 kernels load
        if raw.nbytes >= huge_from:
            assert raw.ctypes.data % 4096 == 0
        np.testing.assert_array_equal(raw, 0)
        sv = StateVector(n, batch=b, dtype=dtype)
        assert sv.state.ctypes.data % 64 == 0
        s0 = rng.standard_normal((b, 1 << n)) + 1j * rng.standard_normal((b, 1 << n))
        s0 = (s0 / np.linalg.norm(s0, axis=1, keepdims=True)).astype(dtype)
        sv.amplitudes[...] = s0
        want = s0.astype(np.complex128)
        for name, qs in [("h", [n - 1]), ("ry", [0]), ("cx", [0, n - 1]), ("t", [n - 1]), ("u3", [n // 2])]:
            if len(set(qs)) < len(qs):
                continue
            gate = GATES[name]
            params = [0.3, -0.7, 1.1][:gate.n_params]
            sv.apply(name, qs, params if params else None)
            want = want @ embed(np.asarray(REF[name](*params), complex), qs, n).T
        np.testing.assert_allclose(sv.amplitudes, want, **tol(dtype), err_msg=f"n = {n}")
