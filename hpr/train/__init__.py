"""The trainer: text or token shards -> batches -> GPT -> AdamW, with evaluation, a progress bar, JSON logs, checkpoints
and a generated sample at the end. `examples/train_lm.py` and `python -m hpr.train` are thin wrappers
over `main`. Owns a run and its printing; not the math (hpr.model, hpr.optim) or the data (hpr.data).

  flags.py        the command line: build_parser, check_args (every bad flag a ConfigError up front)
  step.py         train_step, the one optimizer step (the classifier and the benchmarks use it too),
                  and evaluate, the validation loss
  loop.py         Run: build, describe (the banner), loop (steps, evaluation, checks, checkpoints,
                  signals), finish (summary, trace, sample); run(args) and main(argv)
  checkpoints.py  a Run's state to and from hpr.checkpoint, in canonical (layout-free) form, with the
                  tokenizer its data was made with
  init_from.py    --init-from HF_DIR: a Hugging Face GPT-2 folder checked before any work, its weights
                  converted in memory and scattered like a resume, its tokenizer for the data
  dataset.py      TrainingData: the byte corpus, prepared token shards, or raw text prepared with
                  --tokenizer into the cache; vocabulary, unigram entropy, bits per byte, the tokenizer

Failures: a step whose loss or gradient holds a NaN or Inf is skipped on every rank alike (no update,
optimizer state untouched) and after --max-bad-steps in a row the run saves and stops (exit 2); the
data-parallel replicas' parameter checksums are compared every --check-every steps; a peer that dies
or hangs ends every rank with the CommTimeout that names it (exit 3, the whole job aborted); a save
that fails leaves the previous checkpoint and says so (exit 2). HPR_FAULT (hpr.faults) injects each
of these for the tests. --trace FILE (or HPR_TRACE) writes the job's timeline (hpr.trace).

Usage: ``python -m hpr.train --preset S --steps 300 --batch 16 --lr 1e-3``"""
from .checkpoints import restore_checkpoint, save_checkpoint
from .flags import BETA2, build_parser, check_args
from .loop import Progress, Run, StopFlag, abort_job, main, run
from .step import evaluate, train_step

__all__ = ["BETA2", "Progress", "Run", "StopFlag", "abort_job", "build_parser", "check_args", "evaluate", "main",
           "restore_checkpoint", "run", "save_checkpoint", "train_step"]
