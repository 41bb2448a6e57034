"""Training text for hpr's byte-level models. Owns reading a corpus (one text file, a folder of them, or by
default the Python standard library's own ``.py`` sources), its deterministic train/validation split and
an on-disk cache of the result. Does not own tokenisation beyond bytes (the vocabulary V = 256 is the
byte values; subword tokenizers and prepared token shards are tokenizer.py and shards.py), which bytes a
sample index reads (batches.py), or moving batches to a GPU.
Usage: ``c = Corpus.load("notes/"); c.check_context(256); x, y = Batches(c.train, 256, seed=0).get(0, 32)``

The split is by file: a file is validation when ``zlib.crc32(relpath) % 1000 < val_permille``, so it
depends only on the file's path relative to the corpus root, never on the machine, the file order or
the other files. When that leaves the train or the validation split without bytes (one file, a tiny
folder), the split falls back to the last ``val_permille / 1000`` of the bytes (all files concatenated
in path order) as validation; ``n_val_files`` is then 0.
"""
import hashlib
import json
import os
import stat
import struct
import sys
import sysconfig
import warnings
import zlib

import numpy as np

from .. import config
from ..errors import DataError
from .atomic import AtomicFile
from .batches import _count

SUFFIXES = (".txt", ".md", ".rst", ".py")

# Cache file: one header, then the train bytes, then the val bytes (raw uint8, no padding).
#   magic b"HPRBYTES" | format u32 | key: sha256 of (format, root, suffixes, val_permille, every file's
#   (relpath, size, mtime_ns)) 32 bytes | n_train u64 | n_val u64 | n_files u32 | n_val_files u32 |
#   crc32 of the payload u32           (all little-endian, 72 bytes)
# The file name hashes (format, root, suffixes, val_permille) only, so editing a corpus rewrites its one
# cache file in place instead of leaving a stale 30 MB file behind per edit; the full key in the header
# decides whether the cache is current.
_FORMAT = 1
_MAGIC = b"HPRBYTES"
_HEADER = struct.Struct("<8sI32sQQIII")
_warned_no_cache = False


def default_cache_dir():
    """HPR_CACHE_DIR, else $XDG_CACHE_HOME/hpr, else ~/.cache/hpr: hpr.config's cache_dir, read from the
    environment as it is now (through hpr.config, the one reader), so a folder set after hpr.init still
    counts, as it always did."""
    return config.from_env().cache_dir


def _check_val_permille(val_permille, example):
    if isinstance(val_permille, bool) or not isinstance(val_permille, (int, np.integer)) \
            or not 1 <= val_permille <= 999:
        raise DataError(f"val_permille={val_permille!r}: the validation share is given in thousandths "
                        f"and must be an integer from 1 to 999 ({example})")
    return int(val_permille)


def _source(path, suffixes, missing):
    """(root, suffixes, description) of a corpus: the standard library's .py files when path is None.
    missing: the DataError message's advice when path does not exist."""
    if path is None:
        root = os.path.abspath(sysconfig.get_paths()["stdlib"])
        v = sys.version_info
        return root, (".py",), f"Python {v.major}.{v.minor} standard library {root} (*.py)"
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    if not os.path.exists(root):
        raise DataError(f"{missing[0]} {root} does not exist: {missing[1]}")
    return root, suffixes, f"folder {root} ({', '.join('*' + s for s in suffixes)})"


class Corpus:
    """A byte corpus split into ``train`` and ``val`` (1-D uint8 arrays, read-only when loaded). ``n_files`` files
    were read, ``n_val_files`` of them are validation (0: the tail split was used, see the module
    docstring); ``source`` says where the bytes came from; ``cache_path`` is the cache file in use, or
    None when there is none."""

    def __init__(self, train, val, *, n_files=1, n_val_files=0, source="arrays", cache_path=None):
        self.train = _as_uint8(train)  # (n_train,)
        self.val = _as_uint8(val)  # (n_val,)
        self.n_files, self.n_val_files = n_files, n_val_files
        self.source, self.cache_path = source, cache_path

    def __repr__(self):
        return (f"Corpus({self.source}: {self.train.size} train + {self.val.size} val bytes, "
                f"{self.n_files} files, {self.n_val_files} of them validation)")

    @classmethod
    def load(cls, path=None, *, suffixes=SUFFIXES, val_permille=50, cache_dir=None):
        """The corpus at ``path`` (a file, or a folder read recursively for files ending in one of
        ``suffixes``, in relative-path order; hidden and site-packages folders are skipped), or with
        no path the Python standard library's ``*.py`` files. Cached under ``cache_dir`` (default:
        default_cache_dir()); a missing, stale or damaged cache is rebuilt."""
        val_permille = _check_val_permille(val_permille, "50 means 5%")
        root, suffixes, source = _source(path, suffixes, (
            "corpus path", "pass a text file or a folder of text files (or no path, for the Python standard "
            "library's sources)"))
        if os.path.isfile(root):
            if not os.access(root, os.R_OK):
                raise DataError(f"corpus file {root} is not readable: fix its permissions or pass another file")
            st = os.stat(root)
            files = [(os.path.basename(root), root, st.st_size, st.st_mtime_ns)]
            source = f"file {root}"
        elif os.path.isdir(root):
            files = _list_files(root, suffixes) if suffixes else []
            if not files:
                raise DataError(f"folder {root} has no readable files ending in {', '.join(suffixes) or '(none)'}"
                                ": point the path at a folder of text files, or pass the suffixes its files use")
        else:
            raise DataError(f"corpus path {root} is neither a regular file nor a folder: pass a text file or a folder")
        if sum(f[2] for f in files) == 0:
            raise DataError(f"{source}: all {len(files)} files are empty, so there is nothing to train on; "
                            "pass a corpus with text in it")

        ident = [_FORMAT, root, list(suffixes), val_permille]
        key = hashlib.sha256(json.dumps(ident + [[f[0], f[2], f[3]] for f in files]).encode()).digest()
        name = "corpus-" + hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24] + ".bin"
        cache_path = os.path.join(cache_dir or default_cache_dir(), name)
        cached = _read_cache(cache_path, key)
        if cached is not None:
            train, val, n_files, n_val_files = cached
        else:
            train, val, n_files, n_val_files = _read_split(files, val_permille)
            if train.size + val.size == 0:
                raise DataError(f"{source}: every file is empty or unreadable; pass a corpus with text in it")
            cache_path = _write_cache(cache_path, key, train, val, n_files, n_val_files)
        return cls(train, val, n_files=n_files, n_val_files=n_val_files, source=source, cache_path=cache_path)

    def unigram_entropy(self):
        """H = -sum_v p_v ln p_v (nats per byte), p_v the frequency of byte value v in the train split:
        the loss of the best model that ignores context, the number a trained model has to beat."""
        if self.train.size == 0:
            raise DataError(f"the training split of {self.source} is empty: pass a larger corpus")
        counts = np.zeros(256, np.int64)  # (V,)
        for i in range(0, self.train.size, 1 << 18):  # chunks: bincount casts each to int64 (8x bytes)
            counts += np.bincount(self.train[i:i + (1 << 18)], minlength=256)
        p = counts[counts > 0] / self.train.size
        return float(-(p * np.log(p)).sum())

    def check_context(self, context):
        """DataError unless both splits hold at least one window of context + 1 bytes."""
        context = _count(context, "context", minimum=1)
        for name, split, hint in (("training", self.train, ""), ("validation", self.val, ", a larger val_permille")):
            if split.size < context + 1:
                raise DataError(f"the {name} split of {self.source} has {split.size} bytes, fewer than one "
                                f"window of context + 1 = {context + 1}: use a larger corpus{hint} or a "
                                "smaller context")


def _as_uint8(x):
    """bytes or an array of byte values as a 1-D uint8 array (bytes without a copy)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return np.frombuffer(x, np.uint8)
    return np.asarray(x, dtype=np.uint8).reshape(-1)


def _list_files(root, suffixes):
    """(relpath, path, size, mtime_ns) of each readable regular file under root ending in one of
    suffixes, sorted by relpath. Relpaths use '/' so order and split are the same on every OS."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "site-packages" and not d.startswith(".")]
        for name in filenames:
            if not name.endswith(suffixes):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:  # broken link, vanished
                continue
            if stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                found.append((rel, path, st.st_size, st.st_mtime_ns))
    return sorted(found)


def _read_split(files, val_permille):
    """(train, val, n_files, n_val_files): the train files' bytes concatenated in list order, likewise
    the val files', or the tail split when one side would be empty (module docstring)."""
    chunks, is_val = [], []
    for rel, path, _, _ in files:
        try:
            with open(path, "rb") as f:
                chunks.append(f.read())
        except OSError:  # became unreadable since listing: skip it, as listing would have
            continue
        # fsencode gives the name's bytes (== rel.encode() for UTF-8 names) even for undecodable names
        is_val.append(zlib.crc32(os.fsencode(rel)) % 1000 < val_permille)
    train = b"".join(c for c, v in zip(chunks, is_val) if not v)
    val = b"".join(c for c, v in zip(chunks, is_val) if v)
    n_val_files = sum(is_val)
    if not train or not val:
        whole = b"".join(chunks)
        n_val = len(whole) * val_permille // 1000
        train, val, n_val_files = whole[:len(whole) - n_val], whole[len(whole) - n_val:], 0
    return np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8), len(chunks), n_val_files


def _read_cache(path, key):
    """(train, val, n_files, n_val_files) from the cache file at path if it was written for key; None
    when it is absent or stale, and a warning too when it is damaged (it is then rebuilt)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        return _damaged(path, f"unreadable: {e}")
    if raw.size < _HEADER.size:
        return _damaged(path, f"{raw.size} bytes, shorter than its header")
    magic, fmt, got_key, n_train, n_val, n_files, n_val_files, crc = _HEADER.unpack(raw[:_HEADER.size].tobytes())
    if magic != _MAGIC:
        return _damaged(path, "not an hpr corpus cache")
    if fmt != _FORMAT or got_key != key:
        return None  # another hpr version, or the corpus changed since: rebuild quietly
    payload = raw[_HEADER.size:]
    if payload.size != n_train + n_val:
        return _damaged(path, f"{payload.size} payload bytes, header says {n_train} + {n_val}")
    if zlib.crc32(payload) != crc:
        return _damaged(path, "checksum mismatch")
    payload.flags.writeable = False
    return payload[:n_train], payload[n_train:], n_files, n_val_files


def _damaged(path, why):
    warnings.warn(f"corpus cache {path} is damaged ({why}); rebuilding it", stacklevel=3)
    return None


def _write_cache(path, key, train, val, n_files, n_val_files):
    """Write the cache under a temporary name in the same folder, then rename it into place (atomic),
    so a killed process never leaves a half-written cache. Returns path, or None (warned once) when
    the cache folder is not writable."""
    global _warned_no_cache
    crc = zlib.crc32(val, zlib.crc32(train))  # crc of train + val as one stream
    header = _HEADER.pack(_MAGIC, _FORMAT, key, train.size, val.size, n_files, n_val_files, crc)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with AtomicFile(path) as f:  # a temporary name in the same folder, renamed into place at the end
            f.write(header)
            f.write(train.data)
            f.write(val.data)
        return path
    except OSError as e:
        if not _warned_no_cache:
            _warned_no_cache = True
            warnings.warn(f"cannot write the corpus cache {path} ({e}); working without a cache (set "
                          "HPR_CACHE_DIR to a writable folder to keep one)", stacklevel=3)
        return None

