"""The training loop and its command line: corpus -> batches -> GPT -> AdamW, with evaluation, a progress
bar, JSON logs and a generated sample at the end. `examples/train_lm.py` and `python -m hpr.train` are
thin wrappers over `main`. Owns the loop and the run's printing; not the math (hpr.model, hpr.optim)
or the data (hpr.data).

Failures: a step whose loss or gradient holds a NaN or Inf is skipped on every rank alike (no update,
optimizer state untouched) and after --max-bad-steps in a row the run saves and stops (exit 2); the
data-parallel replicas' parameter checksums are compared every --check-every steps; a peer that dies
or hangs ends every rank with the CommTimeout that names it (exit 3, the whole job aborted); a save
that fails leaves the previous checkpoint and says so (exit 2). HPR_FAULT (hpr.faults) injects each
of these for the tests. --trace FILE (or HPR_TRACE) writes the job's timeline (hpr.trace).

Usage: ``python -m hpr.train --preset S --steps 300 --batch 16 --lr 1e-3``"""
import argparse
import faulthandler
import json
import math
import os
import sys
import time

import numpy as np

from . import trace
from .device import KINDS, to_host
from .errors import CommError, ConfigError, HprError
from .faults import Faults, wrap_ready
from .model import DTYPES, PRESETS, GPT, GPTConfig


BETA2 = 0.999  # PyTorch's default; on the default corpus S reaches a lower loss in 300 steps than with 0.95


def build_parser():
    ap = argparse.ArgumentParser(prog="train_lm", description="Train hpr's compact GPT on a byte-level corpus.")
    ap.add_argument("--preset", default="S", help=f"model size: {', '.join(PRESETS)} (default S)")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step (default 16)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default: steps/10, at most 100)")
    ap.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of --lr (default 0.1)")
    ap.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on matmul weights (default 0.1)")
    ap.add_argument("--clip", type=float, default=1.0, help="max global gradient norm; 0 = off (default 1.0)")
    ap.add_argument("--beta2", type=float, default=BETA2, help=f"AdamW's second-moment decay (default {BETA2})")
    ap.add_argument("--seed", type=int, default=0, help="seed for the weights and the data order (default 0)")
    ap.add_argument("--data", default=None, help="a text file or a folder (default: Python's own standard library)")
    ap.add_argument("--eval-every", type=int, default=100, help="validate every N steps, and at the end; 0 = end only")
    ap.add_argument("--eval-batches", type=int, default=8, help="batches of --batch windows per validation (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads per process (default: all cores)")
    ap.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    ap.add_argument("--device", default="cpu", help="cpu, or gpu: each rank takes the GPU of its node-local "
                    "rank (CuPy; see python -m hpr config) (default cpu)")
    ap.add_argument("--qubits", type=int, default=0,
                    help="add a QuantumLayer of this many qubits after the last block (default 0: none)")
    ap.add_argument("--q-depth", type=int, default=1, help="the QuantumLayer's rotation + entangling layers (default 1)")
    ap.add_argument("--log-json", default=None, metavar="FILE", help="append one JSON object per step/eval to FILE")
    ap.add_argument("--log-every", type=int, default=10, help="plain progress line every N steps when not a terminal")
    ap.add_argument("--prompt", default="def ", help="prompt for the final sample (default 'def ')")
    ap.add_argument("--sample-tokens", type=int, default=200, help="bytes to generate at the end; 0 = none")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    g = ap.add_argument_group("parallel layout (under mpiexec / srun): world = dp x tp x pp")
    g.add_argument("--dp", type=int, default=None, help="data-parallel ranks (default: world / (tp x pp))")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks: heads, MLP and vocabulary split (default 1)")
    g.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    g.add_argument("--micro-batches", "--accum", dest="accum", type=int, default=1,
                   help="micro-batches per data-parallel rank and step: the 1F1B pipeline's, or plain gradient "
                        "accumulation without stages (default 1)")
    g.add_argument("--bucket-mb", type=float, default=1.0, help="gradient bucket size in MiB (default 1)")
    g.add_argument("--grad-comm-dtype", default="float32", help="float32, bfloat16 or float16 (default float32)")
    g.add_argument("--zero", type=int, default=0, help="1: shard the optimizer state over ranks (ZeRO-1)")
    ap.add_argument("--peak-tflops", type=float, default=None, metavar="T",
                    help="MFU against T TFLOP/s per rank (a datasheet peak) instead of the matmul FLOP/s "
                    "measured at start (numpy's BLAS, or cuBLAS at 8192^3 on a GPU)")
    g = ap.add_argument_group("failures and diagnostics")
    g.add_argument("--max-bad-steps", type=int, default=5,
                   help="a step whose loss or gradient is NaN/Inf is skipped (no update); after this many in a "
                        "row the run saves a checkpoint and stops (default 5)")
    g.add_argument("--check-every", type=int, default=100,
                   help="compare the data-parallel replicas' parameter checksums every N steps; 0 = off (default 100)")
    g.add_argument("--trace", default=None, metavar="FILE",
                   help="write a Chrome-trace / Perfetto timeline of every rank to FILE (also: HPR_TRACE=FILE)")
    g = ap.add_argument_group("checkpoints")
    g.add_argument("--ckpt-dir", default=None, help="folder for checkpoints (default: none are written)")
    g.add_argument("--ckpt-every", type=int, default=0, help="save every N steps; 0 = at the end only")
    g.add_argument("--ckpt-keep", type=int, default=3, help="checkpoints kept (default 3)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in --ckpt-dir (fresh start if none)")
    return ap


def check_args(a):
    """Every bad flag as a ConfigError, before any work or file is touched."""
    if a.preset not in PRESETS:
        raise ConfigError(f"unknown --preset {a.preset!r}; choose one of {', '.join(PRESETS)}")
    if a.dtype not in DTYPES:
        raise ConfigError(f"unknown --dtype {a.dtype!r}; use one of {', '.join(DTYPES)}")
    if a.device not in KINDS:
        raise ConfigError(f"unknown --device {a.device!r}; use one of {', '.join(KINDS)}")
    if a.device == "gpu" and a.grad_comm_dtype == "bfloat16":
        raise ConfigError("--grad-comm-dtype bfloat16: CuPy has no bfloat16 arrays; with --device gpu use float16 "
                          "or float32")
    for name in ("steps", "batch", "eval_batches", "log_every"):
        if getattr(a, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise ConfigError(f"--lr must be a positive number, got {a.lr}")
    if a.warmup is not None and a.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {a.warmup}")
    if a.eval_every < 0 or a.sample_tokens < 0:
        raise ConfigError("--eval-every and --sample-tokens must be >= 0")
    if not 0 <= a.beta2 < 1:
        raise ConfigError(f"--beta2 must be in [0, 1), got {a.beta2}")
    if a.weight_decay < 0 or a.clip < 0 or not 0 <= a.min_lr_ratio <= 1:
        raise ConfigError("--weight-decay and --clip must be >= 0 and --min-lr-ratio in [0, 1]")
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {a.threads}")
    if a.temperature < 0 or a.top_k < 1:
        raise ConfigError("--temperature must be >= 0 and --top-k >= 1")
    if a.accum < 1:
        raise ConfigError(f"--micro-batches must be at least 1, got {a.accum}")
    if a.ckpt_every < 0:
        raise ConfigError(f"--ckpt-every must be >= 0 (0 = at the end only), got {a.ckpt_every}")
    if a.ckpt_keep < 1:
        raise ConfigError(f"--ckpt-keep must be at least 1, got {a.ckpt_keep}")
    from .parallel.data import COMM_DTYPES

    if a.grad_comm_dtype not in COMM_DTYPES:
        raise ConfigError(f"--grad-comm-dtype {a.grad_comm_dtype!r}: use one of {', '.join(COMM_DTYPES)}")
    if not (a.bucket_mb > 0 and math.isfinite(a.bucket_mb)):
        raise ConfigError(f"--bucket-mb must be positive, got {a.bucket_mb}")
    if a.zero not in (0, 1):
        raise ConfigError(f"--zero {a.zero} is not supported; use 0 (replicated optimizer) or 1 (sharded)")
    if a.tp < 1 or a.pp < 1 or (a.dp is not None and a.dp < 1):
        raise ConfigError(f"--dp, --tp and --pp must be at least 1 (got {a.dp}, {a.tp}, {a.pp})")
    if a.peak_tflops is not None and not (a.peak_tflops > 0 and math.isfinite(a.peak_tflops)):
        raise ConfigError(f"--peak-tflops must be a positive number, got {a.peak_tflops}")
    if a.max_bad_steps < 1 or a.check_every < 0:
        raise ConfigError(f"--max-bad-steps must be >= 1 and --check-every >= 0 (got {a.max_bad_steps}, "
                          f"{a.check_every})")
    if a.resume and not a.ckpt_dir:
        raise ConfigError("--resume needs --ckpt-dir (the folder the checkpoints are in)")
    if a.ckpt_dir and os.path.exists(a.ckpt_dir) and not os.path.isdir(a.ckpt_dir):
        raise ConfigError(f"--ckpt-dir {a.ckpt_dir} exists and is not a folder")
    for flag, path in (("--log-json", a.log_json), ("--trace", a.trace)):
        d = os.path.dirname(os.path.abspath(path)) if path else None
        if d and not os.path.isdir(d):
            raise ConfigError(f"{flag} {path}: folder {d} does not exist; create it first")


class Progress:
    """A tqdm bar on a terminal; plain lines every `every` steps otherwise (batch logs stay readable)."""

    def __init__(self, total, every, out=sys.stdout):
        self.total, self.every, self.out = total, every, out
        self.bar = None
        if out.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=out, dynamic_ncols=True, unit="step")

    def update(self, step, **fields):
        text = " ".join(f"{k} {v}" for k, v in fields.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step:>6}/{self.total}  {text}", file=self.out, flush=True)

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=self.out, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def evaluate(model, batches, n_batches, batch, comm=None, pipe=None):
    """Mean loss over the first n_batches * batch windows of a validation stream (the same every time),
    the batches shared out over the data-parallel ranks of comm, each through the pipeline if any."""
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    part = np.zeros(1, np.float64)
    for i in range(rank, n_batches, size):
        x, y = batches.get(i * batch, batch)
        if pipe is None:
            part[0] += model.loss(x, y)
            continue
        m = pipe.m
        k = batch // m
        loss = pipe.run([(x[j * k:(j + 1) * k], y[j * k:(j + 1) * k]) for j in range(m)], grad=False) / m
        part[0] += float(pipe.comm.allreduce(np.array([loss]), op="sum")[0]) if pipe.pp > 1 else loss
    if size > 1:
        comm.allreduce(part, op="sum")
    return float(part[0]) / n_batches


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CommError as e:  # a peer died or is stuck: the others may be anywhere, so end the whole job
        print(f"error: {e}", file=sys.stderr, flush=True)
        return _abort(3)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _abort(code):
    """End every rank of the job with exit code `code` (a lone process just returns it)."""
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        time.sleep(0.3)  # let the launcher forward this rank's message before it ends the others
        MPI.COMM_WORLD.Abort(code)
    return code


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
    non-finite loss or norm. fault: the HPR_FAULT kinds firing at this step (tests), or None."""
    from .optim import clip_scale, grad_norm_sq

    comm = sync.comm
    local = batch // comm.size
    micro = local // accum
    first = (step - 1) * batch + comm.rank * local
    model.zero_grad()
    loss = 0.0
    ready = sync.ready
    if fault:
        ready = wrap_ready(fault, ready, model.grads)
    if pipe is not None:  # the accum micro-batches go through the pipeline stages on the 1F1B schedule
        data = [batches.get(first + k * micro, micro) for k in range(accum)]
        sync.begin()
        hold = pipe.tied_offset()  # wte's bucket waits until both of its stages' gradients are summed
        if fault:
            ready(None)  # before the stages start: kill / stall
        if hold is not None:
            ready = (lambda k, r=ready: r(min(k, hold)))
        loss = pipe.run(data, scale=1.0 / accum, on_ready=ready) / accum
        pipe.sum_tied()
        if pipe.pp > 1:
            loss = float(pipe.comm.allreduce(np.array([loss]), op="sum")[0])  # from the last stage
    else:
        for k in range(accum):
            x, y = batches.get(first + k * micro, micro)
            with trace.span("forward", micro=k):
                loss += model.forward(x, y) / accum
            last = k == accum - 1
            if last:
                sync.begin()
                if fault:
                    ready(None)  # between forward and backward: kill / stall
            with trace.span("backward", micro=k):
                model.backward(scale=1.0 / accum, on_ready=ready if last else None)
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


def _load_corpus(comm, path):
    """Rank 0 reads (and caches) the corpus first, so the ranks do not all tokenise it at once; a
    DataError on rank 0 is raised on every rank."""
    from .data import Corpus
    from .errors import DataError

    err = None
    corpus = None
    if comm.rank == 0:
        try:
            corpus = Corpus.load(path)
        except DataError as e:
            err = str(e)
    err = comm.bcast_obj(err, root=0)
    if err:
        raise DataError(err)
    return corpus if comm.rank == 0 else Corpus.load(path)


class StopFlag:
    """SIGTERM / SIGUSR1 (Slurm's warning before preemption or the time limit) on any rank: every rank
    saves a checkpoint at the next step boundary and exits 0. The flag is OR-ed over the ranks each step."""

    def __init__(self):
        import signal

        self.hit = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._set)

    def _set(self, signum, frame):
        self.hit = signum

    def any(self, comm):
        if comm.size == 1:
            return self.hit
        return int(comm.allreduce(np.array([self.hit], np.int32), op="max")[0])


def run(args):
    import hpr

    from . import cpu, checkpoint
    from .data import Batches
    from .optim import AdamW, CosineSchedule
    from .parallel import DataParallel, Pipeline, ProcessGrid, TensorParallel, check_replicas, check_same_params
    from .parallel.schedule import bubble_fraction

    check_args(args)
    world = hpr.init(threads=args.threads)
    device = hpr.device.select(args.device, world)
    if not faulthandler.is_enabled():
        faulthandler.enable()  # a crashing rank (SIGSEGV, SIGBUS, SIGABRT ...) prints where it was
    faults = Faults.from_env(world.rank)  # HPR_FAULT (tests only); None otherwise
    if args.trace:
        trace.start(args.trace)
    config = GPTConfig.preset(args.preset, dtype=args.dtype, n_qubits=args.qubits, q_depth=args.q_depth)
    grid = ProcessGrid(world, dp=args.dp, tp=args.tp, pp=args.pp, n_heads=config.n_heads, d_model=config.d_model,
                       n_layers=config.n_layers, batch=args.batch, micro_batches=args.accum,
                       vocab_size=config.vocab_size)
    dp, tp_n, pp, m = grid.dp_size, grid.tp_size, grid.pp_size, args.accum
    lead = world.rank == 0
    say = print if lead else (lambda *a, **k: None)
    corpus = _load_corpus(world, args.data)
    corpus.check_context(config.context)
    threads = cpu.num_threads()
    warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    schedule = CosineSchedule(args.lr, args.steps, warmup, args.min_lr_ratio)

    tp = TensorParallel(grid.tp)

    def make_stage(params, grads):
        alloc = grid.dp.alloc if (dp > 1 and grads is None and not device.is_gpu) else None
        return GPT(config, seed=args.seed, tp=tp, stage=(grid.pp_rank, pp), params=params, grads=grads,
                   alloc=alloc, device=device)

    pipe = Pipeline(grid.pp, make_stage, m, tied=grid.tied) if pp > 1 else None
    model = pipe.model if pipe else make_stage(None, None)
    skip = []
    if pp > 1 and model.last:  # the tied wte is counted in the gradient norm on the first stage
        skip = [(model.emb.wte.offset, model.emb.wte.offset + model.emb.wte.size)]
    sync = DataParallel(grid.dp, model.layout, args.bucket_mb, args.grad_comm_dtype, args.zero, tp=tp,
                        pp=grid.pp, norm_skip=skip)
    lo, hi = sync.opt_range()
    opt = AdamW(model.layout, model.params, model.grads, betas=(0.9, args.beta2), weight_decay=args.weight_decay,
                lo=lo, hi=hi)
    check_same_params(grid.dp, model.params)  # every replica built them from the same seed: prove it
    step0 = 0
    if args.resume:
        path, meta = checkpoint.load(world, args.ckpt_dir)
        if path is None:
            say(f"resume: no checkpoint in {args.ckpt_dir} yet; starting from step 0")
        else:
            step0 = _restore(world, grid, args, config, model, opt, sync, path, meta)
            say(f"resume: continuing from {path} (step {step0})")

    train = Batches(corpus.train, config.context, args.seed)
    val = Batches(corpus.val, config.context, args.seed + 1)
    entropy = corpus.unigram_entropy()
    world.barrier()
    mine = args.peak_tflops * 1e12 if args.peak_tflops else cpu.matmul_flops(config.dtype, device=device)
    peak = float(world.allreduce(np.array([mine]), op="sum")[0])  # the whole job's
    flops_tok = config.flops_per_token()
    tokens_step = args.batch * config.context
    local = args.batch // dp
    micro = local // m
    itemsize = model.params.itemsize
    say(f"hpr {args.preset}: {model.layout.full_size:,} parameters "
        f"({config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, context {config.context}, "
        f"{config.dtype})")
    if device.is_gpu:
        where = world.gather_obj((device.index, device.name()), root=0)
        aware = world.cuda_aware  # collective (every rank agrees)
        say("devices: " + ", ".join(f"rank {r} GPU {i} ({nm})" for r, (i, nm) in enumerate(where or []))
            + f"; MPI {'takes device buffers (CUDA-aware)' if aware else 'stages through pinned host memory'}")
        if lead:
            shared = {}
            for r, (i, _) in enumerate(where):
                shared.setdefault((world.procs[r][0], i), []).append(r)
            for (host, i), ranks in shared.items():
                if len(ranks) > 1:
                    say(f"note: ranks {ranks} share GPU {i} on {host} (more ranks than GPUs there): they take "
                        "turns on it; one rank per GPU is the fast layout")
    say(f"layout: dp {dp} x tp {tp_n} x pp {pp} = {world.size} rank(s), {threads} thread(s) each; {local} "
        f"sequences per data-parallel rank per step" + (f" in {m} micro-batches of {micro}" if m > 1 else "")
        + (f"; gradient buckets of {args.bucket_mb:g} MiB ({len(sync.buckets)}), communication in "
           f"{args.grad_comm_dtype}" if dp > 1 else "") + ("; ZeRO-1" if args.zero else ""))
    if pp > 1:
        say(f"pipeline: {pp} stages (blocks {[b for b in _stage_ranges(config, pp)]}), 1F1B over {m} "
            f"micro-batches; bubble in theory (pp-1)/(m+pp-1) = {bubble_fraction(pp, m):.1%}")
    if world.size > 1 and lead and args.log_every and (tp_n > 1 or pp > 1):
        print(grid.describe())
    if 1 < world.size <= 64:  # the launcher names a dead rank by its pid: this line maps it to the rank
        hosts = {}
        for r, (host, pid) in enumerate(world.procs):
            hosts.setdefault(host, []).append(f"rank {r} pid {pid}")
        say("processes: " + "; ".join(f"on {h}: {', '.join(v)}" for h, v in hosts.items()))
    say(f"memory per rank (rank 0): parameters {model.params.nbytes / 2**20:.2f} MiB, gradients "
        f"{model.grads.nbytes / 2**20:.2f} MiB, optimizer state {(opt.m.nbytes + opt.v.nbytes) / 2**20:.2f} MiB"
        + (f" (1/{dp} of {2 * model.params.size * itemsize / 2**20:.2f})" if args.zero and dp > 1 else ""))
    say(f"data: {corpus.source}: {corpus.train.size:,} train bytes, {corpus.val.size:,} validation bytes; "
        f"unigram entropy {entropy:.3f} nats/byte")
    say(f"steps {args.steps}, batch {args.batch} x {config.context} = {tokens_step:,} tokens/step, lr {args.lr:g} "
        f"(warmup {warmup}, cosine to {args.lr * args.min_lr_ratio:g}); "
        f"{'given' if args.peak_tflops else ('cuBLAS' if device.is_gpu else 'BLAS') + ' matmul'} peak of the job "
        f"{peak / 1e9:.1f} GFLOP/s", flush=True)

    stop = StopFlag()
    log = open(args.log_json, "a", buffering=1) if (args.log_json and lead) else None  # line by line: a killed job keeps its log
    bar = Progress(args.steps, args.log_every) if lead else None
    val_loss = None
    if trace.on:
        trace.align(world)  # a common zero for the ranks' clocks
    t_start = time.perf_counter()
    step = step0
    bad = 0  # non-finite steps in a row
    try:
        for step in range(step0 + 1, args.steps + 1):
            t0 = time.perf_counter()
            fault = faults.at(step) if faults else None
            with trace.span("step", step=step):
                loss, lr, norm = train_step(model, opt, sync, schedule, train, step, args.batch, m, args.clip,
                                            pipe=pipe, fault=fault)
            dt = time.perf_counter() - t0
            tps = tokens_step / dt
            bad = 0 if math.isfinite(loss) and math.isfinite(norm) else bad + 1
            if bad and lead:
                bar.write(f"step {step}: skipped: loss {loss:.4g}, gradient norm {norm:.4g} (not finite); no "
                          f"update, optimizer state untouched ({bad} in a row, --max-bad-steps {args.max_bad_steps})")
                if log:
                    log.write(json.dumps({"step": step, "skipped": True, "loss": None, "grad_norm": None,
                                          "lr": lr}) + "\n")
            elif lead:
                bar.update(step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}",
                           mfu=f"{tps * flops_tok / peak:.0%}")
                if log:
                    log.write(json.dumps({"step": step, "loss": loss, "lr": lr, "tokens_per_s": tps}) + "\n")
            if bad >= args.max_bad_steps:
                where = _save(world, grid, args, config, model, opt, sync, step) if args.ckpt_dir else None
                raise HprError(
                    f"stopped at step {step}: {bad} steps in a row had a NaN or Inf in the loss or the gradients "
                    f"(--max-bad-steps {args.max_bad_steps}). "
                    + (f"Checkpoint {where} holds the parameters of the last good step. " if where else
                       "No --ckpt-dir, so nothing was saved. ")
                    + f"Lower --lr (now {args.lr:g}) or --clip, check the data, or use --dtype float64; then --resume.")
            if args.check_every and dp > 1 and step % args.check_every == 0:
                check_replicas(world, model.params, lambda r: grid.coords(r)[::2], step)
            if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
                with trace.span("eval"):
                    val_loss = evaluate(model, val, args.eval_batches, args.batch, grid.dp, pipe)
                if lead:
                    bar.write(f"step {step}: val_loss {val_loss:.4f} nats/byte (unigram entropy {entropy:.3f})")
                    if log:
                        log.write(json.dumps({"step": step, "val_loss": val_loss, "unigram_entropy": entropy}) + "\n")
                        log.flush()
            signum = stop.any(world)
            due = args.ckpt_dir and ((args.ckpt_every and step % args.ckpt_every == 0) or step == args.steps)
            if due or signum:
                if args.ckpt_dir:
                    where = _save(world, grid, args, config, model, opt, sync, step, faults)
                    if lead:
                        bar.write(f"step {step}: checkpoint {where}")
                if signum:
                    if lead:
                        bar.write(f"step {step}: signal {signum} received; "
                                  + ("checkpoint saved, " if args.ckpt_dir else "no --ckpt-dir, nothing saved; ")
                                  + "exiting")
                    _write_trace(world, say)
                    return 0
    except CommError as e:
        raise type(e)(f"step {step}: {e}") from None
    finally:
        if bar:
            bar.close()
        if log:
            log.close()
    wall = time.perf_counter() - t_start
    done = step - step0
    exposed = world.allreduce(np.array([sync.wait_s]), op="avg")[0] if dp > 1 else 0.0
    say(f"done: {done} steps in {wall:.1f} s ({done * tokens_step / max(wall, 1e-9):,.0f} tokens/s for the job"
        + (f"; waiting on gradient communication {100 * exposed / max(wall, 1e-9):.1f}% of the time" if dp > 1
           else "") + ")"
        + (f"; final val_loss {val_loss:.4f} vs unigram entropy {entropy:.3f} nats/byte" if val_loss is not None
           else ""))
    _write_trace(world, say)
    if pipe is not None:
        idle = grid.pp.gather_obj(pipe.idle_s, root=0)
        if lead:
            print("pipeline idle (waiting for a neighbour) per stage: "
                  + ", ".join(f"stage {i} {100 * v / max(wall, 1e-9):.1f}%" for i, v in enumerate(idle))
                  + f" of the run; theory (pp-1)/(m+pp-1) = {bubble_fraction(pp, m):.1%}")
    if args.sample_tokens:
        whole = _whole_model(world, grid, tp, config, args, model)
        if lead:
            text = whole.generate(args.prompt, args.sample_tokens, args.temperature, args.top_k, seed=args.seed)
            print("--- sample ---")
            print(text.decode("utf-8", errors="replace"), flush=True)
    return 0


def _write_trace(world, say):
    """--trace / HPR_TRACE: every rank's timeline, merged into one file by rank 0 (collective)."""
    if trace.on:
        n = trace.recorded()
        path = trace.finish(world)
        say(f"trace: {path} ({world.size} rank(s), {n:,} spans on rank 0; open it in https://ui.perfetto.dev)")


def _stage_ranges(config, pp):
    from .model.gpt import stage_blocks

    return stage_blocks(config.n_layers, pp)


def _gather(world, grid, tp, model, opt=None, zero=False):
    """The state in canonical form (whole named tensors) on world rank 0."""
    from .parallel import canonical

    flats = {"params": to_host(model.params)}  # copies off a GPU
    if opt is not None:
        flats.update(m=to_host(opt.m), v=to_host(opt.v))
    return canonical.gather(world, tp, model.layout, flats, dp=grid.dp,
                            ranges={"m": zero, "v": zero} if opt is not None else None,
                            first_stage=model.first, contribute=grid.dp_rank == 0)


def _whole_model(world, grid, tp, config, args, model):
    """On world rank 0, a single-rank GPT holding the trained parameters (for sampling)."""
    if world.size == 1:
        return model
    full = _gather(world, grid, tp, model)
    if world.rank != 0:
        return None
    whole = GPT(config, seed=args.seed)
    for p in whole.layout.entries:
        p.data[...] = full["params"][p.name]
    return whole


def _meta(args, config, grid, opt, step):
    import dataclasses

    return {"config": dataclasses.asdict(config),
            "layout": {"dp": grid.dp_size, "tp": grid.tp_size, "pp": grid.pp_size, "zero": args.zero,
                       "micro_batches": args.accum},
            "seed": args.seed, "data": {"next_sample": step * args.batch, "batch": args.batch},
            "schedule": {"lr": args.lr, "steps": args.steps, "warmup": args.warmup,
                         "min_lr_ratio": args.min_lr_ratio},
            "optimizer": {"t": opt.t, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay}}


def _save(world, grid, args, config, model, opt, sync, step, faults=None):
    """A checkpoint in canonical form (layout-independent), written by world rank 0."""
    from . import checkpoint

    with trace.span("checkpoint", step=step):
        with trace.span("gather state"):
            full = _gather(world, grid, sync.tp, model, opt, zero=bool(args.zero))
        files = {}
        if world.rank == 0:
            files["params.safetensors"] = full["params"]
            files["optim.safetensors"] = {f"{k}.{n}": a for k in ("m", "v") for n, a in full[k].items()}
        with trace.span("write"):
            return checkpoint.save(world, args.ckpt_dir, step, files, _meta(args, config, grid, opt, step),
                                   keep=args.ckpt_keep, fault=faults.save_hook(step) if faults else None)


def _restore(world, grid, args, config, model, opt, sync, path, meta):
    """Load this rank's part of the params and optimizer state from a canonical checkpoint, whatever
    layout saved it; returns the step to continue after."""
    import dataclasses

    from . import checkpoint
    from .errors import CheckpointError
    from .parallel import canonical

    if meta["config"] != dataclasses.asdict(config):
        raise CheckpointError(f"{path} was saved by a different model ({meta['config']}); resume with the same "
                              "--preset and --dtype, or use another --ckpt-dir")
    if meta["seed"] != args.seed:
        raise CheckpointError(f"{path} was trained with --seed {meta['seed']}; resume with the same --seed so "
                              "the data order continues (or use another --ckpt-dir)")
    sch = meta["schedule"]
    if world.rank == 0 and (sch["lr"], sch["steps"], sch["warmup"], sch["min_lr_ratio"]) != (
            args.lr, args.steps, args.warmup, args.min_lr_ratio):
        print(f"resume: note: the learning-rate schedule differs from the checkpoint's ({sch}); the run "
              "continues with this run's flags")
    if meta["data"]["batch"] != args.batch:
        raise CheckpointError(f"{path} was trained with --batch {meta['data']['batch']}; resume with the same "
                              "--batch so the data order continues")
    tensors = None
    if world.rank == 0:
        opt_t = checkpoint.read_arrays(path, "optim.safetensors")
        tensors = {"params": checkpoint.read_arrays(path, "params.safetensors"),
                   "m": {k[2:]: v for k, v in opt_t.items() if k.startswith("m.")},
                   "v": {k[2:]: v for k, v in opt_t.items() if k.startswith("v.")}}
    try:
        live = {"params": model.params, "m": opt.m, "v": opt.v}
        host = {k: to_host(a) for k, a in live.items()}  # the arrays themselves on the CPU
        canonical.scatter(world, model.layout, tensors, {"params": host["params"]})
        lo, hi = sync.opt_range()
        canonical.scatter(world, model.layout, tensors, {"m": host["m"], "v": host["v"]}, lo, hi)
        for k, a in live.items():
            if a is not host[k]:
                a[...] = model.xp.asarray(host[k])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this model: {e}") from None
    opt.t = int(meta["optimizer"]["t"])
    return int(meta["step"])


if __name__ == "__main__":
    sys.exit(main())
