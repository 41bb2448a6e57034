"""AdamW with decoupled weight decay over flat buffers, clipping by global gradient norm, and the
learning-rate schedule (linear warmup, then cosine decay to a floor). Owns the moments m and v and the
step count; takes the parameter layout's segments so decay applies to the matmul weights only: none on
biases, LayerNorm, or the token and position embeddings (minGPT's grouping; nanoGPT's
configure_optimizers today decays every 2-D tensor, embeddings included). A ZeRO-1 shard is the same
optimizer over a slice [lo, hi) of the flat buffers; a ZeRO-2/3 shard the same optimizer over the
rank's shard-space arrays with their own decay segments. Bitwise deterministic: one fused kernel per
segment, fixed order.

Usage: ``opt = AdamW(model.layout, model.params, model.grads); opt.step(lr, gscale)``"""
import math

import numpy as np

from .device import to_host, xp_of
from .errors import ConfigError
from .kernels import nn as K


class AdamW:
    def __init__(self, layout, params, grads, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, lo=0, hi=None,
                 segments=None):
        """segments: [(start, stop, decay)] over params to use instead of layout.segments(lo, hi) (a
        ZeRO-2/3 shard, hpr.parallel.DataParallel.optimizer_buffers)."""
        hi = params.size if hi is None else hi
        if not 0 <= lo <= hi <= params.size:
            raise ConfigError(f"optimizer range [{lo}, {hi}) is outside the {params.size}-element buffer")
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0 or weight_decay < 0:
            raise ConfigError(f"AdamW wants 0 <= betas < 1, eps > 0, weight_decay >= 0; got {betas}, {eps}, "
                              f"{weight_decay}")
        self.params, self.grads = params, grads
        self.lo, self.hi = lo, hi
        self.segments = layout.segments(lo, hi) if segments is None else list(segments)
        # the segment table of the one fused update: bounds (2 per segment) and each one's decay flag
        self._bounds = np.array([x for a, b, _ in self.segments for x in (a, b)], np.int64)
        self._decays = np.array([bool(d) for _, _, d in self.segments], bool)
        self.betas, self.eps, self.weight_decay = (float(b1), float(b2)), float(eps), float(weight_decay)
        xp = xp_of(params)  # the moments live where the parameters do
        self.m = xp.zeros(hi - lo, params.dtype)
        self.v = xp.zeros(hi - lo, params.dtype)
        self.t = 0

    def step(self, lr, gscale=1.0):
        """One update of params[lo:hi] from grads[lo:hi] * gscale: every segment in one fused call (the
        bits of one call per segment)."""
        self.t += 1
        b1, b2 = self.betas
        wd = np.where(self._decays, self.weight_decay, 0.0)
        K.adamw_segments(self.params, self.grads, self.m, self.v, self._bounds, wd, self.lo, lr, b1, b2, self.eps,
                         self.t, gscale)

    def state_dict(self):
        """The moments as numpy arrays (copied off a GPU), the step count and the range."""
        return {"m": to_host(self.m), "v": to_host(self.v), "t": self.t, "lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state):
        if (int(state["lo"]), int(state["hi"])) != (self.lo, self.hi) or state["m"].shape != self.m.shape:
            raise ConfigError(f"optimizer state covers [{state['lo']}, {state['hi']}), this optimizer "
                              f"[{self.lo}, {self.hi}): resume with the layout that saved it")
        xp = xp_of(self.m)
        self.m[...] = xp.asarray(state["m"])
        self.v[...] = xp.asarray(state["v"])
        self.t = int(state["t"])


def grad_norm_sq(grads):
    """Sum of squares of a flat gradient (or a shard of one), in float64."""
    return K.sumsq(grads)


def clip_scale(norm, max_norm):
    """The factor that brings a global gradient norm down to max_norm: min(1, max_norm / (norm + 1e-6)),
    as torch.nn.utils.clip_grad_norm_; 1.0 when clipping is off (max_norm <= 0)."""
    if max_norm <= 0:
        return 1.0
    return min(1.0, max_norm / (norm + 1e-6))


class CosineSchedule:
    """lr(step) for step = 1..total: linear warmup over `warmup` steps to `lr`, then cosine decay to
    `lr * min_ratio` at `total`."""

    def __init__(self, lr, total, warmup, min_ratio=0.1):
        if not lr > 0 or total < 1 or warmup < 0 or not 0 <= min_ratio <= 1:
            raise ConfigError(f"schedule wants lr > 0, steps >= 1, warmup >= 0, 0 <= min_ratio <= 1; got "
                              f"lr={lr}, steps={total}, warmup={warmup}, min_ratio={min_ratio}")
        self.lr, self.total, self.warmup, self.min_ratio = float(lr), int(total), int(warmup), float(min_ratio)

    def __call__(self, step):
        if step <= self.warmup:
            return self.lr * step / self.warmup
        span = max(1, self.total - self.warmup)
        frac = min(1.0, (step - self.warmup) / span)
        floor = self.lr * self.min_ratio
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * frac))
