"""Checkpoints written whole or not at all (DESIGN.md decision 7), and found again after any crash.

Layout of --ckpt-dir::

    step-00000300/params.safetensors      every parameter as its whole named tensor (hpr.parallel.canonical:
                                          the same files whatever dp, tp, pp and ZeRO-1 trained it)
    step-00000300/optim.safetensors       AdamW's moments, "m.<name>" and "v.<name>", whole tensors too
    step-00000300/meta.json               config, layout, step, data position, seed, optimizer step count
                                          and schedule, and the sha256 of every file above
    latest                                the name of the newest committed checkpoint

Saving (collective over the ranks): rank 0 makes `.tmp-step-...`, every writer puts its
file there (written, fsynced, hashed), rank 0 gathers the hashes, writes meta.json, renames the folder
to its final name, and only then moves `latest` (temporary file + rename). A kill at any moment leaves
either the old state or the new one; leftovers of an interrupted save are `.tmp-*` folders, removed by
the next save. A save that fails (disk full, read-only folder, a rank that cannot write) removes its
temporary folder and raises CheckpointError on every rank, saying which earlier checkpoint is intact.
Every collective here carries hpr's deadline (HPR_TIMEOUT), so a rank that dies mid-save ends the
others with CommTimeout instead of a hang. Loading tries `latest`, then every other `step-*` folder newest first; a folder whose
meta.json is missing or unreadable, or whose files are missing or fail their hash, is named in a
warning and skipped. Owns files; not what the arrays mean (hpr.train) or how they were sharded.

Usage: ``save(comm, dir, step, arrays, meta)``; ``found = load(comm, dir)``"""
import ctypes
import errno
import hashlib
import json
import os
import shutil
import warnings

import numpy as np
from safetensors.numpy import load_file, save as st_save

from .errors import CheckpointError, CommError
from .model import saved
from .model.saved import FORMAT

_HINT = "; resume from an older checkpoint (--resume skips a damaged one by itself) or delete this folder"
_name = saved.step_name


# fsync of a directory that this filesystem cannot do (some network and FUSE filesystems): nothing to
# make durable there, so it is skipped; any other error (EIO, ENOSPC ...) means the commit is not durable
_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.ENOSYS)


def _fsync_dir(path):
    """Make a folder's entries (a rename, a new file) durable; CheckpointError if the disk says no."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise CheckpointError(f"cannot open folder {path} to fsync it: {e}") from None
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _FSYNC_UNSUPPORTED:
            raise CheckpointError(f"fsync of folder {path} failed: {e}") from None
    finally:
        os.close(fd)


def _write_file(path, data, fault=None):
    """Write, flush and fsync one file; its sha256. fault("partial", path) fires with half of it written."""
    half = len(data) // 2
    with open(path, "wb") as f:
        f.write(data[:half])
        if fault is not None:
            f.flush()
            fault("partial", path)
        f.write(data[half:])
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def plain_name(name, where):
    """name, if it is a bare file or folder name, as meta.json and `latest` must hold; else
    CheckpointError naming `where` (hpr.model.saved.plain_name, with --resume's hint)."""
    return saved.plain_name(name, where, _HINT)


_LIBC = ctypes.CDLL(None, use_errno=True)
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _swap(new, final):
    """Put folder `new` at `final`, where a committed folder of the same step already is. Linux's
    renameat2(RENAME_EXCHANGE) swaps the two names in one step, so a committed `final` always exists;
    where the filesystem cannot, the old folder is renamed aside first (a moment with no `final`, but
    both folders intact under some name). The old folder, now under the other name, is then removed."""
    if _RENAMEAT2 is not None:
        r = _RENAMEAT2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(final), _RENAME_EXCHANGE)
        if r == 0:
            return new  # `new` now names the old folder
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(e, f"swapping {new} with {final}: {os.strerror(e)}")
    aside = new + ".old"
    shutil.rmtree(aside, ignore_errors=True)  # a leftover of an interrupted save of this process
    os.rename(final, aside)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(aside, final)  # the committed folder back under its name
        raise
    return aside


def _collective(comm, fn):
    """Run fn on rank 0; every rank returns its result or raises its error (as CheckpointError)."""
    res = err = None
    if comm.rank == 0:
        try:
            res = fn()
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            err = f"{type(e).__name__}: {e}"
    res, err = comm.bcast_obj((res, err), root=0)
    if err:
        raise CheckpointError(err)
    return res


def save(comm, ckpt_dir, step, arrays, meta, keep=3, fault=None):
    """Collective. arrays: {file name: {array name: np.ndarray}, or bytes written as they are (the
    trainer's tokenizer.json)} this rank writes (may be empty);
    meta: JSON-able dict (rank 0's is written). Returns the checkpoint's final path. On failure,
    CheckpointError on every rank naming the checkpoint that is still intact. fault(point, path): the
    trainer's HPR_FAULT hook (tests), called at "mkdir", before each "write", with half of each file
    written ("partial"), once "written", and on rank 0 at each commit point: "meta" (meta.json written
    and fsynced), "renamed" (the folder at its final name) and "latest" (the pointer moved)."""
    try:
        return _save(comm, ckpt_dir, step, arrays, meta, keep, fault or (lambda point, path: None))
    except CommError as e:  # a rank died or hung mid-save: the last complete checkpoint is untouched
        raise type(e)(f"saving checkpoint {_name(step)}: {e}") from None
    except CheckpointError as e:
        def intact():
            path, _, _ = find(ckpt_dir)
            return (f"The previous checkpoint, {path}, is intact: --resume continues from it." if path else
                    f"There is no earlier complete checkpoint in {ckpt_dir}.")
        raise CheckpointError(f"could not save checkpoint {_name(step)} in {ckpt_dir}: {e}. "
                              f"{_collective(comm, intact)} Free space or make the folder writable (or "
                              "choose another --ckpt-dir), then --resume.") from None


def _save(comm, ckpt_dir, step, arrays, meta, keep, fault):
    final = os.path.join(ckpt_dir, _name(step))

    def make_tmp():
        fault("mkdir", ckpt_dir)
        os.makedirs(ckpt_dir, exist_ok=True)
        tmp = os.path.join(ckpt_dir, f".tmp-{_name(step)}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        return tmp

    tmp = _collective(comm, make_tmp)
    hashes, err = {}, None
    try:
        for fname, tensors in arrays.items():
            data = bytes(tensors) if isinstance(tensors, (bytes, bytearray)) else \
                st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
            fault("write", tmp)
            hashes[fname] = _write_file(os.path.join(tmp, fname), data, fault)
    except OSError as e:
        err = f"rank {comm.rank} could not write {tmp}: {e}"
    fault("written", tmp)
    everyone = comm.gather_obj((hashes, err), root=0)

    ptr = os.path.join(ckpt_dir, f".latest.tmp-{os.getpid()}")

    def commit():
        try:
            errs = [e for _, e in everyone if e]
            if errs:
                raise OSError("; ".join(errs))
            files = {}
            for h, _ in everyone:
                files.update(h)
            body = dict(meta, format=FORMAT, step=step, files=files)
            _write_file(os.path.join(tmp, "meta.json"), json.dumps(body, indent=1, sort_keys=True).encode())
            _fsync_dir(tmp)
            fault("meta", tmp)
            old = None
            if os.path.isdir(final):  # the same step saved again (e.g. a signal right after a save)
                old = _swap(tmp, final)
            else:
                os.rename(tmp, final)
            _fsync_dir(ckpt_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            fault("renamed", final)
            _write_file(ptr, (_name(step) + "\n").encode())
            os.replace(ptr, os.path.join(ckpt_dir, "latest"))
            _fsync_dir(ckpt_dir)
            fault("latest", ckpt_dir)
        except BaseException:  # nothing half-written stays behind; `latest` still names the old one
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.exists(ptr):
                os.remove(ptr)
            raise
        _prune(ckpt_dir, keep, step)
        return final

    return _collective(comm, commit)


def _prune(ckpt_dir, keep, current):
    """Keep the newest `keep` checkpoints; drop leftovers of interrupted saves."""
    for n in os.listdir(ckpt_dir):
        if n.startswith(".tmp-") or n.startswith(".latest.tmp-"):
            p = os.path.join(ckpt_dir, n)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
    if keep > 0:
        for s in saved.steps(ckpt_dir)[keep:]:
            if s != current:
                shutil.rmtree(os.path.join(ckpt_dir, _name(s)), ignore_errors=True)


def validate(path):
    """meta dict of a complete, intact checkpoint folder (every file meta.json lists present and passing
    its sha256), or CheckpointError saying what is wrong (hpr.model.saved.validate)."""
    return saved.validate(path, hint=_HINT)


def find(ckpt_dir):
    """(path, meta, warnings) of the checkpoint to resume from, or (None, None, warnings)
    (hpr.model.saved.scan: `latest` first, then the step-* folders newest first)."""
    return saved.scan(ckpt_dir, hint=_HINT)


def load(comm, ckpt_dir):
    """Collective: rank 0 picks the newest intact checkpoint and every rank gets (path, meta), or
    (None, None) when there is none. Skipped checkpoints are warned about on rank 0."""
    path, meta, notes = _collective(comm, lambda: find(ckpt_dir))
    if comm.rank == 0:
        for n in notes:
            warnings.warn(n, stacklevel=2)
    return path, meta


def read_arrays(path, fname):
    """{name: array} of one file of a checkpoint folder."""
    fp = os.path.join(path, plain_name(fname, f"reading {path}"))
    try:
        return load_file(fp)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: cannot read {fname}: {e}") from None
