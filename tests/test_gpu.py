"""The GPU kernels (hpr/kernels/cuda, launched by hpr/kernels/gpu.py) against their numpy twins
(hpr/kernels/_ref.py) and the CPU kernels, both precisions, odd shapes. Skipped, with the reason, where
CuPy or a GPU is missing; test_cuda_sources.py checks the sources compile without one."""
import numpy as np
import pytest

from hpr.kernels import _ref
from hpr.kernels import gpu


# cudaErrorNoDevice: the driver answers, there is no GPU; anything else from a CuPy that imports is a
# broken driver or install, which must fail here rather than pass as "no GPU"
NO_DEVICE = 100


def _device():
    """(cupy, None) with a working GPU; (None, why) where there is none (a skip); (None, "broken: ...")
    where CuPy imports but the device does not answer (every test then fails with that line)."""
    try:
        import cupy as cp
    except ImportError as e:
        return None, f"no CuPy here ({e}; pip install cupy-cuda12x on a GPU node)"
    try:
        if cp.cuda.runtime.getDeviceCount() == 0:
            return None, "CuPy is installed but this machine has no GPU"
        if int(cp.arange(10).sum()) != 45:  # a kernel launch and a copy back: the driver works
            return None, "broken: a sum on the GPU came back wrong"
    except Exception as e:  # noqa: BLE001 - CuPy raises CUDARuntimeError, CompileException, OSError ...
        if getattr(e, "status", None) == NO_DEVICE:
            return None, f"CuPy is installed but this machine has no GPU ({e})"
        return None, f"broken: CuPy imports but the GPU does not answer: {type(e).__name__}: {e}"
    return cp, None


cp, WHY = _device()
if WHY is not None and WHY.startswith("broken:"):
    @pytest.fixture(autouse=True)
    def _broken_gpu():
        pytest.fail(WHY)
else:
    pytestmark = pytest.mark.skipif(cp is None, reason=WHY or "")
FL = [np.float32, np.float64]


def tol(dt):
    return dict(rtol=2e-4, atol=2e-5) if dt in (np.float32, np.complex64) else dict(rtol=1e-10, atol=1e-12)


def d(a):
    return cp.asarray(a)


def h(a):
    return cp.asnumpy(a)


def rnd(*shape, dt=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dt)


@pytest.mark.parametrize("dt", FL)
def test_layernorm(dt):
    x, w, b, dy = rnd(37, 131, dt=dt), rnd(131, dt=dt, seed=1), rnd(131, dt=dt, seed=2), rnd(37, 131, dt=dt, seed=3)
    out, mean, rstd = cp.empty((37, 131), dt), cp.empty(37, dt), cp.empty(37, dt)
    gpu.layernorm_forward(d(x), d(w), d(b), out, mean, rstd)
    np.testing.assert_allclose(h(out), _ref.layernorm_forward(x, w, b)[0], **tol(dt))
    dx, dw, db = cp.zeros((37, 131), dt), cp.zeros(131, dt), cp.zeros(131, dt)
    gpu.layernorm_backward(d(dy), d(x), d(w), mean, rstd, dx, dw, db)
    rdx, rdw, rdb = _ref.layernorm_backward(dy, x, w, h(mean), h(rstd))
    for got, want in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(h(got), want, **tol(dt))


@pytest.mark.parametrize("dt", FL)
def test_softmax_causal(dt):
    pre, datt = rnd(3, 19, 19, dt=dt), rnd(3, 19, 19, dt=dt, seed=1)
    att = cp.empty_like(d(pre))
    gpu.softmax_causal_forward(d(pre), 0.3, att)
    np.testing.assert_allclose(h(att), _ref.softmax_causal_forward(pre, 0.3), **tol(dt))
    out = cp.empty_like(att)
    gpu.softmax_causal_backward(d(datt), att, 0.3, out)
    np.testing.assert_allclose(h(out), _ref.softmax_causal_backward(datt, h(att), 0.3), **tol(dt))


@pytest.mark.parametrize("dt", FL)
def test_gelu(dt):
    x, bias, dy = rnd(29, 67, dt=dt), rnd(67, dt=dt, seed=1), rnd(29, 67, dt=dt, seed=2)
    xd, out = d(x), cp.empty((29, 67), dt)
    gpu.gelu_forward(xd, out, d(bias))
    np.testing.assert_allclose(h(xd), x + bias, **tol(dt))  # the bias is added in place, as on the CPU
    np.testing.assert_allclose(h(out), _ref.gelu_forward(x + bias), **tol(dt))
    dx = cp.empty_like(xd)
    gpu.gelu_backward(d(dy), xd, dx)
    np.testing.assert_allclose(h(dx), _ref.gelu_backward(dy, x + bias), **tol(dt))


@pytest.mark.parametrize("dt", FL)
def test_crossentropy_and_bad_targets(dt):
    import hpr

    logits, t = rnd(23, 301, dt=dt), np.random.default_rng(1).integers(0, 301, 23).astype(np.int32)
    losses, dl = cp.empty(23, dt), cp.empty((23, 301), dt)
    gpu.crossentropy(d(logits), d(t), losses, dl, dscale=0.5)
    rl, rd = _ref.crossentropy(logits, t, 0.5)
    np.testing.assert_allclose(h(losses), rl, **tol(dt))
    np.testing.assert_allclose(h(dl), rd, **tol(dt))
    t[4] = 301
    with pytest.raises(hpr.ConfigError, match="outside the vocabulary"):
        gpu.crossentropy(d(logits), d(t), losses)


@pytest.mark.parametrize("dt", FL)
def test_embedding_bias_adamw_sumsq(dt):
    tok = np.random.default_rng(0).integers(0, 50, (3, 7)).astype(np.int32)
    wte, wpe, dy = rnd(50, 24, dt=dt), rnd(7, 24, dt=dt, seed=1), rnd(3, 7, 24, dt=dt, seed=2)
    out = cp.empty((3, 7, 24), dt)
    gpu.embedding_forward(d(tok), d(wte), d(wpe), out)
    np.testing.assert_allclose(h(out), _ref.embedding_forward(tok, wte, wpe), **tol(dt))
    dwte, dwpe = cp.zeros((50, 24), dt), cp.zeros((7, 24), dt)
    gpu.embedding_backward(d(dy), d(tok), dwte, dwpe)
    rw, rp = _ref.embedding_backward(dy, tok, 50)
    np.testing.assert_allclose(h(dwte), rw, **tol(dt))
    np.testing.assert_allclose(h(dwpe), rp, **tol(dt))
    db = cp.zeros(24, dt)
    gpu.bias_backward(d(dy.reshape(-1, 24)), db)
    np.testing.assert_allclose(h(db), dy.reshape(-1, 24).sum(0), **tol(dt))
    p, g, m, v = rnd(1001, dt=dt), rnd(1001, dt=dt, seed=1), rnd(1001, dt=dt, seed=2) * 0.1, np.abs(rnd(1001, dt=dt, seed=3))
    pd, md, vd = d(p), d(m), d(v)
    gpu.adamw(pd, d(g), md, vd, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, gscale=0.5)
    rp, rm, rv = _ref.adamw(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5)
    for got, want in ((pd, rp), (md, rm), (vd, rv)):
        np.testing.assert_allclose(h(got), want, **tol(dt))
    assert gpu.sumsq(d(p)) == pytest.approx(float(np.sum(p.astype(np.float64) ** 2)), rel=1e-5)


@pytest.mark.parametrize("dt", FL)
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_reduce(dt, op):
    a, b = rnd(100003, dt=dt), rnd(100003, dt=dt, seed=1)
    ad = d(a)
    gpu.reduce_into(ad, d(b), op)
    np.testing.assert_allclose(h(ad), {"sum": a + b, "max": np.maximum(a, b), "min": np.minimum(a, b)}[op], **tol(dt))
    gpu.scale(ad, 0.25)
    np.testing.assert_allclose(h(ad), {"sum": a + b, "max": np.maximum(a, b), "min": np.minimum(a, b)}[op] * 0.25,
                               **tol(dt))


@pytest.mark.parametrize("dt", FL)
def test_faces_send_device_arrays_to_their_twins(dt):
    """The CPU faces on CuPy arrays (hpr.kernels.dispatch): the GPU twins, same arguments, same numbers;
    avg adds as on the CPU; scatter_add accumulates repeated rows; probabilities in the real dtype."""
    import hpr
    from hpr.kernels import nn, reduce, statevec

    a, b = rnd(1001, dt=dt), rnd(1001, dt=dt, seed=1)
    ad = d(a)
    assert reduce.reduce_into(ad, d(b), "avg", nthreads=3) is ad
    np.testing.assert_allclose(h(reduce.scale(ad, 0.5, nthreads=3)), (a + b) * 0.5, **tol(dt))
    idx, rows = np.array([4, 0, 4, 4, 2]), rnd(5, 3, dt=dt, seed=2)
    want = np.zeros((6, 3), dt)
    np.add.at(want, idx, rows)
    got = nn.scatter_add(cp.zeros((6, 3), dt), d(idx), d(rows))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(h(got), want, **tol(dt))
    s = states(3, 4, np.complex64 if dt == np.float32 else np.complex128)
    p = statevec.probabilities(d(s))
    assert p.dtype == dt
    np.testing.assert_allclose(h(p), np.abs(s) ** 2, **tol(dt))
    with pytest.raises(hpr.ConfigError, match="has no GPU kernel"):
        statevec.pauli_overlap(d(s), d(s), "ZZZZ")


def states(b, n, dt, seed=0):
    r = np.random.default_rng(seed)
    s = r.standard_normal((b, 1 << n)) + 1j * r.standard_normal((b, 1 << n))
    return (s / np.linalg.norm(s, axis=1, keepdims=True)).astype(dt)


def unitary(k, seed, batch=None):
    r = np.random.default_rng(seed)
    shape = (batch,) if batch else ()
    m = r.standard_normal(shape + (k, k)) + 1j * r.standard_normal(shape + (k, k))
    q, _ = np.linalg.qr(m)
    return q


@pytest.mark.parametrize("dt", [np.complex64, np.complex128])
def test_gates_against_dense(dt):
    from hpr.kernels import statevec as K

    n, b = 6, 3
    s = states(b, n, dt)
    for q in range(n):
        u = unitary(2, q, batch=b).astype(dt)
        sd = d(s)
        gpu.apply_1q(sd, q, d(u), b)
        want = np.stack([_ref.sv_apply(s[i:i + 1], u[i], [q])[0] for i in range(b)])
        np.testing.assert_allclose(h(sd), want, **tol(dt))
    u4 = unitary(4, 9).astype(dt)
    for q1, q2 in ((0, 5), (4, 1), (2, 3)):
        sd = d(s)
        gpu.apply_2q(sd, q1, q2, d(u4[None]), 1)
        np.testing.assert_allclose(h(sd), _ref.sv_apply(s, u4, [q1, q2]), **tol(dt))
        c = s.copy()
        K.apply_x(c, q2, controls=(q1,))
        sd = d(s)
        gpu.apply_x(sd, q2, 1 << q1)
        np.testing.assert_allclose(h(sd), c, **tol(dt))
        c = s.copy()
        K.apply_swap(c, q1, q2)
        sd = d(s)
        gpu.apply_swap(sd, q1, q2)
        np.testing.assert_allclose(h(sd), c, **tol(dt))
        dg = np.exp(1j * np.arange(4)).astype(dt)
        c = s.copy()
        K.apply_diag_2q(c, q1, q2, dg)
        sd = d(s)
        gpu.apply_diag(sd, q1, q2, 2, d(dg[None]), 1)
        np.testing.assert_allclose(h(sd), c, **tol(dt))
    np.testing.assert_allclose(h(gpu.expval_z(d(s))), K.expval_z(s), **tol(dt))


@pytest.mark.parametrize("dt", [np.complex64, np.complex128])
def test_compiled_program_and_adjoint_equal_the_cpu(dt):
    from test_quantum_program import random_circuit

    c = random_circuit(6, 70, seed=5)
    prog = c.compile(3)  # dense blocks too
    r = np.random.default_rng(4)
    x, w, g = r.uniform(-2, 2, (40, 2)), r.uniform(-2, 2, 3), r.standard_normal((40, 6))
    cpu = c.run(x, w, dt, fuse=3)
    s = cp.zeros((40, 64), dt)
    s[:, 0] = 1
    gpu.run_program(s, d(prog.ops), d(prog._mats(dt)), d(prog.fixed), d(x), d(w))
    np.testing.assert_allclose(h(s), cpu, **tol(dt))
    c.forward(x, w, dt, fuse=3)
    dx, dw = c.backward(g)
    gdx, gdw = gpu.adjoint_program(s, d(g), d(prog.ops), d(prog._mats(dt, True)), d(prog.fixed), d(x), d(w))
    t = dict(rtol=1e-3, atol=1e-4) if dt == np.complex64 else dict(rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(h(gdx), dx, **t)
    np.testing.assert_allclose(h(gdw).sum(0), dw, **t)
    # and what was compared is not trivial: the states left |0...0>, the gradients are not zero
    assert np.abs(cpu[:, 0]).max() < 0.99 and np.abs(dx).max() > 1e-2 and np.abs(dw).max() > 1e-2


# ---- end to end on the GPU, against the same work on the CPU -------------------------------------
def test_gpt_step_on_the_gpu_equals_the_cpu():
    """A tiny GPT (float64, with a QuantumLayer): loss, gradients, an AdamW step and the next loss on the
    GPU (cuBLAS matmuls, the CUDA kernels, attention as batched matmuls) against the CPU."""
    import hpr
    from hpr.model import GPT, GPTConfig
    from hpr.optim import AdamW, grad_norm_sq

    dev = hpr.device.select("gpu", local_rank=0)
    cfg = GPTConfig.preset("tiny", dtype="float64", n_qubits=3)
    tok = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, cfg.context + 1)).astype(np.int32)
    x, y = tok[:, :-1], tok[:, 1:]
    out = []
    for device in (None, dev):
        m = GPT(cfg, seed=5, device=device)
        opt = AdamW(m.layout, m.params, m.grads)
        loss = m.forward(x, y)
        m.backward()
        norm = grad_norm_sq(m.grads)
        g = hpr.device.to_host(m.grads).copy()
        opt.step(1e-2)
        out.append((loss, norm, g, hpr.device.to_host(m.params).copy(), m.loss(x, y)))
    (l0, n0, g0, p0, m0), (l1, n1, g1, p1, m1) = out
    assert l1 == pytest.approx(l0, rel=1e-10) and m1 == pytest.approx(m0, rel=1e-10) and n1 == pytest.approx(n0, rel=1e-8)
    np.testing.assert_allclose(g1, g0, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(p1, p0, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dt", [np.complex64, np.complex128])
def test_statevector_on_the_gpu_equals_the_cpu(dt):
    import hpr
    from hpr.quantum import StateVector

    dev = hpr.device.select("gpu", local_rank=0)
    th = np.random.default_rng(2).uniform(-3, 3, 4)
    a, b = StateVector(5, 4, dt), StateVector(5, 4, dt, device=dev)
    for name, qs, p in [("h", [0], None), ("ry", [1], th), ("cx", [0, 4], None), ("rz", [2], 0.7),
                        ("swap", [1, 3], None), ("cz", [0, 1], None), ("ccx", [0, 1, 2], None),
                        ("u3", [4], (0.1, 0.2, 0.3)), ("rzz", [0, 2], th), ("crx", [3, 1], 0.4)]:
        a.apply(name, qs, p)
        b.apply(name, qs, p)
    r = np.random.default_rng(3)
    u, _ = np.linalg.qr(r.standard_normal((4, 4)) + 1j * r.standard_normal((4, 4)))
    a.apply_matrix(u, [4, 1])
    b.apply_matrix(u, [4, 1])
    np.testing.assert_allclose(h(b.state), a.state, **tol(dt))
    np.testing.assert_allclose(h(b.expval_z()), a.expval_z(), **tol(dt))
    for pauli in ("ZZIXY", "YYYYY", "IIIII"):
        np.testing.assert_allclose(h(b.expval(pauli)), a.expval(pauli), **tol(dt))


@pytest.mark.parametrize("b,n", [(2, 13), (200, 6)])  # a few large states (CuPy reductions), many small (kernel)
def test_expval_z_both_paths(b, n):
    s = rnd(b, 1 << n, seed=4) + 1j * rnd(b, 1 << n, seed=5)
    np.testing.assert_allclose(h(gpu.expval_z(d(s))), _ref.sv_expval_z(s), rtol=1e-10, atol=1e-9)
