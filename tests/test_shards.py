"""Prepared token shards: the shards equal the library's own encoding of the same documents (split here by
the documented rule), any unit size gives the same bytes, shards cut anywhere read back as one stream
(windows across shard boundaries, Batches over memory maps), a re-run on unchanged inputs does nothing,
and every error leaves nothing half-written under a final name: a truncated or corrupted shard, a
shard of another tokenizer, an empty split, a failure or a kill in the middle of a prepare."""
import os
import signal
import subprocess
import sys
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

import hpr.data.__main__ as cli

from hpr.data import Batches, ByteTokenizer, TokenShards, load_tokenizer, prepare, train_bpe
from hpr.data.shards import HEADER, SHARD_NAME, open_shard
from hpr.errors import DataError

WORDS = ("the of and to in is that for it as with was on be by this are from at or an def return class "
         "import self None True naïve café 日本 ü").split()


def write_corpus(root, n=30, seed=0):
    """n text files in two levels; returns {relpath: text} in relpath order."""
    r = np.random.default_rng(seed)
    files = {}
    for i in range(n):
        rel = f"part{i % 3}/doc{i:02d}.txt" if i % 2 else f"doc{i:02d}.md"
        text = "\n".join(" ".join(r.choice(WORDS, r.integers(3, 12))) for _ in range(r.integers(5, 60)))
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        files[rel] = text
    return dict(sorted(files.items()))


def reference(files, tok, permille):
    """{split: tokens} by the documented rule, encoded by the tokenizers library itself."""
    out = {"train": [], "val": []}
    for rel, text in files.items():
        split = "val" if zlib.crc32(rel.encode()) % 1000 < permille else "train"
        ids = list(text.encode()) if isinstance(tok, ByteTokenizer) else \
            tok.hf.encode_batch([text], add_special_tokens=False)[0].ids
        out[split] += ([tok.eot] if tok.eot is not None else []) + ids
    return {s: np.array(v) for s, v in out.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


@pytest.fixture(scope="module")
def tok(tmp_path_factory, corpus):
    t = train_bpe(list(corpus[1].values()), 300)
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    t.save(path)
    return load_tokenizer(path), path


def final_names(folder):
    return sorted(n for n in os.listdir(folder) if n in ("meta.json", "tokenizer.json") or SHARD_NAME.match(n))


def temporaries(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


@pytest.mark.parametrize("which", ["bpe", "bytes"])
def test_shards_equal_library_encoding(tmp_path, corpus, tok, which):
    root, files = corpus
    t, path = tok if which == "bpe" else (ByteTokenizer(), "bytes")
    ref = reference(files, t, 200)
    assert ref["train"].size and ref["val"].size
    r = prepare([root], path, tmp_path / "out", val_permille=200, shard_tokens=1000)
    assert not r.skipped
    d = TokenShards(tmp_path / "out")
    for s in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(getattr(d, s)), ref[s])
        assert d.meta["splits"][s]["tokens"] == ref[s].size
        n_bytes = sum(len(x.encode()) for rel, x in files.items() if (zlib.crc32(rel.encode()) % 1000 < 200) == (s == "val"))
        assert d.meta["splits"][s]["bytes"] == n_bytes
        assert d.bytes_per_token[s] == pytest.approx(n_bytes / ref[s].size)
    assert len(d.meta["splits"]["train"]["shards"]) == -(-ref["train"].size // 1000)
    assert d.hash == t.hash and d.vocab_size == t.vocab_size and d.tokenizer.hash == t.hash
    if which == "bpe":
        assert (tmp_path / "out" / "tokenizer.json").read_bytes() == open(path, "rb").read()
    else:
        assert not (tmp_path / "out" / "tokenizer.json").exists()
    assert not temporaries(tmp_path / "out")
    assert d.bits_per_byte(np.log(2.0) * 2) == pytest.approx(2 / d.bytes_per_token["val"])


def test_any_unit_size_gives_the_same_bytes(tmp_path, corpus, tok):
    root, _ = corpus
    outs = []
    for i, unit in enumerate((None, 1, 700, 5000)):
        out = tmp_path / f"o{i}"
        prepare([root], tok[1], out, val_permille=200, shard_tokens=777, unit_bytes=unit)
        outs.append({n: (out / n).read_bytes() for n in final_names(out)})
    assert all(o == outs[0] for o in outs[1:]) and len(outs[0]) > 4


def test_windows_across_shards_and_batches(tmp_path, corpus, tok):
    root, _ = corpus
    prepare([root], tok[1], tmp_path / "a", val_permille=200, shard_tokens=97)
    d = TokenShards(tmp_path / "a")
    whole = np.asarray(d.train)
    assert len(d.train.parts) > 10 and whole.dtype == np.uint16
    starts = np.array([0, 90, 96, 97, 500, whole.size - 65])
    w = d.train.windows(starts, 65)
    np.testing.assert_array_equal(w, whole[starts[:, None] + np.arange(65)])
    np.testing.assert_array_equal(d.train[90:300], whole[90:300])
    assert d.train[-1] == whole[-1] and d.train[5] == whole[5]
    x, y = Batches(d.train, 64, seed=3).get(10, 32)
    x2, y2 = Batches(whole, 64, seed=3).get(10, 32)
    assert x.dtype == np.int32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # one shard: a plain np.memmap, usable by Batches directly
    prepare([root], tok[1], tmp_path / "b", val_permille=200)
    one = TokenShards(tmp_path / "b")
    assert isinstance(one.train.parts[0], np.memmap)
    x3, y3 = Batches(one.train.parts[0], 64, seed=3).get(10, 32)
    np.testing.assert_array_equal(x3, x2)
    np.testing.assert_array_equal(y3, y2)


def test_rerun_does_nothing_and_changes_redo(tmp_path, corpus, tok):
    root, files = corpus
    src = tmp_path / "src"
    write_corpus(src)
    out = tmp_path / "out"
    prepare([src], tok[1], out, val_permille=200, shard_tokens=500)
    stamp = {n: os.stat(out / n).st_mtime_ns for n in final_names(out)}
    time.sleep(0.01)
    assert prepare([src], tok[1], out, val_permille=200, shard_tokens=500).skipped
    assert {n: os.stat(out / n).st_mtime_ns for n in final_names(out)} == stamp
    n_before = len([n for n in final_names(out) if n.endswith(".bin")])
    r = prepare([src], tok[1], out, val_permille=200, shard_tokens=5000)
    assert not r.skipped  # options changed
    listed = sorted(sh["file"] for s in ("train", "val") for sh in r.meta["splits"][s]["shards"])
    assert [n for n in final_names(out) if n.endswith(".bin")] == listed  # the earlier, longer one's extra shards are gone
    assert len(listed) < n_before
    (src / "doc00.md").write_text("changed text", encoding="utf-8")
    assert not prepare([src], tok[1], out, val_permille=200, shard_tokens=5000).skipped  # input changed
    assert prepare([src], tok[1], out, val_permille=200, shard_tokens=5000).skipped
    assert not prepare([src], "bytes", out, val_permille=200, shard_tokens=5000).skipped  # tokenizer changed
    assert not (out / "tokenizer.json").exists()
    (out / "train-000000.bin").unlink()
    assert not prepare([src], "bytes", out, val_permille=200, shard_tokens=5000).skipped  # a shard is gone


def test_uint32_shards(tmp_path, corpus):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {w: 70000 + i for i, w in enumerate(sorted(set(WORDS)))}
    vocab.update({"[UNK]": 0, "<|endoftext|>": 1})
    hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(["<|endoftext|>"])
    (tmp_path / "big.json").write_text(hf.to_str())
    t = load_tokenizer(tmp_path / "big.json")
    assert t.dtype == np.uint32 and t.eot == 1
    prepare([corpus[0]], tmp_path / "big.json", tmp_path / "out", val_permille=200)
    d = TokenShards(tmp_path / "out")
    assert d.dtype == np.uint32 and d.vocab_size == 70000 + len(set(WORDS))
    np.testing.assert_array_equal(np.asarray(d.val), reference(corpus[1], t, 200)["val"])
    assert np.asarray(d.train).max() >= 70000
    assert os.path.getsize(tmp_path / "out" / "val-000000.bin") == HEADER.size + 4 * d.val.size


@pytest.fixture
def prepared(tmp_path, corpus, tok):
    out = tmp_path / "out"
    prepare([corpus[0]], tok[1], out, val_permille=200, shard_tokens=400)
    return out


def test_truncated_shard(prepared):
    p = prepared / "train-000001.bin"
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(DataError, match="train-000001.bin is truncated.*run `python -m hpr.data prepare` again"):
        TokenShards(prepared)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(DataError, match="train-000001.bin is truncated: 50 bytes"):
        TokenShards(prepared)


def test_corrupted_shard(prepared):
    p = prepared / "val-000000.bin"
    raw = bytearray(p.read_bytes())
    raw[HEADER.size + 11] ^= 0x40
    p.write_bytes(bytes(raw))
    TokenShards(prepared, verify=False)  # sizes and headers are fine: only the checksum finds it
    with pytest.raises(DataError, match="val-000000.bin is corrupted: the checksum"):
        TokenShards(prepared)
    raw[:8] = b"NOTTOKEN"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="val-000000.bin is not an hpr token shard"):
        TokenShards(prepared, verify=False)


def test_shard_of_another_tokenizer(tmp_path, prepared, corpus, tok):
    other = tmp_path / "other"
    prepare([corpus[0]], "bytes", other, val_permille=200, shard_tokens=400)
    os.replace(other / "train-000000.bin", prepared / "train-000000.bin")
    with pytest.raises(DataError, match="train-000000.bin was written by tokenizer bytes.*mixes two preparations"):
        TokenShards(prepared, verify=False)


def test_check_tokenizer_and_context(prepared, tok):
    d = TokenShards(prepared)
    d.check_tokenizer(tok[0].hash)
    with pytest.raises(DataError, match=f"{prepared} was prepared with tokenizer {tok[0].hash[:16]}.*the checkpoint "
                                        "uses tokenizer bytes"):
        d.check_tokenizer("bytes")
    with pytest.raises(DataError, match="the val split .* fewer than one window"):
        d.check_context(d.val.size)
    (prepared / "meta.json").unlink()
    with pytest.raises(DataError, match="has no meta.json"):
        TokenShards(prepared)


def test_tokenizer_file_swapped(prepared, tmp_path, corpus):
    t = train_bpe(list(corpus[1].values())[:5], 280)
    t.save(prepared / "tokenizer.json")
    with pytest.raises(DataError, match="is not the tokenizer .* shards were made with"):
        TokenShards(prepared).tokenizer


def test_empty_split_writes_nothing(tmp_path, tok):
    root = tmp_path / "one"
    root.mkdir()
    (root / "only.txt").write_text("a single document cannot be split")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="one.*the validation split is empty: all 1 documents fell into the train"):
        prepare([root], tok[1], out)
    assert final_names(out) == [] and temporaries(out) == []


def test_failure_midway_keeps_the_previous_preparation(tmp_path, corpus, tok, monkeypatch):
    out = tmp_path / "out"
    prepare([corpus[0]], tok[1], out, val_permille=200, shard_tokens=300)
    before = {n: (out / n).read_bytes() for n in final_names(out)}
    from hpr.data import tokenizer as tokmod

    calls = []

    def failing(self, texts):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C would, after two units were written
        return real(self, texts)

    real = tokmod.Tokenizer.encode_documents
    monkeypatch.setattr(tokmod.Tokenizer, "encode_documents", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus[0]], tok[1], out, val_permille=100, shard_tokens=100, unit_bytes=300)
    assert {n: (out / n).read_bytes() for n in final_names(out)} == before and temporaries(out) == []


def check_whole(out, tok_hash):
    """Every file under a final shard name is a whole shard; meta.json, when present, lists whole shards."""
    for name in final_names(out):
        if name.endswith(".bin"):
            open_shard(out / name, tokenizer_hash=tok_hash, verify=True)  # raises unless whole
    if (out / "meta.json").exists():
        TokenShards(out)


def kill_while_writing(cmd, out, env):
    """Start cmd, SIGKILL it as soon as a temporary file shows up in out (mid-write); True if it did."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and temporaries(out):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode == -signal.SIGKILL


def test_killed_prepare_leaves_only_whole_files(tmp_path, tok):
    """SIGKILL in the middle of `python -m hpr.data prepare`, into an empty folder and then over a finished
    preparation: nothing under a final name is half-written, and the finished one stays readable."""
    big = tmp_path / "big"
    write_corpus(big, n=1500, seed=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hpr.data", "prepare", "--data", str(big), "--tokenizer", str(tok[1]), "--out",
           str(out), "--val-permille", "200", "--shard-tokens"]
    env = dict(os.environ, HPR_TIMEOUT="60")
    assert kill_while_writing(cmd + ["2000"], out, env)
    check_whole(out, tok[0].hash)
    assert not (out / "meta.json").exists()
    done = subprocess.run(cmd + ["2000"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = TokenShards(out).meta
    assert kill_while_writing(cmd + ["3000"], out, env)
    check_whole(out, tok[0].hash)
    assert TokenShards(out).meta == before  # killed while tokenising: the previous preparation is intact


def test_out_none_prepares_into_the_cache_once(tmp_path, corpus, tok, monkeypatch):
    monkeypatch.setenv("HPR_CACHE_DIR", str(tmp_path / "cache"))
    a = prepare([corpus[0]], tok[1], None, val_permille=200)
    assert os.path.dirname(a.path) == str(tmp_path / "cache") and not a.skipped
    assert prepare([corpus[0]], tok[1], None, val_permille=200).skipped
    b = prepare([corpus[0]], "bytes", None, val_permille=200)
    assert b.path != a.path and not b.skipped  # another tokenizer: another folder, the first one kept
    assert TokenShards(a.path).hash == tok[0].hash and TokenShards(b.path).hash == "bytes"


def test_command_line(tmp_path, corpus):
    env = dict(os.environ, HPR_TIMEOUT="60")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "hpr.data", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300)

    t = run("tokenizer", "--data", corpus[0], "--vocab-size", 320, "--out", tmp_path / "t" / "tok.json")
    assert t.returncode == 0 and "trained a byte-level BPE of 320 tokens" in t.stdout, t.stderr
    tok = load_tokenizer(tmp_path / "t" / "tok.json")
    assert tok.vocab_size == 320 and tok.eot == 0
    p = run("prepare", "--data", corpus[0], "--tokenizer", tmp_path / "t" / "tok.json", "--out", tmp_path / "p",
            "--val-permille", 200)
    assert p.returncode == 0 and "train:" in p.stdout and "val:" in p.stdout, p.stderr
    np.testing.assert_array_equal(np.asarray(TokenShards(tmp_path / "p").val), reference(corpus[1], tok, 200)["val"])
    again = run("prepare", "--data", corpus[0], "--tokenizer", tmp_path / "t" / "tok.json", "--out", tmp_path / "p",
                "--val-permille", 200)
    assert again.returncode == 0 and "is up to date" in again.stdout and "nothing to do" in again.stdout
    info = run("info", tmp_path / "p")
    assert info.returncode == 0 and "checksum checked" in info.stdout
    bad = run("prepare", "--data", tmp_path / "none", "--tokenizer", "bytes", "--out", tmp_path / "q")
    assert bad.returncode == 2 and "error: data path" in bad.stderr and "does not exist" in bad.stderr


def test_tokenizer_threads_per_rank(monkeypatch):
    """python -m hpr.data sizes the tokenizer library's thread pool (RAYON_NUM_THREADS): prepare gives each
    rank its share of the node's cores; training a tokenizer, where rank 0 works alone, gives it all of
    them; a size the user set is left alone."""
    monkeypatch.setattr(cli, "cpu_count", lambda: 8)
    comm = SimpleNamespace(size=4, layout=SimpleNamespace(per_node=4))
    for alone, want in ((False, "2"), (True, "8")):
        monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
        monkeypatch.delenv("RAYON_RS_NUM_CPUS", raising=False)
        cli.share_cores(comm, alone=alone)
        assert os.environ["RAYON_NUM_THREADS"] == want
    monkeypatch.setenv("RAYON_NUM_THREADS", "3")
    cli.share_cores(comm, alone=True)
    assert os.environ["RAYON_NUM_THREADS"] == "3"
