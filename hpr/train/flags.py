"""The trainer's command line: every flag of ``python -m hpr.train`` / examples/train_lm.py (build_parser)
and the check of their values (check_args), which raises a ConfigError for a bad flag before any work
or file is touched. Owns the flags and their defaults; not what a run does with them (hpr.train.loop).

Usage: ``args = build_parser().parse_args(["--preset", "tiny"]); check_args(args)``"""
import argparse
import math
import os

from ..device import KINDS
from ..errors import ConfigError
from ..model import DTYPES, PRESETS
from ..nn import RECOMPUTE
from ..parallel.data import COMM_DTYPES

BETA2 = 0.999  # PyTorch's default; on the default corpus S reaches a lower loss in 300 steps than with 0.95


def build_parser():
    ap = argparse.ArgumentParser(prog="train_lm", description="Train hpr's compact GPT on bytes or subword tokens.")
    ap.add_argument("--preset", default=None, help=f"model size: {', '.join(PRESETS)} (default S; with --init-from: "
                    "the folder's shape)")
    ap.add_argument("--init-from", default=None, metavar="HF_DIR",
                    help="start from a GPT-2-architecture Hugging Face folder's weights (converted in memory) and "
                    "train with its tokenizer: --data text is prepared with it, --data shards must match it")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step (default 16)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default: steps/10, at most 100)")
    ap.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of --lr (default 0.1)")
    ap.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on matmul weights (default 0.1)")
    ap.add_argument("--clip", type=float, default=1.0, help="max global gradient norm; 0 = off (default 1.0)")
    ap.add_argument("--beta2", type=float, default=BETA2, help=f"AdamW's second-moment decay (default {BETA2})")
    ap.add_argument("--seed", type=int, default=0, help="seed for the weights and the data order (default 0)")
    ap.add_argument("--data", default=None, metavar="PATH",
                    help="a text file or a folder of them (default: Python's own standard library), a JSON Lines "
                    "or Parquet file, or a folder of token shards from `python -m hpr.data prepare`")
    ap.add_argument("--tokenizer", default=None, metavar="TOK",
                    help="a tokenizer.json (`python -m hpr.data tokenizer` trains one) or bytes: --data's text is "
                    "prepared with it into hpr's cache, once (default: bytes, read as the byte corpus)")
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
    ap.add_argument("--sample-tokens", type=int, default=200, help="tokens to generate at the end; 0 = none")
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
    g.add_argument("--zero", type=int, default=0,
                   help="shard over the data-parallel ranks: 1 the optimizer state (ZeRO-1), 2 also the gradients, "
                        "3 also the parameters (gathered block by block, the next ones prefetched; no --check-every then)")
    g = ap.add_argument_group("memory")
    g.add_argument("--recompute", default="none",
                   help="activation recomputation: what the blocks do not keep for backward and run again in it "
                        "(attn: the attention half; mlp: the MLP half; block: everything but each block's input); "
                        "bit-identical losses, less activation memory, more time (default none)")
    g.add_argument("--no-memory-check", action="store_true",
                   help="run even when the memory planner (python -m hpr.plan) predicts that this layout does not "
                        "fit the node's available memory (default: refuse it with the layouts that fit)")
    g.add_argument("--mem-mib", type=float, default=None, metavar="MIB",
                   help="memory the job's ranks on a node may use, for the planner's check (default: the node's "
                        "MemAvailable; set it under a cgroup or a batch system's memory limit)")
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
    """Every bad flag as a ConfigError, before any work or file is touched. --preset left out becomes S
    (without --init-from, whose folder gives the shape: hpr.train.init_from.plan)."""
    if a.preset is None and not getattr(a, "init_from", None):
        a.preset = "S"
    if a.preset is not None and a.preset not in PRESETS:
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
    if a.grad_comm_dtype not in COMM_DTYPES:
        raise ConfigError(f"--grad-comm-dtype {a.grad_comm_dtype!r}: use one of {', '.join(COMM_DTYPES)}")
    if not (a.bucket_mb > 0 and math.isfinite(a.bucket_mb)):
        raise ConfigError(f"--bucket-mb must be positive, got {a.bucket_mb}")
    if a.mem_mib is not None and not (a.mem_mib > 0 and math.isfinite(a.mem_mib)):
        raise ConfigError(f"--mem-mib must be a positive number, got {a.mem_mib}")
    if a.recompute not in RECOMPUTE:
        raise ConfigError(f"--recompute {a.recompute!r}: use one of {', '.join(RECOMPUTE)}")
    if a.zero not in (0, 1, 2, 3):
        raise ConfigError(f"--zero {a.zero} is not supported; use 0 (replicated), 1 (sharded optimizer state), "
                          "2 (and gradients) or 3 (and parameters)")
    if a.zero >= 2 and (a.device != "cpu" or a.grad_comm_dtype != "float32"):
        raise ConfigError(f"--zero {a.zero} runs on the CPU with --grad-comm-dtype float32 (got --device "
                          f"{a.device}, --grad-comm-dtype {a.grad_comm_dtype}); use --zero 1 there")
    if getattr(a, "init_from", None) and a.device != "cpu":
        raise ConfigError(f"--init-from with --device {a.device}: not verified on a GPU yet; convert first "
                          "(python -m hpr.convert from-hf HF_DIR CKPT_DIR) and start with --resume --ckpt-dir CKPT_DIR")
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


def warmup_steps(a):
    """--warmup, or its default: a tenth of the steps, at most 100."""
    return a.warmup if a.warmup is not None else min(100, a.steps // 10)
