"""The trainer's data, one face over its three sources:

  * no --tokenizer, --data a text file or folder (or nothing: the Python standard library): the byte
    corpus as it always was (hpr.data.Corpus, vocabulary 256, cached by rank 0 first);
  * --data a prepared folder (`python -m hpr.data prepare` wrote it: meta.json, shards): its token
    shards, memory-mapped (hpr.data.TokenShards): rank 0 re-checks every checksum, the others check
    sizes and headers, and each rank then reads only the windows of its own samples;
  * --data raw text (a file, a folder, JSON Lines, Parquet) with --tokenizer tok.json|bytes (or JSON
    Lines / Parquet without one: bytes): prepared into hpr's cache first, every rank tokenising its part
    (hpr.data.prepare; done once, found again on the next run), then read as shards.

Owns choosing the source, opening it collectively (a DataError on every rank, before any step), and what
the trainer reports and records from it: the vocabulary, the unigram entropy (the loss to beat), bits per
byte from the split's measured bytes per token (1 for bytes), the tokenizer's hash (checked against a
checkpoint's) and the tokenizer itself (saved into checkpoints, encoding the prompt, decoding the sample).
Not the formats, the tokenising or the windows (hpr.data).

Usage: ``data = TrainingData.open(world, args.data, args.tokenizer); Batches(data.train, T, seed)``"""
import math
import os

import numpy as np

from ..data import BYTES, ByteTokenizer, Corpus, TokenShards, load_tokenizer, prepare
from ..data.shards import META
from ..data.sources import STDIN, kind_of
from ..errors import DataError


def on_every_rank(world, fn):
    """fn(rank 0?) on rank 0 first (it may build a cache, or read every shard for its checksum), then on
    the others; a DataError on any rank is raised on every rank, the first rank's message winning."""
    result, err = None, None
    if world.rank == 0:
        try:
            result = fn(True)
        except DataError as e:
            err = str(e)
    err = world.bcast_obj(err, root=0)
    if err:
        raise DataError(err)
    if world.size == 1:
        return result
    if world.rank != 0:
        try:
            result = fn(False)
        except DataError as e:
            err = str(e)
    errs = world.gather_obj(err, root=0)
    err = world.bcast_obj(next((e for e in errs if e), None) if world.rank == 0 else None, root=0)
    if err:
        raise DataError(err)
    return result


def is_prepared(path):
    """True for a folder holding a prepared folder's meta.json."""
    return path is not None and path != STDIN and os.path.isfile(os.path.join(os.path.expanduser(path), META))


def token_entropy(split, vocab_size):
    """-sum_v p_v ln p_v (nats per token) of the token frequencies p_v of a split (SplitTokens), read
    16 Mi tokens at a time."""
    counts = np.zeros(vocab_size, np.int64)  # (V,)
    for part in split.parts:
        for i in range(0, part.size, 1 << 24):
            counts += np.bincount(part[i:i + (1 << 24)], minlength=vocab_size)[:vocab_size]
    p = counts[counts > 0] / max(1, int(counts.sum()))
    return float(-(p * np.log(p)).sum())


class TrainingData:
    """train and val (token arrays for hpr.data.Batches), the tokenizer (hpr.data's, or ByteTokenizer for
    the byte corpus), its hash and vocab_size, bytes_per_token per split, entropy (the train split's
    unigram entropy, nats per token) and source (a line for the banner). corpus / shards: the byte Corpus
    or the TokenShards behind them (the other None)."""

    def __init__(self, train, val, tokenizer, bytes_per_token, entropy, source, corpus=None, shards=None):
        self.train, self.val, self.tokenizer = train, val, tokenizer
        self.hash, self.vocab_size = tokenizer.hash, tokenizer.vocab_size
        self.bytes_per_token, self.entropy, self.source = bytes_per_token, entropy, source
        self.corpus, self.shards = corpus, shards

    def resident_bytes(self):
        """Bytes of the two splits: what a rank holds in memory once it has read them all (the byte
        corpus is read whole; shards are memory-mapped, and the entropy pass touches every page)."""
        return sum(int(s.nbytes) if hasattr(s, "nbytes") else sum(int(p.nbytes) for p in s.parts)
                   for s in (self.train, self.val))

    @classmethod
    def open(cls, world, data=None, tokenizer=None, threads=None):
        """The data of --data / --tokenizer (module docstring); collective, a DataError on every rank.
        threads: the tokenizer library's thread pool while preparing (default: its own choice)."""
        if is_prepared(data):
            return cls.from_shards(world, os.path.expanduser(data), tokenizer)
        if tokenizer is None and (data is None or (data != STDIN and kind_of(data) == "text")):
            return cls.from_corpus(world, data)
        if threads:
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # read when the pool starts
        done = prepare(None if data is None else [data], tokenizer or BYTES, None, comm=world)
        return cls.from_shards(world, done.path, None,
                               how=f"{'found' if done.skipped else 'prepared now'} in the cache {done.path}")

    @classmethod
    def from_corpus(cls, world, path):
        """The byte corpus (Corpus.load), read and cached by rank 0 before the others read the cache."""
        corpus = on_every_rank(world, lambda first: Corpus.load(path))
        entropy = corpus.unigram_entropy()
        source = (f"{corpus.source}: {corpus.train.size:,} train bytes, {corpus.val.size:,} validation bytes; "
                  f"unigram entropy {entropy:.3f} nats/byte")
        return cls(corpus.train, corpus.val, ByteTokenizer(), {"train": 1.0, "val": 1.0}, entropy, source,
                   corpus=corpus)

    @classmethod
    def from_shards(cls, world, folder, tokenizer=None, how=None):
        """A prepared folder's shards; rank 0 verifies every checksum and measures the unigram entropy."""
        shards = on_every_rank(world, lambda first: TokenShards(folder, verify=first))
        if tokenizer is not None:  # a prepared folder has its tokenizer: a different one is a mistake
            given = on_every_rank(world, lambda first: load_tokenizer(tokenizer))
            if given.hash != shards.hash:
                raise DataError(f"--tokenizer {tokenizer} (sha256 {given.hash[:16]}) is not the tokenizer "
                                f"{shards.path} was prepared with ({shards.hash[:16]}): leave --tokenizer out to "
                                "train on the folder's tokens, or prepare the text again with this tokenizer")
        tok = on_every_rank(world, lambda first: shards.tokenizer)  # tokenizer.json checked against the hash
        entropy = world.bcast_obj(token_entropy(shards.train, shards.vocab_size) if world.rank == 0 else None)
        name = "bytes" if shards.hash == BYTES else os.path.basename(shards.meta["tokenizer"].get("name") or "")
        source = (f"{shards.meta['inputs']['description']}: {shards.train.size:,} train tokens, {shards.val.size:,} "
                  f"validation tokens ({how or 'prepared shards in ' + shards.path}); tokenizer "
                  f"{name} (vocabulary {shards.vocab_size}"
                  f"{'' if shards.hash == BYTES else ', sha256 ' + shards.hash[:12]}), "
                  f"{shards.bytes_per_token['val']:.3f} bytes/token in validation; unigram entropy "
                  f"{entropy:.3f} nats/token")
        return cls(shards.train, shards.val, tok, dict(shards.bytes_per_token), entropy, source, shards=shards)

    def check_context(self, context):
        (self.corpus or self.shards).check_context(context)

    def bits_per_byte(self, nats_per_token, split="val"):
        """A loss in nats per token as bits per byte of text: nats / ln 2 / (bytes per token)."""
        return float(nats_per_token) / math.log(2.0) / self.bytes_per_token[split]

    def check_tokenizer(self, expected_hash, what="the checkpoint"):
        """DataError unless this data was tokenised by the tokenizer whose hash is expected_hash."""
        if self.shards is not None:
            return self.shards.check_tokenizer(expected_hash, what)
        if expected_hash != self.hash:
            raise DataError(f"the byte corpus {self.corpus.source} is tokenised as bytes, but {what} uses tokenizer "
                            f"{str(expected_hash)[:16]}: token ids would mean other text. Pass --data with text "
                            f"and --tokenizer (the tokenizer.json in {what}'s folder), or start a new run")

    def encode(self, text):
        return list(self.tokenizer.encode(text))

    def decode(self, ids):
        """Text of token ids (a byte model's bytes are ids too), invalid UTF-8 shown as U+FFFD."""
        if isinstance(ids, (bytes, bytearray)):
            ids = list(ids)
        return self.tokenizer.decode(ids)
