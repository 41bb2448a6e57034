"""Pipeline parallelism: one data-parallel rank's share of a step run through pp stages on the 1F1B
schedule (hpr.parallel.schedule), with non-blocking sends of activations and their gradients.

Each stage holds its contiguous blocks (hpr.model.GPT(stage=...)); the first also the embedding, the
last the final norm, the tied head and the loss, so wte lives on both and its gradient is summed
between them after backward (`sum_tied`). A stage keeps at most min(pp - stage, m) micro-batches'
activations alive: that many replicas of the stage share the parameter and gradient buffers, each
with its own activation buffers, and micro-batch i uses replica i mod that number. Sends are Isend
(every stage may be sending while its neighbour sends the other way), receives wait politely.
Owns the schedule's execution; not the schedule (schedule.py) or the layers. With hpr.trace on: the
micro-batches' "forward" / "backward" spans on the compute track, and on the pipeline track every
receive (its span is the stage's idle time, waiting for the neighbour) and send.

Usage: ``pipe = Pipeline(grid.pp, make_stage, m); loss = pipe.run(micro_batches, scale=1/m)``"""
import time

import numpy as np

from .. import trace
from .schedule import one_f_one_b


class Pipeline:
    def __init__(self, comm, make_stage, micro_batches, tied=None):
        """comm: the pp group (rank = stage). make_stage(params, grads) -> a GPT of this stage, built on
        the given flat buffers (None, None for the first, which allocates them). tied: the group of the
        first and last stage (same dp and tp coordinates) that sums wte's gradient, or None."""
        self.comm, self.stage, self.pp, self.m = comm, comm.rank, comm.size, micro_batches
        first = make_stage(None, None)
        slots = max(1, min(self.pp - self.stage, self.m))
        self.models = [first] + [make_stage(first.params, first.grads) for _ in range(slots - 1)]
        self.model = first
        self.actions = one_f_one_b(self.pp, self.m, self.stage)
        self.tied = tied
        self.idle_s = 0.0  # time this stage spent waiting for a neighbour (its share of the bubble)

    def _recv(self, shape, dtype, src, tag):
        buf = self.model.xp.empty(shape, dtype)  # on the stage's device
        t0 = time.perf_counter_ns()
        self.comm.recv(buf, src, tag)
        t1 = time.perf_counter_ns()
        self.idle_s += (t1 - t0) * 1e-9
        if trace.on:
            trace.add("recv " + ("gradients" if tag % 2 else "activations"), "pipeline", t0, t1, stage=src,
                      micro=tag // 2)
        return buf

    def _send(self, x, dest, tag):
        with trace.span("send " + ("gradients" if tag % 2 else "activations"), "pipeline", stage=dest,
                        micro=tag // 2):
            return self.comm.isend(x.copy(), dest, tag)

    def run(self, micro, scale=1.0, on_ready=None, grad=True, every_micro=False):
        """micro: [(tokens, targets)] of the m micro-batches (every stage gets them; the first uses the
        tokens, the last the targets). Returns the sum of the micro-batches' losses on the last stage,
        0.0 elsewhere. With grad, gradients (times scale) are added into the stage's buffer, and
        on_ready is passed to the last micro-batch's backward (to every one's with every_micro: ZeRO-2/3
        reduce each micro-batch's gradients)."""
        s, pp = self.stage, self.pp
        b, t = micro[0][0].shape
        c = self.model.config.d_model
        dtype = self.model.dtype
        sends, total = [], 0.0
        actions = self.actions if grad else [a for a in self.actions if a.kind == "F"]
        for a in actions:
            model = self.models[a.micro % len(self.models)]
            x, y = micro[a.micro]
            if a.kind == "F":
                inp = x if s == 0 else self._recv((b * t, c), dtype, s - 1, 2 * a.micro)
                with trace.span("forward", micro=a.micro):
                    out = model.stage_forward(inp, b, t, targets=y, grad=grad)
                if s == pp - 1:
                    total += out
                else:
                    sends.append(self._send(out, s + 1, 2 * a.micro))
            else:
                dout = None if s == pp - 1 else self._recv((b * t, c), dtype, s + 1, 2 * a.micro + 1)
                last = every_micro or a.micro == self.m - 1
                with trace.span("backward", micro=a.micro):
                    dx = model.stage_backward(dout, scale, on_ready if last else None)
                if s > 0:
                    sends.append(self._send(dx, s - 1, 2 * a.micro + 1))
        with trace.span("wait sends", "pipeline"):
            for r in sends:
                r.wait()
        return total

    def sum_tied(self):
        """wte's gradient summed between the first and the last stage (its two uses)."""
        if self.tied is not None and self.tied.size > 1:
            self.tied.allreduce(self.model.emb.wte.grad)

    def tied_offset(self):
        """Where wte starts in this stage's buffer, if its gradient still awaits the other stage's."""
        if self.tied is not None and self.tied.size > 1:
            return self.model.emb.wte.offset
        return None
