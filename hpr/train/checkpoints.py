"""The glue between a training Run and its checkpoints: the state gathered into canonical form (whole named
tensors, whatever the dp x tp x pp layout) and written by hpr.checkpoint, the metadata a resumed run is
checked against, each rank's part scattered back on --resume, and the whole trained model on rank 0 for
the final sample. Owns what the arrays mean and which flags must match; not the files (hpr.checkpoint)
nor the sharding arithmetic (hpr.parallel.canonical).

A checkpoint holds the tokenizer its run trained with: meta's data.tokenizer is its hash ("bytes" for the
byte model) and the folder keeps its tokenizer.json (none for bytes), so the checkpoint alone decodes what
its model generates (``hpr.data.load_tokenizer(folder)``). wte is saved with the real vocabulary's rows
only: the padding (GPTConfig.vocab_multiple, which depends on tp) is no token, so a checkpoint resumes
at another tp whatever the padding there (the padded rows come back as zeros; they never reach the loss).

Every function takes the Run (hpr.train.loop) and reads its world, grid, args, config, model, opt, sync
and faults; a test may build a Run from those parts alone.

Usage: ``path = save_checkpoint(run, step)``; ``step0 = restore_checkpoint(run, path, meta)``"""
import dataclasses
import hashlib
import os

import numpy as np

from .. import checkpoint, trace
from ..data import BYTES
from ..device import to_host
from ..errors import CheckpointError
from ..model import GPT
from ..parallel import canonical

TOKENIZER_FILE = "tokenizer.json"


def gather_state(run, tp, with_optimizer=False):
    """The parameters (and AdamW's moments) in canonical form (whole named tensors) on world rank 0."""
    sync = run.sync  # ZeRO-1/2/3 shards are joined over dp first (collective); ZeRO-3's parameters too
    flats = {"params": to_host(sync.whole_params(run.model.params))}  # copies off a GPU
    if with_optimizer:
        flats.update(m=sync.whole_moments(to_host(run.opt.m)), v=sync.whole_moments(to_host(run.opt.v)))
    return canonical.gather(run.world, tp, run.model.layout, flats, first_stage=run.model.first,
                            contribute=run.grid.dp_rank == 0)


def whole_model(run):
    """On world rank 0, a single-rank GPT holding the trained parameters (for sampling); None elsewhere."""
    if run.world.size == 1:
        return run.model
    full = gather_state(run, run.tp)
    if run.world.rank != 0:
        return None
    whole = GPT(run.config, seed=None)  # no random draw: every parameter is set below
    for p in whole.layout.entries:
        p.data[...] = full["params"][p.name]
    return whole


def tokenizer_hash(run):
    """The hash of the run's tokenizer ("bytes" for the byte model, or a Run built without data)."""
    return run.data.hash if run.data is not None else BYTES


def checkpoint_meta(run, step):
    """What a checkpoint records beside its tensors: the model, layout, data position and tokenizer,
    schedule, optimizer, and the Hugging Face folder a --init-from run started from."""
    a, grid, opt = run.args, run.grid, run.opt
    return {"config": dataclasses.asdict(run.config),
            "layout": {"dp": grid.dp_size, "tp": grid.tp_size, "pp": grid.pp_size, "zero": a.zero,
                       "micro_batches": a.accum},
            "seed": a.seed, "data": {"next_sample": step * a.batch, "batch": a.batch,
                                     "tokenizer": tokenizer_hash(run)},
            "schedule": {"lr": a.lr, "steps": a.steps, "warmup": a.warmup, "min_lr_ratio": a.min_lr_ratio},
            "optimizer": {"t": opt.t, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay},
            **({"init_from": run.start.record()} if getattr(run, "start", None) else {})}


def save_checkpoint(run, step):
    """A checkpoint in canonical form (layout-independent), written by world rank 0 into --ckpt-dir;
    returns its path. HPR_FAULT's save faults for this step (run.faults) fire inside the write."""
    with trace.span("checkpoint", step=step):
        with trace.span("gather state"):
            full = gather_state(run, run.sync.tp, with_optimizer=True)
        files = {}
        if run.world.rank == 0:
            v = run.config.vocab_size
            for k in ("params", "m", "v"):  # the real vocabulary's rows only (module docstring)
                full[k]["wte"] = full[k]["wte"][:v]
            files["params.safetensors"] = full["params"]
            files["optim.safetensors"] = {f"{k}.{n}": a for k in ("m", "v") for n, a in full[k].items()}
            tok = run.data.tokenizer.to_bytes() if run.data is not None else None
            if tok is not None:
                files[TOKENIZER_FILE] = tok  # written as it is: a checkpoint alone decodes its samples
        with trace.span("write"):
            return checkpoint.save(run.world, run.args.ckpt_dir, step, files, checkpoint_meta(run, step),
                                   keep=run.args.ckpt_keep,
                                   fault=run.faults.save_hook(step) if run.faults else None)


def saved_tokenizer(path, meta):
    """The hash of the tokenizer the checkpoint at path was trained with: meta's data.tokenizer; for a
    checkpoint written without it (hpr.convert's, or an older hpr's), the sha256 of the tokenizer.json
    in its folder, else bytes."""
    h = meta.get("data", {}).get("tokenizer")
    if h:
        return h
    try:
        with open(os.path.join(path, TOKENIZER_FILE), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return BYTES


def same_model(saved, config):
    """True when a checkpoint's config (a dict) is this run's GPTConfig whatever the vocabulary's padding:
    the same fields, and at least this vocabulary's rows (check_meta has checked the tokenizer first, so
    the ids mean the same text; rows past config.vocab_size are padding: a trained checkpoint's
    vocab_size is its tokenizer's, hpr.convert's counts the padded rows)."""
    less = lambda d: {k: v for k, v in d.items() if k not in ("vocab_size", "vocab_multiple")}  # noqa: E731
    v = saved.get("vocab_size")
    return less(saved) == less(dataclasses.asdict(config)) and isinstance(v, int) and v >= config.vocab_size


def check_meta(run, path, meta):
    """A DataError when the checkpoint was trained on another tokenizer's tokens than this run's data; a
    CheckpointError when it cannot continue this run (another model, seed or batch); a note on rank 0
    when only the learning-rate schedule differs."""
    a = run.args
    if run.data is not None:
        run.data.check_tokenizer(saved_tokenizer(path, meta), f"the checkpoint {path}")
    if not same_model(meta["config"], run.config):
        raise CheckpointError(f"{path} was saved by a different model ({meta['config']}); resume with the same "
                              "--preset and --dtype, or use another --ckpt-dir")
    if meta["seed"] != a.seed:
        raise CheckpointError(f"{path} was trained with --seed {meta['seed']}; resume with the same --seed so "
                              "the data order continues (or use another --ckpt-dir)")
    sch = meta["schedule"]
    if run.world.rank == 0 and (sch["lr"], sch["steps"], sch["warmup"], sch["min_lr_ratio"]) != (
            a.lr, a.steps, a.warmup, a.min_lr_ratio):
        print(f"resume: note: the learning-rate schedule differs from the checkpoint's ({sch}); the run "
              "continues with this run's flags")
    if meta["data"]["batch"] != a.batch:
        raise CheckpointError(f"{path} was trained with --batch {meta['data']['batch']}; resume with the same "
                              "--batch so the data order continues")


def restore_checkpoint(run, path, meta):
    """Load this rank's part of the params and optimizer state from a canonical checkpoint, whatever
    layout saved it; returns the step to continue after."""
    check_meta(run, path, meta)
    world, model, opt, sync = run.world, run.model, run.opt, run.sync
    tensors = None
    if world.rank == 0:
        opt_t = checkpoint.read_arrays(path, "optim.safetensors")
        tensors = {"params": checkpoint.read_arrays(path, "params.safetensors"),
                   "m": {k[2:]: v for k, v in opt_t.items() if k.startswith("m.")},
                   "v": {k[2:]: v for k, v in opt_t.items() if k.startswith("v.")}}
        v, padded = run.config.vocab_size, run.config.padded_vocab
        for t in tensors.values():  # the real rows, then this model's padding: zero rows, never a token
            wte = t.get("wte")
            if wte is not None and wte.ndim == 2 and wte.shape[0] >= v and wte.shape[0] != padded:
                t["wte"] = np.concatenate([wte[:v], np.zeros((padded - v, wte.shape[1]), wte.dtype)])
    try:
        full = {k: np.empty(model.layout.size, model.dtype) for k in ("params", "m", "v")}
        canonical.scatter(world, model.layout, tensors, full)  # this rank's whole flat buffers
        sync.load_params(full["params"])  # (and its ZeRO-2/3 shard)
        for k in ("m", "v"):  # this rank's part of the moments: all, its ZeRO-1 range or ZeRO-2/3 shard
            getattr(opt, k)[...] = model.xp.asarray(sync.own_moments(full[k]))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this model: {e}") from None
    opt.t = int(meta["optimizer"]["t"])
    return int(meta["step"])
