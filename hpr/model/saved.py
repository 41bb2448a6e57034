"""Reading a trained model back for use: the newest intact checkpoint of a --ckpt-dir (or one step
folder), its config and its whole named parameters, in the format hpr.checkpoint writes (meta.json
with the sha256 of every file, params.safetensors of whole tensors). Read-only and single-process;
hpr.checkpoint owns writing and the collective resume (it sits a layer above hpr.model).

Usage: ``path, meta = find(ckpt_dir); tensors = read_params(path)``"""
import hashlib
import json
import os
import warnings

from safetensors.numpy import load_file

from ..errors import CheckpointError

FORMAT = 2  # hpr.checkpoint.FORMAT: whole named tensors
PARAMS = "params.safetensors"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate(path):
    """meta of an intact checkpoint folder whose params file is present and passes its hash."""
    try:
        with open(os.path.join(path, "meta.json"), "rb") as f:
            meta = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: meta.json missing or unreadable ({e})") from None
    if meta.get("format") != FORMAT or "config" not in meta or PARAMS not in meta.get("files", {}):
        raise CheckpointError(f"{path}: meta.json is not an hpr checkpoint of format {FORMAT} with {PARAMS}")
    fp = os.path.join(path, PARAMS)
    if not os.path.exists(fp):
        raise CheckpointError(f"{path}: {PARAMS} is missing")
    if _sha256(fp) != meta["files"][PARAMS]:
        raise CheckpointError(f"{path}: {PARAMS} fails its sha256 check (corrupted or partly written)")
    return meta


def find(ckpt_dir):
    """(step folder, meta): ckpt_dir itself when it is a step folder (has meta.json), else the one its
    `latest` names, else the newest intact step-* folder (damaged ones are warned about and skipped).
    CheckpointError when there is none."""
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"{ckpt_dir} is not a folder; pass a checkpoint folder (--ckpt-dir of a "
                              "training run, or one of its step-* folders)")
    if os.path.exists(os.path.join(ckpt_dir, "meta.json")):
        return ckpt_dir, validate(ckpt_dir)
    order = []
    try:
        with open(os.path.join(ckpt_dir, "latest")) as f:
            order.append(f.read().strip())
    except OSError:
        pass
    steps = sorted((n for n in os.listdir(ckpt_dir) if n.startswith("step-") and n[5:].isdigit()),
                   key=lambda n: int(n[5:]), reverse=True)
    order += [n for n in steps if n not in order]
    for n in order:
        path = os.path.join(ckpt_dir, n)
        try:
            return path, validate(path)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {e}", stacklevel=2)
    raise CheckpointError(f"no intact checkpoint in {ckpt_dir} (no meta.json, no step-* folder that "
                          "passes its checks); train with --ckpt-dir, or convert one with python -m hpr.convert")


def read_params(path):
    """{name: whole tensor} of a checkpoint folder's parameters."""
    try:
        return load_file(os.path.join(path, PARAMS))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: cannot read {PARAMS}: {e}") from None
