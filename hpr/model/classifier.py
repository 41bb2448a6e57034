"""The classic introduction to data-parallel training (TensorFlow's MirroredStrategy tutorial) on
hpr's layers: Embedding -> LSTM -> Dense(1, sigmoid), binary cross-entropy, Adam. Flat parameter and
gradient buffers, so hpr.parallel.DataParallel synchronises it like the GPT.

Usage: ``m = LSTMClassifier(seed=0); loss = m.forward(x, y); m.backward()``"""
import numpy as np

from ..errors import ConfigError
from ..nn import ParamLayout
from ..nn.recurrent import LSTM, DenseSigmoidBCE, TokenEmbedding


class LSTMClassifier:
    def __init__(self, vocab_size=256, embed=64, hidden=64, dtype="float32", seed=0, alloc=None):
        for k, v in (("vocab_size", vocab_size), ("embed", embed), ("hidden", hidden)):
            if int(v) < 1:
                raise ConfigError(f"LSTMClassifier {k} must be positive, got {v}")
        if np.dtype(dtype).name not in ("float32", "float64"):
            raise ConfigError(f"dtype {dtype!r}: use float32 or float64")
        self.dtype = np.dtype(dtype)
        self.layout = lay = ParamLayout()
        self.emb = TokenEmbedding(lay, "emb", vocab_size, embed)
        self.lstm = LSTM(lay, "lstm", embed, hidden)
        self.head = DenseSigmoidBCE(lay, "out", hidden)
        grads = alloc(lay.size, self.dtype) if alloc is not None else None
        self.params, self.grads = lay.build(self.dtype, seed, None, grads)
        self.lstm.init_forget_bias()
        self.vocab_size = vocab_size

    @property
    def n_params(self):
        return self.params.size

    def _check(self, x):
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype.kind not in "iu" or x.size == 0:
            raise ConfigError(f"inputs must be a non-empty integer array (batch, time), got {x.dtype} {x.shape}")
        if x.min() < 0 or x.max() >= self.vocab_size:
            raise ConfigError(f"token ids outside [0, {self.vocab_size})")
        return x

    def forward(self, x, y):
        """Mean binary cross-entropy of the batch; keeps what backward needs."""
        x = self._check(x)
        y = np.asarray(y, self.dtype)
        if y.shape != (x.shape[0],):
            raise ConfigError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
        h = self.lstm.forward(self.emb.forward(x).astype(self.dtype, copy=False))
        return self.head.forward(h, y)

    def backward(self, scale=1.0, on_ready=None):
        """Adds d(scale * loss)/d(params) into self.grads (on_ready(n) once all of them are final)."""
        dh = self.head.backward(scale)
        self.emb.backward(self.lstm.backward(dh))
        if on_ready:
            on_ready(self.params.size)

    def zero_grad(self):
        self.grads[:] = 0

    def predict(self, x):
        """P(label 1) for each row of x."""
        h = self.lstm.forward(self.emb.forward(self._check(x)).astype(self.dtype, copy=False))
        return 1.0 / (1.0 + np.exp(-self.head.logits(h)))
