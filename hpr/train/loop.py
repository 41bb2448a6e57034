"""A training run, start to end: Run.build wires one job from the flags (process grid, model stage,
pipeline, data parallelism, AdamW, the data, a resumed checkpoint), Run.describe prints the banner,
Run.loop runs the steps (with evaluation, replica checks, checkpoints and signals) and Run.finish the
summary, the trace and a generated sample. `main` turns its failures into exit codes. Owns the order of
a run and its printing; not the step (hpr.train.step), the flags (hpr.train.flags), the checkpoint glue
(hpr.train.checkpoints), the data's sources (hpr.train.dataset, hpr.data) or the math (hpr.model,
hpr.optim).

Usage: ``run = Run.build(args); run.describe(); run.loop() or run.finish()`` (what ``run(args)`` does)"""
import dataclasses
import faulthandler
import json
import math
import resource
import signal
import sys
import time
from typing import Any, Optional

import numpy as np

import hpr

from .. import checkpoint, cpu, plan, trace
from ..data import Batches
from ..errors import CommError, HprError
from ..faults import Faults
from ..model import GPT, GPTConfig, vocab_multiple
from ..model.gpt import stage_blocks
from ..optim import AdamW, CosineSchedule
from ..parallel import (DataParallel, Pipeline, ProcessGrid, TensorParallel, check_replicas, check_same_params,
                        paged_zeros)
from ..parallel.schedule import bubble_fraction
from . import init_from
from .checkpoints import restore_checkpoint, save_checkpoint, whole_model
from .dataset import TrainingData, is_prepared
from .flags import build_parser, check_args, warmup_steps
from .step import evaluate, train_step


class Progress:
    """A tqdm bar on a terminal; plain lines every `every` steps otherwise (batch logs stay readable)."""

    def __init__(self, total, every, out=None):
        out = sys.stdout if out is None else out  # at the call: a default bound at import would keep the
        # stream of that moment (a caller's redirect, pytest's capture), perhaps closed by now
        self.total, self.every, self.out = total, every, out
        self.bar = None
        if out.isatty():
            from tqdm import tqdm  # lazy: only on a terminal, where the bar is drawn

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


class StopFlag:
    """SIGTERM / SIGUSR1 (Slurm's warning before preemption or the time limit) on any rank: every rank
    saves a checkpoint at the next step boundary and exits 0. The flag is OR-ed over the ranks each step.
    Run.build installs it first, so a signal during the setup (corpus, model) stops the run at its first
    step boundary, with a save, instead of ending the rank unsaved."""

    def __init__(self):
        self.hit = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._set)

    def _set(self, signum, frame):
        self.hit = signum

    def any(self, comm):
        if comm.size == 1:
            return self.hit
        return int(comm.allreduce(np.array([self.hit], np.int32), op="max")[0])


@dataclasses.dataclass
class Run:
    """One training job: what Run.build wires from the flags, and the loop's state. The step and the
    checkpoint glue take it whole instead of a long list of arguments. A test may build one from the
    first seven fields alone (what save_checkpoint and restore_checkpoint read)."""

    args: Any                      # the flags (hpr.train.flags.build_parser)
    world: Any                     # hpr.comm.Communicator of the whole job
    config: GPTConfig
    grid: ProcessGrid              # dp x tp x pp and this rank's groups
    model: GPT                     # this rank's stage (the pipeline's first replica when pp > 1)
    opt: AdamW
    sync: DataParallel             # gradient averaging over grid.dp (and the global norm)
    tp: Optional[TensorParallel] = None
    pipe: Optional[Pipeline] = None
    schedule: Optional[CosineSchedule] = None
    device: Any = None             # hpr.device.Device: where this rank's arrays live
    faults: Optional[Faults] = None  # HPR_FAULT's rules for this rank (tests only), else None
    data: Optional[TrainingData] = None  # the corpus or token shards, and their tokenizer
    train: Optional[Batches] = None
    val: Optional[Batches] = None
    entropy: float = 0.0           # the training split's unigram entropy, nats/token: the loss to beat
    peak: float = 0.0              # the whole job's matmul FLOP/s (MFU's denominator)
    step0: int = 0                 # the step a resumed checkpoint holds (0: a fresh start)
    step: int = 0                  # the last step run
    val_loss: Optional[float] = None
    val_bpb: Optional[float] = None  # val_loss in bits per byte of text
    bar: Optional[Progress] = None  # rank 0's progress, while looping
    log: Any = None                # rank 0's --log-json file, while looping
    t_start: float = 0.0
    stop: Optional[StopFlag] = None  # SIGTERM / SIGUSR1 seen (installed first thing in build)
    memory: Optional[plan.Estimate] = None  # the memory planner's line for this layout (hpr.plan)
    start: Optional[init_from.HFStart] = None  # --init-from's folder, else None

    @property
    def lead(self):
        return self.world.rank == 0

    def say(self, *a, **k):
        if self.lead:
            print(*a, **k)

    @classmethod
    def build(cls, args):
        """Every rank: check the flags, start hpr, and wire the job (collective)."""
        stop = StopFlag()  # before the long setup: a signal during it is kept for the first step boundary
        check_args(args)
        start = init_from.plan(args)  # --init-from: its config.json, tokenizer and flags, on every rank
        world = hpr.init(threads=args.threads)
        device = hpr.device.select(args.device, world)
        if not faulthandler.is_enabled():
            faulthandler.enable()  # a crashing rank (SIGSEGV, SIGBUS, SIGABRT ...) prints where it was
        faults = Faults.from_config(world.rank)  # HPR_FAULT (tests only); None otherwise
        if args.trace:
            trace.start(args.trace)  # HPR_TRACE needs nothing here: hpr.init starts it
        config = start.config if start else GPTConfig.preset(args.preset, dtype=args.dtype, n_qubits=args.qubits,
                                                             q_depth=args.q_depth)
        # the vocabulary (the tokenizer's, or --init-from's config.json's) is padded for tp below
        grid = ProcessGrid(world, dp=args.dp, tp=args.tp, pp=args.pp, n_heads=config.n_heads,
                           d_model=config.d_model, n_layers=config.n_layers, batch=args.batch,
                           micro_batches=args.accum)
        if faults is not None:
            faults.stall_setup()
        weights = init_from.weights(world, start) if start else None  # rank 0's; checked before the data
        tok = args.tokenizer  # --init-from: text is prepared with the folder's; shards are checked against it
        if start and start.tokenizer and not is_prepared(args.data):
            tok = start.tokenizer
        data = TrainingData.open(world, args.data, tok, threads=cpu.num_threads())
        if start:  # the model's ids are its tokenizer's: shards of another one are refused (DataError)
            data.check_tokenizer(start.tokenizer.hash if start.tokenizer else "bytes", f"--init-from {start.folder}")
        v = start.vocab if start else data.vocab_size
        config = dataclasses.replace(config, vocab_size=v, vocab_multiple=vocab_multiple(v, grid.tp_size))
        data.check_context(config.context)
        schedule = CosineSchedule(args.lr, args.steps, warmup_steps(args), args.min_lr_ratio)
        memory = check_memory(args, world, grid, config, data, device)  # before the model's allocations
        tp = TensorParallel(grid.tp)
        dp, pp = grid.dp_size, grid.pp_size

        def make_stage(params, grads):
            alloc = grid.dp.alloc if (dp > 1 and grads is None and not device.is_gpu) else None
            if args.zero >= 2:  # paged gradients (and, ZeRO-3, parameters): hpr.parallel.zero
                alloc = paged_zeros
            seed = None if start else args.seed  # --init-from: no random draw, its weights are loaded
            return GPT(config, seed=seed, tp=tp, stage=(grid.pp_rank, pp), params=params, grads=grads,
                       alloc=alloc, device=device, recompute=args.recompute,
                       params_alloc=paged_zeros if args.zero == 3 else None)

        pipe = Pipeline(grid.pp, make_stage, args.accum, tied=grid.tied) if pp > 1 else None
        model = pipe.model if pipe else make_stage(None, None)
        skip = []
        if pp > 1 and model.last:  # the tied wte is counted in the gradient norm on the first stage
            skip = [(model.emb.wte.offset, model.emb.wte.offset + model.emb.wte.size)]
        check_same_params(grid.dp, model.params)  # every replica built them from the same seed: prove it
        sync = DataParallel(grid.dp, model.layout, args.bucket_mb, args.grad_comm_dtype, args.zero, tp=tp,
                            pp=grid.pp, norm_skip=skip, units=model.param_units())
        sync.attach(pipe.models if pipe else [model])
        p, g, lo, hi, segments = sync.optimizer_buffers(model.params, model.grads)
        opt = AdamW(model.layout, p, g, betas=(0.9, args.beta2), weight_decay=args.weight_decay, lo=lo, hi=hi,
                    segments=segments)
        run = cls(args, world, config, grid, model, opt, sync, tp=tp, pipe=pipe, schedule=schedule,
                  device=device, faults=faults, data=data, stop=stop, memory=memory, start=start)
        run.resume(weights)
        run.train = Batches(data.train, config.context, args.seed)
        run.val = Batches(data.val, config.context, args.seed + 1)
        run.entropy = data.entropy
        world.barrier()
        mine = args.peak_tflops * 1e12 if args.peak_tflops else cpu.matmul_flops(config.dtype, device=device)
        run.peak = float(world.allreduce(np.array([mine]), op="sum")[0])  # the whole job's
        return run

    def resume(self, weights=None):
        """--resume: this rank's part of the newest intact checkpoint in --ckpt-dir, if there is one; else
        (or without --resume) --init-from's weights (rank 0's `weights`, scattered), if given."""
        a = self.args
        if a.resume:
            path, meta = checkpoint.load(self.world, a.ckpt_dir)
            if path is not None:
                if self.start:  # plan() checked the newest meta.json; this is the one every rank agreed on
                    init_from.check_resume(self.start, path, meta)
                self.step0 = restore_checkpoint(self, path, meta)
                self.say(f"resume: continuing from {path} (step {self.step0})")
                return
            self.say(f"resume: no checkpoint in {a.ckpt_dir} yet; starting from step 0")
        if self.start:
            init_from.load(self, weights)
            self.say(f"init: weights of {self.start.folder} (Hugging Face GPT-2, converted in memory)")

    # -- the banner ------------------------------------------------------------------------------------
    def describe(self):
        """Rank 0 prints what the run is: model, layout, processes, memory, data, schedule (collective)."""
        a, config, grid, world, say = self.args, self.config, self.grid, self.world, self.say
        dp, tp_n, pp, m = grid.dp_size, grid.tp_size, grid.pp_size, a.accum
        local = a.batch // dp
        if self.faults is not None:
            say(f"HPR_FAULT={self.faults.spec!r} is set: faults will be injected (tests only)")
        vocab = "" if self.data.corpus is not None else f", vocabulary {config.vocab_size}" + (
            f" padded to {config.padded_vocab}" if config.padded_vocab != config.vocab_size else "")
        say(f"hpr {a.preset or 'model'}: {self.model.layout.full_size:,} parameters "
            f"({config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, context {config.context}"
            f"{vocab}, {config.dtype})")
        if self.device.is_gpu:
            self.describe_devices()
        say(f"layout: dp {dp} x tp {tp_n} x pp {pp} = {world.size} rank(s), {cpu.num_threads()} thread(s) each; "
            f"{local} sequences per data-parallel rank per step"
            + (f" in {m} micro-batches of {local // m}" if m > 1 else "")
            + (f"; gradient buckets of {a.bucket_mb:g} MiB ({len(self.sync.buckets)}), communication in "
               f"{a.grad_comm_dtype}" if dp > 1 else "") + (f"; ZeRO-{a.zero}" if a.zero else ""))
        if pp > 1:
            say(f"pipeline: {pp} stages (blocks {[b for b in stage_blocks(config.n_layers, pp)]}), 1F1B over {m} "
                f"micro-batches; bubble in theory (pp-1)/(m+pp-1) = {bubble_fraction(pp, m):.1%}")
        if world.size > 1 and self.lead and a.log_every and (tp_n > 1 or pp > 1):
            print(grid.describe())
        if 1 < world.size <= 64:  # the launcher names a dead rank by its pid: this line maps it to the rank
            hosts = {}
            for r, (host, pid) in enumerate(world.procs):
                hosts.setdefault(host, []).append(f"rank {r} pid {pid}")
            say("processes: " + "; ".join(f"on {h}: {', '.join(v)}" for h, v in hosts.items()))
        model, opt = self.model, self.opt
        kept = kept_state_bytes(model, opt, self.sync)
        say(f"memory per rank (rank 0): parameters {kept['parameters'] / 2**20:.2f} MiB, gradients "
            f"{kept['gradients'] / 2**20:.2f} MiB, optimizer state {kept['optimizer'] / 2**20:.2f} MiB"
            + (f" (1/{dp} of {2 * model.params.size * model.params.itemsize / 2**20:.2f})" if a.zero and dp > 1
               else "") + ("; ZeRO-3 gathers the block running and prefetches the next beside its shard, and full "
                           "gradients live in paged memory until reduced" if a.zero == 3 and dp > 1 else
                           "; full gradients live in paged memory until reduced" if a.zero == 2 and dp > 1 else ""))
        if self.memory is not None:
            e, mib = self.memory, plan.MIB
            say(f"memory plan (largest rank{f', stage {e.stage}' if pp > 1 else ''}; python -m hpr.plan): "
                + ", ".join(f"{'+' if k == 'peak' else ''}{k} {v / mib:.1f}" for k, v in e.roles.items())
                + f" -> peak {e.total / mib:.1f} MiB per rank, {e.node_total / mib:,.0f} MiB for the job"
                + (f" (--recompute {a.recompute})" if a.recompute != "none" else ""))
        say(f"data: {self.data.source}")
        say(f"steps {a.steps}, batch {a.batch} x {config.context} = {a.batch * config.context:,} tokens/step, lr "
            f"{a.lr:g} (warmup {warmup_steps(a)}, cosine to {a.lr * a.min_lr_ratio:g}); "
            f"{'given' if a.peak_tflops else ('cuBLAS' if self.device.is_gpu else 'BLAS') + ' matmul'} peak of "
            f"the job {self.peak / 1e9:.1f} GFLOP/s", flush=True)

    def describe_devices(self):
        """With --device gpu: which GPU each rank took, how MPI moves device buffers, shared GPUs (collective)."""
        world, say = self.world, self.say
        where = world.gather_obj((self.device.index, self.device.name()), root=0)
        aware = world.cuda_aware  # collective (every rank agrees)
        say("devices: " + ", ".join(f"rank {r} GPU {i} ({nm})" for r, (i, nm) in enumerate(where or []))
            + f"; MPI {'takes device buffers (CUDA-aware)' if aware else 'stages through pinned host memory'}")
        if not self.lead:
            return
        shared = {}
        for r, (i, _) in enumerate(where):
            shared.setdefault((world.procs[r][0], i), []).append(r)
        for (host, i), ranks in shared.items():
            if len(ranks) > 1:
                say(f"note: ranks {ranks} share GPU {i} on {host} (more ranks than GPUs there): they take "
                    "turns on it; one rank per GPU is the fast layout")

    # -- the steps -------------------------------------------------------------------------------------
    def loop(self):
        """Steps step0 + 1 .. --steps. Returns the signal that stopped the run early (after a save, when
        there is a --ckpt-dir), else 0. A CommError is raised again with the step it happened in."""
        a = self.args
        stop = self.stop or StopFlag()
        # line by line: a killed job keeps its log
        self.log = open(a.log_json, "a", buffering=1) if (a.log_json and self.lead) else None
        self.bar = Progress(a.steps, a.log_every) if self.lead else None
        if trace.on:
            trace.align(self.world)  # a common zero for the ranks' clocks
        self.t_start = time.perf_counter()
        self.step = self.step0
        bad = 0  # non-finite steps in a row
        try:
            for step in range(self.step0 + 1, a.steps + 1):
                self.step = step
                bad = self.one_step(step, bad)
                if a.check_every and self.grid.dp_size > 1 and a.zero < 3 and step % a.check_every == 0:
                    check_replicas(self.world, self.model.params, lambda r: self.grid.coords(r)[::2], step)
                if (a.eval_every and step % a.eval_every == 0) or step == a.steps:
                    self.validate(step)
                signum = stop.any(self.world)
                if self.save_or_stop(step, signum):
                    return signum
        except CommError as e:
            raise type(e)(f"step {self.step}: {e}") from None
        finally:
            if self.bar:
                self.bar.close()
            if self.log:
                self.log.close()
        return 0

    def one_step(self, step, bad):
        """train_step, its progress line and log record; returns the count of non-finite steps in a row
        (stopping the run after --max-bad-steps of them)."""
        a = self.args
        t0 = time.perf_counter()
        fault = self.faults.at(step) if self.faults else None
        with trace.span("step", step=step):
            loss, lr, norm = train_step(self.model, self.opt, self.sync, self.schedule, self.train, step, a.batch,
                                        a.accum, a.clip, pipe=self.pipe, fault=fault)
        tps = a.batch * self.config.context / (time.perf_counter() - t0)
        bad = 0 if math.isfinite(loss) and math.isfinite(norm) else bad + 1
        if bad and self.lead:
            self.bar.write(f"step {step}: skipped: loss {loss:.4g}, gradient norm {norm:.4g} (not finite); no "
                           f"update, optimizer state untouched ({bad} in a row, --max-bad-steps {a.max_bad_steps})")
            if self.log:
                self.log.write(json.dumps({"step": step, "skipped": True, "loss": None, "grad_norm": None,
                                           "lr": lr}) + "\n")
        elif self.lead:
            self.bar.update(step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}",
                            mfu=f"{tps * self.config.flops_per_token() / self.peak:.0%}")
            if self.log:
                self.log.write(json.dumps({"step": step, "loss": loss, "lr": lr, "tokens_per_s": tps}) + "\n")
        if bad >= a.max_bad_steps:
            where = save_checkpoint(self, step) if a.ckpt_dir else None
            raise HprError(
                f"stopped at step {step}: {bad} steps in a row had a NaN or Inf in the loss or the gradients "
                f"(--max-bad-steps {a.max_bad_steps}). "
                + (f"Checkpoint {where} holds the parameters of the last good step. " if where else
                   "No --ckpt-dir, so nothing was saved. ")
                + f"Lower --lr (now {a.lr:g}) or --clip, check the data, or use --dtype float64; then --resume.")
        return bad

    def validate(self, step):
        """The validation loss over --eval-batches batches, printed and logged by rank 0 (collective)."""
        with trace.span("eval"):
            a = self.args  # in the step's micro-batches: evaluation's buffers are the step's
            self.val_loss = evaluate(self.model, self.val, a.eval_batches, a.batch, self.grid.dp, self.pipe,
                                     micro=a.batch // (self.grid.dp_size * a.accum))
        self.val_bpb = self.data.bits_per_byte(self.val_loss)
        if self.lead:
            self.bar.write(f"step {step}: val_loss {self.val_loss:.4f} nats/token, val_bpb {self.val_bpb:.4f} "
                           f"(unigram entropy {self.entropy:.3f} nats/token)")
            if self.log:
                self.log.write(json.dumps({"step": step, "val_loss": self.val_loss, "val_bpb": self.val_bpb,
                                           "unigram_entropy": self.entropy}) + "\n")
                self.log.flush()

    def save_or_stop(self, step, signum):
        """A checkpoint when one is due or a signal came; True when the run stops here (the signal)."""
        a = self.args
        due = a.ckpt_dir and ((a.ckpt_every and step % a.ckpt_every == 0) or step == a.steps)
        if not (due or signum):
            return False
        if a.ckpt_dir:
            where = save_checkpoint(self, step)
            if self.lead:
                self.bar.write(f"step {step}: checkpoint {where}")
        if not signum:
            return False
        if self.lead:
            self.bar.write(f"step {step}: signal {signum} received; "
                           + ("checkpoint saved, " if a.ckpt_dir else "no --ckpt-dir, nothing saved; ") + "exiting")
        self.write_trace()
        return True

    # -- the end ---------------------------------------------------------------------------------------
    def finish(self):
        """The summary line, the trace file, the pipeline's idle share and the sample (collective)."""
        a, world = self.args, self.world
        dp, pp = self.grid.dp_size, self.grid.pp_size
        wall = time.perf_counter() - self.t_start
        done = self.step - self.step0
        exposed = world.allreduce(np.array([self.sync.wait_s]), op="avg")[0] if dp > 1 else 0.0
        self.say(f"done: {done} steps in {wall:.1f} s ({done * a.batch * self.config.context / max(wall, 1e-9):,.0f} "
                 "tokens/s for the job"
                 + (f"; waiting on gradient communication {100 * exposed / max(wall, 1e-9):.1f}% of the time"
                    if dp > 1 else "") + ")"
                 + (f"; final val_loss {self.val_loss:.4f} nats/token, val_bpb {self.val_bpb:.4f} vs unigram "
                    f"entropy {self.entropy:.3f} nats/token" if self.val_loss is not None else ""))
        self.report_memory()
        self.write_trace()
        if self.pipe is not None:
            idle = self.grid.pp.gather_obj(self.pipe.idle_s, root=0)
            if self.lead:
                print("pipeline idle (waiting for a neighbour) per stage: "
                      + ", ".join(f"stage {i} {100 * v / max(wall, 1e-9):.1f}%" for i, v in enumerate(idle))
                      + f" of the run; theory (pp-1)/(m+pp-1) = {bubble_fraction(pp, a.accum):.1%}")
        if a.sample_tokens:
            whole = whole_model(self)
            if self.lead:  # the prompt in the run's tokens, the sample decoded by its tokenizer
                ids = whole.generate(self.data.encode(a.prompt), a.sample_tokens, a.temperature, a.top_k,
                                     seed=a.seed)
                print("--- sample ---")
                print(self.data.decode(ids), flush=True)

    def report_memory(self):
        """The largest rank's measured peak resident memory beside the planner's prediction; with
        --log-json the last record is {"memory": {"predicted_mib", "peak_rss_mib"}} (collective)."""
        peak = self.world.allreduce(np.array([peak_rss_bytes()], np.float64), op="max")[0] / plan.MIB
        if self.memory is None or not self.lead:
            return
        predicted = self.memory.total / plan.MIB
        print(f"memory: peak resident {peak:.1f} MiB on the largest rank, predicted {predicted:.1f} MiB "
              f"(ratio {peak / predicted:.2f})", flush=True)
        if self.args.log_json:
            with open(self.args.log_json, "a") as f:
                f.write(json.dumps({"memory": {"predicted_mib": predicted, "peak_rss_mib": peak}}) + "\n")

    def write_trace(self):
        """--trace / HPR_TRACE: every rank's timeline, merged into one file by rank 0 (collective)."""
        if trace.on:
            n = trace.recorded()
            path = trace.finish(self.world)
            self.say(f"trace: {path} ({self.world.size} rank(s), {n:,} spans on rank 0; open it in "
                     "https://ui.perfetto.dev)")


def peak_rss_bytes():
    """This process's peak resident memory so far: on Linux the high-water mark of its own address
    space (VmHWM of /proc/self/status, KiB), which is what the planner models. Not getrusage's
    ru_maxrss there: at exec the kernel folds the launcher's peak into it (a child of a 120 MiB
    Python process reports at least 120 MiB). Elsewhere ru_maxrss (KiB; bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def kept_state_bytes(model, opt, sync):
    """{"parameters", "gradients", "optimizer": bytes} this rank keeps between steps. ZeRO-2: the
    replicated parameters plus the shard the optimizer updates, the gradient shard; ZeRO-3: the
    parameter and gradient shards (the full buffers are paged memory, resident only while a unit is
    gathered or its gradients are reduced: hpr.parallel.zero); else the model's buffers."""
    sh = getattr(sync, "shards", None)
    opt_b = opt.m.nbytes + opt.v.nbytes
    if sh is None:
        return {"parameters": model.params.nbytes, "gradients": model.grads.nbytes, "optimizer": opt_b}
    par = sh.params.nbytes + (0 if sh.zero == 3 else model.params.nbytes)
    return {"parameters": par, "gradients": sh.grads.nbytes, "optimizer": opt_b}


def check_memory(args, world, grid, config, data, device):
    """The planner's Estimate of this run's layout; a ConfigError on every rank, naming the layouts
    that fit, when the node's ranks would need more than MemAvailable (unless --no-memory-check).
    None on a GPU or with a QuantumLayer (the planner models neither)."""
    if device.is_gpu or config.n_qubits:
        return None
    job = plan.Job(config, args.batch, args.accum, args.recompute, args.bucket_mb, data.resident_bytes())
    here = sum(1 for host, _ in world.procs if host == world.procs[world.rank][0])
    mem = plan.mem_available() if args.mem_mib is None else int(args.mem_mib * plan.MIB)
    mem = world.bcast_obj(None if mem is None else mem * world.size // here, root=0)  # rank 0's view, job-wide
    if args.no_memory_check:
        mem = None
    return plan.check_fits(job, grid.dp_size, grid.tp_size, grid.pp_size, args.zero, world.size, mem)


def run(args):
    """One training run from parsed flags: build, describe, loop, finish. Returns the exit code (0)."""
    job = Run.build(args)
    job.describe()
    if not job.loop():  # a signal ends the run after its checkpoint, without the summary
        job.finish()
    return 0


def main(argv=None):
    """The command line: 0 when the run ended (or a signal stopped it), 2 for a bad flag, file or value
    (HprError), 3 when a peer died or hung (the whole job is aborted)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CommError as e:  # a peer died or is stuck: the others may be anywhere, so end the whole job
        print(f"error: {e}", file=sys.stderr, flush=True)
        return abort_job(3)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def abort_job(code):
    """End every rank of the job with exit code `code` (a lone process just returns it)."""
    from mpi4py import MPI  # lazy: importing mpi4py.MPI starts MPI, which `import hpr.train` must not

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        time.sleep(0.3)  # let the launcher forward this rank's message before it ends the others
        MPI.COMM_WORLD.Abort(code)
    return code
