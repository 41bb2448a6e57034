"""The alpha-beta cost model that picks an allreduce algorithm per call from the message size, the
communicator size and how its ranks sit on nodes. The choice depends only on numbers every rank has,
so every rank picks the same algorithm (a static plan). A CommConfig's ``allreduce`` (HPR_ALLREDUCE)
forces one; that is the channel's business (channel.py), not the model's.

  alpha  seconds per message between processes (MPI latency plus hpr's Python per step)
  beta   seconds per byte moved between processes
  gamma  seconds per byte reduced
  shm    the node-local shared-memory engine: one barrier (~shm_alpha) per small call, one per slot
         round (plus one) for large ones, and about three passes over the data through the caches

Usage: ``CostModel().choose(nbytes, size, layout)``; ``python -m hpr config`` prints the thresholds."""
import math

from ..config import ALGORITHMS
from ..errors import ConfigError


class NodeLayout:
    """How a communicator's ranks sit on nodes: nodes, ranks per node (0 if nodes differ in size)."""

    __slots__ = ("nodes", "per_node")

    def __init__(self, nodes, per_node):
        self.nodes, self.per_node = nodes, per_node

    @property
    def single_node(self):
        return self.nodes == 1

    @property
    def uniform(self):
        return self.per_node > 0


class CostModel:
    def __init__(self, alpha=8e-6, beta=1 / 6e9, gamma=1 / 10e9, shm_alpha=1e-6, shm_beta=1 / 20e9,
                 slot_bytes=1 << 20):
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.shm_alpha, self.shm_beta, self.slot_bytes = shm_alpha, shm_beta, slot_bytes

    def time(self, algo, n, p, layout=None):
        """Predicted seconds for an allreduce of n bytes over p ranks with the named algorithm."""
        a, b, g = self.alpha, self.beta, self.gamma
        if p == 1:
            return 0.0
        pof2 = 1 << (p.bit_length() - 1)
        fold = 0.0 if pof2 == p else 2 * (a + n * b) + n * g
        lg = math.log2(pof2)
        if algo == "recursive_doubling":
            return fold + lg * (a + n * b + n * g)
        if algo == "rabenseifner":
            return fold + 2 * lg * a + 2 * (pof2 - 1) / pof2 * n * b + (pof2 - 1) / pof2 * n * g
        if algo == "ring":
            return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g
        if algo == "shm":
            rounds = max(1, math.ceil(n / self.slot_bytes))
            return self.shm_alpha * (rounds + 1) + 2.5 * n * self.shm_beta
        if algo == "hierarchical":
            k = layout.per_node
            inner = self.time("shm", n, k)
            part = n / k
            outer = min(self.time(x, part, layout.nodes) for x in ("recursive_doubling", "rabenseifner", "ring"))
            return inner + outer
        raise ConfigError(f"unknown allreduce algorithm {algo!r}; use one of {', '.join(ALGORITHMS)}")

    def candidates(self, p, layout):
        """The algorithms that can run on this communicator."""
        out = ["recursive_doubling", "rabenseifner", "ring"]
        if layout is not None and layout.single_node:
            out.append("shm")
        elif layout is not None and layout.uniform and layout.per_node > 1:
            out.append("hierarchical")
        return out

    def choose(self, n, p, layout=None):
        best, best_t = "ring", float("inf")
        for algo in self.candidates(p, layout):
            t = self.time(algo, n, p, layout)
            if t < best_t:
                best, best_t = algo, t
        return best

    def thresholds(self, p, layout=None, max_bytes=1 << 30):
        """[(from_bytes, algorithm)]: where the choice changes, scanning powers of two."""
        out, last, n = [], None, 1
        while n <= max_bytes:
            algo = self.choose(n, p, layout)
            if algo != last:
                out.append((n, algo))
                last = algo
            n <<= 1
        return out

    def pt2pt_thresholds(self, p, max_bytes=1 << 30):
        """The same, among the point-to-point algorithms only (what runs between nodes)."""
        return self.thresholds(p, None, max_bytes)

