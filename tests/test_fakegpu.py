"""The GPU path's plumbing without a GPU: hpr on arrays of the numpy-backed stand-in for CuPy in
tests/fakegpu (which refuses host/device mixing as CuPy does, and routes the CUDA launchers to the CPU
kernels). Each test runs the same work on the CPU and on the "device" and compares the numbers, and
checks the GPU launchers were really called. The CUDA kernels themselves are tested on a real GPU by
test_gpu.py; the trainer on the fake device under mpiexec by test_fakegpu_train.py."""
import importlib
import os
import sys

import numpy as np
import pytest

import hpr
from hpr.device import to_host

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def fake():
    """The route module, with the fake cupy importable and the launchers routed for this module only."""
    sys.path.insert(0, os.path.join(HERE, "fakegpu"))
    try:
        route = importlib.import_module("route")
    finally:
        sys.path.remove(os.path.join(HERE, "fakegpu"))
    with route.installed():
        yield route


@pytest.fixture
def settings():
    """settings(gpu=2, cuda_aware=True): the current hpr.config.Config with those changes (cuda_aware in
    its CommConfig), as hpr.init would make it from HPR_GPU / HPR_CUDA_AWARE; restored afterwards."""
    before = hpr.config.current()

    def use(cuda_aware=None, **changes):
        cfg = before.replace(comm=before.comm.replace(cuda_aware=cuda_aware), **changes)
        return hpr.config.set_current(cfg)
    yield use
    hpr.config.set_current(before)


@pytest.fixture
def dev(fake):
    fake.calls.clear()
    return hpr.device.select("gpu", local_rank=0)


def test_select(fake, monkeypatch, settings):
    monkeypatch.setenv("FAKECUPY_DEVICES", "3")
    d = hpr.device.select("gpu", local_rank=4)
    assert (d.kind, d.index, d.is_gpu) == ("gpu", 1, True)  # node-local rank 4 of 3 GPUs: GPU 1
    import cupy

    assert cupy.cuda.Device().id == 1  # made current
    assert hpr.device.select("cpu") is hpr.device.CPU
    settings(gpu=hpr.config.from_env({"HPR_GPU": "2"}).gpu)  # as hpr.init reads it
    assert hpr.device.select("gpu", local_rank=0).index == 2
    assert hpr.device.select("gpu", local_rank=0, settings=hpr.config.Config(gpu=0)).index == 0
    settings(gpu=3)
    with pytest.raises(hpr.ConfigError, match="HPR_GPU=3 must be a GPU index below 3"):
        hpr.device.select("gpu", local_rank=0)
    with pytest.raises(hpr.ConfigError, match="HPR_GPU"):
        hpr.config.from_env({"HPR_GPU": "x"})
    settings(gpu=None)
    monkeypatch.setenv("FAKECUPY_DEVICES", "0")
    with pytest.raises(hpr.ConfigError, match="--device cpu"):
        hpr.device.select("gpu", local_rank=0)
    with pytest.raises(hpr.ConfigError, match="tpu"):
        hpr.device.select("tpu")
    monkeypatch.setenv("FAKECUPY_DEVICES", "1")
    cupy.cuda.Device(0).use()


@pytest.mark.parametrize("tp_like_qubits", [0, 3])
def test_gpt_step_on_device_matches_cpu(dev, fake, tp_like_qubits):
    from hpr.model import GPT, GPTConfig
    from hpr.optim import AdamW, grad_norm_sq

    cfg = GPTConfig.preset("tiny", dtype="float64", n_qubits=tp_like_qubits)
    rng = np.random.default_rng(0)
    tok = rng.integers(0, cfg.vocab_size, (3, cfg.context + 1)).astype(np.int32)
    x, y = tok[:, :-1], tok[:, 1:]
    out = {}
    for where, d in (("cpu", None), ("gpu", dev)):
        m = GPT(cfg, seed=5, device=d)
        opt = AdamW(m.layout, m.params, m.grads)
        loss = m.forward(x, y)
        m.backward()
        norm = grad_norm_sq(m.grads)
        g = to_host(m.grads).copy()
        opt.step(1e-2)
        loss2 = m.loss(x, y)
        out[where] = (loss, norm, g, to_host(m.params).copy(), loss2, m.logits_last(x[:1]))
        assert isinstance(out[where][5], np.ndarray)  # generation's logits come back to the host
    c, d = out["cpu"], out["gpu"]
    assert d[0] == pytest.approx(c[0], rel=1e-12) and d[4] == pytest.approx(c[4], rel=1e-12)
    assert d[1] == pytest.approx(c[1], rel=1e-10)
    np.testing.assert_allclose(d[2], c[2], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(d[3], c[3], rtol=1e-9, atol=1e-10)  # Adam turns noise-level gradients into ~1e-12 steps
    np.testing.assert_allclose(d[5], c[5], rtol=1e-9, atol=1e-12)
    for k in ("layernorm_forward", "layernorm_backward", "softmax_causal_forward", "softmax_causal_backward",
              "gelu_forward", "crossentropy", "embedding_forward", "embedding_backward", "adamw", "sumsq"):
        assert fake.calls[k] > 0, k
    if tp_like_qubits:
        assert fake.calls["run_program"] > 0 and fake.calls["adjoint_program"] > 0


def test_gpt_on_device_tokens_from_device_and_bad_tokens(dev):
    import cupy

    from hpr.model import GPT, GPTConfig

    cfg = GPTConfig.preset("tiny", dtype="float64")
    m = GPT(cfg, seed=1, device=dev)
    x = np.zeros((2, 4), np.int32)
    assert m.loss(cupy.asarray(x), cupy.asarray(x)) == pytest.approx(GPT(cfg, seed=1).loss(x, x), rel=1e-12)
    with pytest.raises(hpr.ConfigError, match="vocabulary"):
        m.loss(x + cfg.vocab_size, x)
    x64 = np.arange(8, dtype=np.int64).reshape(2, 4)  # a pipeline stage gets batches as they come
    assert m.stage_forward(x64, 2, 4, targets=x64, grad=False) == pytest.approx(m.loss(x64, x64), rel=1e-12)


def test_statevector_on_device(dev, fake):
    from hpr.quantum import StateVector

    r = np.random.default_rng(2)
    th = r.uniform(-3, 3, 4)
    prog = [("h", [0], None), ("ry", [1], th), ("cx", [0, 2], None), ("rz", [2], 0.7), ("swap", [1, 2], None),
            ("cz", [0, 1], None), ("ccx", [0, 1, 2], None), ("u3", [2], (0.1, 0.2, 0.3)), ("rzz", [0, 2], th)]
    a, b = StateVector(3, 4, np.complex128), StateVector(3, 4, np.complex128, device=dev)
    for name, qs, p in prog:
        a.apply(name, qs, p)
        b.apply(name, qs, p)
    u, _ = np.linalg.qr(r.standard_normal((4, 4)) + 1j * r.standard_normal((4, 4)))
    a.apply_matrix(u, [2, 0])
    b.apply_matrix(u, [2, 0])
    np.testing.assert_allclose(b.state.get(), a.state, atol=1e-13)
    np.testing.assert_allclose(b.expval_z().get(), a.expval_z(), atol=1e-13)
    np.testing.assert_allclose(b.probabilities().get(), a.probabilities(), atol=1e-13)
    assert (b.sample(16, seed=3) == a.sample(16, seed=3)).all()
    for k in ("apply_1q", "apply_2q", "apply_diag", "apply_x", "apply_swap", "expval_z"):
        assert fake.calls[k] > 0, k
    for pauli in ("ZZI", "XYZ", "YIY", "III"):  # array operations on the device, against the C kernel
        np.testing.assert_allclose(b.expval(pauli).get(), a.expval(pauli), atol=1e-13)
    with pytest.raises(hpr.ConfigError, match="no GPU kernel"):
        from hpr.kernels.statevec import pauli_overlap

        pauli_overlap(b.state, b.state, "ZZI")


def test_circuit_on_device(dev, fake):
    from hpr.quantum.circuit import Circuit

    c = Circuit(3, n_inputs=3, n_weights=4)
    for q in range(3):
        c.add("ry", [q], ("in", q))
    c.add("rx", [0], ("w", 0)).add("cx", [0, 1]).add("rz", [1], ("w", 1)).add("rzz", [1, 2], ("w", 2))
    c.add("h", [2]).add("ry", [2], ("w", 3))
    r = np.random.default_rng(4)
    x, w, g = r.uniform(-2, 2, (5, 3)), r.uniform(-2, 2, 4), r.standard_normal((5, 3))
    import cupy

    zc = c.forward(x, w)
    dxc, dwc = c.backward(g)
    zg = c.forward(cupy.asarray(x), cupy.asarray(w))
    dxg, dwg = c.backward(cupy.asarray(g))
    np.testing.assert_allclose(zg.get(), zc, atol=1e-13)
    np.testing.assert_allclose(dxg.get(), dxc, atol=1e-12)
    np.testing.assert_allclose(dwg.get(), dwc, atol=1e-12)
    assert fake.calls["run_program"] == 1 and fake.calls["adjoint_program"] == 1
    wide = cupy.asarray(np.concatenate([x, x], axis=1))[:, ::2]  # a strided view: the kernel needs it packed
    np.testing.assert_allclose(c.forward(wide, cupy.asarray(w)).get(),
                               c.forward(np.concatenate([x, x], axis=1)[:, ::2], w), atol=1e-13)


def test_reductions_and_scatter_on_device(dev, fake):
    """The reduce family and scatter_add on device arrays, against the CPU, with the CPU's own arguments
    (avg adds, nthreads is taken and ignored); CPU-only kernels refuse device arrays by name."""
    import cupy

    from hpr.kernels import nn as K
    from hpr.kernels import reduce as R

    r = np.random.default_rng(7)
    a, b = r.standard_normal(1000), r.standard_normal(1000)
    for op in ("sum", "max", "min", "avg"):
        da = cupy.asarray(a)
        assert R.reduce_into(da, cupy.asarray(b), op, nthreads=2) is da
        np.testing.assert_array_equal(da.get(), R.reduce_into(a.copy(), b, op))
    x = cupy.asarray(a)
    np.testing.assert_array_equal(R.scale(x, 0.25, nthreads=1).get(), a * 0.25)
    assert fake.calls["reduce_into"] == 4 and fake.calls["scale"] == 1
    idx = np.array([3, 0, 3, 3, 1])  # repeated rows each add
    rows = r.standard_normal((5, 4))
    want = np.zeros((6, 4))
    np.add.at(want, idx, rows)
    got = K.scatter_add(cupy.zeros((6, 4)), cupy.asarray(idx), cupy.asarray(rows))
    np.testing.assert_array_equal(got.get(), want)
    np.testing.assert_array_equal(K.scatter_add(np.zeros((6, 4)), idx, rows), want)
    h, f32 = cupy.zeros((2, 3)), cupy.zeros(4, np.float32)
    for call in (lambda: R.reduce_many(x, [x, x]), lambda: R.convert(f32, np.zeros(4, np.float16)),
                 lambda: K.lstm_cell_forward(cupy.zeros((2, 12)), h, h, h, h)):
        with pytest.raises(hpr.ConfigError, match="has no GPU kernel: pass numpy arrays"):
            call()


def test_attention_bmm_matches_fused_kernel(rng):
    """The GPU's attention (batched matmuls around the softmax kernel) on numpy arrays, against the CPU's
    fused kernel, forward and backward, both precisions."""
    from hpr.kernels import nn as K

    for dt, tol in ((np.float32, 2e-5), (np.float64, 1e-12)):
        b, t, h, c = 2, 9, 3, 24
        qkv = rng.standard_normal((b * t, 3 * c)).astype(dt)
        dy = rng.standard_normal((b * t, c)).astype(dt)
        att1, lse2 = np.empty((b, h, t, t), dt), np.empty((b, h, t), dt)
        y1, y2 = np.empty((b * t, c), dt), np.empty((b * t, c), dt)
        K.attention_bmm_forward(qkv, b, t, h, att1, y1)
        K.attention_forward(qkv, b, t, h, lse2, y2)  # the CPU kernel keeps the row log-sum-exp
        np.testing.assert_allclose(y1, y2, atol=tol)
        d1, d2 = np.full_like(qkv, np.nan), np.full_like(qkv, np.nan)
        K.attention_bmm_backward(dy, y1, att1, qkv, b, t, h, d1)
        K.attention_backward(dy, y2, lse2, qkv, b, t, h, d2)
        np.testing.assert_allclose(d1, d2, atol=tol * 10)


def test_optimizer_state_on_device(dev):
    import cupy

    from hpr.model import GPT, GPTConfig
    from hpr.optim import AdamW

    m = GPT(GPTConfig.preset("tiny"), seed=0, device=dev)
    opt = AdamW(m.layout, m.params, m.grads)
    assert isinstance(opt.m, cupy.ndarray)
    m.grads[...] = 1.0
    opt.step(1e-3)
    sd = opt.state_dict()
    assert isinstance(sd["m"], np.ndarray) and np.allclose(sd["m"], 0.1)
    opt2 = AdamW(m.layout, m.params, m.grads)
    opt2.load_state_dict(sd)
    assert np.array_equal(opt2.v.get(), opt.v.get()) and opt2.t == 1


def test_staging_pool():
    from hpr.device import Staging

    s = Staging()
    a = s.take(np.empty((3, 4), np.float32))
    assert a.shape == (3, 4) and a.dtype == np.float32
    s.give(a)
    b = s.take(np.empty(5, np.float32))  # the freed 12-element buffer serves a smaller request
    assert b.shape == (5,) and np.shares_memory(a, b)
    c = s.take(np.empty(5, np.float32))  # nothing free now: a new one
    assert not np.shares_memory(b, c)


def test_cuda_aware_override(settings):
    from hpr.config import CommConfig, from_env
    from hpr.device import cuda_aware

    settings(cuda_aware=from_env({"HPR_CUDA_AWARE": "1"}).comm.cuda_aware)
    assert cuda_aware() == (True, "HPR_CUDA_AWARE=1")
    assert cuda_aware(CommConfig(cuda_aware=False)) == (False, "HPR_CUDA_AWARE=0")  # a communicator's own
    with pytest.raises(hpr.ConfigError, match="HPR_CUDA_AWARE"):
        from_env({"HPR_CUDA_AWARE": "maybe"})
    settings(cuda_aware=None)
    ok, how = cuda_aware()  # PyPI's MPICH: built without CUDA; answered by its query function
    assert ok is False and "MPIX" in how


def test_gpu_missing_is_a_clear_error(tmp_path):
    """Without CuPy (a fresh process, away from the fake) --device gpu says what to install."""
    import subprocess

    if importlib.util.find_spec("cupy") is not None and "fakegpu" not in str(importlib.util.find_spec("cupy").origin):
        pytest.skip("a real CuPy is installed here")
    code = ("import hpr\ntry:\n    hpr.device.select('gpu')\nexcept hpr.KernelsMissing as e:\n    print('missing:', e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "missing:" in r.stdout and "pip install cupy" in r.stdout, r.stdout + r.stderr


def test_bench_quantum_gpu_runs(fake, capsys):
    """The GPU quantum benchmark end to end on the fake device (small sizes): its figures are printed
    and the GPU results were checked against the CPU kernels inside it."""
    from hpr.bench import quantum

    assert quantum.main(["--device", "gpu", "--max-qubits", "20", "--batch", "1024", "--budget", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "copy GB/s" in out and "H q10" in out and "agrees with the CPU kernels to" in out
    err = float(out.split("agrees with the CPU kernels to ")[1].split(")")[0])
    assert err < 1e-5  # complex128 states, different summation order at most


def test_bench_train_gpu_runs(fake, capsys, monkeypatch):
    from hpr import cpu
    from hpr.bench import train

    monkeypatch.setattr(cpu, "matmul_flops", lambda dtype="float32", n=1024, repeats=7, device=None: 1e12)
    assert train.main(["--device", "gpu", "--preset", "tiny", "--batch", "2", "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "hpr (GPU)" in out and "MFU fp16" in out
