"""Training text for hpr's byte-level models. Owns reading a corpus (one text file, a folder of them, or by
default the Python standard library's own ``.py`` sources), its deterministic train/validation split, an
on-disk cache of the result, and which bytes each global sample index reads. Does not own tokenisation
beyond bytes (the vocabulary V = 256 is the byte values), which rank trains on which sample indices (the
trainer hands each rank its global indices), or moving batches to a GPU.
Usage: ``c = Corpus.load("notes/"); c.check_context(256); x, y = Batches(c.train, 256, seed=0).get(0, 32)``

Dimensions: B samples in a batch, T = context (tokens each sample predicts).

The split is by file: a file is validation when ``zlib.crc32(relpath) % 1000 < val_permille``, so it
depends only on the file's path relative to the corpus root, never on the machine, the file order or
the other files. When that leaves the train or the validation split without bytes (one file, a tiny
folder), the split falls back to the last ``val_permille / 1000`` of the bytes (all files concatenated
in path order) as validation; ``n_val_files`` is then 0.

LabeledWindows (end of the module) serves a byte classifier instead: windows of W bytes from one file,
labelled 0/1 per file by a rule on its relpath (default is_test_module), with the same by-file split but
no tail fallback and no cache. Usage: ``x, y = LabeledWindows.load().batches("train", 0, 32, seed=0)``
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

from .errors import DataError

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

# SplitMix64 constants (Steele, Lea & Flood 2014; Vigna's splitmix64.c): the Weyl increment is
# 2^64 / golden ratio, the two multipliers are Stafford's "Mix13" variant.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def default_cache_dir():
    """HPR_CACHE_DIR, else $XDG_CACHE_HOME/hpr, else ~/.cache/hpr."""
    if os.environ.get("HPR_CACHE_DIR"):
        return os.environ["HPR_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hpr")


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


def splitmix64(x):
    """SplitMix64 as a vectorised hash: for each x, the output of the SplitMix64 generator whose state
    is x, i.e. mix(x + golden) with mix the Stafford Mix13 finaliser. All arithmetic is mod 2^64.
    x: any integer array (cast to uint64); returns uint64 of the same shape."""
    shape = np.shape(x)
    # 1-D so that numpy wraps on overflow silently (uint64 arrays wrap; 0-d scalars warn or raise)
    z = np.array(x, dtype=np.uint64, copy=True).reshape(-1)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return z.reshape(shape)


def window_starts(seed, indices, n_tokens, context):
    """Where each sample's window (context + 1 tokens) starts in a corpus of n_tokens tokens.

    Sample i starts at s_i = u_i mod (n_tokens - context), with u_i the i-th output of a SplitMix64
    stream whose state starts at splitmix64(seed): u_i = splitmix64(key + i * golden). s_i depends only
    on (seed, i, n_tokens, context), so any data-parallel layout that splits the global indices among
    ranks sees the same samples. The modulo's bias is below (n_tokens - context) / 2^64, negligible.
    Seeds are taken mod 2^64. Returns int64 of indices' shape."""
    idx = np.asarray(indices)
    context = _count(context, "context", minimum=1)
    n_windows = int(n_tokens) - context  # valid starts 0 .. n_tokens - context - 1
    if n_windows < 1:
        raise DataError(f"{n_tokens} tokens are fewer than one window of context + 1 = {context + 1}: "
                        "use a larger corpus or a smaller context")
    if idx.size == 0:
        return np.zeros(idx.shape, np.int64)
    if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
        raise DataError(f"sample indices must be non-negative integers (got dtype {idx.dtype}, "
                        f"smallest {idx.min()})")
    key = splitmix64(np.array([int(seed) % (1 << 64)], np.uint64))  # (1,)
    with np.errstate(over="ignore"):
        state = key + idx.astype(np.uint64).reshape(-1) * _GOLDEN  # the stream's i-th state, mod 2^64
    return (splitmix64(state) % np.uint64(n_windows)).astype(np.int64).reshape(idx.shape)


class Batches:
    """Training samples over one token array: sample i is the window tokens[s_i : s_i + T + 1] with
    s_i = window_starts(seed, i, len(tokens), T); its input is the first T tokens, its target the last T."""

    def __init__(self, tokens, context, seed):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise DataError(f"tokens must be a 1-D integer array (got {tokens.ndim}-D {tokens.dtype})")
        self.context = _count(context, "context", minimum=1)
        if tokens.size < self.context + 1:
            raise DataError(f"{tokens.size} tokens are fewer than one window of context + 1 = "
                            f"{self.context + 1}: use a larger corpus or a smaller context")
        self.tokens, self.seed = tokens, _count(seed, "seed", minimum=None)
        # (n_tokens - T, T + 1) view: row s is the window starting at s, no copy
        self._windows = np.lib.stride_tricks.sliding_window_view(tokens, self.context + 1)

    def get(self, first, count):
        """Samples first .. first + count - 1: (x, y), both int32 (count, T) and C-contiguous,
        y[b, t] = x[b, t + 1] for t < T - 1 (the next byte)."""
        first, count = _count(first, "first"), _count(count, "count")
        starts = window_starts(self.seed, np.arange(first, first + count, dtype=np.int64),
                               self.tokens.size, self.context)  # (B,)
        w = self._windows[starts]  # (B, T + 1), gathered copy
        return w[:, :-1].astype(np.int32, order="C"), w[:, 1:].astype(np.int32, order="C")  # (B, T) each


def _as_uint8(x):
    """bytes or an array of byte values as a 1-D uint8 array (bytes without a copy)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return np.frombuffer(x, np.uint8)
    return np.asarray(x, dtype=np.uint8).reshape(-1)


def _count(value, name, minimum=0):
    """value as a Python int, or DataError if it is not an integer or is below minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer (got {value!r})")
    if minimum is not None and value < minimum:
        raise DataError(f"{name} must be at least {minimum} (got {value})")
    return int(value)


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
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(train.data)
            f.write(val.data)
        os.replace(tmp, path)
        return path
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if not _warned_no_cache:
            _warned_no_cache = True
            warnings.warn(f"cannot write the corpus cache {path} ({e}); working without a cache (set "
                          "HPR_CACHE_DIR to a writable folder to keep one)", stacklevel=3)
        return None


# ---------------------------------------------------------------------------------------------------------
# Labelled windows: byte windows with one 0/1 label per file, for a sequence classifier (W = window).


def is_test_module(relpath):
    """True when relpath (relative to the corpus root, '/' or os.sep separated) lies under a folder named
    ``test`` or ``tests`` at any depth, or its file name is ``test_*.py`` or ``*_test.py``. So
    ``test/test_os.py``, ``unittest/test/test_case.py`` and ``foo_test.py`` are test modules;
    ``contest.py`` and ``testing.py`` are not."""
    parts = os.fspath(relpath).replace(os.sep, "/").split("/")
    name = parts[-1]
    return (any(d in ("test", "tests") for d in parts[:-1])
            or (name.startswith("test_") and name.endswith(".py")) or name.endswith("_test.py"))


_SPLITS = ("train", "val")


class LabeledWindows:
    """Labelled byte windows: every file of a corpus gets the label ``rule(relpath)`` (1 or 0), and a
    sample is W = ``window`` consecutive bytes of one file with that file's label.

    Per split ("train", "val") and label (0, 1) it keeps one uint8 array of those files' bytes
    concatenated in relpath order, ``tokens[split][label]``, and their file boundaries,
    ``bounds[split][label]`` (int64, n_files + 1 offsets: file k is tokens[bounds[k]:bounds[k + 1]]).
    A file of L >= W bytes has L - W + 1 valid window starts; windows never cross a file boundary.
    ``train_files`` / ``val_files`` and ``train_bytes`` / ``val_bytes`` are (label 0, label 1) pairs.
    Build one with ``load`` or directly from ``[(split, label, content), ...]``."""

    def __init__(self, files, *, window=256, source="arrays"):
        self.window = _count(window, "window", minimum=2)
        self.source = source
        groups = {s: ([], []) for s in _SPLITS}
        for split, label, content in files:
            if split not in groups or label not in (0, 1):
                raise DataError(f"file entries are (split, label, content) with split 'train' or 'val' and "
                                f"label 0 or 1 (got split {split!r}, label {label!r})")
            if len(content) >= self.window:  # shorter files hold no window
                groups[split][int(label)].append(bytes(content))
        _check_label_groups({s: tuple(len(g) for g in groups[s]) for s in _SPLITS}, source, self.window, "")
        self.tokens, self.bounds, self._cum = {}, {}, {}
        for s in _SPLITS:
            toks, bnds, cums = [], [], []
            for chunks in groups[s]:
                lengths = np.array([len(c) for c in chunks], np.int64)  # (n_files,)
                toks.append(np.frombuffer(b"".join(chunks), np.uint8))
                bnds.append(np.concatenate([[0], np.cumsum(lengths)]))  # (n_files + 1,)
                # cum[k] = valid starts in files before k; a draw r < cum[-1] maps to one (file, offset)
                cums.append(np.concatenate([[0], np.cumsum(lengths - self.window + 1)]))  # (n_files + 1,)
            self.tokens[s], self.bounds[s], self._cum[s] = tuple(toks), tuple(bnds), tuple(cums)
        self.train_files = tuple(b.size - 1 for b in self.bounds["train"])
        self.val_files = tuple(b.size - 1 for b in self.bounds["val"])
        self.train_bytes = tuple(t.size for t in self.tokens["train"])
        self.val_bytes = tuple(t.size for t in self.tokens["val"])

    def __repr__(self):
        return (f"LabeledWindows({self.source}, window {self.window}: train {self.train_files[0]}+"
                f"{self.train_files[1]} files / {self.train_bytes[0]}+{self.train_bytes[1]} bytes, val "
                f"{self.val_files[0]}+{self.val_files[1]} files / {self.val_bytes[0]}+{self.val_bytes[1]} "
                "bytes (label 0 + label 1))")

    @classmethod
    def load(cls, path=None, *, rule=is_test_module, window=256, suffixes=(".py",), val_permille=100):
        """The files under the folder ``path`` ending in one of ``suffixes`` (hidden and site-packages
        folders skipped, as Corpus.load), or with no path the Python standard library's ``*.py`` files.
        File relpath gets label ``rule(relpath)`` and is validation when
        ``zlib.crc32(relpath) % 1000 < val_permille``, else train; files under ``window`` bytes are skipped.
        Nothing is cached: reading the standard library's ~30 MB takes well under a second."""
        window = _count(window, "window", minimum=2)
        if not callable(rule):
            raise DataError(f"rule must be a function of a file's relative path returning its label "
                            f"(got {rule!r}); the default is hpr.data.is_test_module")
        val_permille = _check_val_permille(val_permille, "100 means 10%")
        root, suffixes, source = _source(path, suffixes, (
            "data path", "pass a folder of source files with --data (or no path, for the Python standard "
            "library's sources)"))
        if path is not None:
            if not os.path.isdir(root):
                raise DataError(f"data path {root} is not a folder: labels and the train/validation split "
                                "are per file, so pass a folder of files with --data")
        files = _list_files(root, suffixes) if suffixes else []
        if not files:
            raise DataError(f"folder {root} has no readable files ending in {', '.join(suffixes) or '(none)'}"
                            ": point --data at a folder of source files, or pass the suffixes its files use")
        # Label and split every file from the listing, and check all four groups exist before reading.
        plan = [(rel, p, "val" if zlib.crc32(os.fsencode(rel)) % 1000 < val_permille else "train",
                 1 if rule(rel) else 0) for rel, p, size, _ in files if size >= window]
        if not plan:
            raise DataError(f"{source}: none of its {len(files)} files has window={window} bytes: use a "
                            "smaller window or a folder with longer files")
        counts = {s: tuple(sum(1 for f in plan if f[2] == s and f[3] == lab) for lab in (0, 1)) for s in _SPLITS}
        hint = f" (rule {getattr(rule, '__name__', repr(rule))}, val_permille {val_permille})"
        _check_label_groups(counts, source, window, hint)
        entries = []
        for rel, p, split, label in plan:
            try:
                with open(p, "rb") as f:
                    entries.append((split, label, f.read()))
            except OSError:  # became unreadable since listing: skip it, as listing would have
                continue
        return cls(entries, window=window, source=source)

    def n_windows(self, split):
        """(label 0, label 1) counts of valid window starts in split."""
        return tuple(int(c[-1]) for c in self._cum[_split_name(split)])

    def batches(self, split, first, count, seed):
        """Samples first .. first + count - 1 of split: x int32 (count, W) C-contiguous, y float32 (count,).
        Sample i has label i % 2 (balanced classes) and starts at the valid start number u_i mod n of
        that label's n valid starts, u_i = splitmix64(splitmix64(seed) + i * golden), the stream of
        window_starts; so it depends only on (seed, i) and the corpus, never on first or count."""
        split = _split_name(split)
        first, count = _count(first, "first"), _count(count, "count")
        seed = _count(seed, "seed", minimum=None)
        idx = np.arange(first, first + count, dtype=np.int64)  # (B,) global sample indices
        key = splitmix64(np.array([seed % (1 << 64)], np.uint64))  # (1,)
        with np.errstate(over="ignore"):
            u = splitmix64(key + idx.astype(np.uint64) * _GOLDEN)  # (B,) uint64
        labels = idx % 2  # (B,)
        x = np.empty((count, self.window), np.int32)  # (B, W)
        for lab in (0, 1):
            rows = np.flatnonzero(labels == lab)
            if rows.size == 0:
                continue
            cum, bnd = self._cum[split][lab], self.bounds[split][lab]
            r = (u[rows] % np.uint64(cum[-1])).astype(np.int64)  # which valid start, over all files
            k = np.searchsorted(cum, r, side="right") - 1  # its file: cum[k] <= r < cum[k + 1]
            starts = bnd[k] + (r - cum[k])  # offset in the concatenated bytes; start + W <= bnd[k + 1]
            view = np.lib.stride_tricks.sliding_window_view(self.tokens[split][lab], self.window)
            x[rows] = view[starts]  # (rows, W) gathered
        return x, labels.astype(np.float32)

    def fixed_eval(self, split="val", n=2048, seed=12345):
        """A fixed balanced evaluation set: batches(split, 0, n, seed), n/2 samples of each label."""
        n = _count(n, "n", minimum=2)
        if n % 2:
            raise DataError(f"n={n} is odd: a balanced evaluation set needs an even number of samples")
        return self.batches(split, 0, n, seed)


def _split_name(split):
    if split not in _SPLITS:
        raise DataError(f"split must be 'train' or 'val' (got {split!r})")
    return split


def _check_label_groups(counts, source, window, hint):
    """DataError naming the first (split, label) with no file of at least window bytes.
    counts: {split: (label-0 files, label-1 files)}."""
    for s in _SPLITS:
        for lab in (0, 1):
            if counts[s][lab] == 0:
                have = ", ".join(f"{t}: {counts[t][0]} label-0 + {counts[t][1]} label-1" for t in _SPLITS)
                raise DataError(f"{source}: the {'training' if s == 'train' else 'validation'} split has no "
                                f"file with label {lab} of at least window={window} bytes{hint}; files per "
                                f"split ({have}). Pass a folder with files of both labels with --data, a "
                                "different rule, or a different val_permille or window")
