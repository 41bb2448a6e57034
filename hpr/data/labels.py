"""Labelled windows for a byte classifier: every file of a corpus gets a 0/1 label by a rule on its
relpath (default is_test_module), and a sample is W = window consecutive bytes of one file with that
file's label; the split is by file as Corpus's, with no tail fallback and no cache. Owns no tokeniser
(windows are raw bytes, V = 256) and no model. Usage: ``x, y = LabeledWindows.load().batches("train", 0, 32, seed=0)``
"""
import os
import zlib

import numpy as np

from ..errors import DataError
from .batches import _GOLDEN, _count, splitmix64
from .corpus import _check_val_permille, _list_files, _source


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
