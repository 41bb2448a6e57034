"""Weights across the border (DESIGN.md decision 9): an hpr checkpoint to a Hugging Face GPT-2 folder
(`to_hf`: model.safetensors, config.json, generation_config.json, the tokenizer files AutoTokenizer
reads) and a GPT-2-architecture folder to an hpr checkpoint (`from_hf`: whole named tensors, as the
trainer writes them, so --resume continues it in any dp x tp x pp layout). Everything is checked
before anything is written (ConfigError naming the tensor or field that does not map), and the
output folder appears whole or not at all (written under a temporary name, renamed at the end).
The name table and the checks are in hpr.convert.layout; reading the weights in .readers.

Usage: ``python -m hpr.convert to-hf CKPT_DIR OUT_DIR`` / ``python -m hpr.convert from-hf HF_DIR CKPT_DIR``"""
import contextlib
import dataclasses
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

from .. import checkpoint
from ..data import load_tokenizer
from ..errors import CheckpointError, ConfigError, DataError
from ..model import DTYPES, GPTConfig, saved
from ..model.saved import TOKENIZER as TOKENIZER_FILE
from .layout import from_hf_config, from_hf_tensors, hf_config, to_hf_tensors
from .readers import read_weights
from .tokenizer_files import bytes_tokenizer_json, read_hf_tokenizer, vocab_of, write_hf_tokenizer

__all__ = ["to_hf", "from_hf", "write_checkpoint", "staged_folder"]


@contextlib.contextmanager
def staged_folder(final):
    """A temporary sibling folder to fill; renamed to `final` when the block ends without an error,
    removed when it raises. `final` must not exist, or be empty."""
    final = os.path.abspath(final)
    if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise ConfigError(f"{final} already exists and is not an empty folder; choose a new output folder")
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise ConfigError(f"cannot create {tmp}: {e}; choose an output folder you can write") from None
    try:
        yield tmp
        if os.path.isdir(final):
            os.rmdir(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tokenizer_text(tokenizer, path, ckpt_dir, vocab_size):
    """(tokenizer.json text, its vocabulary size) for the Hugging Face side of a checkpoint."""
    try:
        tok = load_tokenizer(tokenizer) if tokenizer else saved.tokenizer_of(path, ckpt_dir, vocab_size)
    except DataError as e:
        raise ConfigError(str(e)) from None
    if tok is None:
        raise ConfigError(f"{path} has no {TOKENIZER_FILE} and a vocabulary of {vocab_size} (not bytes); pass "
                          "--tokenizer FILE with the tokenizer the model was trained with")
    if tok.to_bytes() is None:  # bytes
        return bytes_tokenizer_json(), 256
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"{tok.name} has {tok.vocab_size} tokens, more than the model's {vocab_size}")
    return tok.to_bytes().decode("utf-8"), tok.vocab_size


def to_hf(ckpt_dir, out_dir, tokenizer=None, dtype=None):
    """Write the checkpoint (a --ckpt-dir's newest, or one step folder) as a GPT2LMHeadModel folder.
    tokenizer: a tokenizer.json to use instead of the checkpoint's; dtype: float32 / float64 (default:
    the checkpoint's). Returns out_dir."""
    path, meta = saved.find(ckpt_dir)
    try:
        config = GPTConfig(**meta["config"])
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: meta.json's config is not an hpr GPTConfig ({e})") from None
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    text, vocab = _tokenizer_text(tokenizer, path, ckpt_dir, config.vocab_size)
    tensors = to_hf_tensors(saved.read_params(path), config, vocab)
    dt = np.dtype(dtype or config.dtype)
    tensors = {k: np.ascontiguousarray(a, dtype=dt) for k, a in tensors.items()}
    with staged_folder(out_dir) as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        bos, eos = write_hf_tokenizer(tmp, text, config.context)
        _write_json(os.path.join(tmp, "config.json"), hf_config(config, vocab, bos, eos, dt.name))
        _write_json(os.path.join(tmp, "generation_config.json"),
                    {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos})
    return out_dir


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


class _OneRank:
    """hpr.checkpoint.save's collective calls for a single process (the converter runs alone)."""
    rank, size = 0, 1

    def bcast_obj(self, obj, root=0):
        return obj

    def gather_obj(self, obj, root=0):
        return [obj]


def write_checkpoint(ckpt_dir, config, params, tokenizer_text=None, seed=0, batch=16, source=None):
    """A new checkpoint folder at step 0 from whole named tensors (hpr names, config's shapes), in the
    format the trainer writes (hpr.checkpoint): AdamW's moments zero, the tokenizer.json text (if any)
    in the step folder. Written under a temporary name and renamed. Returns the step folder."""
    zeros = {f"{k}.{n}": np.zeros_like(a) for k in ("m", "v") for n, a in params.items()}
    meta = {"config": dataclasses.asdict(config),
            "layout": {"dp": 1, "tp": 1, "pp": 1, "zero": 0, "micro_batches": 1},
            "seed": seed, "data": {"next_sample": 0, "batch": batch},
            "schedule": {"lr": None, "steps": None, "warmup": None, "min_lr_ratio": None},
            "optimizer": {"t": 0, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1}}
    if source:
        meta["source"] = source
    with staged_folder(ckpt_dir) as tmp:
        step = checkpoint.save(_OneRank(), tmp, 0, {"params.safetensors": params, "optim.safetensors": zeros},
                               meta, keep=1)
        if tokenizer_text is not None:  # the checkpoint carries its tokenizer (none: bytes)
            with open(os.path.join(step, TOKENIZER_FILE), "w", encoding="utf-8") as f:
                f.write(tokenizer_text)
    return os.path.join(ckpt_dir, os.path.basename(step))


def from_hf(hf_dir, ckpt_dir, dtype="float32", pad_to=64, tokenizer=None, seed=0, batch=16):
    """Write a GPT-2-architecture Hugging Face folder as an hpr checkpoint folder (step 0, AdamW's
    moments zero) that `python -m hpr.train --ckpt-dir CKPT_DIR --resume` continues (with the same
    --seed and --batch as given here) and GPT.load / python -m hpr.generate read. The vocabulary is
    padded to a multiple of pad_to (zero rows, never sampled). Returns the step folder."""
    where = os.path.join(hf_dir, "config.json")
    try:
        with open(where) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where} is missing or not JSON ({e}); pass a Hugging Face model folder") from None
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    config, vocab = from_hf_config(hf, where, dtype, pad_to)
    text = read_hf_tokenizer(hf_dir, vocab, tokenizer)
    if text is not None and vocab_of(text) > vocab:
        raise ConfigError(f"the tokenizer of {hf_dir} has {vocab_of(text)} tokens, more than the model's {vocab} "
                          "(config.json's vocab_size); pass the model's own tokenizer with --tokenizer FILE")
    params = from_hf_tensors(read_weights(hf_dir), config, vocab, where=hf_dir)
    return write_checkpoint(ckpt_dir, config, params, text, seed, batch,
                            source={"huggingface": os.path.abspath(hf_dir), "vocab_size": vocab})
