"""Tokenizers: a byte-level BPE trained, loaded and run by Hugging Face ``tokenizers`` (its
``tokenizer.json`` format, so GPT-2's, Llama's or a user's file is taken as it is), and ``bytes``, the
vocabulary of the 256 byte values hpr's byte models use. Both have one face: ``encode``,
``encode_batch``, ``decode``, ``vocab_size``, ``hash``, ``eot`` and ``encode_documents`` (the prepare
path: many documents to one flat token array). Owns no files of tokens (shards.py) and no reading of
inputs (sources.py). Usage: ``tok = load_tokenizer("tok.json"); ids = tok.encode("def f(x):")``

A BPE trained here is GPT-2's scheme: the ByteLevel pre-tokenizer maps each UTF-8 byte to one of 256
printable characters (after splitting with GPT-2's regular expression), so every string is covered by
the 256 byte tokens, no text is unknown and decode(encode(x)) == x for every string x; merges are learned
on top, and ``<|endoftext|>`` is added as a special token to mark where documents start.
``hash`` is the sha256 of the tokenizer.json bytes (``"bytes"`` for bytes): shards and checkpoints
record it, and a reader refuses tokens from another tokenizer.
"""
import hashlib
import itertools
import os

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from ..errors import DataError
from .atomic import AtomicFile

BYTES = "bytes"
END_OF_TEXT = "<|endoftext|>"
# Special tokens taken as the end-of-text (document separator) of a loaded tokenizer, first found wins:
# GPT-2 and most BPEs, Llama 3, Llama 2 / SentencePiece, Gemma.
EOT_NAMES = (END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>")
MAX_VOCAB = 1 << 32  # token ids are stored as uint32 at most


def token_dtype(vocab_size, what="the tokenizer"):
    """uint16 when every id fits (vocabulary <= 65536), else uint32; DataError over 2^32."""
    if vocab_size > MAX_VOCAB:
        raise DataError(f"{what} has a vocabulary of {vocab_size} tokens, over 2^32: token ids are stored as "
                        "uint32; use a tokenizer with a smaller vocabulary")
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class ByteTokenizer:
    """The 256 byte values as tokens: a string is its UTF-8 bytes. No end-of-text token (vocabulary 256,
    documents simply follow one another, as in hpr's byte corpus)."""

    name = BYTES
    hash = BYTES
    vocab_size = 256
    eot = None
    dtype = np.dtype(np.uint16)

    def __repr__(self):
        return "ByteTokenizer(vocab 256)"

    def to_bytes(self):
        """None: nothing to save, the name says it all."""
        return None

    def encode(self, text):
        return list(text.encode("utf-8"))

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return bytes(np.asarray(ids, np.uint8)).decode("utf-8", "replace")

    def encode_documents(self, texts):
        """(tokens, counts): the documents' bytes one after another (self.dtype), and each one's count."""
        raw = [t.encode("utf-8") for t in texts]
        counts = np.fromiter(map(len, raw), np.int64, len(raw))
        return np.frombuffer(b"".join(raw), np.uint8).astype(self.dtype), counts


class Tokenizer:
    """A Hugging Face tokenizer and the exact tokenizer.json bytes it came from (``to_bytes()``).
    ``name`` says where it came from; ``eot`` is the end-of-text id (None when it has none)."""

    def __init__(self, json_bytes, name="tokenizer.json"):
        self._json = bytes(json_bytes)
        self.name = name
        try:
            self.hf = tokenizers.Tokenizer.from_str(self._json.decode("utf-8"))
        except Exception as e:  # bad UTF-8, or the Rust parser's plain Exception: either way not a tokenizer
            raise DataError(f"{name} is not a tokenizer.json that Hugging Face tokenizers can read ({e}); "
                            "pass a tokenizer.json, one trained by `python -m hpr.data tokenizer`, or bytes") \
                from None
        self.hash = hashlib.sha256(self._json).hexdigest()
        vocab = self.hf.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0  # ids may have gaps: the largest counts
        self.dtype = token_dtype(self.vocab_size, name)
        special = {t.content for t in self.hf.get_added_tokens_decoder().values() if t.special}
        self.eot = next((vocab[s] for s in EOT_NAMES if s in special), None)

    @classmethod
    def from_file(cls, path):
        path = os.fspath(path)
        if os.path.isdir(path):  # a model folder, a prepared folder or a checkpoint: its tokenizer.json
            path = os.path.join(path, "tokenizer.json")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"cannot read the tokenizer {path}: {e.strerror or e}; pass a tokenizer.json "
                            "(`python -m hpr.data tokenizer` trains one) or bytes") from None
        return cls(data, name=path)

    def __repr__(self):
        return f"Tokenizer({self.name}: vocab {self.vocab_size}, eot {self.eot}, sha256 {self.hash[:12]})"

    def to_bytes(self):
        return self._json

    def save(self, path):
        """Write the tokenizer.json bytes to path (its folder made if need be), whole or not at all."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with AtomicFile(path) as f:
                f.write(self._json)
        except OSError as e:
            raise DataError(f"cannot write the tokenizer to {path}: {e.strerror or e}; pass another --out") from None
        return path

    def encode(self, text):
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids):
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def encode_documents(self, texts):
        """(tokens, counts): for each document its end-of-text token (when the tokenizer has one) then its
        tokens, all in one self.dtype array, and each document's count (eot included). Documents are
        encoded in parallel by the library's thread pool; no offsets are computed (encode_batch_fast)."""
        ids = [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]
        extra = 0 if self.eot is None else 1
        counts = np.fromiter(map(len, ids), np.int64, len(ids)) + extra
        if extra:
            ids = itertools.chain.from_iterable(zip(itertools.repeat([self.eot]), ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), self.dtype, int(counts.sum()))
        return flat, counts


def load_tokenizer(spec):
    """A tokenizer from "bytes", a tokenizer.json path (or a folder holding one), or a tokenizer as is."""
    if isinstance(spec, (Tokenizer, ByteTokenizer)):
        return spec
    if spec is None or os.fspath(spec) == BYTES:
        return ByteTokenizer()
    return Tokenizer.from_file(spec)


def from_bytes(json_bytes, name="tokenizer.json"):
    """The tokenizer whose tokenizer.json bytes are json_bytes (None: bytes), e.g. from a checkpoint."""
    return ByteTokenizer() if json_bytes is None else Tokenizer(json_bytes, name)


def train_bpe(texts, vocab_size, *, length=None, min_frequency=0, progress=False):
    """A byte-level BPE of vocab_size tokens (256 bytes + <|endoftext|> + merges) trained on the texts
    (an iterable of strings; length: how many, for the progress display)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 258:
        raise DataError(f"vocab_size={vocab_size!r}: a byte-level BPE needs at least 258 tokens (256 bytes, "
                        "<|endoftext|> and one merge)")
    token_dtype(vocab_size, f"--vocab-size {vocab_size}")
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress,
                                  special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(texts, trainer, length=length)
    return Tokenizer(hf.to_str().encode("utf-8"), name=f"byte-level BPE ({vocab_size})")
