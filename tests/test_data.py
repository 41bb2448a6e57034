"""hpr.data: corpus reading and its split, the corpus cache, training windows, and the errors."""
import math
import os
import warnings
import zlib

import numpy as np
import pytest

import hpr.data.corpus as data
from hpr.data import Batches, Corpus, splitmix64, window_starts
from hpr.errors import DataError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test caches under its own temporary folder, never the user's cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("HPR_CACHE_DIR", str(d))
    monkeypatch.setattr(data, "_warned_no_cache", False)
    return d


def make_folder(root, n=40):
    """n small files in two levels, plus files the loader must skip. Returns {relpath: bytes}."""
    files = {}
    for i in range(n):
        rel = f"sub{i % 3}/doc{i:02d}.txt" if i % 2 else f"doc{i:02d}.md"
        files[rel] = f"file {i}: ".encode() + bytes(range(i, i + 37 + i))
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / "image.png").write_bytes(b"\x89PNG not text")
    (root / ".git").mkdir()
    (root / ".git" / "notes.txt").write_bytes(b"hidden")
    (root / "site-packages").mkdir()
    (root / "site-packages" / "pkg.txt").write_bytes(b"installed")
    return files


def expected_split(files, val_permille):
    rels = sorted(files)
    val = [r for r in rels if zlib.crc32(r.encode()) % 1000 < val_permille]
    train = [r for r in rels if r not in val]
    return b"".join(files[r] for r in train), b"".join(files[r] for r in val), len(val)


def test_folder_round_trips_split_by_file(tmp_path):
    files = make_folder(tmp_path / "corpus")
    train, val, n_val = expected_split(files, 200)
    assert train and val  # the fixture's names put files on both sides
    c = Corpus.load(tmp_path / "corpus", val_permille=200)
    assert c.train.dtype == np.uint8 and c.val.dtype == np.uint8
    assert c.train.tobytes() == train and c.val.tobytes() == val
    assert (c.n_files, c.n_val_files) == (40, n_val)
    assert c.train.size + c.val.size == sum(len(b) for b in files.values())
    only_md = Corpus.load(tmp_path / "corpus", suffixes=".md", val_permille=200)
    assert only_md.n_files == 20


def test_single_file_uses_tail_split(tmp_path):
    content = bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8))
    (tmp_path / "one.txt").write_bytes(content)
    c = Corpus.load(tmp_path / "one.txt", val_permille=100)
    assert c.train.tobytes() == content[:900] and c.val.tobytes() == content[900:]
    assert (c.n_files, c.n_val_files) == (1, 0)


def test_cache_created_reused_and_rebuilt_on_change(tmp_path, cache_dir, monkeypatch):
    files = make_folder(tmp_path / "corpus")
    first = Corpus.load(tmp_path / "corpus")
    assert first.cache_path is not None and os.path.dirname(first.cache_path) == str(cache_dir)
    st = os.stat(first.cache_path)
    assert st.st_size == data._HEADER.size + first.train.size + first.val.size

    def no_reading(*args):
        raise AssertionError("the corpus was read again although the cache is current")

    with monkeypatch.context() as m:
        m.setattr(data, "_read_split", no_reading)
        again = Corpus.load(tmp_path / "corpus")
    st2 = os.stat(again.cache_path)
    assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert again.train.tobytes() == first.train.tobytes() and again.val.tobytes() == first.val.tobytes()
    assert (again.n_files, again.n_val_files) == (first.n_files, first.n_val_files)

    rel = sorted(files)[0]
    files[rel] += b" one more line\n"
    (tmp_path / "corpus" / rel).write_bytes(files[rel])
    changed = Corpus.load(tmp_path / "corpus")
    train, val, _ = expected_split(files, 50)
    assert changed.train.tobytes() + changed.val.tobytes() != first.train.tobytes() + first.val.tobytes()
    assert changed.train.tobytes() == train and changed.val.tobytes() == val
    assert changed.cache_path == first.cache_path  # rewritten in place, no stale file left
    assert os.stat(changed.cache_path).st_ino != st.st_ino
    assert sorted(p.name for p in cache_dir.iterdir()) == [os.path.basename(first.cache_path)]


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "garbage"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, cache_dir, damage):
    make_folder(tmp_path / "corpus")
    good = Corpus.load(tmp_path / "corpus")
    raw = bytearray(open(good.cache_path, "rb").read())
    if damage == "flip_payload":
        raw[data._HEADER.size + 17] ^= 0xFF
    elif damage == "truncate":
        del raw[-5:]
    else:
        raw = bytearray(b"not a cache")
    open(good.cache_path, "wb").write(raw)
    with pytest.warns(UserWarning, match="damaged"):
        again = Corpus.load(tmp_path / "corpus")
    assert again.train.tobytes() == good.train.tobytes() and again.val.tobytes() == good.val.tobytes()
    assert open(again.cache_path, "rb").read() == open(good.cache_path, "rb").read()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Corpus.load(tmp_path / "corpus")  # the rebuilt cache is sound
    assert not list(cache_dir.glob("*.tmp*"))


def test_cache_write_does_not_follow_a_planted_symlink(tmp_path, cache_dir):
    """The cache is written under an unpredictable temporary name (mkstemp), never through a link another
    user planted at a guessable one: the old name, CACHE.tmp.PID, opened with open(..., "wb"), followed a
    symlink there and overwrote the file it pointed at."""
    make_folder(tmp_path / "corpus")
    good = Corpus.load(tmp_path / "corpus")
    want = open(good.cache_path, "rb").read()
    os.remove(good.cache_path)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not yours")
    for name in (f"{good.cache_path}.tmp.{os.getpid()}", f"{good.cache_path}.tmp"):
        os.symlink(victim, name)
    again = Corpus.load(tmp_path / "corpus")
    assert victim.read_bytes() == b"not yours"
    assert not os.path.islink(again.cache_path) and open(again.cache_path, "rb").read() == want


def test_unwritable_cache_dir_warns_once_and_works(tmp_path):
    make_folder(tmp_path / "corpus")
    (tmp_path / "a_file").write_bytes(b"")
    blocked = tmp_path / "a_file" / "cache"  # cannot be created: its parent is a file
    with pytest.warns(UserWarning, match="without a cache"):
        c = Corpus.load(tmp_path / "corpus", cache_dir=blocked)
    assert c.cache_path is None and c.train.size > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Corpus.load(tmp_path / "corpus", cache_dir=blocked)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "corpus"]


def test_splitmix64_matches_reference_generator():
    def reference(state, n):  # Vigna's splitmix64.c next(), in Python integers
        out = []
        for _ in range(n):
            state = (state + 0x9E3779B97F4A7C15) % 2**64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
            out.append(z ^ (z >> 31))
        return out

    # published first outputs for seed 1234567
    assert reference(1234567, 2) == [6457827717110365317, 3203168211198807973]
    seed = 2**64 - 5
    got = splitmix64(np.array([(seed + i * 0x9E3779B97F4A7C15) % 2**64 for i in range(100)], np.uint64))
    assert got.dtype == np.uint64 and got.tolist() == reference(seed, 100)
    assert splitmix64(np.uint64(1234567)).shape == () and int(splitmix64(1234567)) == 6457827717110365317


def test_window_starts_depend_only_on_seed_and_global_index():
    starts = window_starts(7, np.arange(1000), 10_000, 64)
    assert starts.dtype == np.int64 and starts.min() >= 0 and starts.max() < 10_000 - 64
    # any layout: rank r of 4 owning indices r, r + 4, ... sees the same starts
    for r in range(4):
        assert np.array_equal(window_starts(7, np.arange(r, 1000, 4), 10_000, 64), starts[r::4])
    assert np.mean(window_starts(8, np.arange(1000), 10_000, 64) == starts) < 0.01
    # every start, including the last valid one, is reached
    assert set(window_starts(0, np.arange(300), 10, 7).tolist()) == {0, 1, 2}


def test_batches_windows():
    tokens = np.frombuffer(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), np.uint8)
    T = 32
    x, y = Batches(tokens, T, seed=3).get(0, 8)
    assert x.shape == y.shape == (8, T) and x.dtype == y.dtype == np.int32
    assert x.flags.c_contiguous and y.flags.c_contiguous
    x2, y2 = Batches(tokens, T, seed=3).get(0, 8)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = Batches(tokens, T, seed=4).get(0, 8)
    assert not np.array_equal(x, x3)
    x5, y5 = Batches(tokens, T, seed=3).get(first=5, count=3)
    assert np.array_equal(x5, x[5:8]) and np.array_equal(y5, y[5:8])
    assert np.array_equal(y[:, :-1], x[:, 1:])
    starts = window_starts(3, np.arange(8), tokens.size, T)
    for b, s in enumerate(starts):
        assert np.array_equal(x[b], tokens[s:s + T]) and np.array_equal(y[b], tokens[s + 1:s + T + 1])
    empty_x, empty_y = Batches(tokens, T, seed=3).get(100, 0)
    assert empty_x.shape == empty_y.shape == (0, T)


def test_unigram_entropy_by_hand():
    assert Corpus(np.frombuffer(b"aabb", np.uint8), b"").unigram_entropy() == pytest.approx(math.log(2))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert Corpus(np.frombuffer(b"aaab", np.uint8), b"").unigram_entropy() == pytest.approx(h)
    assert Corpus(np.arange(256 * 3) % 256, b"").unigram_entropy() == pytest.approx(math.log(256))


def test_data_errors(tmp_path, cache_dir):
    with pytest.raises(DataError, match="does not exist"):
        Corpus.load(tmp_path / "missing")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.csv").write_bytes(b"1,2")
    with pytest.raises(DataError, match=r"\.txt, \.md, \.rst, \.py"):
        Corpus.load(tmp_path / "docs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_bytes(b"")
    (tmp_path / "empty" / "b.md").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        Corpus.load(tmp_path / "empty")
    for bad in (0, 1000, -3, 2.5, True):
        with pytest.raises(DataError, match="val_permille"):
            Corpus.load(tmp_path / "docs", val_permille=bad)
    assert not cache_dir.exists()  # nothing was written for any of them

    (tmp_path / "small.txt").write_bytes(bytes(range(100)))
    c = Corpus.load(tmp_path / "small.txt", val_permille=100)  # 90 train bytes, 10 val bytes
    c.check_context(9)
    with pytest.raises(DataError, match="validation split .* 10 bytes"):
        c.check_context(10)
    with pytest.raises(DataError, match="training split .* 90 bytes"):
        c.check_context(90)
    with pytest.raises(DataError, match="context"):
        c.check_context(0)

    tokens = np.zeros(100, np.uint8)
    for context in (0, -1, 100):
        with pytest.raises(DataError, match="context"):
            Batches(tokens, context, seed=0)
    b = Batches(tokens, 10, seed=0)
    with pytest.raises(DataError, match="first"):
        b.get(-1, 4)
    with pytest.raises(DataError, match="count"):
        b.get(0, -1)
    with pytest.raises(DataError, match="non-negative"):
        window_starts(0, np.array([3, -1]), 100, 10)


def test_default_corpus_is_the_stdlib():
    c = Corpus.load()
    assert c.train.size > 10_000_000 and c.val.size > 0
    assert 0 < c.n_val_files < c.n_files
    assert "standard library" in c.source and os.path.exists(c.cache_path)
    c.check_context(1024)
    again = Corpus.load()
    assert np.array_equal(again.train, c.train) and np.array_equal(again.val, c.val)
