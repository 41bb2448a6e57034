"""One optimizer step, the only one in hpr: the trainer's loop, the LSTM classifier (hpr.classify) and
the benchmarks (hpr.bench train, dp and layouts) all call train_step; and evaluate, the validation loss
the trainer reports. Owns the order of a step (forward, backward with the gradient buckets launched as
they fill, the global norm, the skip of a non-finite step, AdamW, the ZeRO-1/2 allgather); not the math
of any of them (hpr.model, hpr.parallel, hpr.optim) nor where the samples come from (the batches).

Usage: ``loss, lr, norm = train_step(model, opt, sync, schedule, batches, step, batch)``"""
import math

import numpy as np

from .. import trace
from ..faults import wrap_ready
from ..optim import clip_scale, grad_norm_sq


def train_step(model, opt, sync, schedule, batches, step, batch, accum=1, clip=1.0, pipe=None, fault=None):
    """One optimizer step of data-parallel training over sync.comm; returns (global loss, lr, grad norm).

    This rank takes its share of the step's `batch` windows by global sample index (rank r of N takes
    samples (step-1)*batch + r*batch/N ...), in `accum` micro-steps; gradients are averaged over the
    ranks (bucket by bucket while the last backward runs), clipped by the global norm, and AdamW
    updates this rank's range (all of it, or its ZeRO-1 shard, then allgathered). The loss returned
    is the mean over every rank's windows, L = sum_i L_i / N.

    A NaN or Inf in the loss or anywhere in the gradient skips the update on every rank alike (the
    loss and the norm are reduced over the whole job before the decision, with the reductions the step
    makes anyway): the parameters and the optimizer state stay as they were, and the caller sees a
    non-finite loss or norm. fault: the HPR_FAULT kinds firing at this step (tests), or None.

    model: anything with zero_grad, forward(x, y) -> loss, backward(scale, on_ready), params and grads
    (the GPT, a pipeline stage's replica, the LSTM classifier); batches: anything with get(first, count)
    -> (x, y), the samples first .. first + count - 1 (hpr.data.Batches, the classifier's windows, a
    benchmark's random tokens); schedule: step -> learning rate."""
    comm = sync.comm
    local = batch // comm.size
    micro = local // accum
    first = (step - 1) * batch + comm.rank * local
    sync.zero_grad(model)
    loss = 0.0
    ready = sync.ready
    every = sync.every_micro  # ZeRO-2/3: each micro-batch's gradients leave at once
    if fault:
        ready = wrap_ready(fault, ready, model.grads)
    if pipe is not None:  # the accum micro-batches go through the pipeline stages on the 1F1B schedule
        with trace.span("batch"):
            data = [batches.get(first + k * micro, micro) for k in range(accum)]
        hold = pipe.tied_offset()  # wte's bucket waits until both of its stages' gradients are summed
        if every:
            sync.begin(hold)
        else:
            sync.begin()
        if fault:
            ready(None)  # before the stages start: kill / stall
        if hold is not None and not every:
            ready = (lambda k, r=ready: r(min(k, hold)))
        loss = pipe.run(data, scale=1.0 / accum, on_ready=ready, every_micro=every) / accum
        pipe.sum_tied()
        if pipe.pp > 1:
            loss = float(pipe.comm.allreduce(np.array([loss]), op="sum")[0])  # from the last stage
    else:
        for k in range(accum):
            with trace.span("batch", micro=k):  # assembling the windows: a small share of a step
                x, y = batches.get(first + k * micro, micro)
            with trace.span("forward", micro=k):
                loss += model.forward(x, y) / accum
            last = k == accum - 1
            if last or (every and k == 0):
                sync.begin()
            if last and fault:
                ready(None)  # between forward and backward: kill / stall
            with trace.span("backward", micro=k):
                model.backward(scale=1.0 / accum, on_ready=ready if (last or every) else None)
    with trace.span("sync grads"):
        sync.finish()
    with trace.span("grad norm"):
        norm = float(np.sqrt(sync.grad_norm_sq(grad_norm_sq)))
        if comm.size > 1:
            loss = float(comm.allreduce(np.array([loss]), op="avg")[0])
    lr = schedule(step)
    if math.isfinite(loss) and math.isfinite(norm):  # the same verdict on every rank (see above)
        with trace.span("optimizer"):
            opt.step(lr, clip_scale(norm, clip))
            sync.gather_params(model.params)
    if fault and "drift" in fault:
        model.params[:1] = model.xp.nextafter(model.params[:1], np.inf)
    return loss, lr, norm


def evaluate(model, batches, n_batches, batch, comm=None, pipe=None, micro=None):
    """Mean loss over the first n_batches * batch windows of a validation stream (the same every time),
    the batches shared out over the data-parallel ranks of comm, each through the pipeline if any.

    micro: rows per forward (the training step's micro-batch, so evaluation's buffers are the step's;
    None: the whole batch at once, or batch / m per micro-batch through the pipeline). A batch is the
    mean of its micro-batches' mean losses (equal sizes: the same mean over the same windows, to float
    rounding)."""
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    part = np.zeros(1, np.float64)
    # ZeRO-3's forward gathers parameters over the dp group: every rank runs as many forwards (a rank
    # out of batches repeats its last one, the loss not counted)
    lockstep = getattr(pipe.model if pipe is not None else model, "gather", None) is not None
    rounds = -(-n_batches // size) if lockstep else 0
    for i in range(rank, max(n_batches, rounds * size), size):
        if i >= n_batches:
            x, y = batches.get(min(i, n_batches - 1) * batch, batch)
            _eval_batch(model, pipe, x, y, batch, micro)
            continue
        x, y = batches.get(i * batch, batch)
        part[0] += _eval_batch(model, pipe, x, y, batch, micro)
    if size > 1:
        comm.allreduce(part, op="sum")
    return float(part[0]) / n_batches


def _eval_batch(model, pipe, x, y, batch, micro):
    """One validation batch's mean loss (the same on every stage of a pipeline), micro rows per forward."""
    if pipe is None:
        k = micro or batch
        return sum(model.loss(x[j:j + k], y[j:j + k]) for j in range(0, batch, k)) / (batch // k)
    m = pipe.m
    k = micro or batch // m
    groups = batch // (m * k)  # m micro-batches of k rows through the pipeline at a time
    loss = 0.0
    for g in range(groups):
        o = g * m * k
        loss += pipe.run([(x[o + j * k:o + (j + 1) * k], y[o + j * k:o + (j + 1) * k]) for j in range(m)],
                         grad=False) / m
    loss /= groups
    return float(pipe.comm.allreduce(np.array([loss]), op="sum")[0]) if pipe.pp > 1 else loss
