"""Layers for sequence classification: a token embedding (no positions: the recurrence carries
order), the LSTM (forward over time, backward through time, one fused cell kernel per step), and a
dense output with a sigmoid and binary cross-entropy. Forward/backward pairs on flat-buffer views,
like hpr.nn.layers; backward adds into the parameter gradients.

Dimensions: B batch, T time, E embedding width, H hidden width; gates are [i | f | g | o], 4H wide.
Usage: ``lstm = LSTM(layout, "lstm", E, H); h = lstm.forward(x); dx = lstm.backward(dh)``"""
import numpy as np

from ..kernels import nn as K


class TokenEmbedding:
    """x[b, t] = W[token[b, t]]."""

    def __init__(self, layout, name, V, E, std=0.05):
        self.W = layout.add(name + ".w", (V, E), std=std)
        self.name = name

    def forward(self, tokens):
        """tokens: int (B, T) -> (B, T, E)."""
        self.tokens = tokens
        return self.W.data[tokens]

    def backward(self, dx):
        np.add.at(self.W.grad, self.tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))


class LSTM:
    """h_t, c_t = cell(x_t W_x + h_{t-1} W_h + b, c_{t-1}); returns the last hidden state (as Keras'
    LSTM with return_sequences=False). The input products of all steps are one matmul before the loop,
    and the weight gradients one matmul each after backward's loop. The forget gate's bias starts at 1
    (Keras' unit_forget_bias)."""

    def __init__(self, layout, name, E, H, std_in=None, std_rec=None):
        self.Wx = layout.add(name + ".wx", (E, 4 * H), std=std_in or 1 / np.sqrt(E), decay=True)
        self.Wh = layout.add(name + ".wh", (H, 4 * H), std=std_rec or 1 / np.sqrt(H), decay=True)
        self.b = layout.add(name + ".b", (4 * H,), fill=0.0)
        self.H, self.name = H, name

    def init_forget_bias(self):
        self.b.data[self.H:2 * self.H] = 1.0

    def forward(self, x):
        """x: (B, T, E) -> h_T (B, H)."""
        b, t, e = x.shape
        H = self.H
        dt = x.dtype
        self.x = x
        a = K.matmul(x.reshape(b * t, e), self.Wx.data, np.empty((b * t, 4 * H), dt)).reshape(b, t, 4 * H)
        a += self.b.data
        self.gates = np.empty((t, b, 4 * H), dt)   # activated gates of every step
        self.c = np.zeros((t + 1, b, H), dt)       # c[0] = 0
        self.h = np.zeros((t + 1, b, H), dt)       # h[0] = 0
        self.tc = np.empty((t, b, H), dt)
        for s in range(t):
            g = self.gates[s]
            K.matmul(self.h[s], self.Wh.data, g)
            g += a[:, s]
            K.lstm_cell_forward(g, self.c[s], self.c[s + 1], self.tc[s], self.h[s + 1])
        return self.h[t]

    def backward(self, dh_last):
        """dh_last: (B, H) gradient of h_T -> dx (B, T, E)."""
        t, b, _ = self.gates.shape
        H, dt = self.H, self.gates.dtype
        da = np.empty((t, b, 4 * H), dt)
        dh = dh_last.astype(dt, copy=True)
        dc = np.zeros((b, H), dt)
        WhT = self.Wh.data.T
        for s in range(t - 1, -1, -1):
            K.lstm_cell_backward(dh, dc, self.gates[s], self.c[s], self.tc[s], da[s], dc)
            K.matmul(da[s], WhT, dh)  # to h_{s-1}
        flat = da.transpose(1, 0, 2).reshape(b * t, 4 * H)  # (B*T, 4H) in the order of x's rows
        e = self.x.shape[2]
        self.Wx.grad += K.matmul(self.x.reshape(b * t, e).T, flat, np.empty(self.Wx.shape, dt))
        hp = self.h[:t].reshape(t * b, H)  # h_{s-1} of every step, rows in (s, b) order like da
        self.Wh.grad += K.matmul(hp.T, da.reshape(t * b, 4 * H), np.empty(self.Wh.shape, dt))
        self.b.grad += da.sum(axis=(0, 1))
        return K.matmul(flat, self.Wx.data.T, np.empty((b * t, e), dt)).reshape(b, t, e)


class DenseSigmoidBCE:
    """z = h w + b (one logit per row); loss = mean binary cross-entropy of sigmoid(z) against y,
    computed from the logit (log(1 + e^z) - y z, stable for any z)."""

    def __init__(self, layout, name, H, std=None):
        self.w = layout.add(name + ".w", (H, 1), std=std or 1 / np.sqrt(H), decay=True)
        self.b = layout.add(name + ".b", (1,), fill=0.0)

    def logits(self, h):
        return (h @ self.w.data)[:, 0] + self.b.data[0]

    def forward(self, h, y):
        """h (B, H), y (B,) in {0, 1} -> mean loss; keeps what backward needs."""
        z = self.logits(h)
        self.h, self.p, self.y = h, 1.0 / (1.0 + np.exp(-z)), y
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    def backward(self, scale=1.0):
        """d(scale * loss)/dh, (B, H); adds the parameter gradients."""
        dz = (self.p - self.y) * (scale / len(self.y))  # (B,)
        self.w.grad += self.h.T @ dz[:, None]
        self.b.grad += dz.sum()
        return dz[:, None] * self.w.data[:, 0][None, :]
