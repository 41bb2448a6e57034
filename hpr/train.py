"""The training loop and its command line: corpus -> batches -> GPT -> AdamW, with evaluation, a progress
bar, JSON logs and a generated sample at the end. `examples/train_lm.py` and `python -m hpr.train` are
thin wrappers over `main`. Owns the loop and the run's printing; not the math (hpr.model, hpr.optim)
or the data (hpr.data).

Usage: ``python -m hpr.train --preset S --steps 300 --batch 16 --lr 1e-3``"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .errors import ConfigError, HprError
from .model import DTYPES, PRESETS, GPT, GPTConfig


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
    ap.add_argument("--seed", type=int, default=0, help="seed for the weights and the data order (default 0)")
    ap.add_argument("--data", default=None, help="a text file or a folder (default: Python's own standard library)")
    ap.add_argument("--eval-every", type=int, default=100, help="validate every N steps, and at the end; 0 = end only")
    ap.add_argument("--eval-batches", type=int, default=8, help="batches of --batch windows per validation (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads per process (default: all cores)")
    ap.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    ap.add_argument("--log-json", default=None, metavar="FILE", help="append one JSON object per step/eval to FILE")
    ap.add_argument("--log-every", type=int, default=10, help="plain progress line every N steps when not a terminal")
    ap.add_argument("--prompt", default="def ", help="prompt for the final sample (default 'def ')")
    ap.add_argument("--sample-tokens", type=int, default=200, help="bytes to generate at the end; 0 = none")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    return ap


def check_args(a):
    """Every bad flag as a ConfigError, before any work or file is touched."""
    if a.preset not in PRESETS:
        raise ConfigError(f"unknown --preset {a.preset!r}; choose one of {', '.join(PRESETS)}")
    if a.dtype not in DTYPES:
        raise ConfigError(f"unknown --dtype {a.dtype!r}; use one of {', '.join(DTYPES)}")
    for name in ("steps", "batch", "eval_batches", "log_every"):
        if getattr(a, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise ConfigError(f"--lr must be a positive number, got {a.lr}")
    if a.warmup is not None and a.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {a.warmup}")
    if a.eval_every < 0 or a.sample_tokens < 0:
        raise ConfigError("--eval-every and --sample-tokens must be >= 0")
    if a.weight_decay < 0 or a.clip < 0 or not 0 <= a.min_lr_ratio <= 1:
        raise ConfigError("--weight-decay and --clip must be >= 0 and --min-lr-ratio in [0, 1]")
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {a.threads}")
    if a.temperature < 0 or a.top_k < 1:
        raise ConfigError("--temperature must be >= 0 and --top-k >= 1")
    if a.log_json:
        d = os.path.dirname(os.path.abspath(a.log_json))
        if not os.path.isdir(d):
            raise ConfigError(f"--log-json {a.log_json}: folder {d} does not exist; create it first")


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


def evaluate(model, batches, n_batches, batch):
    """Mean loss over the first n_batches * batch windows of a validation stream (the same every time)."""
    total = 0.0
    for i in range(n_batches):
        x, y = batches.get(i * batch, batch)
        total += model.loss(x, y)
    return total / n_batches


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args):
    from . import backend
    from .data import Batches, Corpus
    from .optim import AdamW, CosineSchedule, clip_scale, grad_norm_sq

    check_args(args)
    config = GPTConfig.preset(args.preset, dtype=args.dtype)
    corpus = Corpus.load(args.data)
    corpus.check_context(config.context)
    threads = args.threads or backend.cpu_count()
    backend.set_num_threads(threads)
    warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    schedule = CosineSchedule(args.lr, args.steps, warmup, args.min_lr_ratio)

    model = GPT(config, seed=args.seed)
    opt = AdamW(model.layout, model.params, model.grads, weight_decay=args.weight_decay)
    train = Batches(corpus.train, config.context, args.seed)
    val = Batches(corpus.val, config.context, args.seed + 1)
    entropy = corpus.unigram_entropy()
    peak = backend.matmul_flops(config.dtype)
    flops_tok = config.flops_per_token()
    tokens_step = args.batch * config.context
    print(f"hpr {args.preset}: {model.n_params:,} parameters ({config.n_layers} layers, d_model {config.d_model}, "
          f"{config.n_heads} heads, context {config.context}, {config.dtype}); {threads} thread(s)")
    print(f"data: {corpus.source}: {corpus.train.size:,} train bytes, {corpus.val.size:,} validation bytes; "
          f"unigram entropy {entropy:.3f} nats/byte")
    print(f"steps {args.steps}, batch {args.batch} x {config.context} = {tokens_step:,} tokens/step, lr {args.lr:g} "
          f"(warmup {warmup}, cosine to {args.lr * args.min_lr_ratio:g}); matmul peak here "
          f"{peak / 1e9:.1f} GFLOP/s", flush=True)

    log = open(args.log_json, "a") if args.log_json else None
    bar = Progress(args.steps, args.log_every)
    val_loss = None
    t_start = time.perf_counter()
    try:
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            x, y = train.get((step - 1) * args.batch, args.batch)
            model.zero_grad()
            loss = model.forward(x, y)
            model.backward()
            if not math.isfinite(loss):
                raise HprError(f"the loss became {loss} at step {step}; lower --lr (now {args.lr:g}) or "
                               "check the data")
            norm = math.sqrt(grad_norm_sq(model.grads))
            lr = schedule(step)
            opt.step(lr, clip_scale(norm, args.clip))
            dt = time.perf_counter() - t0
            tps = tokens_step / dt
            mfu = tps * flops_tok / peak
            bar.update(step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.0%}")
            if log:
                log.write(json.dumps({"step": step, "loss": loss, "lr": lr, "tokens_per_s": tps}) + "\n")
            if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
                val_loss = evaluate(model, val, args.eval_batches, args.batch)
                bar.write(f"step {step}: val_loss {val_loss:.4f} nats/byte (unigram entropy {entropy:.3f})")
                if log:
                    log.write(json.dumps({"step": step, "val_loss": val_loss, "unigram_entropy": entropy}) + "\n")
                    log.flush()
    finally:
        bar.close()
        if log:
            log.close()
    wall = time.perf_counter() - t_start
    print(f"done: {args.steps} steps in {wall:.1f} s ({args.steps * tokens_step / wall:,.0f} tokens/s overall); "
          f"final val_loss {val_loss:.4f} vs unigram entropy {entropy:.3f} nats/byte")
    if args.sample_tokens:
        text = model.generate(args.prompt, args.sample_tokens, args.temperature, args.top_k, seed=args.seed)
        print("--- sample ---")
        print(text.decode("utf-8", errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
