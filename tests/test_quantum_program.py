"""Compiled circuits (hpr.quantum.Circuit.compile): one kernel call per batch runs the packed gate
list; fused dense blocks; the dense k-qubit kernel; the adjoint sweep in C. Each against dense
matrices / the gate-by-gate StateVector / finite differences."""
import numpy as np
import pytest

import hpr
from hpr.kernels import _ref
from hpr.kernels import statevec as K
from hpr.quantum import StateVector
from hpr.quantum.circuit import Circuit
from hpr.quantum.gates import GATES

DT = [np.complex64, np.complex128]


def tol(dtype):
    return dict(atol=2e-5, rtol=1e-4) if dtype == np.complex64 else dict(atol=1e-12, rtol=1e-11)


def rand_states(b, n, dtype, seed=0):
    r = np.random.default_rng(seed)
    s = r.standard_normal((b, 1 << n)) + 1j * r.standard_normal((b, 1 << n))
    return (s / np.linalg.norm(s, axis=1, keepdims=True)).astype(dtype)


def rand_unitary(d, seed):
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.standard_normal((d, d)) + 1j * r.standard_normal((d, d)))
    return q


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_apply_kq_against_dense(dtype, k):
    n = 7
    r = np.random.default_rng(k)
    for trial in range(4):
        qs = [int(q) for q in r.permutation(n)[:k]]  # any order: qs[0] is the low bit of U's index
        u = rand_unitary(1 << k, trial)
        s = rand_states(3, n, dtype, trial)
        np.testing.assert_allclose(K.apply_kq(s.copy(), qs, u), _ref.sv_apply(s, u, qs), **tol(dtype))


def random_circuit(n, n_gates, seed, trainable=True):
    """Every named gate at random qubits, with fixed angles, and (trainable) rotations from inputs and
    weights."""
    r = np.random.default_rng(seed)
    names = sorted(set(g.name for g in GATES.values() if g.n_qubits <= n))
    c = Circuit(n, n_inputs=2, n_weights=3)
    for i in range(n_gates):
        name = names[i % len(names)] if i < len(names) else names[r.integers(len(names))]
        g = GATES[name]
        qs = [int(q) for q in r.permutation(n)[:g.n_qubits]]
        p = [float(v) for v in r.uniform(-2, 2, g.n_params)] or None
        if trainable and name in ("rx", "ry", "rz", "rzz") and r.random() < 0.6:
            p = ("in", int(r.integers(2))) if r.random() < 0.5 else ("w", int(r.integers(3)))
        c.add(name, qs, p)
    return c


def gate_by_gate(c, x, w, dtype):
    """The circuit through StateVector.apply, one Python call per gate (and per-state angles)."""
    sv = StateVector(c.n, x.shape[0], dtype)
    for name, qs, p in c.ops:
        if isinstance(p, tuple):
            p = [x[:, p[1]] if p[0] == "in" else float(w[p[1]])]
        sv.apply(name, qs, p)
    return sv.amplitudes


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("fuse", [0, 2, 3, 4, 5])
def test_program_equals_gate_by_gate(dtype, fuse):
    n = 6
    c = random_circuit(n, 80, seed=fuse)
    r = np.random.default_rng(1)
    x, w = r.uniform(-2, 2, (5, 2)), r.uniform(-2, 2, 3)
    want = gate_by_gate(c, x, w, dtype)
    got = c.run(x, w, dtype, fuse=fuse)
    np.testing.assert_allclose(got, want, **tol(dtype))
    if fuse:
        assert len(c.compile(fuse).ops) < len(c.ops)  # the constant runs did merge


def test_program_one_large_state_with_threads():
    c = random_circuit(15, 40, seed=3, trainable=False)
    want = gate_by_gate(c, np.zeros((1, 2)), np.zeros(3), np.complex128)
    old = hpr.cpu.num_threads()
    hpr.cpu.set_num_threads(2)
    try:
        got = c.run(np.zeros((1, 2)), np.zeros(3), fuse=4)
    finally:
        hpr.cpu.set_num_threads(old)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_fusion_of_a_layered_circuit():
    """RY on qubits 0..9 then a CNOT ladder: 20 gates in 5 blocks of at most 4 qubits."""
    c = Circuit(12)
    for q in range(10):
        c.add("ry", [q], 0.1 * (q + 1))
    for q in range(10):
        c.add("cx", [q, q + 1])
    prog = c.compile(4)
    assert len(prog.ops) <= 6
    np.testing.assert_allclose(c.run(fuse=4), c.run(fuse=0), atol=1e-12)


@pytest.mark.parametrize("fuse", [0, 3])
def test_adjoint_in_c_against_finite_differences(fuse):
    n = 5
    c = random_circuit(n, 60, seed=7)
    r = np.random.default_rng(2)
    x, w, g = r.uniform(-2, 2, (3, 2)), r.uniform(-2, 2, 3), r.standard_normal((3, n))

    def loss(x, w):
        return float(np.sum(c.forward(x, w, fuse=fuse) * g))

    c.forward(x, w, fuse=fuse)
    dx, dw = c.backward(g)
    h = 1e-5
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        assert dw[k] == pytest.approx((loss(x, w + e) - loss(x, w - e)) / (2 * h), abs=1e-8)
    for b in range(3):
        for j in range(2):
            e = np.zeros_like(x)
            e[b, j] = h
            assert dx[b, j] == pytest.approx((loss(x + e, w) - loss(x - e, w)) / (2 * h), abs=1e-8)


def test_adjoint_threads_and_precision_agree():
    n = 6
    c = random_circuit(n, 50, seed=11)
    r = np.random.default_rng(3)
    x, w, g = r.uniform(-2, 2, (64, 2)), r.uniform(-2, 2, 3), r.standard_normal((64, n))
    c.forward(x, w)
    ref = c.backward(g)
    old = hpr.cpu.num_threads()
    hpr.cpu.set_num_threads(2)
    try:
        c.forward(x, w)
        two = c.backward(g)
        z32 = c.forward(x, w, np.complex64)
        lo = c.backward(g)
    finally:
        hpr.cpu.set_num_threads(old)
    for a, b in zip(ref, two):
        np.testing.assert_allclose(a, b, atol=1e-12)
    for a, b in zip(ref, lo):
        np.testing.assert_allclose(a, b, atol=2e-4 * max(1, np.abs(b).max()))
    assert z32.dtype == np.float64


def test_bad_programs_are_refused():
    c = random_circuit(4, 10, seed=0, trainable=False)
    p = c.compile(0)
    s = np.zeros((1, 16), np.complex128)
    s[0, 0] = 1
    bad = p.ops.copy()
    bad[0, 1] = 9  # a qubit outside the state
    with pytest.raises(hpr.ConfigError, match="bad program"):
        K.run_program(s, bad, p._mats(s.dtype), p.fixed, np.zeros((1, 0)), np.zeros(0))
    bad = p.ops.copy()
    bad[:, 6] = 10 ** 6  # matrices outside mats
    bad[:, 0] = 0
    with pytest.raises(hpr.ConfigError, match="bad program"):
        K.run_program(s, bad, p._mats(s.dtype), p.fixed, np.zeros((1, 0)), np.zeros(0))
    assert s[0, 0] == 1 and np.count_nonzero(s) == 1  # untouched
    with pytest.raises(hpr.ConfigError, match="2 to 5"):
        K.apply_kq(s, [0], np.eye(2))


@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_runs_on_a_large_state(threads):
    """n = 16 > 14: runs of gates on qubits below 14 go chunk by chunk, the others (a gate on 14 or 15, a
    controlled gate reaching up) split the runs; per-state input angles on two states."""
    n = 16
    c = Circuit(n, n_inputs=1)
    for q in range(10):
        c.add("h", [q])
    for q in range(10):
        c.add("cx", [q, q + 1])
    c.add("ry", [3], ("in", 0)).add("rz", [13], 0.4).add("h", [15]).add("cry", [0, 2], 0.9).add("cx", [14, 1])
    c.add("ccx", [0, 1, 2]).add("swap", [4, 12]).add("u3", [7], (0.1, 0.2, 0.3)).add("rzz", [5, 6], 0.8)
    x = np.array([[0.3], [-1.1]])
    want = gate_by_gate(c, x, np.zeros(0), np.complex128)
    old = hpr.cpu.num_threads()
    hpr.cpu.set_num_threads(threads)
    try:
        got = c.run(x, fuse=0)
    finally:
        hpr.cpu.set_num_threads(old)
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("threads", [1, 2])
def test_real_gates_and_low_cnots_take_their_fast_paths_correctly(dtype, threads):
    """Real 2x2 (shared: the real-matrix paths, qubits 1 and 2 by blocks) on every qubit, and X with one
    control on every ordered pair (low controls and targets: the blend and the 8-amplitude permutation),
    on a batch, against dense matrices; 2 threads take the run paths."""
    n = 6
    s = rand_states(3, n, dtype, 7)
    old = hpr.cpu.num_threads()
    hpr.cpu.set_num_threads(threads)
    try:
        for q in range(n):
            th = 0.3 + q
            u = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            np.testing.assert_allclose(K.apply_1q(s.copy(), q, u), _ref.sv_apply(s, u, [q]), **tol(dtype))
        x = np.array([[0, 1], [1, 0]])
        for c in range(n):
            for t in range(n):
                if c != t:
                    np.testing.assert_allclose(K.apply_x(s.copy(), t, controls=(c,)),
                                               _ref.sv_apply(s, _ref.sv_controlled_op(x, 1), [c, t]), **tol(dtype))
    finally:
        hpr.cpu.set_num_threads(old)
