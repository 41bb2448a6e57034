"""The state-vector kernels (hpr.kernels.statevec) against their dense numpy twins (hpr.kernels._ref):
every qubit and ordered qubit pair for N <= 6, shared and per-state matrices, complex64 and complex128,
one and two threads (with states large enough for the threaded paths), and every error case."""
import itertools

import numpy as np
import pytest

from hpr.cpu import cpu_kernels, num_threads, set_num_threads
from hpr.errors import ConfigError
from hpr.kernels import _ref
from hpr.kernels import statevec as sv

DTYPES = [np.complex64, np.complex128]
B = 3  # states per batch


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.complex64 else dict(rtol=1e-12, atol=1e-12)


def rand_state(rng, b, n, dtype):
    s = rng.standard_normal((b, 1 << n)) + 1j * rng.standard_normal((b, 1 << n))
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    return s.astype(dtype)


def rand_unitary(rng, d, batch=None):
    shape = (d, d) if batch is None else (batch, d, d)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    q, r = np.linalg.qr(a)
    ph = np.diagonal(r, axis1=-2, axis2=-1)
    return q * (ph / np.abs(ph))[..., None, :]


def rand_phases(rng, d, batch=None):
    shape = (d,) if batch is None else (batch, d)
    return np.exp(1j * rng.uniform(0, 2 * np.pi, shape))


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = num_threads()
    set_num_threads(request.param)
    yield request.param
    set_num_threads(old)


def test_twins_agree():
    """The index-built dense operator equals the Kronecker product (qubit N-1 leftmost) and the tensor
    contraction: the three twins share one convention."""
    rng = np.random.default_rng(0)
    u = rand_unitary(rng, 2)
    for n in (1, 3):
        for q in range(n):
            np.testing.assert_allclose(_ref.sv_dense(u, [q], n), _ref.sv_kron_1q(u, q, n), atol=1e-14)
    # a 2-qubit op on (q1, q2) = (0, 1) is kron(u_on_q2, u_on_q1) when it factorises
    a, b = rand_unitary(rng, 2), rand_unitary(rng, 2)
    np.testing.assert_allclose(_ref.sv_dense(np.kron(b, a), [0, 1], 2), np.kron(b, a), atol=1e-14)
    np.testing.assert_allclose(_ref.sv_dense(np.kron(b, a), [1, 0], 2), np.kron(a, b), atol=1e-14)
    s = rand_state(rng, 2, 4, np.complex128)
    u4 = rand_unitary(rng, 4)
    for q1, q2 in itertools.permutations(range(4), 2):
        np.testing.assert_allclose(_ref.sv_apply_tensor(s, u4, [q1, q2]), _ref.sv_apply(s, u4, [q1, q2]),
                                   atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("per_state", [False, True], ids=["shared", "per_state"])
def test_apply_1q(dtype, n, per_state):
    rng = np.random.default_rng(n)
    for q in range(n):
        s = rand_state(rng, B, n, dtype)
        u = rand_unitary(rng, 2, B if per_state else None)
        want = _ref.sv_apply(s, u, [q])
        np.testing.assert_allclose(sv.apply_1q(s.copy(), q, u), want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("per_state", [False, True], ids=["shared", "per_state"])
def test_apply_2q(dtype, n, per_state):
    rng = np.random.default_rng(10 + n)
    for q1, q2 in itertools.permutations(range(n), 2):
        s = rand_state(rng, B, n, dtype)
        u = rand_unitary(rng, 4, B if per_state else None)
        np.testing.assert_allclose(sv.apply_2q(s.copy(), q1, q2, u), _ref.sv_apply(s, u, [q1, q2]), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("per_state", [False, True], ids=["shared", "per_state"])
def test_apply_controlled(dtype, n, per_state):
    rng = np.random.default_rng(20 + n)
    for k in (1, 2):
        for qs in itertools.permutations(range(n), k + 1):
            controls, target = qs[:k], qs[k]
            s = rand_state(rng, B, n, dtype)
            u = rand_unitary(rng, 2, B if per_state else None)
            ops = _ref.sv_controlled_op(u, k) if not per_state else [_ref.sv_controlled_op(x, k) for x in u]
            want = _ref.sv_apply(s, ops, list(controls) + [target])
            np.testing.assert_allclose(sv.apply_controlled(s.copy(), controls, target, u), want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("per_state", [False, True], ids=["shared", "per_state"])
def test_apply_diag_1q(dtype, n, per_state):
    rng = np.random.default_rng(30 + n)
    for q in range(n):
        for d in (rand_phases(rng, 2, B if per_state else None), np.array([1, 1j])):  # [1, i]: S, skips
            s = rand_state(rng, B, n, dtype)
            ops = np.array([np.diag(x) for x in d]) if d.ndim == 2 else np.diag(d)
            np.testing.assert_allclose(sv.apply_diag_1q(s.copy(), q, d), _ref.sv_apply(s, ops, [q]), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("per_state", [False, True], ids=["shared", "per_state"])
def test_apply_diag_2q(dtype, n, per_state):
    rng = np.random.default_rng(40 + n)
    for q1, q2 in itertools.permutations(range(n), 2):
        for d in (rand_phases(rng, 4, B if per_state else None), np.array([1, 1, 1, -1])):  # CZ
            s = rand_state(rng, B, n, dtype)
            ops = np.array([np.diag(x) for x in d]) if d.ndim == 2 else np.diag(d)
            np.testing.assert_allclose(sv.apply_diag_2q(s.copy(), q1, q2, d), _ref.sv_apply(s, ops, [q1, q2]),
                                       **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 5])
def test_apply_x_and_swap(dtype, n):
    """Permutations are exact: no arithmetic."""
    rng = np.random.default_rng(50 + n)
    x = _ref.SV_PAULI["X"]
    for k in (0, 1, 2):
        for qs in itertools.permutations(range(n), k + 1):
            controls, target = qs[:k], qs[k]
            s = rand_state(rng, B, n, dtype)
            want = _ref.sv_apply(s, _ref.sv_controlled_op(x, k), list(controls) + [target])
            np.testing.assert_array_equal(sv.apply_x(s.copy(), target, controls), want.astype(dtype))
    swap = np.eye(4)[[0, 2, 1, 3]]
    for q1, q2 in itertools.permutations(range(n), 2):
        s = rand_state(rng, B, n, dtype)
        np.testing.assert_array_equal(sv.apply_swap(s.copy(), q1, q2), _ref.sv_apply(s, swap, [q1, q2]).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_equals_separate(dtype):
    """A per-state matrix applied to the batch equals each state with its own matrix alone."""
    rng = np.random.default_rng(60)
    n = 5
    s = rand_state(rng, B, n, dtype)
    u2, u4, d2, d4 = rand_unitary(rng, 2, B), rand_unitary(rng, 4, B), rand_phases(rng, 2, B), rand_phases(rng, 4, B)
    batch = s.copy()
    sv.apply_1q(batch, 2, u2)
    sv.apply_2q(batch, 4, 1, u4)
    sv.apply_controlled(batch, (0, 3), 1, u2)
    sv.apply_diag_1q(batch, 0, d2)
    sv.apply_diag_2q(batch, 3, 0, d4)
    for b in range(B):
        one = s[b:b + 1].copy()
        sv.apply_1q(one, 2, u2[b])
        sv.apply_2q(one, 4, 1, u4[b])
        sv.apply_controlled(one, (0, 3), 1, u2[b])
        sv.apply_diag_1q(one, 0, d2[b])
        sv.apply_diag_2q(one, 3, 0, d4[b])
        np.testing.assert_array_equal(batch[b:b + 1], one)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_measurements(dtype, n):
    rng = np.random.default_rng(70 + n)
    s = rand_state(rng, B, n, dtype)
    m = dict(rtol=1e-5, atol=1e-6) if dtype == np.complex64 else dict(rtol=1e-12, atol=1e-13)
    p = sv.probabilities(s)
    assert p.dtype == s.real.dtype and p.shape == s.shape
    np.testing.assert_allclose(p, np.abs(s.astype(complex)) ** 2, **m)
    ez = sv.expval_z(s)
    assert ez.shape == (B, n) and ez.dtype == np.float64
    np.testing.assert_allclose(ez, _ref.sv_expval_z(s), **m)
    for q in range(n):  # <Z_q> is also the Pauli string with Z at letter q
        np.testing.assert_allclose(ez[:, q], sv.expval_pauli(s, "I" * q + "Z" + "I" * (n - 1 - q)), **m)
    paulis = ["".join(t) for t in itertools.product("IXYZ", repeat=n)] if n <= 2 else \
        ["".join(rng.choice(list("IXYZ"), n)) for _ in range(40)] + ["Y" * n, "X" * n]
    for pauli in paulis:
        np.testing.assert_allclose(sv.expval_pauli(s, pauli), _ref.sv_expval_pauli(s, pauli), **m)


def test_pauli_order():
    """pauli[i] acts on qubit i: |01> (qubit 0 set, index 1) has <ZI> = -1 and <IZ> = +1."""
    s = np.zeros((1, 4), np.complex128)
    s[0, 1] = 1
    assert sv.expval_pauli(s, "ZI")[0] == -1 and sv.expval_pauli(s, "IZ")[0] == 1
    np.testing.assert_array_equal(sv.expval_z(s), [[-1, 1]])
    plus_i = np.array([[1, 1j]]) / np.sqrt(2)  # Y eigenstate, eigenvalue +1
    np.testing.assert_allclose(sv.expval_pauli(plus_i, "Y"), [1.0], atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [1, 3])
def test_large_threaded(dtype, b, threads):
    """N = 16 (above the 2**15-amplitude OpenMP threshold): every kernel against the tensor twin."""
    rng = np.random.default_rng(80 + b)
    n = 16
    s0 = rand_state(rng, b, n, dtype)
    t = tol(dtype)
    u2, u4 = rand_unitary(rng, 2), rand_unitary(rng, 4)
    for q in (0, 7, 15):
        np.testing.assert_allclose(sv.apply_1q(s0.copy(), q, u2), _ref.sv_apply_tensor(s0, u2, [q]), **t)
        d = rand_phases(rng, 2)
        np.testing.assert_allclose(sv.apply_diag_1q(s0.copy(), q, d), _ref.sv_apply_tensor(s0, np.diag(d), [q]), **t)
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q), _ref.sv_apply_tensor(s0, _ref.SV_PAULI["X"], [q]))
    for q1, q2 in ((0, 15), (15, 0), (3, 9)):
        np.testing.assert_allclose(sv.apply_2q(s0.copy(), q1, q2, u4), _ref.sv_apply_tensor(s0, u4, [q1, q2]), **t)
        d = rand_phases(rng, 4)
        np.testing.assert_allclose(sv.apply_diag_2q(s0.copy(), q1, q2, d),
                                   _ref.sv_apply_tensor(s0, np.diag(d), [q1, q2]), **t)
        np.testing.assert_array_equal(sv.apply_swap(s0.copy(), q1, q2),
                                      _ref.sv_apply_tensor(s0, np.eye(4)[[0, 2, 1, 3]], [q1, q2]))
    np.testing.assert_allclose(sv.apply_controlled(s0.copy(), (2, 14), 0, u2),
                               _ref.sv_apply_tensor(s0, _ref.sv_controlled_op(u2, 2), [2, 14, 0]), **t)
    np.testing.assert_array_equal(sv.apply_x(s0.copy(), 5, (0, 15)),
                                  _ref.sv_apply_tensor(s0, _ref.sv_controlled_op(_ref.SV_PAULI["X"], 2), [0, 15, 5]))
    m = dict(rtol=1e-5, atol=1e-6) if dtype == np.complex64 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sv.expval_z(s0), _ref.sv_expval_z(s0), **m)
    np.testing.assert_allclose(sv.probabilities(s0), np.abs(s0.astype(complex)) ** 2, **m)
    pauli = "XYZI" * 4
    x, z, ny = sv.pauli_masks(pauli, n)
    ps = s0.astype(complex)
    for q, c in enumerate(pauli):
        ps = _ref.sv_apply_tensor(ps, _ref.SV_PAULI[c], [q])
    want = np.real(np.einsum("bi,bi->b", s0.astype(complex).conj(), ps))
    np.testing.assert_allclose(sv.expval_pauli(s0, pauli), want, **m)


def per_state_tensor(s0, ops, q):
    """Each state b with its own 2x2 ops[b] on qubit q, by the tensor twin."""
    return np.concatenate([_ref.sv_apply_tensor(s0[i:i + 1], ops[i], [q]) for i in range(s0.shape[0])])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [1, 3])
def test_low_qubit_paths_large_threaded(dtype, b, threads):
    """The block walks of qubits 1 to 4 (dense, diagonal, X, per state too), the vector form of qubit 0 and
    the low-control X, on N = 16 states (several work items, split over the threads) against the twin."""
    rng = np.random.default_rng(90 + b)
    n = 16
    s0 = rand_state(rng, b, n, dtype)
    t = tol(dtype)
    for q in (0, 1, 2, 3, 4):
        u = rand_unitary(rng, 2, b)  # one per state
        np.testing.assert_allclose(sv.apply_1q(s0.copy(), q, u), per_state_tensor(s0, u, q), **t)
        u = rand_unitary(rng, 2)
        np.testing.assert_allclose(sv.apply_1q(s0.copy(), q, u), _ref.sv_apply_tensor(s0, u, [q]), **t)
        d = rand_phases(rng, 2, b)
        d[0, 0] = 1  # an entry of exactly 1 is skipped
        np.testing.assert_allclose(sv.apply_diag_1q(s0.copy(), q, d),
                                   per_state_tensor(s0, np.stack([np.diag(e) for e in d]), q), **t)
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q), _ref.sv_apply_tensor(s0, _ref.SV_PAULI["X"], [q]))
    cx = _ref.sv_controlled_op(_ref.SV_PAULI["X"], 1)
    for c, q in itertools.permutations(range(3), 2):
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q, (c,)), _ref.sv_apply_tensor(s0, cx, [c, q]))

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,b", [(12, 3), (13, 1), (15, 2)])
def test_high_qubit_paths(dtype, n, b, threads):
    """The streaming walks of the high qubits (2**q >= 2048 amplitudes: the diagonal as whole-half scalings,
    X with every control high as block swaps) on the top qubits, odd n too, against the twin with each
    gate's dense matrix: shared and per-state diagonals, entries exactly 1 (Z, S, T skip a half), real
    entries (Z), CNOT on every ordered high pair, Toffoli with high controls."""
    rng = np.random.default_rng(100 + n)
    s0 = rand_state(rng, b, n, dtype)
    t = tol(dtype)
    high = list(range(11, n))
    for q in high:
        for d in (rand_phases(rng, 2), np.array([1, np.exp(0.25j * np.pi)]), np.array([1j, 1]),
                  np.array([1, -1]), np.array([-1, 1j])):
            np.testing.assert_allclose(sv.apply_diag_1q(s0.copy(), q, d),
                                       _ref.sv_apply_tensor(s0, np.diag(d), [q]), **t)
        d = rand_phases(rng, 2, b)
        d[0, 0] = 1  # an entry of exactly 1 in one state only
        np.testing.assert_allclose(sv.apply_diag_1q(s0.copy(), q, d),
                                   per_state_tensor(s0, np.stack([np.diag(e) for e in d]), q), **t)
    cx = _ref.sv_controlled_op(_ref.SV_PAULI["X"], 1)
    for c, q in itertools.permutations(high, 2):
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q, (c,)), _ref.sv_apply_tensor(s0, cx, [c, q]))
    if len(high) >= 3:
        ccx = _ref.sv_controlled_op(_ref.SV_PAULI["X"], 2)
        c1, c2, q = high[-1], high[0], high[1]
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q, (c1, c2)), _ref.sv_apply_tensor(s0, ccx, [c1, c2, q]))
    np.testing.assert_array_equal(sv.apply_x(s0.copy(), n - 1, (n - 2, 3)),  # one low control: the general walk
                                  _ref.sv_apply_tensor(s0, _ref.sv_controlled_op(_ref.SV_PAULI["X"], 2),
                                                       [n - 2, 3, n - 1]))


@pytest.fixture(params=[64, 1024], ids=["far64B", "far1KiB"])
def far(request):
    """The far-pair threshold (csrc/statevec.c) lowered, so small states take the staged paths of the
    high qubits (>= 256 MiB apart by default)."""
    k = cpu_kernels()
    old = k.sv_far_bytes(request.param)
    yield request.param
    k.sv_far_bytes(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,b", [(11, 2), (12, 1)])
def test_far_pair_paths(dtype, n, b, threads, far):
    """The staged far-pair paths (pairs >= the threshold apart, copied through buffers in cache) against
    the twin: dense 2x2 gates (complex, real, per-state, controlled) on every qubit, X and CNOT on every
    ordered pair (low control with a far target, high pairs' block swaps, the general walk), Toffoli with a
    low control."""
    rng = np.random.default_rng(300 + n)
    s0 = rand_state(rng, b, n, dtype)
    t = tol(dtype)
    for q in range(n):
        for u in (rand_unitary(rng, 2), np.array([[1, 1], [1, -1]]) / np.sqrt(2)):
            np.testing.assert_allclose(sv.apply_1q(s0.copy(), q, u), _ref.sv_apply_tensor(s0, u, [q]), **t)
        u = rand_unitary(rng, 2, b)
        np.testing.assert_allclose(sv.apply_1q(s0.copy(), q, u), per_state_tensor(s0, u, q), **t)
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q), _ref.sv_apply_tensor(s0, _ref.SV_PAULI["X"], [q]))
    cx = _ref.sv_controlled_op(_ref.SV_PAULI["X"], 1)
    for c, q in itertools.permutations([0, 1, 2, 3, 5, n - 3, n - 2, n - 1], 2):  # every CNOT path
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q, (c,)), _ref.sv_apply_tensor(s0, cx, [c, q]))
    u = rand_unitary(rng, 2)
    for c, q in [(0, n - 1), (n - 1, n - 2), (1, n - 1)]:
        np.testing.assert_allclose(sv.apply_controlled(s0.copy(), (c,), q, u),
                                   _ref.sv_apply(s0, _ref.sv_controlled_op(u, 1), [c, q]), **t)
    ccx = _ref.sv_controlled_op(_ref.SV_PAULI["X"], 2)
    for c1, c2, q in [(0, n - 2, n - 1), (1, 5, n - 1), (n - 1, 2, 4)]:
        np.testing.assert_array_equal(sv.apply_x(s0.copy(), q, (c1, c2)), _ref.sv_apply_tensor(s0, ccx, [c1, c2, q]))


def _bad_calls(s, n):
    """(name, call) for every misuse; each must raise ConfigError before touching s."""
    u2, u4 = np.eye(2), np.eye(4)
    x = np.array([[0, 1], [1, 0]])
    return [
        ("1q q out of range", lambda: sv.apply_1q(s, n, x)),
        ("1q negative q", lambda: sv.apply_1q(s, -1, x)),
        ("1q float q", lambda: sv.apply_1q(s, 1.0, x)),
        ("1q bool q", lambda: sv.apply_1q(s, True, x)),
        ("1q wrong U", lambda: sv.apply_1q(s, 0, u4)),
        ("1q per-state wrong B", lambda: sv.apply_1q(s, 0, np.stack([x] * (B + 1)))),
        ("1q string U", lambda: sv.apply_1q(s, 0, np.array([["a", "b"], ["c", "d"]]))),
        ("2q repeated", lambda: sv.apply_2q(s, 1, 1, u4)),
        ("2q out of range", lambda: sv.apply_2q(s, 0, n, u4)),
        ("2q wrong U", lambda: sv.apply_2q(s, 0, 1, u2)),
        ("2q per-state wrong B", lambda: sv.apply_2q(s, 0, 1, np.stack([u4] * (B - 1)))),
        ("ctrl no controls", lambda: sv.apply_controlled(s, (), 0, x)),
        ("ctrl target in controls", lambda: sv.apply_controlled(s, (0, 1), 1, x)),
        ("ctrl repeated controls", lambda: sv.apply_controlled(s, (2, 2), 1, x)),
        ("ctrl control out of range", lambda: sv.apply_controlled(s, (n,), 0, x)),
        ("ctrl wrong U", lambda: sv.apply_controlled(s, (1,), 0, u4)),
        ("diag1 wrong d", lambda: sv.apply_diag_1q(s, 0, np.ones(4))),
        ("diag1 per-state wrong B", lambda: sv.apply_diag_1q(s, 0, np.ones((B + 1, 2)))),
        ("diag1 out of range", lambda: sv.apply_diag_1q(s, n, np.ones(2))),
        ("diag2 repeated", lambda: sv.apply_diag_2q(s, 2, 2, np.ones(4))),
        ("diag2 wrong d", lambda: sv.apply_diag_2q(s, 0, 1, np.ones(2))),
        ("diag2 per-state wrong B", lambda: sv.apply_diag_2q(s, 0, 1, np.ones((B - 1, 4)))),
        ("x out of range", lambda: sv.apply_x(s, n)),
        ("x control = target", lambda: sv.apply_x(s, 0, (0,))),
        ("x repeated controls", lambda: sv.apply_x(s, 0, (1, 1))),
        ("swap repeated", lambda: sv.apply_swap(s, 1, 1)),
        ("swap out of range", lambda: sv.apply_swap(s, 0, n)),
        ("pauli wrong length", lambda: sv.expval_pauli(s, "Z" * (n + 1))),
        ("pauli bad letter", lambda: sv.expval_pauli(s, "A" * n)),
        ("pauli not a string", lambda: sv.expval_pauli(s, ["Z"] * n)),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_errors_leave_state_unchanged(dtype):
    n = 3
    s = rand_state(np.random.default_rng(90), B, n, dtype)
    keep = s.copy()
    for name, call in _bad_calls(s, n):
        with pytest.raises(ConfigError):
            call()
        np.testing.assert_array_equal(s, keep, err_msg=name)


def test_bad_states():
    x = np.array([[0, 1], [1, 0]])
    good = rand_state(np.random.default_rng(91), 2, 3, np.complex128)
    bad = [
        good.real.copy(),                      # not complex
        good.astype(np.complex256) if hasattr(np, "complex256") else good.tolist(),
        good[:, ::2],                          # not contiguous (and 4 amplitudes: still rejected)
        np.asfortranarray(np.concatenate([good, good])),  # F-order
        good[0],                               # 1-D
        np.zeros((2, 6), np.complex128),       # not a power of two
        good.tolist(),                         # not an array
    ]
    for s in bad:
        keep = np.array(s, copy=True)
        for call in (lambda: sv.apply_1q(s, 0, x), lambda: sv.apply_x(s, 0), lambda: sv.expval_z(s),
                     lambda: sv.probabilities(s), lambda: sv.expval_pauli(s, "ZZZ")):
            with pytest.raises(ConfigError):
                call()
        np.testing.assert_array_equal(np.array(s), keep)
    ro = good.copy()
    ro.flags.writeable = False
    with pytest.raises(ConfigError):
        sv.apply_1q(ro, 0, x)
    np.testing.assert_allclose(sv.expval_z(ro), _ref.sv_expval_z(good), atol=1e-12)  # reading is fine
