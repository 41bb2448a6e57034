"""hpr.data.LabeledWindows and is_test_module: labels per file, the by-file split, windows that stay inside
one file, balanced deterministic batches, the errors, and the standard library as the default corpus."""
import os
import time
import zlib

import numpy as np
import pytest

from hpr.data import LabeledWindows, is_test_module
from hpr.errors import DataError

W = 16


@pytest.mark.parametrize("rel, expected", [
    ("test/test_os.py", True), ("lib/tests/foo.py", True), ("unittest/test/test_case.py", True),
    ("test_foo.py", True), ("foo_test.py", True), ("pkg/test/__init__.py", True),
    ("idlelib/idle_test/test_calltip.py", True), ("os.py", False), ("contest.py", False),
    ("testing.py", False), ("pkg/contest/foo.py", False), ("test.py", False), ("tests.py", False),
    ("mytest/foo.py", False), ("test_data/readme.txt", False),
])
def test_is_test_module(rel, expected):
    assert is_test_module(rel) is expected
    assert is_test_module(rel.replace("/", os.sep)) is expected


def is_val(rel, permille=500):
    return zlib.crc32(rel.encode()) % 1000 < permille


def make_labelled(root, seed=0):
    """Three files of each label in each split (val_permille=500), random bytes of lengths W .. 4W, plus
    files the loader must skip. Returns {relpath: bytes} of the files it must keep."""
    rng = np.random.default_rng(seed)
    want, files = {}, {}
    for i in range(200):  # names picked by the crc rule so every (split, label) gets three files
        for rel, label in ((f"tests/t{i}.py", 1), (f"pkg/test_m{i}.py", 1), (f"pkg/m{i}.py", 0)):
            key = ("val" if is_val(rel) else "train", label)
            if want.get(key, 0) < 3:
                want[key] = want.get(key, 0) + 1
                n = W if len(files) == 0 else int(rng.integers(W, 4 * W))  # one file of exactly W bytes
                files[rel] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert sorted(want.values()) == [3, 3, 3, 3]
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / "short.py").write_bytes(b"x" * (W - 1))  # shorter than a window: skipped
    (root / "tests" / "short_test.py").write_bytes(b"y" * (W - 1))
    (root / "notes.txt").write_bytes(bytes(100))  # wrong suffix
    (root / ".hidden").mkdir()
    (root / ".hidden" / "test_x.py").write_bytes(bytes(100))
    return files


@pytest.fixture
def folder(tmp_path):
    files = make_labelled(tmp_path)
    return tmp_path, files, LabeledWindows.load(tmp_path, window=W, val_permille=500)


def groups(files):
    """{(split, label): [relpath, ...]} in relpath order."""
    out = {}
    for rel in sorted(files):
        out.setdefault(("val" if is_val(rel) else "train", int(is_test_module(rel))), []).append(rel)
    return out


def test_split_by_file_with_the_crc_rule(folder):
    _, files, lw = folder
    g = groups(files)
    assert lw.window == W and "folder" in lw.source
    assert lw.train_files == (3, 3) and lw.val_files == (3, 3)
    for s in ("train", "val"):
        for lab in (0, 1):
            rels = g[(s, lab)]
            assert lw.tokens[s][lab].tobytes() == b"".join(files[r] for r in rels)
            assert lw.bounds[s][lab].tolist() == np.cumsum([0] + [len(files[r]) for r in rels]).tolist()
            assert lw.n_windows(s)[lab] == sum(len(files[r]) - W + 1 for r in rels)
    assert lw.train_bytes == tuple(lw.tokens["train"][lab].size for lab in (0, 1))
    assert lw.val_bytes == tuple(lw.tokens["val"][lab].size for lab in (0, 1))


def test_windows_stay_in_one_file_balanced_and_cover_every_start(folder):
    _, files, lw = folder
    g = groups(files)
    for s in ("train", "val"):
        x, y = lw.batches(s, 0, 6000, seed=3)
        assert x.dtype == np.int32 and x.shape == (6000, W) and x.flags.c_contiguous
        assert y.dtype == np.float32 and y.tolist() == [float(i % 2) for i in range(6000)]
        assert x.min() >= 0 and x.max() <= 255
        hits = {}
        for row, label in zip(x.astype(np.uint8), y.astype(int)):
            w = row.tobytes()
            # random file bytes: a window that crossed a boundary would match no file of its group
            where = [(r, files[r].find(w)) for r in g[(s, label)] if w in files[r]]
            assert len(where) == 1, "window is not a slice of exactly one file of its split and label"
            hits[where[0]] = hits.get(where[0], 0) + 1
        # every valid start of every file is drawn (3000 draws over < 600 starts per label), roughly evenly
        n_starts = sum(len(files[r]) - W + 1 for lab in (0, 1) for r in g[(s, lab)])
        assert len(hits) == n_starts
        assert max(hits.values()) < 4 * 3000 / min(lw.n_windows(s))


def test_batches_deterministic_per_seed_and_by_global_index(folder):
    _, _, lw = folder
    x, y = lw.batches("train", 0, 8, seed=7)
    x2, y2 = lw.batches("train", 0, 8, seed=7)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    other, _ = lw.batches("train", 0, 8, seed=8)
    assert not np.array_equal(x, other)
    xs, ys = lw.batches("train", 5, 3, seed=7)
    assert np.array_equal(xs, x[5:8]) and np.array_equal(ys, y[5:8])
    assert ys.tolist() == [1.0, 0.0, 1.0]
    assert np.array_equal(lw.batches("train", 1 << 40, 2, seed=-1)[0], lw.batches("train", 1 << 40, 2, seed=-1)[0])
    ex, ey = lw.fixed_eval("val", n=64, seed=1)
    assert np.array_equal(ex, lw.batches("val", 0, 64, seed=1)[0]) and ey.sum() == 32
    assert lw.fixed_eval(n=4)[0].shape == (4, W)
    assert lw.batches("val", 3, 0, seed=0)[0].shape == (0, W)


def test_constructed_from_entries_matches_load(folder):
    _, files, lw = folder
    entries = [("val" if is_val(r) else "train", int(is_test_module(r)), c) for r, c in sorted(files.items())]
    direct = LabeledWindows(entries, window=W)
    assert np.array_equal(direct.batches("val", 0, 50, 2)[0], lw.batches("val", 0, 50, 2)[0])


def test_errors(tmp_path, folder):
    root, _, lw = folder
    with pytest.raises(DataError, match="does not exist"):
        LabeledWindows.load(tmp_path / "nope")
    with pytest.raises(DataError, match="not a folder"):
        LabeledWindows.load(root / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match="no readable files ending in .py"):
        LabeledWindows.load(empty)
    (empty / "a.py").write_bytes(b"x" * 10)
    with pytest.raises(DataError, match="smaller window"):
        LabeledWindows.load(empty, window=W)
    with pytest.raises(DataError, match="training split has no file with label 1.*--data.*different rule"):
        LabeledWindows.load(root, window=W, val_permille=500, rule=lambda rel: False)
    with pytest.raises(DataError, match="training split has no file with label 0"):
        LabeledWindows.load(root, window=W, val_permille=500, rule=lambda rel: True)
    only_train = tmp_path / "only_train"  # both labels, but no validation file at all
    for rel in ("a.py", "tests/b.py"):
        (only_train / rel).parent.mkdir(parents=True, exist_ok=True)
        (only_train / rel).write_bytes(b"z" * 100)
    lowest = min(zlib.crc32(r.encode()) % 1000 for r in ("a.py", "tests/b.py"))  # 386
    assert lowest >= 1
    with pytest.raises(DataError, match="validation split has no file with label 0"):
        LabeledWindows.load(only_train, window=W, val_permille=lowest)  # crc % 1000 < lowest: none
    for window in (1, 0, -5):
        with pytest.raises(DataError, match="window must be at least 2"):
            LabeledWindows.load(root, window=window)
    with pytest.raises(DataError, match="window must be an integer"):
        LabeledWindows.load(root, window=2.5)
    for bad in (0, 1000, 1.5, True):
        with pytest.raises(DataError, match="val_permille"):
            LabeledWindows.load(root, val_permille=bad)
    with pytest.raises(DataError, match="rule must be a function"):
        LabeledWindows.load(root, rule="tests")
    for n in (3, 2049):
        with pytest.raises(DataError, match="odd"):
            lw.fixed_eval(n=n)
    for n in (0, 1, -2):
        with pytest.raises(DataError, match="n must be at least 2"):
            lw.fixed_eval(n=n)
    with pytest.raises(DataError, match="split must be 'train' or 'val'"):
        lw.batches("test", 0, 4, 0)
    with pytest.raises(DataError, match="count"):
        lw.batches("train", 0, -1, 0)
    with pytest.raises(DataError, match="first"):
        lw.batches("train", -1, 4, 0)
    with pytest.raises(DataError, match="label 0 or 1"):
        LabeledWindows([("train", 2, b"x" * 20)], window=W)


def test_default_is_the_stdlib_with_both_labels_in_both_splits():
    t0 = time.perf_counter()
    lw = LabeledWindows.load()
    seconds = time.perf_counter() - t0
    print(f"\n{lw}\nloaded in {seconds:.2f} s")
    assert "standard library" in lw.source and lw.window == 256
    assert min(lw.train_files + lw.val_files) > 10
    assert min(lw.train_bytes + lw.val_bytes) > 100_000
    total = sum(lw.train_files) + sum(lw.val_files)
    assert 0.05 < sum(lw.val_files) / total < 0.15  # val_permille 100: about 10% of the files
    assert seconds < 2.0
    x, y = lw.fixed_eval()
    assert x.shape == (2048, 256) and y.sum() == 1024
    assert np.array_equal(x, LabeledWindows.load().fixed_eval()[0])
