"""The LSTM classifier example's training loop and command line (examples/classify_lstm.py wraps it):
say whether a window of bytes comes from a test module of Python's standard library, trained
data-parallel over every rank with hpr's collectives, as TensorFlow's MirroredStrategy tutorial trains
its Embedding -> LSTM -> Dense(sigmoid) model. Owns the loop over epochs, its batches (SplitWindows)
and its printing; the optimizer step is the trainer's (hpr.train.train_step), the same for every model.

Usage: ``mpiexec -n 2 python examples/classify_lstm.py --epochs 6``"""
import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np

import hpr

from .data import LabeledWindows, is_test_module
from .errors import ConfigError, DataError, HprError
from .model.classifier import LSTMClassifier
from .optim import AdamW, CosineSchedule
from .parallel import DataParallel, check_same_params
from .train import train_step


def build_parser():
    ap = argparse.ArgumentParser(prog="classify_lstm", description="Train an LSTM byte classifier data-parallel.")
    ap.add_argument("--epochs", type=int, default=16, help="epochs (default 16)")
    ap.add_argument("--steps-per-epoch", type=int, default=150, help="optimizer steps per epoch (default 150)")
    ap.add_argument("--batch", type=int, default=64, help="windows per step for the whole job (default 64)")
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate at the start, decayed on a cosine to "
                    "a tenth by the end (default 1e-2)")
    ap.add_argument("--clip", type=float, default=1.0, help="max global gradient norm; 0 = off (default 1.0)")
    ap.add_argument("--window", type=int, default=256, help="bytes per window (default 256)")
    ap.add_argument("--embed", type=int, default=64, help="embedding width (default 64)")
    ap.add_argument("--hidden", type=int, default=64, help="LSTM width (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="a folder (default: Python's standard library)")
    ap.add_argument("--label-regex", default=None,
                    help="label 1 for files whose relative path matches this regular expression "
                         "(default: test modules: test/ or tests/ folders, test_*.py, *_test.py)")
    ap.add_argument("--suffixes", default=".py", help="file suffixes of --data, comma-separated (default .py)")
    ap.add_argument("--eval-n", type=int, default=2048, help="held-out windows per evaluation (default 2048)")
    ap.add_argument("--threads", type=int, default=None, help="threads per rank")
    ap.add_argument("--dtype", default="float32", help="float32 or float64")
    ap.add_argument("--log-json", default=None, metavar="FILE", help="one JSON object per epoch")
    return ap


def check_args(a):
    for k in ("epochs", "steps_per_epoch", "batch", "embed", "hidden", "eval_n"):
        if getattr(a, k) < 1:
            raise ConfigError(f"--{k.replace('_', '-')} must be at least 1, got {getattr(a, k)}")
    if a.clip < 0:
        raise ConfigError(f"--clip must be >= 0, got {a.clip}")
    if a.window < 2:
        raise ConfigError(f"--window must be at least 2, got {a.window}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise ConfigError(f"--lr must be a positive number, got {a.lr}")
    if a.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown --dtype {a.dtype!r}; use float32 or float64")
    if a.eval_n % 2:
        raise ConfigError(f"--eval-n must be even (balanced classes), got {a.eval_n}")
    if a.label_regex is not None:
        try:
            re.compile(a.label_regex)
        except re.error as e:
            raise ConfigError(f"--label-regex {a.label_regex!r} is not a regular expression: {e}") from None
    if a.log_json and not os.path.isdir(os.path.dirname(os.path.abspath(a.log_json))):
        raise ConfigError(f"--log-json {a.log_json}: its folder does not exist")


def _load(comm, a):
    """Rank 0 first (a DataError there is raised on every rank), then the others."""
    rule = is_test_module if a.label_regex is None else (lambda p, rx=re.compile(a.label_regex): bool(rx.search(p)))
    suffixes = tuple(s if s.startswith(".") else "." + s for s in a.suffixes.split(",") if s)

    def load():
        return LabeledWindows.load(a.data, rule=rule, window=a.window, suffixes=suffixes)
    err, data = None, None
    if comm.rank == 0:
        try:
            data = load()
        except DataError as e:
            err = str(e)
    err = comm.mpi.bcast(err, root=0)
    if err:
        raise DataError(err)
    return data if comm.rank == 0 else load()


class SplitWindows:
    """One split of LabeledWindows as train_step's batches: get(first, count) -> (x, y), the samples
    first .. first + count - 1 of that split's stream for `seed` (LabeledWindows.batches)."""

    def __init__(self, data, split, seed):
        self.data, self.split, self.seed = data, split, seed

    def get(self, first, count):
        return self.data.batches(self.split, first, count, seed=self.seed)


def evaluate(model, x, y, comm):
    """(accuracy, confusion [[tn, fp], [fn, tp]]) over the fixed held-out set, shared out over ranks."""
    n = len(y)
    lo, hi = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
    pred = np.zeros(0) if hi <= lo else (model.predict(x[lo:hi]) >= 0.5).astype(np.int64)
    t = y[lo:hi].astype(np.int64)
    conf = np.array([np.sum((t == 0) & (pred == 0)), np.sum((t == 0) & (pred == 1)),
                     np.sum((t == 1) & (pred == 0)), np.sum((t == 1) & (pred == 1))], np.int64)
    if comm.size > 1:
        comm.allreduce(conf, op="sum")
    return float(conf[0] + conf[3]) / n, conf.reshape(2, 2)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args):
    check_args(args)
    comm = hpr.init(threads=args.threads)
    n = comm.size
    if args.batch % n:
        raise ConfigError(f"--batch {args.batch} does not split evenly over {n} data-parallel rank(s); use a "
                          f"multiple of {n}")
    lead = comm.rank == 0
    say = print if lead else (lambda *a, **k: None)
    data = _load(comm, args)
    model = LSTMClassifier(256, args.embed, args.hidden, args.dtype, seed=args.seed,
                           alloc=comm.alloc if n > 1 else None)
    sync = DataParallel(comm, model.layout, bucket_mb=1.0)
    opt = AdamW(model.layout, model.params, model.grads, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.0)
    check_same_params(comm, model.params)
    local = args.batch // n
    schedule = CosineSchedule(args.lr, args.epochs * args.steps_per_epoch, 0, 0.1)
    train = SplitWindows(data, "train", args.seed)
    xv, yv = data.fixed_eval("val", args.eval_n, seed=args.seed + 1)
    say(f"hpr LSTM classifier: Embedding(256, {args.embed}) -> LSTM({args.hidden}) -> Dense(1, sigmoid); "
        f"{model.n_params:,} parameters; {n} data-parallel rank(s), {local} windows of {args.window} bytes each "
        "per step")
    say(f"data: {data.source}; train files {data.train_files}, held-out files {data.val_files} "
        "(label 0, label 1); classes balanced, split by file")
    log = open(args.log_json, "a") if (args.log_json and lead) else None
    t_start = time.perf_counter()
    step = 0
    conf = None
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = []
        for _ in range(args.steps_per_epoch):
            step += 1  # train_step counts steps from 1: step s takes samples (s - 1) * batch ...
            losses.append(train_step(model, opt, sync, schedule, train, step, args.batch, clip=args.clip)[0])
        mean = np.array([float(np.mean(losses))])  # each loss is already the mean over every rank's windows
        acc, conf = evaluate(model, xv, yv, comm)
        dt = time.perf_counter() - t0
        say(f"epoch {epoch}: train loss {mean[0]:.4f}, held-out accuracy {acc:.2%} "
            f"({args.steps_per_epoch * args.batch / dt:,.0f} windows/s)", flush=True)
        if log:
            log.write(json.dumps({"epoch": epoch, "loss": float(mean[0]), "val_accuracy": acc}) + "\n")
            log.flush()
    if log:
        log.close()
    say(f"done: {args.epochs} epochs in {time.perf_counter() - t_start:.1f} s; confusion matrix on "
        f"{args.eval_n} held-out windows (rows: true label, columns: predicted):")
    say(f"               pred 0  pred 1\n  true 0 (lib) {conf[0, 0]:>7} {conf[0, 1]:>7}\n"
        f"  true 1 (test){conf[1, 0]:>7} {conf[1, 1]:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
