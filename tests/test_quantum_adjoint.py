"""Adjoint gradients of hpr.quantum.Circuit against finite differences (float64 states) and the
parameter-shift rule, for inputs (per state) and shared weights, with rotations about X, Y, Z and ZZ
mixed with fixed gates of every kind."""
import numpy as np
import pytest

import hpr
from hpr.quantum.circuit import Circuit


def circuit(n=3):
    c = Circuit(n, n_inputs=n, n_weights=2 * n + 1)
    for i in range(n):
        c.add("ry", [i], ("in", i))
    for i in range(n):
        c.add("rx", [i], ("w", i)).add("rz", [i], ("w", n + i))
    for i in range(n):
        c.add("cx", [i, (i + 1) % n])
    c.add("rzz", [0, 2], ("w", 2 * n)).add("h", [1]).add("s", [2]).add("ry", [1], ("in", 2))
    c.add("cz", [1, 2]).add("u3", [0], (0.3, -0.4, 1.1)).add("swap", [0, 2]).add("crx", [2, 1], 0.7).add("ccx", [0, 1, 2])
    c.add("rx", [2], ("w", 0))  # a weight used twice
    return c


def loss(c, x, w, g):
    return float(np.sum(c.forward(x, w) * g))


@pytest.fixture
def problem():
    r = np.random.default_rng(0)
    c = circuit()
    return c, r.uniform(-2, 2, (4, 3)), r.uniform(-2, 2, 7), r.standard_normal((4, 3))


def test_adjoint_against_finite_differences(problem):
    c, x, w, g = problem
    c.forward(x, w)
    dx, dw = c.backward(g)
    h = 1e-5
    for k in range(len(w)):
        e = np.zeros_like(w)
        e[k] = h
        assert dw[k] == pytest.approx((loss(c, x, w + e, g) - loss(c, x, w - e, g)) / (2 * h), abs=1e-9)
    for b in range(x.shape[0]):
        for j in range(x.shape[1]):
            e = np.zeros_like(x)
            e[b, j] = h
            assert dx[b, j] == pytest.approx((loss(c, x + e, w, g) - loss(c, x - e, w, g)) / (2 * h), abs=1e-9)


def test_adjoint_against_parameter_shift():
    """For a parameter used once, d<O>/dtheta = (<O>(theta + pi/2) - <O>(theta - pi/2)) / 2 exactly."""
    r = np.random.default_rng(1)
    c = Circuit(2, n_inputs=0, n_weights=3)
    c.add("h", [0]).add("ry", [0], ("w", 0)).add("cx", [0, 1]).add("rx", [1], ("w", 1)).add("rzz", [0, 1], ("w", 2))
    w = r.uniform(-2, 2, 3)
    g = r.standard_normal((1, 2))
    c.forward(None, w)
    _, dw = c.backward(g)
    for k in range(3):
        e = np.zeros(3)
        e[k] = np.pi / 2
        shift = (loss(c, None, w + e, g) - loss(c, None, w - e, g)) / 2
        assert dw[k] == pytest.approx(shift, abs=1e-12)


def test_complex64_follows_complex128(problem):
    c, x, w, g = problem
    z64 = c.forward(x, w, np.complex64)
    dx64, dw64 = c.backward(g)
    z128 = c.forward(x, w)
    dx128, dw128 = c.backward(g)
    np.testing.assert_allclose(z64, z128, atol=1e-5)
    np.testing.assert_allclose(dw64, dw128, atol=1e-4)
    np.testing.assert_allclose(dx64, dx128, atol=1e-4)


def test_bad_circuits_and_inputs():
    c = Circuit(2, n_inputs=1, n_weights=1)
    with pytest.raises(hpr.ConfigError):
        c.add("h", [2])
    with pytest.raises(hpr.ConfigError):
        c.add("cx", [0, 0])
    with pytest.raises(hpr.ConfigError):
        c.add("h", [0], ("w", 0))  # a fixed gate cannot take a weight
    with pytest.raises(hpr.ConfigError):
        c.add("rx", [0], ("w", 1))
    with pytest.raises(hpr.ConfigError):
        c.add("u3", [0], 0.1)  # u3 takes three
    c.add("rx", [0], ("in", 0))
    with pytest.raises(hpr.ConfigError):
        c.forward(np.zeros((3, 2)), np.zeros(1))
    with pytest.raises(hpr.ConfigError):
        c.backward(np.zeros((3, 2)))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_pauli_overlap_kernel_against_dense(dtype):
    """<lam| P |psi> for every 3-qubit Pauli string (pauli[i] on qubit i), two different states."""
    import itertools

    from hpr.kernels import statevec as K

    r = np.random.default_rng(7)
    lam = (r.standard_normal((2, 8)) + 1j * r.standard_normal((2, 8))).astype(dtype)
    psi = (r.standard_normal((2, 8)) + 1j * r.standard_normal((2, 8))).astype(dtype)
    P = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]), "Z": np.diag([1, -1])}
    for s in map("".join, itertools.product("IXYZ", repeat=3)):
        m = np.kron(P[s[2]], np.kron(P[s[1]], P[s[0]]))  # qubit 0 is the low bit: rightmost factor
        want = np.einsum("bi,ij,bj->b", np.conj(lam.astype(complex)), m, psi.astype(complex))
        np.testing.assert_allclose(K.pauli_overlap(lam, psi, s), want, atol=1e-5 if dtype == np.complex64 else 1e-13)
