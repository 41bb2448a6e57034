"""The LSTM classifier's parts: the fused LSTM cell kernel against its numpy twin, every layer and the
whole model against central finite differences in float64, and bad input."""
import numpy as np
import pytest

import hpr
from hpr.kernels import _ref, nn
from hpr.model.classifier import LSTMClassifier
from hpr.nn import ParamLayout
from hpr.nn.recurrent import LSTM, DenseSigmoidBCE

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return dict(rtol=1e-5, atol=5e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,h", [(1, 1), (3, 7), (64, 64), (5, 33)])
def test_lstm_cell_against_twin(dtype, b, h):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((b, 4 * h)) * 3).astype(dtype)
    a[0, :3] = [30.0, -30.0, 0.0][:min(3, 4 * h)]  # saturated and zero gates
    cp = rng.standard_normal((b, h)).astype(dtype)
    g, c, tc, hh = _ref.lstm_cell_forward(a.astype(np.float64), cp.astype(np.float64))
    ga = a.copy()
    c2, t2, h2 = (np.empty((b, h), dtype) for _ in range(3))
    nn.lstm_cell_forward(ga, cp, c2, t2, h2)
    for got, want in ((ga, g), (c2, c), (t2, tc), (h2, hh)):
        np.testing.assert_allclose(got, want, **tol(dtype))
    dh, dcn = rng.standard_normal((b, h)).astype(dtype), rng.standard_normal((b, h)).astype(dtype)
    da, dcp = _ref.lstm_cell_backward(dh.astype(np.float64), dcn.astype(np.float64), ga.astype(np.float64),
                                      cp.astype(np.float64), t2.astype(np.float64))
    da2, dcp2 = np.empty((b, 4 * h), dtype), dcn.copy()
    nn.lstm_cell_backward(dh, dcp2, ga, cp, t2, da2, dcp2)  # dc_prev written over dc_next
    np.testing.assert_allclose(da2, da, **tol(dtype))
    np.testing.assert_allclose(dcp2, dcp, **tol(dtype))


def directional(loss_at, p0, grad, sl, rng, h=1e-4):
    """4th-order central difference along a random direction u on the slice sl, against <grad, u>."""
    u = np.zeros_like(p0)
    u[sl] = rng.standard_normal(u[sl].shape)
    fd = (-loss_at(p0 + 2 * h * u) + 8 * loss_at(p0 + h * u) - 8 * loss_at(p0 - h * u) + loss_at(p0 - 2 * h * u)) / (12 * h)
    an = float(grad @ u)
    return abs(fd - an) / abs(an)


def test_lstm_layer_gradients():
    rng = np.random.default_rng(2)
    lay = ParamLayout()
    lstm = LSTM(lay, "lstm", 5, 6)
    lay.build(np.float64, 3)
    lstm.init_forget_bias()
    lay.params += rng.standard_normal(lay.params.size) * 0.1
    x0 = rng.standard_normal((3, 9, 5))
    R = rng.standard_normal((3, 6))

    def loss(params, x=x0):
        lay.params[:] = params
        return float(np.sum(lstm.forward(x) * R))
    p0 = lay.params.copy()
    loss(p0)
    lay.grads[:] = 0
    dx = lstm.backward(R)
    g = lay.grads.copy()
    for p in lay.order():
        assert directional(loss, p0, g, slice(p.offset, p.offset + p.size), rng) < 1e-6, p.name
    u = rng.standard_normal(x0.shape)  # and the input
    lay.params[:] = p0
    h = 1e-4
    f = [float(np.sum(lstm.forward(x0 + k * h * u) * R)) for k in (-2, -1, 1, 2)]
    fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)
    assert abs(fd - float(np.sum(dx * u))) / abs(fd) < 1e-6


def test_dense_sigmoid_bce():
    rng = np.random.default_rng(3)
    lay = ParamLayout()
    head = DenseSigmoidBCE(lay, "out", 4)
    lay.build(np.float64, 1)
    hid = rng.standard_normal((6, 4))
    y = np.array([0, 1, 1, 0, 1, 0], float)
    z = hid @ head.w.data[:, 0] + head.b.data[0]
    p = 1 / (1 + np.exp(-z))
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert head.forward(hid, y) == pytest.approx(want, rel=1e-12)
    dh = head.backward()
    np.testing.assert_allclose(dh, ((p - y) / 6)[:, None] * head.w.data[:, 0][None, :], rtol=1e-12)
    np.testing.assert_allclose(head.b.grad, [np.sum(p - y) / 6], rtol=1e-12)


def test_whole_classifier_gradients():
    rng = np.random.default_rng(4)
    m = LSTMClassifier(embed=6, hidden=5, dtype="float64", seed=2)
    x = rng.integers(0, 256, (4, 11))
    x[0, :3] = 7  # a repeated token: its embedding row gathers several gradients
    y = np.array([0, 1, 1, 0], float)
    m.forward(x, y)
    m.backward()
    g, p0 = m.grads.copy(), m.params.copy()

    def loss(v):
        m.params[:] = v
        return m.forward(x, y)
    for p in m.layout.order():
        assert directional(loss, p0, g, slice(p.offset, p.offset + p.size), rng) < 1e-6, p.name


def test_classifier_float32_follows_float64():
    x = np.random.default_rng(5).integers(0, 256, (8, 32))
    y = np.arange(8) % 2
    a, b = LSTMClassifier(dtype="float32", seed=1), LSTMClassifier(dtype="float64", seed=1)
    assert a.forward(x, y) == pytest.approx(b.forward(x, y), rel=1e-5)


def test_classifier_rejects_bad_input():
    m = LSTMClassifier(seed=0)
    with pytest.raises(hpr.ConfigError):
        m.forward(np.zeros((2, 4), np.float32), [0, 1])
    with pytest.raises(hpr.ConfigError):
        m.forward(np.full((2, 4), 256), [0, 1])
    with pytest.raises(hpr.ConfigError):
        m.forward(np.zeros((2, 4), int), [0, 1, 1])
    with pytest.raises(hpr.ConfigError):
        LSTMClassifier(hidden=0)
    with pytest.raises(hpr.ConfigError):
        LSTMClassifier(dtype="float16")
