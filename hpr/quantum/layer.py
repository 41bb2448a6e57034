"""The QuantumLayer: a small parameterised circuit per token inside the model (DESIGN.md decision 4).
Each token's hidden vector is projected to n angles, a batch of n-qubit circuits (angle encoding RY,
then `depth` layers of trainable RX, RZ on every qubit and a CNOT ring) runs for all tokens in one
kernel call per gate, and <Z_i> is projected back and added to the residual stream:

    y = x + (<Z>(circuit(x W_in + b_in; w))) W_out          x (N, C), W_in (C, n), W_out (n, C)

Gradients of the circuit come from one adjoint sweep per batch (hpr.quantum.circuit). The circuits
follow their tokens over the data-parallel ranks; with tensor parallelism each tp rank runs a slice
of the tokens' circuits and the results are gathered (the layer's parameters are replicated).

Usage: ``q = QuantumLayer(layout, "q", C, n_qubits=4, depth=2); y = q.forward(x); dx = q.backward(dy)``"""
import numpy as np

from ..device import xp_of
from ..kernels import nn as K
from .circuit import Circuit


def _circuit(n, depth):
    c = Circuit(n, n_inputs=n, n_weights=2 * n * depth)
    for i in range(n):
        c.add("ry", [i], ("in", i))
    for d in range(depth):
        for i in range(n):
            c.add("rx", [i], ("w", 2 * n * d + i)).add("rz", [i], ("w", 2 * n * d + n + i))
        if n > 1:
            for i in range(n if n > 2 else 1):
                c.add("cx", [i, (i + 1) % n])
    return c


class QuantumLayer:
    def __init__(self, layout, name, C, n_qubits, depth, std=0.02, tp=None):
        self.n, self.depth, self.name = int(n_qubits), int(depth), name
        self.tp = tp if tp is not None and tp.size > 1 else None
        self.W_in = layout.add(name + ".w_in", (C, self.n), std=std * 10, decay=True)  # angles of order 1
        self.b_in = layout.add(name + ".b_in", (self.n,), fill=0.0)
        self.theta = layout.add(name + ".theta", (2 * self.n * self.depth,), std=0.1)
        self.W_out = layout.add(name + ".w_out", (self.n, C), std=std, decay=True)
        self.circuit = _circuit(self.n, self.depth)
        self.ws = None

    def _rows(self, n_rows):
        if self.tp is None:
            return 0, n_rows
        r, p = self.tp.rank, self.tp.size
        return r * n_rows // p, (r + 1) * n_rows // p

    def _gather(self, part):
        return part if self.tp is None else self.tp.comm.allgather(xp_of(part).ascontiguousarray(part))

    def forward(self, x):
        """x: (N, C) -> x + quantum(x), (N, C), a new buffer the layer owns."""
        self.x = x
        cdt = np.complex128 if x.dtype == np.float64 else np.complex64
        xp = xp_of(x)
        angles = K.matmul(x, self.W_in.data, xp.empty((len(x), self.n), x.dtype))  # (N, n)
        angles += self.b_in.data
        lo, hi = self._rows(len(x))
        z = self._gather(self.circuit.forward(angles[lo:hi], self.theta.data, cdt))  # (N, n)
        self.z = z.astype(x.dtype)
        y = self.ws.get(self.name + ".y", x.shape)
        K.matmul(self.z, self.W_out.data, y)
        y += x
        return y

    def backward(self, dy):
        """dy: (N, C) -> dx (N, C); adds the parameter gradients."""
        xp = xp_of(dy)
        self.W_out.grad += K.matmul(self.z.T, dy, xp.empty(self.W_out.shape, dy.dtype))
        dz = K.matmul(dy, self.W_out.data.T, xp.empty((len(dy), self.n), dy.dtype))  # (N, n)
        lo, hi = self._rows(len(dy))
        d_ang, d_theta = self.circuit.backward(dz[lo:hi])
        d_ang = self._gather(d_ang).astype(dy.dtype)
        if self.tp is not None:
            d_theta = self.tp.allreduce_sum(d_theta)
        self.theta.grad += d_theta.astype(dy.dtype)
        self.W_in.grad += K.matmul(self.x.T, d_ang, xp.empty(self.W_in.shape, dy.dtype))
        self.b_in.grad += d_ang.sum(0)
        dx = K.matmul(d_ang, self.W_in.data.T, xp.empty(dy.shape, dy.dtype))
        dx += dy
        return dx
