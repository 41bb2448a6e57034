"""The trainer on subword tokens: a byte-level BPE trained here on the conftest corpus, the trainer run as
a user runs it (examples/train_lm.py, alone and under mpiexec) on raw text with --tokenizer and on a
prepared folder. The vocabulary padded to a multiple of 64 x tp with the padding outside the loss (the
model, in process, against the loss over the real vocabulary in float64); bits per byte in the progress
line and --log-json, checked against the split's bytes and tokens counted here with the tokenizers
library itself; the checkpoint keeping its tokenizer; resuming on another tokenizer's shards refused on
every rank before any step; exact resumption of the data position with BPE shards.

Dimensions: B batch, T time, C d_model, V vocabulary (real), Vp padded."""
import hashlib
import json
import math
import os
import re
import shutil

import numpy as np
import pytest

from hpr.data import prepare, train_bpe
from hpr.model import GPT, GPTConfig, vocab_multiple
from launch import mpi_job
from train_jobs import TRAIN, complete, job, latest, losses, steps_in, succeeded

FAKE_GPU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakegpu", "run.py")

V = 300  # the test BPE's vocabulary: not a multiple of 64, so it is padded (to 320 at tp 1, 384 at tp 2)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tok(corpus, tmp_path_factory):
    """A 300-token byte-level BPE trained on the corpus's files: its tokenizer.json."""
    texts = [p.read_text() for p in sorted(corpus.rglob("*")) if p.suffix in (".txt", ".py", ".md")]
    path = tmp_path_factory.mktemp("tok") / "tok300.json"
    train_bpe(texts, V).save(str(path))
    return path


@pytest.fixture(scope="module")
def other_shards(corpus, tmp_path_factory):
    """The corpus prepared with another BPE (280 tokens): shards a checkpoint of `tok` must refuse."""
    texts = [p.read_text() for p in sorted(corpus.rglob("*")) if p.suffix in (".txt", ".py", ".md")]
    d = tmp_path_factory.mktemp("other")
    train_bpe(texts, 280).save(str(d / "tok280.json"))
    return prepare([str(corpus)], str(d / "tok280.json"), str(d / "shards"), progress=False).path


@pytest.fixture(scope="module")
def bpe_run(corpus, env, tok, tmp_path_factory):
    """One rank, raw text + --tokenizer (prepared into the cache first), 6 steps, validation every 3,
    checkpoints at 3 and 6, a sample: (stdout, its folder)."""
    d = tmp_path_factory.mktemp("bpe")
    out, _ = succeeded(job(corpus, env, d, "--tokenizer", str(tok), "--steps", "6", "--eval-every", "3",
                           "--ckpt-dir", str(d / "ck"), "--ckpt-every", "3", "--log-json", str(d / "log.json"),
                           "--sample-tokens", "12", n=1))
    return out, d


# -- the model: padded vocabulary ----------------------------------------------------------------------
def test_vocab_multiple_pads_only_where_needed():
    assert [vocab_multiple(256, tp) for tp in (1, 2, 4, 8)] == [1, 1, 1, 1]  # bytes stay 256 rows
    assert vocab_multiple(4096, 2) == 1 and vocab_multiple(4096, 3) == 192
    assert vocab_multiple(300, 1) == 64 and vocab_multiple(300, 2) == 128
    for v, tp, want in ((300, 1, 320), (300, 2, 384), (300, 4, 512), (50257, 1, 50304), (256, 3, 384)):
        c = GPTConfig.preset("tiny", vocab_size=v, vocab_multiple=vocab_multiple(v, tp))
        assert c.padded_vocab == want and c.padded_vocab % tp == 0
        assert c.padded_vocab == c.vocab_size or (c.padded_vocab // tp) % 64 == 0
    c = GPTConfig.preset("tiny", vocab_size=V, vocab_multiple=64)
    assert GPT(c).emb.wte.shape == (320, c.d_model)
    assert c.flops_per_token() > GPTConfig.preset("tiny", vocab_size=V).flops_per_token()  # the matmul runs
    with pytest.raises(Exception, match="vocab_multiple"):
        GPTConfig.preset("tiny", vocab_multiple=0)


def reference_loss(model, x, y):
    """Mean cross-entropy over the real vocabulary only, in float64 numpy: logits = h wte[:V]^T."""
    v = model.config.vocab_size
    h = model.hidden(x).astype(np.float64)  # (N, C)
    z = h @ model.emb.wte.data[:v].astype(np.float64).T  # (N, V)
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    return float(np.mean(lse - z[np.arange(z.shape[0]), y.reshape(-1)]))


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 1e-5)])
def test_padded_logits_take_no_probability_and_no_gradient(rng, dtype, rtol):
    """float64: the loss is the real vocabulary's to rounding; float32 too, whose vectorised exp clamps
    e^-inf at e^-80: the padded rows' gradients must still be exactly zero."""
    c = GPTConfig.preset("tiny", vocab_size=V, vocab_multiple=64, dtype=dtype)
    m = GPT(c, seed=3)
    wte = m.emb.wte
    wte.data[V:] = 5.0 * rng.standard_normal(wte.data[V:].shape)  # padded rows that would matter if counted
    x = rng.integers(0, V, (3, c.context)).astype(np.int32)  # (B, T)
    y = rng.integers(0, V, (3, c.context)).astype(np.int32)
    want = reference_loss(m, x, y)
    assert m.loss(x, y) == pytest.approx(want, rel=rtol, abs=0)
    assert m.forward(x, y) == pytest.approx(want, rel=rtol, abs=0)
    m.backward()
    assert not np.any(wte.grad[V:]), "the padded rows of wte got a gradient"
    assert np.abs(wte.grad[:V]).max() > 0
    # the gradient of the real rows is the real-vocabulary model's: a copy without padding agrees
    u = GPT(GPTConfig.preset("tiny", vocab_size=V, dtype=dtype), seed=3)
    for p in u.layout.entries:
        q = next(e for e in m.layout.entries if e.name == p.name)
        p.data[...] = q.data[:V] if p.name == "wte" else q.data
    assert u.forward(x, y) == pytest.approx(want, rel=rtol, abs=0)
    u.backward()
    rest = u.grads.size - V * c.d_model  # wte is the last tensor of the flat buffer (reverse registration)
    scale = float(np.abs(u.grads).max())
    np.testing.assert_allclose(m.grads[:rest], u.grads[:rest], rtol=rtol * 1e3, atol=rtol * scale)
    np.testing.assert_allclose(wte.grad[:V], u.emb.wte.grad, rtol=rtol * 1e3, atol=rtol * scale)
    # sampling sees the real vocabulary only
    assert m.logits_last(x).shape == (3, V)
    out = m.generate(list(x[0, :4]), 40, temperature=5.0, seed=1)
    assert max(out) < V and len(out) == 44


# -- the trainer on BPE tokens ---------------------------------------------------------------------------
def val_bytes_per_token(corpus, tok):
    """The validation split (doc6.txt, conftest) in UTF-8 bytes per token: its tokens by the tokenizers
    library itself, plus the <|endoftext|> each prepared document starts with."""
    import tokenizers

    text = (corpus / "doc6.txt").read_text()
    ids = tokenizers.Tokenizer.from_file(str(tok)).encode(text, add_special_tokens=False).ids
    return len(text.encode("utf-8")) / (len(ids) + 1)


def test_bpe_run_pads_the_vocabulary_and_reports_bits_per_byte(bpe_run, corpus, tok):
    out, d = bpe_run
    assert f"vocabulary {V} padded to 320" in out, out
    evals = [r for r in log_lines(d / "log.json") if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    bpt = val_bytes_per_token(corpus, tok)
    for r in evals:
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / bpt, rel=1e-12)
        assert "unigram_entropy" in r
        assert f"step {r['step']}: val_loss {r['val_loss']:.4f} nats/token, val_bpb {r['val_bpb']:.4f}" in out, out
    assert f"final val_loss {evals[-1]['val_loss']:.4f} nats/token, val_bpb {evals[-1]['val_bpb']:.4f}" in out


def test_checkpoint_keeps_the_tokenizer_and_the_sample_is_text(bpe_run, tok):
    out, d = bpe_run
    ck = d / "ck" / f"step-{latest(d / 'ck'):08d}"
    meta = complete(ck)  # tokenizer.json is one of its hashed files
    assert (ck / "tokenizer.json").read_bytes() == tok.read_bytes()
    assert meta["data"]["tokenizer"] == sha256(tok) and meta["files"]["tokenizer.json"] == sha256(tok)
    from safetensors.numpy import load_file

    params = load_file(str(ck / "params.safetensors"))
    assert params["wte"].shape == (V, 32)  # saved without the padding
    # the checkpoint alone decodes: its tokenizer.json read by the tokenizers library itself
    import tokenizers

    t = tokenizers.Tokenizer.from_file(str(ck / "tokenizer.json"))
    assert t.decode(t.encode("def return self", add_special_tokens=False).ids) == "def return self"
    sample = out.split("--- sample ---\n", 1)[1]
    assert sample.startswith("def ") and not sample.startswith("def b'"), sample


def test_resume_on_another_tokenizers_shards_fails_on_every_rank_before_any_step(bpe_run, other_shards, corpus,
                                                                                   env, tmp_path, tok):
    _, d = bpe_run
    ck = tmp_path / "ck"
    shutil.copytree(d / "ck", ck)
    before = sorted(os.listdir(ck))
    code, out, err, _ = job(other_shards, env, tmp_path, "--steps", "9", "--ckpt-dir", str(ck), "--resume",
                            "--log-json", str(tmp_path / "log.json"), n=2)
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    theirs = json.load(open(os.path.join(other_shards, "meta.json")))["tokenizer"]["hash"]
    assert err.count("error: ") == 2, err  # every rank (their lines may interleave on the shared stderr)
    for h in (theirs[:16], sha256(tok)[:16], f"{other_shards} was prepared with"):
        assert err.count(h) == 2, (h, err)
    assert not re.search(r"^step ", out, re.M) and "resume: continuing" not in out, out
    assert not (tmp_path / "log.json").exists()
    assert sorted(os.listdir(ck)) == before


def test_bpe_shards_resume_exactly(corpus, env, tmp_path, tok):
    """A prepared folder, 2 ranks: 8 steps straight against 4 + --resume 4, at the same layout (bit for
    bit) and at --tp 2 (the padding goes from 320 to 384 rows; float64, to rounding)."""
    shards = prepare([str(corpus)], str(tok), str(tmp_path / "shards"), progress=False).path
    flags = ["--steps", "8", "--dtype", "float64", "--ckpt-every", "4"]
    full = tmp_path / "full"
    succeeded(job(shards, env, tmp_path, *flags, "--ckpt-dir", str(full), "--zero", "1",
                  "--log-json", str(tmp_path / "full.json")))
    ref = losses(tmp_path / "full.json")
    assert sorted(ref) == list(range(1, 9)) and steps_in(full) == [4, 8]
    for name, extra in (("same", ["--zero", "1"]), ("tp2", ["--tp", "2"])):
        part = tmp_path / name
        part.mkdir()
        shutil.copytree(full / "step-00000004", part / "step-00000004")
        out, _ = succeeded(job(shards, env, tmp_path, *flags, "--ckpt-dir", str(part), "--resume", *extra,
                               "--log-json", str(tmp_path / f"{name}.json")))
        assert "(step 4)" in out, out
        got = losses(tmp_path / f"{name}.json")
        assert sorted(got) == [5, 6, 7, 8], got
        for s in got:
            if name == "same":
                assert got[s] == ref[s], f"step {s}: resumed loss {got[s]!r} != uninterrupted {ref[s]!r}"
            else:
                assert got[s] == pytest.approx(ref[s], rel=1e-10), f"tp 2: step {s}"
    assert "vocabulary 300 padded to 384" in out, out


def test_byte_run_reports_bits_per_byte_and_records_bytes(corpus, env, tmp_path):
    ck = tmp_path / "ck"
    out, _ = succeeded(job(corpus, env, tmp_path, "--steps", "2", "--eval-every", "1", "--ckpt-dir", str(ck),
                           "--log-json", str(tmp_path / "log.json"), n=1))
    assert "vocabulary" not in out.splitlines()[0], out  # the byte model's banner as before
    evals = [r for r in log_lines(tmp_path / "log.json") if "val_loss" in r]
    assert len(evals) == 2
    for r in evals:
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-14)
    meta = complete(ck / "step-00000002")
    assert meta["data"]["tokenizer"] == "bytes" and "tokenizer.json" not in meta["files"]
    assert meta["config"]["vocab_size"] == 256 and meta["config"]["vocab_multiple"] == 1


def test_bpe_at_tp2_on_the_fake_gpu_matches_the_cpu(corpus, env, tmp_path, tok):
    """--device gpu on the numpy-backed CuPy stand-in (tests/fakegpu): the padded logits masked on device
    arrays, tp 2 (384 rows, 192 a rank), the same losses as --device cpu and a decoded sample."""
    got = {}
    for dev in ("gpu", "cpu"):
        log = tmp_path / f"{dev}.json"
        r = mpi_job(2, [FAKE_GPU, TRAIN, "--data", str(corpus), "--tokenizer", str(tok), "--preset", "tiny",
                        "--batch", "4", "--steps", "4", "--eval-every", "2", "--sample-tokens", "8", "--threads", "1",
                        "--dtype", "float64", "--peak-tflops", "1", "--tp", "2", "--device", dev,
                        "--log-json", str(log)], tmp_path, env, 120, FAKECUPY_DEVICES="2")
        assert r.code == 0 and "Traceback" not in r.err, f"{dev}: exit {r.code}\n{r.out}\n{r.err}"
        assert "vocabulary 300 padded to 384" in r.out and "--- sample ---\ndef " in r.out, r.out
        got[dev] = [(d["step"], d.get("loss", d.get("val_loss"))) for d in log_lines(log) if "step" in d]
    assert len(got["gpu"]) == 6 and [k for k, _ in got["gpu"]] == [k for k, _ in got["cpu"]]
    for (step, g), (_, c) in zip(got["gpu"], got["cpu"]):
        assert g == pytest.approx(c, rel=1e-12), f"step {step}: gpu {g} cpu {c}"


def _flip_payload_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # a token, not the 128-byte header
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-6])


@pytest.mark.parametrize("damage,says", [(_flip_payload_byte, "is corrupted"), (_truncate, "is truncated")],
                         ids=["flipped-token", "truncated"])
def test_damaged_shard_fails_on_every_rank_before_any_step(corpus, env, tmp_path, tok, damage, says):
    shards = prepare([str(corpus)], str(tok), str(tmp_path / "shards"), progress=False).path
    shard = tmp_path / "shards" / "train-000000.bin"
    damage(shard)
    code, out, err, _ = job(shards, env, tmp_path, "--steps", "3", "--ckpt-dir", str(tmp_path / "ck"), n=2)
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    # every rank says it (their lines may interleave on the shared stderr)
    assert err.count("error: ") == 2 and err.count(f"shard {shard} {says}") == 2, err
    assert not re.search(r"^step ", out, re.M) and not (tmp_path / "ck").exists(), out


def test_a_converted_checkpoint_with_padded_rows_resumes_on_its_tokenizers_text(corpus, env, tmp_path, tok):
    """hpr.convert writes vocab_size as the padded rows (320 for this 300-token BPE, no vocab_multiple)
    and the tokenizer.json beside: the trainer takes it with that tokenizer's text, at tp 1 and 2."""
    from hpr.convert import write_checkpoint

    c = GPTConfig.preset("tiny", vocab_size=320)
    params = {p.name: p.data.copy() for p in GPT(c, seed=1).layout.entries}
    params["wte"][V:] = 0
    write_checkpoint(str(tmp_path / "ck"), c, params, tok.read_text(), seed=0, batch=4)
    for n, extra in ((1, []), (2, ["--tp", "2"])):
        out, _ = succeeded(job(corpus, env, tmp_path, "--tokenizer", str(tok), "--steps", "2", "--ckpt-dir",
                               str(tmp_path / "ck"), "--resume", *extra, n=n))
        assert "continuing from" in out and "(step 0)" in out, out
        shutil.rmtree(tmp_path / "ck" / "step-00000002")
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", "2", "--ckpt-dir", str(tmp_path / "ck"), "--resume",
                            n=1)  # bytes: not the checkpoint's tokenizer
    assert code == 2 and sha256(tok)[:16] in err and "continuing from" not in out, err
    # a converted byte model (no tokenizer.json) resumes on the byte corpus, as before
    b = GPTConfig.preset("tiny")
    write_checkpoint(str(tmp_path / "bytes"), b, {p.name: p.data.copy() for p in GPT(b, seed=1).layout.entries},
                     None, seed=0, batch=4)
    out, _ = succeeded(job(corpus, env, tmp_path, "--steps", "2", "--ckpt-dir", str(tmp_path / "bytes"), "--resume",
                           n=1))
    assert "(step 0)" in out, out
