"""The checkpoint folder's format, read side, in one place: what hpr.checkpoint writes (a step-NNNNNNNN
folder per checkpoint, its meta.json with the sha256 of every file, `latest` naming the newest) and
how a folder is checked and found again (validate, scan), for both of its readers: hpr.checkpoint's
collective --resume (a layer above) and the single-process reading for use here (find, read_params,
tokenizer_of: GPT.load, hpr.convert). Owns the names, the hash and the checks; not writing or the
collective load (hpr.checkpoint), nor what the tensors mean (hpr.model.gpt, hpr.train).

Usage: ``path, meta = find(ckpt_dir); tensors = read_params(path); tok = tokenizer_of(path, ckpt_dir, V)``"""
import hashlib
import json
import os
import warnings

from safetensors.numpy import load_file

from ..data import BYTES, load_tokenizer
from ..errors import CheckpointError, DataError

FORMAT = 2  # 2: whole named tensors (layout-independent); 1 (flat buffers) is not read
META, LATEST, PARAMS = "meta.json", "latest", "params.safetensors"
TOKENIZER = "tokenizer.json"  # the tokenizer a checkpoint carries (none: bytes)


def step_name(step):
    return f"step-{step:08d}"


def sha256_file(path):
    """The sha256 hex digest of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def plain_name(name, where, hint=""):
    """name, if it is a bare file or folder name (no path separator, not '.', '..' nor absolute), as
    meta.json and `latest` must hold; else CheckpointError naming `where` (the file it came from)."""
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    if (not isinstance(name, str) or not name or name in (".", "..") or os.path.isabs(name)
            or any(s in name for s in seps) or "\0" in name):
        raise CheckpointError(f"{where} names {name!r}, which is not a plain file name inside the "
                              f"checkpoint folder (a path separator, '..' or an absolute path){hint}")
    return name


def steps(ckpt_dir):
    """The step numbers of ckpt_dir's step-* folders, newest first."""
    return sorted((int(n[5:]) for n in os.listdir(ckpt_dir) if n.startswith("step-") and n[5:].isdigit()),
                  reverse=True)


def validate(path, only=None, hint=""):
    """meta of a complete, intact checkpoint folder, or CheckpointError saying what is wrong (hint
    appended). only: the files to check (default: every file meta.json lists; GPT.load checks only
    the parameters)."""
    mp = os.path.join(path, META)
    try:
        with open(mp, "rb") as f:
            meta = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: meta.json missing or unreadable ({e}){hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{path}: meta.json is not an hpr checkpoint of format {FORMAT}{hint}")
    files = meta["files"]
    for fname in files if only is None else only:
        if fname not in files:
            raise CheckpointError(f"{path}: meta.json is not an hpr checkpoint of format {FORMAT} with {fname}{hint}")
        fp = os.path.join(path, plain_name(fname, mp, hint))
        if not os.path.exists(fp):
            raise CheckpointError(f"{path}: {fname} is missing{hint}")
        if sha256_file(fp) != files[fname]:
            raise CheckpointError(f"{path}: {fname} fails its sha256 check (corrupted or partly written){hint}")
    return meta


def scan(ckpt_dir, only=None, hint=""):
    """(path, meta, notes) of the newest intact checkpoint of a --ckpt-dir, or (None, None, notes):
    the folder `latest` names first (a pointer that is not a plain name is refused, never followed),
    then every step-* folder newest first; notes say why each folder tried before was skipped."""
    if not os.path.isdir(ckpt_dir):
        return None, None, []
    order, notes = [], []
    pointer = os.path.join(ckpt_dir, LATEST)
    try:
        with open(pointer) as f:
            order.append(plain_name(f.read().strip(), pointer, hint))
    except OSError:
        pass
    except CheckpointError as e:
        notes.append(f"skipping checkpoint {e}")
    order += [step_name(s) for s in steps(ckpt_dir) if step_name(s) not in order]
    for n in order:
        path = os.path.join(ckpt_dir, n)
        try:
            return path, validate(path, only, hint), notes
        except CheckpointError as e:
            notes.append(f"skipping checkpoint {e}")
    return None, None, notes


def find(ckpt_dir):
    """(step folder, meta) for use: ckpt_dir itself when it is a step folder (has meta.json), else its
    newest intact checkpoint (scan; damaged ones are warned about and skipped). Only the parameters'
    hash is checked. CheckpointError when there is none."""
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"{ckpt_dir} is not a folder; pass a checkpoint folder (--ckpt-dir of a "
                              "training run, or one of its step-* folders)")
    if os.path.exists(os.path.join(ckpt_dir, META)):
        meta = validate(ckpt_dir, (PARAMS,))
    else:
        ckpt, meta, notes = scan(ckpt_dir, (PARAMS,))
        for n in notes:
            warnings.warn(n, stacklevel=2)
        if ckpt is None:
            raise CheckpointError(f"no intact checkpoint in {ckpt_dir} (no meta.json, no step-* folder that "
                                  "passes its checks); train with --ckpt-dir, or convert one with python -m hpr.convert")
        ckpt_dir = ckpt
    if "config" not in meta:
        raise CheckpointError(f"{ckpt_dir}: meta.json has no model config; not a GPT checkpoint")
    return ckpt_dir, meta


def read_params(path):
    """{name: whole tensor} of a checkpoint folder's parameters."""
    try:
        return load_file(os.path.join(path, PARAMS))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: cannot read {PARAMS}: {e}") from None


def tokenizer_of(step_dir, ckpt_dir, vocab_size):
    """The tokenizer of a checkpoint (hpr.data's): tokenizer.json in its step folder, else in the
    checkpoint folder above it; none there and a vocabulary of 256: bytes; none and another vocabulary:
    None (the model still computes logits, but nothing turns text into its ids). CheckpointError when the
    file is unreadable or its vocabulary is larger than the model's."""
    for folder in (step_dir, ckpt_dir):
        path = os.path.join(folder, TOKENIZER)
        if os.path.exists(path):
            try:
                tok = load_tokenizer(path)
            except DataError as e:
                raise CheckpointError(f"{e}; replace {path} with the tokenizer the model was trained with") from None
            if tok.vocab_size > vocab_size:
                raise CheckpointError(f"{path} has {tok.vocab_size} tokens but the model's vocabulary is "
                                      f"{vocab_size}: this is not the model's tokenizer; put the right "
                                      f"{TOKENIZER} beside the checkpoint")
            return tok
    return load_tokenizer(BYTES) if vocab_size == 256 else None
