"""hpr.data tokenizers: decode(encode(x)) == x on every file of the default corpus (bytes, and a small
byte-level BPE trained here), encode_documents equal to the library's own encode_batch,
tokenizer.json files made elsewhere (another model, another end-of-text, over 65536 tokens), the hash,
and the errors (a vocabulary too small or over 2^32, a file that is not a tokenizer)."""
import hashlib
import json
import time

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from hpr.data import ByteTokenizer, Tokenizer, documents, list_inputs, load_tokenizer, train_bpe
from hpr.data.tokenizer import token_dtype
from hpr.errors import DataError


@pytest.fixture(scope="module")
def stdlib_docs():
    """Every document of the default corpus (the standard library's .py files), in order."""
    return [text for text, _ in documents(list_inputs())]


@pytest.fixture(scope="module")
def small_bpe(stdlib_docs):
    """A 600-token byte-level BPE trained on every 40th file of the default corpus."""
    return train_bpe(stdlib_docs[::40], 600)


def test_bytes_round_trip_every_file(stdlib_docs):
    tok = ByteTokenizer()
    assert len(stdlib_docs) > 1000
    tokens, counts = tok.encode_documents(stdlib_docs)
    assert tokens.dtype == np.uint16 and counts.sum() == tokens.size
    ends = np.cumsum(counts)
    for i in range(0, len(stdlib_docs), 1):
        text = stdlib_docs[i]
        piece = tokens[ends[i] - counts[i]:ends[i]]
        assert tok.decode(piece) == text, i
        assert bytes(piece.astype(np.uint8)) == text.encode("utf-8")


def test_bpe_round_trip_every_file_of_the_default_corpus(stdlib_docs, small_bpe):
    """decode(encode(x)) == x for every file of the default corpus (~31 MB: unicode, and the files that
    were not UTF-8, read with U+FFFD) through the 600-token BPE trained above, encoded with hpr's
    encode_batch and decoded by the library in parallel. ~25 CPU seconds: ~15 s on an idle 2-core
    machine, minutes on a shared one."""
    assert sum(map(len, stdlib_docs)) > 25_000_000 and any("\ufffd" in d for d in stdlib_docs)
    t0, c0 = time.perf_counter(), time.process_time()
    ids = small_bpe.encode_batch(stdlib_docs)
    back = small_bpe.hf.decode_batch(ids, skip_special_tokens=False)
    bad = [i for i, (a, b) in enumerate(zip(back, stdlib_docs)) if a != b]
    assert len(back) == len(stdlib_docs) and not bad, f"{len(bad)} documents do not round-trip, first {bad[:5]}"
    assert sum(map(len, ids)) < 0.6 * sum(len(d.encode()) for d in stdlib_docs)  # the merges do compress
    print(f"round trip of {len(stdlib_docs)} files, {sum(map(len, stdlib_docs)) / 1e6:.1f} M chars: "
          f"{time.perf_counter() - t0:.1f} s ({time.process_time() - c0:.1f} CPU s)")


def test_bpe_round_trip_odd_strings(small_bpe):
    odd = ["", " ", "\n\n\t  x", "é", "日本語のテキスト", "emoji 🧪🧬 mixed", "\x00\x01\x7f", "a" * 5000,
           "<|endoftext|> inside", "  leading spaces", "trailing  \n", "\ufffd"]
    for s in odd:
        assert small_bpe.decode(small_bpe.encode(s)) == s, repr(s)


def test_trained_bpe_has_bytes_and_end_of_text(small_bpe):
    assert small_bpe.vocab_size == 600 and small_bpe.eot == 0 and small_bpe.dtype == np.uint16
    vocab = small_bpe.hf.get_vocab()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    assert len(alphabet) == 256 and all(ch in vocab for ch in alphabet)  # every byte has a token
    assert small_bpe.hash == hashlib.sha256(small_bpe.to_bytes()).hexdigest()


def test_encode_documents_equals_library(stdlib_docs, small_bpe):
    docs = stdlib_docs[1::97]
    tokens, counts = small_bpe.encode_documents(docs)
    ref = []
    for enc in small_bpe.hf.encode_batch(docs, add_special_tokens=False):
        ref += [small_bpe.eot] + enc.ids
    np.testing.assert_array_equal(tokens, np.array(ref))
    assert counts.tolist() == [len(e.ids) + 1 for e in small_bpe.hf.encode_batch(docs, add_special_tokens=False)]


def test_save_load_and_hash(tmp_path, small_bpe):
    p = small_bpe.save(tmp_path / "sub" / "tok.json")
    again = load_tokenizer(p)
    assert again.hash == small_bpe.hash == hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert load_tokenizer(tmp_path / "sub" / "tok.json").vocab_size == 600
    (tmp_path / "model").mkdir()
    small_bpe.save(tmp_path / "model" / "tokenizer.json")
    assert load_tokenizer(tmp_path / "model").hash == small_bpe.hash  # a folder holding tokenizer.json
    assert load_tokenizer("bytes").hash == "bytes" and load_tokenizer(None).vocab_size == 256
    assert not list((tmp_path / "sub").glob(".*tmp"))


def word_level(vocab, specials=()):
    """A tokenizer.json made without hpr: a word-level model with these special tokens."""
    hf = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(list(specials))
    return hf.to_str().encode()


def test_foreign_tokenizer_json(tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    p = tmp_path / "llama-like.json"
    p.write_bytes(word_level(vocab, ["</s>"]))
    tok = load_tokenizer(p)
    assert tok.eot == 3 and tok.vocab_size == 4 and tok.encode("hello world") == [1, 2]
    tokens, counts = tok.encode_documents(["hello", "world hello"])
    assert tokens.tolist() == [3, 1, 3, 2, 1] and counts.tolist() == [2, 3]
    p2 = tmp_path / "no-eot.json"
    p2.write_bytes(word_level(vocab))
    tok2 = load_tokenizer(p2)
    assert tok2.eot is None and tok2.encode_documents(["hello", "world"])[0].tolist() == [1, 2]


def test_vocabulary_over_65536_uses_uint32(tmp_path):
    vocab = {f"w{i}": i for i in range(70000)}
    vocab["[UNK]"] = 70000
    p = tmp_path / "big.json"
    p.write_bytes(word_level(vocab))
    tok = load_tokenizer(p)
    assert tok.vocab_size == 70001 and tok.dtype == np.uint32
    assert tok.encode_documents(["w69999 w3"])[0].tolist() == [69999, 3]
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32 and token_dtype(1 << 32) == np.uint32


def test_errors(tmp_path, stdlib_docs):
    with pytest.raises(DataError, match="over 2\\^32"):
        token_dtype((1 << 32) + 1, "a giant tokenizer")
    with pytest.raises(DataError, match="over 2\\^32"):
        train_bpe(stdlib_docs[:2], (1 << 32) + 1)
    with pytest.raises(DataError, match="at least 258"):
        train_bpe(stdlib_docs[:2], 100)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(DataError, match="bad.json.*not a tokenizer.json"):
        load_tokenizer(bad)
    with pytest.raises(DataError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    # a tokenizer.json whose ids reach past 2^32: refused when loaded (the library's ids are u32 too)
    huge = json.loads(word_level({"[UNK]": 0, "a": 1}))
    huge["model"]["vocab"]["a"] = (1 << 32) + 5
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    with pytest.raises(DataError, match="huge.json"):
        load_tokenizer(tmp_path / "huge.json")
    with pytest.raises(DataError, match="cannot write the tokenizer"):
        Tokenizer(word_level({"[UNK]": 0})).save(bad / "x.json")  # bad.json is a file, not a folder
