"""hpr.checkpoint's commit protocol on one process (a one-rank stand-in for the communicator): the order
of fsyncs and renames (each file fsynced before its rename, the folder fsynced after), folder fsync
errors that are raised and those that are skipped, a re-saved step that always has a committed folder,
and names from meta.json and `latest` that are refused when they leave the folder. (Kills at each
commit point of a real training job, and their resume: test_train_failures.py.)"""
import errno
import json
import os
import shutil

import numpy as np
import pytest

from hpr import checkpoint
from hpr.errors import CheckpointError


class OneRank:
    """The three calls hpr.checkpoint makes of a communicator, for a single rank."""
    rank, size = 0, 1

    def bcast_obj(self, obj, root=0):
        return obj

    def gather_obj(self, obj, root=0):
        return [obj]


def arrays(seed):
    r = np.random.default_rng(seed)
    return {"params.safetensors": {"w": r.standard_normal((8, 4))},
            "optim.safetensors": {"m.w": r.standard_normal((8, 4)), "v.w": r.standard_normal((8, 4))}}


def fd_path(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def events(monkeypatch):
    """Every fsync (by path), rename and replace the save makes, in order."""
    log = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        log.append(("fsync", fd_path(fd)))
        return real_fsync(fd)

    def rename(a, b):
        log.append(("rename", str(a), str(b)))
        return real_rename(a, b)

    def replace(a, b):
        log.append(("rename", str(a), str(b)))
        return real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_every_file_is_fsynced_before_its_rename_and_the_folder_after(tmp_path, events):
    ck = str(tmp_path / "ck")
    final = checkpoint.save(OneRank(), ck, 4, arrays(0), {"note": "x"})
    renames = [e for e in events if e[0] == "rename"]
    assert [os.path.basename(b) for _, _, b in renames] == ["step-00000004", "latest"], events
    for _, src, dst in renames:
        i = events.index(("rename", src, dst))
        synced = [e[1] for e in events[:i] if e[0] == "fsync"]
        # what is renamed is durable first: the folder's files and the folder itself, or the pointer file
        files = [os.path.join(src, n) for n in os.listdir(dst)] if os.path.isdir(dst) else [src]
        for f in files + ([src] if os.path.isdir(dst) else []):
            assert f in synced, f"{f} not fsynced before its rename to {dst}: {events}"
        # and the rename itself is made durable by an fsync of the folder that holds it, after it
        assert ("fsync", ck) in events[i + 1:], f"{ck} not fsynced after renaming {src}: {events}"
    assert events[-1] == ("fsync", ck), events  # `latest` moved, then made durable
    assert checkpoint.find(ck)[0] == final


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_folder_fsync_not_supported_by_the_filesystem_is_skipped(tmp_path, monkeypatch, code):
    real = os.fsync

    def fsync(fd):
        if os.path.isdir(fd_path(fd)):
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    final = checkpoint.save(OneRank(), str(tmp_path), 2, arrays(0), {})
    assert checkpoint.find(str(tmp_path))[0] == final


def test_folder_fsync_error_fails_the_save_and_keeps_the_previous_one(tmp_path, monkeypatch):
    ck = str(tmp_path)
    first = checkpoint.save(OneRank(), ck, 2, arrays(0), {})
    real = os.fsync

    def fsync(fd):
        if os.path.isdir(fd_path(fd)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointError, match=r"fsync of folder .*Input/output error.*step-00000002, is intact"):
        checkpoint.save(OneRank(), ck, 4, arrays(1), {})
    monkeypatch.undo()
    assert checkpoint.find(ck)[0] == first


class Crash(BaseException):
    """A kill, as far as the code under test can tell: not an Exception, so no handler takes it for an error."""


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_resaving_a_step_always_leaves_a_committed_folder(tmp_path, monkeypatch, exchange):
    """Re-save step 4 with a crash before each of its folder changes in turn (rename, rmtree): after
    every one, step-00000004 is a complete checkpoint (the old one or the new one). With renameat2's
    exchange, and with the two renames used where a filesystem has no exchange (an error between them
    puts the old folder back)."""
    if exchange:
        assert checkpoint._RENAMEAT2 is not None, "this libc has no renameat2"
    else:
        monkeypatch.setattr(checkpoint, "_RENAMEAT2", None)
    ck = str(tmp_path)
    checkpoint.save(OneRank(), ck, 4, arrays(0), {"which": "old"})
    k, crashed = 0, True
    while crashed:
        calls = {"n": 0}

        def crash_at(fn):
            def wrapped(*a, **kw):
                calls["n"] += 1
                if calls["n"] == k + 1:
                    raise Crash(f"crash before {fn.__name__}{a}")
                return fn(*a, **kw)
            return wrapped
        with monkeypatch.context() as m:  # (the exchange itself is one system call: nothing between)
            for mod, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree")):
                m.setattr(mod, name, crash_at(getattr(mod, name)))
            try:
                checkpoint.save(OneRank(), ck, 4, arrays(1), {"which": "new"})
                crashed = False
            except Crash:
                pass
        meta = checkpoint.validate(os.path.join(ck, "step-00000004"))  # raises if not complete
        assert meta["which"] in ("old", "new"), meta
        k += 1
    assert meta["which"] == "new" and k >= 2
    assert sorted(n for n in os.listdir(ck) if not n.startswith(".")) == ["latest", "step-00000004"]


def test_a_file_name_in_meta_json_that_leaves_the_folder_is_refused(tmp_path):
    ck = tmp_path / "ck"
    final = checkpoint.save(OneRank(), str(ck), 2, arrays(0), {})
    outside = tmp_path / "outside.safetensors"
    shutil.copy(os.path.join(final, "params.safetensors"), outside)
    mp = os.path.join(final, "meta.json")
    with open(mp) as f:
        meta = json.load(f)
    for bad in ("../outside.safetensors", str(outside), "sub/params.safetensors", ".."):
        meta["files"] = {bad: meta["files"].get("params.safetensors") or next(iter(meta["files"].values()))}
        with open(mp, "w") as f:
            json.dump(meta, f)
        with pytest.raises(CheckpointError) as e:
            checkpoint.validate(final)
        assert "meta.json" in str(e.value) and repr(bad) in str(e.value), e.value
    with pytest.raises(CheckpointError, match=r"'\.\./outside\.safetensors'"):
        checkpoint.read_arrays(final, "../outside.safetensors")


def test_a_latest_pointer_that_leaves_the_folder_is_refused(tmp_path):
    """`latest` naming a complete checkpoint outside --ckpt-dir is not followed: find warns, naming the
    file and the name, and takes the newest step-* folder inside."""
    elsewhere = checkpoint.save(OneRank(), str(tmp_path / "elsewhere"), 9, arrays(1), {})
    ck = tmp_path / "ck"
    inside = checkpoint.save(OneRank(), str(ck), 2, arrays(0), {})
    for bad in (f"../elsewhere/{os.path.basename(elsewhere)}", elsewhere):
        (ck / "latest").write_text(bad + "\n")
        path, meta, notes = checkpoint.find(str(ck))
        assert path == inside and meta["step"] == 2, (path, notes)
        assert len(notes) == 1 and f"{ck}/latest names {bad!r}" in notes[0], notes
