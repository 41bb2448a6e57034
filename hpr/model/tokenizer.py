"""The tokenizer a checkpoint carries, behind the face hpr.data's Tokenizer has (load, encode_batch,
decode, vocab_size, hash): Hugging Face `tokenizers` for a tokenizer.json, or bytes (vocabulary 256,
id = byte). A stand-in until hpr.data's Tokenizer lands; then `Tokenizer` here becomes that one.
Owns finding a checkpoint's tokenizer; not training tokenizers (hpr.data).

Usage: ``tok = Tokenizer.load("tokenizer.json"); ids = tok.encode_batch(["hello"])[0]; tok.decode(ids)``"""
import hashlib
import os

from ..errors import CheckpointError, ConfigError

FILE = "tokenizer.json"
BYTES = "bytes"


class Tokenizer:
    """load(path or "bytes"); encode_batch(texts) -> [[ids]]; decode(ids) -> str (invalid UTF-8 as
    U+FFFD); vocab_size (special tokens included); hash (sha256 of the file, or "bytes"); path."""

    def __init__(self, backend, path, digest):
        self._tok, self.path, self.hash = backend, path, digest

    @classmethod
    def load(cls, spec):
        if spec == BYTES:
            return cls(None, None, BYTES)
        try:
            with open(spec, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the tokenizer {spec}: {e}") from None
        try:
            from tokenizers import Tokenizer as HFTokenizer  # lazy: optional, only for BPE vocabularies
        except ImportError:
            raise ConfigError(f"{spec} needs Hugging Face tokenizers: pip install tokenizers") from None
        try:
            backend = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own Exception type
            raise ConfigError(f"{spec} is not a tokenizer.json Hugging Face tokenizers can read: {e}") from None
        return cls(backend, spec, hashlib.sha256(data).hexdigest())

    @property
    def vocab_size(self):
        return 256 if self._tok is None else self._tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts):
        if self._tok is None:
            return [list(t.encode("utf-8")) for t in texts]
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids):
        if self._tok is None:
            return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, text):
        """The id of a single token written as text (e.g. "<|endoftext|>"), or None."""
        if self._tok is None:
            b = text.encode("utf-8")
            return b[0] if len(b) == 1 else None
        return self._tok.token_to_id(text)


def for_checkpoint(step_dir, ckpt_dir, vocab_size):
    """The tokenizer of a checkpoint: tokenizer.json in its step folder, else in the checkpoint folder
    above it; none there and a vocabulary of 256: bytes; none and another vocabulary: None (the model
    still computes logits, but nothing can turn text into its ids). CheckpointError when the file's
    vocabulary is larger than the model's."""
    for folder in (step_dir, ckpt_dir):
        path = os.path.join(folder, FILE)
        if os.path.exists(path):
            try:
                tok = Tokenizer.load(path)
            except ConfigError as e:
                raise CheckpointError(f"{e}; replace {path} with the tokenizer the model was trained with") from None
            if tok.vocab_size > vocab_size:
                raise CheckpointError(f"{path} has {tok.vocab_size} tokens but the model's vocabulary is "
                                      f"{vocab_size}: this is not the model's tokenizer; put the right "
                                      f"{FILE} beside the checkpoint")
            return tok
    return Tokenizer.load(BYTES) if vocab_size == 256 else None
