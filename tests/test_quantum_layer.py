"""The QuantumLayer inside the GPT: every parameter's gradient (the layer's projections, its circuit
weights, and everything around it) against central finite differences in float64, and a short
training run with the layer whose loss falls."""
import numpy as np

from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW


def test_gpt_with_quantum_layer_gradients():
    cfg = GPTConfig.preset("tiny", dtype="float64", n_qubits=3, q_depth=2)
    m = GPT(cfg, seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (2, 16)), rng.integers(0, 256, (2, 16))
    m.forward(x, y)
    m.backward()
    g, p0 = m.grads.copy(), m.params.copy()

    def loss(v):
        m.params[:] = v
        return m.forward(x, y)
    names = [p.name for p in m.layout.order()]
    assert {"quantum.w_in", "quantum.b_in", "quantum.theta", "quantum.w_out"} <= set(names)
    for p in m.layout.order():
        u = np.zeros_like(p0)
        u[p.offset:p.offset + p.size] = rng.standard_normal(p.size)
        h = 1e-4
        fd = (-loss(p0 + 2 * h * u) + 8 * loss(p0 + h * u) - 8 * loss(p0 - h * u) + loss(p0 - 2 * h * u)) / (12 * h)
        assert abs(fd - g @ u) / abs(g @ u) < 1e-6, p.name


def test_no_qubits_keeps_the_model_unchanged():
    a = GPT(GPTConfig.preset("tiny"), seed=3)
    b = GPT(GPTConfig.preset("tiny", n_qubits=0), seed=3)
    np.testing.assert_array_equal(a.params, b.params)


def test_training_with_the_quantum_layer_learns():
    m = GPT(GPTConfig.preset("tiny", n_qubits=4, q_depth=1), seed=0)
    opt = AdamW(m.layout, m.params, m.grads, weight_decay=0.0)
    data = np.frombuffer(b"abcd" * 100, np.uint8).astype(np.int32)
    rng = np.random.default_rng(0)
    theta0 = m.layout["quantum.theta"].data.copy()
    losses = []
    for step in range(1, 41):
        i = rng.integers(0, len(data) - 17, 8)
        x = np.stack([data[j:j + 16] for j in i])
        y = np.stack([data[j + 1:j + 17] for j in i])
        m.zero_grad()
        losses.append(m.forward(x, y))
        m.backward()
        opt.step(3e-3)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert not np.array_equal(m.layout["quantum.theta"].data, theta0)  # the circuit weights trained
