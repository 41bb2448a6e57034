"""``--init-from HF_DIR``: a training run that starts from a GPT-2-architecture Hugging Face folder's
weights, converted in memory (hpr.convert's table and checks; nothing is written, so there is never
a half checkpoint), in any dp x tp x pp layout, with that folder's tokenizer.

Two halves, so that every refusal comes before any work:

  plan(args)      every rank, before hpr.init: config.json (the model's shape, its vocabulary), the
                  tokenizer (tokenizer.json, or vocab.json + merges.txt, or none for a 256-token byte
                  model) and the flags that make no sense with it (a --preset of another shape,
                  --qubits, a --tokenizer that is not the folder's, --resume of a checkpoint that did not
                  start from this folder): a ConfigError on every rank alike (they read the same files).
  weights         rank 0 reads and checks the weights (a missing, extra or misshapen tensor, an untied
                  head: a ConfigError on every rank), before the data is prepared;
  load            after the model is built (without a random init), every rank's part of them
                  (hpr.parallel.canonical.scatter, the same path as --resume), AdamW's moments zero.

The data: --data text is prepared with the folder's tokenizer; --data shards must have been prepared
with it (their tokenizer hash is checked); no --data: the standard library, prepared with it. The
vocabulary is the folder's config.json vocab_size (the tokenizer may have fewer tokens, never more),
padded for tp as every run's is. Checkpoints record the folder (meta "init_from") so that --resume
continues only a run that started from it.

Usage: ``start = plan(args)``; ``w = weights(world, start)``; ``load(run, w)``"""
import dataclasses
import json
import os

import numpy as np

from ..convert.layout import from_hf_config, from_hf_tensors
from ..convert.readers import read_weights as read_hf_weights
from ..convert.tokenizer_files import read_hf_tokenizer
from ..data import BYTES, from_bytes, load_tokenizer
from ..errors import ConfigError, DataError, HprError
from ..model import PRESETS, saved
from ..parallel import canonical


@dataclasses.dataclass
class HFStart:
    """What plan() found in an --init-from folder."""
    folder: str           # absolute path
    config: object        # GPTConfig: the folder's shape, --dtype, vocab_size = its config.json's
    vocab: int            # rows of its embedding (config.json's vocab_size)
    tokenizer: object     # hpr.data's Tokenizer, or None (a 256-token byte model: bytes)
    preset: str           # the --preset of the same shape, or None

    def record(self):
        """What a checkpoint's meta holds of it ("init_from")."""
        return {"path": self.folder, "vocab_size": self.vocab}


def _shape(config):
    return {k: getattr(config, k) for k in ("context", "d_model", "n_layers", "n_heads")}


def plan(args):
    """The HFStart of --init-from (None without it), or ConfigError naming what does not fit. Sets
    args.preset to the preset of the folder's shape when --preset was not given (for the banner)."""
    if not getattr(args, "init_from", None):
        return None
    folder = os.path.abspath(os.path.expanduser(args.init_from))
    where = os.path.join(folder, "config.json")
    try:
        with open(where) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--init-from {args.init_from}: {where} is missing or not JSON ({e}); pass a Hugging Face "
                          "GPT-2 model folder (config.json, model.safetensors or pytorch_model.bin, tokenizer)") from None
    config, vocab = from_hf_config(hf, where, args.dtype, 1)
    name = next((n for n, p in PRESETS.items() if p == _shape(config)), None)
    if args.preset is not None and PRESETS.get(args.preset) != _shape(config):
        raise ConfigError(f"--preset {args.preset} is {PRESETS.get(args.preset)}, but --init-from {args.init_from} is "
                          f"{_shape(config)}: leave --preset out (the model's shape comes from its config.json)")
    if args.qubits:
        raise ConfigError(f"--qubits {args.qubits} with --init-from: the Hugging Face model has no QuantumLayer to "
                          "load; start from its weights without one")
    try:
        text = read_hf_tokenizer(folder, vocab)
        tok = None if text is None else from_bytes(text.encode("utf-8"), os.path.join(folder, "tokenizer.json"))
    except DataError as e:
        raise ConfigError(f"--init-from {args.init_from}: {e}") from None
    if tok is not None and tok.vocab_size > vocab:
        raise ConfigError(f"--init-from {args.init_from}: its tokenizer has {tok.vocab_size} tokens, more than the "
                          f"model's {vocab} (config.json's vocab_size)")
    if args.tokenizer is not None:
        try:
            given = load_tokenizer(args.tokenizer)
        except DataError as e:
            raise ConfigError(str(e)) from None
        if given.hash != (tok.hash if tok is not None else BYTES):
            raise ConfigError(f"--tokenizer {args.tokenizer} is not the tokenizer of --init-from {args.init_from}: the "
                              "model's token ids mean that folder's tokens; leave --tokenizer out")
    start = HFStart(folder, config, vocab, tok, name)
    if args.resume:  # the newest checkpoint's meta.json only; the resume itself checks every file's hash
        path, meta, _ = saved.scan(args.ckpt_dir, only=())
        if path is not None:
            check_resume(start, path, meta)
    if args.preset is None:
        args.preset = name
    return start


def check_resume(start, path, meta):
    """ConfigError when --resume would continue the checkpoint at path (its meta) that did not start from
    this folder."""
    came = (meta.get("init_from") or {}).get("path")
    if came != start.folder:
        raise ConfigError(f"--resume with --init-from {start.folder}: the checkpoint {path} in --ckpt-dir "
                          + (f"started from {came}" if came else "did not start from a Hugging Face folder")
                          + "; use another --ckpt-dir, or leave --init-from out to continue that run")


def weights(world, start):
    """On world rank 0, the folder's weights as hpr's whole tensors for start.config (None elsewhere);
    a ConfigError on every rank when they do not map (collective)."""
    tensors, err = None, None
    if world.rank == 0:
        try:
            tensors = from_hf_tensors(read_hf_weights(start.folder), start.config, start.vocab,
                                      where=start.folder)
        except HprError as e:
            err = str(e)
    err = world.bcast_obj(err, root=0)
    if err:
        raise ConfigError(f"--init-from: {err}")
    return tensors


def load(run, tensors):
    """Every rank's part of the folder's weights into run.model (rank 0's tensors, wte padded with zero
    rows to this run's padded vocabulary); collective over run.world."""
    model, config = run.model, run.config
    if run.world.rank == 0:
        wte = tensors["wte"]
        pad = config.padded_vocab - wte.shape[0]  # rows past the vocabulary: no token, masked in the loss
        tensors = {"params": dict(tensors, wte=np.concatenate([wte, np.zeros((pad, wte.shape[1]), wte.dtype)]))}
    full = {"params": np.empty(model.layout.size, model.dtype)}
    canonical.scatter(run.world, model.layout, tensors, full)  # this rank's whole flat buffer
    run.sync.load_params(full["params"])  # into the parameters (and their ZeRO-2/3 shard)
