"""Prepared token shards on disk, and the reader the trainer uses. Owns the shard file format, writing
shards whole or not at all, checking them (size, checksum, tokenizer) and memory-mapping them. Does not
own reading text or tokenising it (sources.py, tokenizer.py, prepare.py) or which windows a sample reads
(batches.py). Usage: ``d = TokenShards("prepared/"); x, y = Batches(d.train, 256, seed=0).get(0, 32)``

A prepared folder holds ``meta.json`` (written last: a folder without it is not ready), the tokenizer's
own ``tokenizer.json`` (none for bytes) and per split ("train", "val") the shards ``train-000000.bin``,
``train-000001.bin``, ... Each shard is a 128-byte header, then its tokens (little-endian uint16 when
the vocabulary has at most 65536 tokens, else uint32), the split's token stream cut every shard_tokens:

  offset  size  field
       0     8  magic b"HPRTOKEN"
       8     4  format version (1), u32
      12     4  bytes per token (2 or 4), u32
      16     8  number of tokens, u64
      24     4  crc32 of the token bytes, u32
      28     4  zero
      32    64  the tokenizer's hash (sha256 hex of its tokenizer.json, or "bytes"), ASCII, zero-padded
      96    32  zero
     128        tokens
(llm.c's .bin shards have the same shape: a fixed header, then raw token ids, so a shard is one np.memmap.)
"""
import json
import os
import re
import struct
import zlib

import numpy as np

from ..errors import DataError
from .atomic import AtomicFile
from .batches import _count
from .tokenizer import BYTES, ByteTokenizer, Tokenizer

MAGIC = b"HPRTOKEN"
VERSION = 1
FORMAT = "hpr-token-shards"
HEADER = struct.Struct("<8sIIQII64s32x")  # 128 bytes: the payload starts 64-byte aligned
META = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
SHARD_NAME = re.compile(r"^(train|val)-\d{6}\.bin$")
_AGAIN = "run `python -m hpr.data prepare` again to rewrite it"


def shard_name(split, index):
    return f"{split}-{index:06d}.bin"


class ShardWriter:
    """One split's token stream written as shards of shard_tokens tokens (the last one shorter), each
    under a temporary name until commit(); discard() removes them all."""

    def __init__(self, folder, split, dtype, tokenizer_hash, shard_tokens):
        self.folder, self.split, self.shard_tokens = folder, split, _count(shard_tokens, "shard_tokens", 1)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.hash = tokenizer_hash.encode("ascii")
        self.pending, self.shards = [], []  # AtomicFiles, and {"file", "tokens", "crc32"} per shard
        self._file, self._count, self._crc = None, 0, 0

    def write(self, tokens):
        try:
            self._write(np.ascontiguousarray(tokens, self.dtype))
        except OSError as e:
            raise DataError(f"cannot write the {self.split} shards in {self.folder}: {e.strerror or e}; free some "
                            "space or pass another --out") from None

    def _write(self, tokens):
        while tokens.size:  # tokens: (n,)
            if self._file is None:
                self._open()
            take = min(tokens.size, self.shard_tokens - self._count)
            chunk = tokens[:take]
            self._file.write(memoryview(chunk).cast("B"))
            self._crc = zlib.crc32(chunk, self._crc)
            self._count += take
            tokens = tokens[take:]
            if self._count == self.shard_tokens:
                self._close_shard()

    def finish(self):
        """Close the last shard; the list of shards (not yet under their names)."""
        if self._file is not None:
            self._close_shard()
        return self.shards

    def commit(self):
        for a in self.pending:
            a.commit()
        self.pending = []

    def discard(self):
        for a in self.pending:
            a.discard()
        self.pending, self._file = [], None

    def _open(self):
        a = AtomicFile(os.path.join(self.folder, shard_name(self.split, len(self.pending))))
        self.pending.append(a)
        self._file = a.open()
        self._file.write(bytes(HEADER.size))  # the header is written when the count and checksum are known
        self._count, self._crc = 0, 0

    def _close_shard(self):
        self._file.seek(0)
        self._file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self._count, self._crc, 0, self.hash))
        self.pending[-1].close()
        self.shards.append({"file": os.path.basename(self.pending[-1].path), "tokens": self._count,
                            "crc32": self._crc})
        self._file = None


def read_header(path):
    """(bytes per token, tokens, crc32, tokenizer hash) of a shard; DataError if it is not one."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER.size)
    except FileNotFoundError:
        raise DataError(f"shard {path} is missing: the prepared folder is incomplete; {_AGAIN}") from None
    except OSError as e:
        raise DataError(f"cannot read shard {path}: {e}") from None
    if len(raw) < HEADER.size:
        raise DataError(f"shard {path} is truncated: {len(raw)} bytes, shorter than its {HEADER.size}-byte "
                        f"header; {_AGAIN}")
    magic, version, itemsize, count, crc, _, tok = HEADER.unpack(raw)
    if magic != MAGIC:
        raise DataError(f"{path} is not an hpr token shard (its first bytes are {magic!r}); {_AGAIN}")
    if version != VERSION or itemsize not in (2, 4):
        raise DataError(f"shard {path} has format version {version} with {itemsize}-byte tokens; this hpr reads "
                        f"version {VERSION} with 2- or 4-byte tokens: {_AGAIN}")
    return itemsize, count, crc, tok.rstrip(b"\0").decode("ascii", "replace")


def open_shard(path, *, tokenizer_hash, tokens=None, crc32=None, verify=True):
    """The shard's tokens as a read-only np.memmap (nothing is read until used), after checking its
    header against the tokenizer's hash and the size of the file (and, when meta.json gives them, its
    token count and checksum). verify: also recompute the checksum, reading the whole file."""
    itemsize, count, crc, tok = read_header(path)
    if tok != tokenizer_hash:
        raise DataError(f"shard {path} was written by tokenizer {tok[:16]}, but its folder's meta.json names "
                        f"tokenizer {tokenizer_hash[:16]}: the folder mixes two preparations; {_AGAIN}")
    expected = HEADER.size + count * itemsize
    size = os.path.getsize(path)
    if size != expected:
        how = "truncated" if size < expected else "longer than its header says"
        raise DataError(f"shard {path} is {how}: {size} bytes, but its header says {count} tokens of {itemsize} "
                        f"bytes ({expected} bytes with the header); it was cut short or changed: {_AGAIN}")
    if (tokens is not None and tokens != count) or (crc32 is not None and crc32 != crc):
        raise DataError(f"shard {path} holds {count} tokens with checksum {crc:08x}, but meta.json says {tokens} "
                        f"tokens with checksum {crc32 or 0:08x}: the folder mixes two preparations; {_AGAIN}")
    dtype = np.dtype("<u2" if itemsize == 2 else "<u4")
    if count == 0:
        return np.zeros(0, dtype)
    mm = np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(count,))
    if verify:
        got = 0
        for i in range(0, count, 1 << 24):  # 16 Mi tokens at a time: the page cache, not memory, holds it
            got = zlib.crc32(mm[i:i + (1 << 24)], got)
        if got != crc:
            raise DataError(f"shard {path} is corrupted: the checksum of its tokens is {got:08x}, its header "
                            f"says {crc:08x}; copy it again or {_AGAIN}")
    return mm


class SplitTokens:
    """One split's tokens, stored in one or more shards and read in place: a 1-D array-like of ``size``
    tokens of ``dtype`` whose ``windows(starts, length)`` gathers (B, length) windows (crossing shard
    boundaries where they must), so Batches reads only the windows it needs."""

    ndim = 1

    def __init__(self, parts, dtype):
        self.parts = [p for p in parts if p.size]
        self.dtype = np.dtype(dtype)
        self.bounds = np.concatenate([[0], np.cumsum([p.size for p in self.parts], dtype=np.int64)])  # (P + 1,)
        self.size = int(self.bounds[-1])
        self.shape = (self.size,)

    def __len__(self):
        return self.size

    def __repr__(self):
        return f"SplitTokens({self.size} {self.dtype} tokens in {len(self.parts)} shards)"

    def take(self, positions):
        """tokens[positions] for an integer array of positions (any shape), as an array of that shape."""
        pos = np.asarray(positions, np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= self.size):
            raise IndexError(f"token positions {pos.min()}..{pos.max()} outside 0..{self.size - 1}")
        if len(self.parts) == 1:
            return self.parts[0][pos]
        out = np.empty(pos.shape, self.dtype)
        part = np.searchsorted(self.bounds, pos, side="right") - 1  # which shard holds each position
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[k][pos[sel] - self.bounds[k]]
        return out

    def windows(self, starts, length):
        """(B, length) tokens: row b is tokens[starts[b] : starts[b] + length]."""
        starts = np.asarray(starts, np.int64).reshape(-1)  # (B,)
        return self.take(starts[:, None] + np.arange(length, dtype=np.int64))  # (B, length)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if len(self.parts) == 1:
                return self.parts[0][key]
            return self.take(np.arange(start, stop, step, dtype=np.int64))
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([key + self.size if key < 0 else key]))[0]
        return self.take(key)

    def __array__(self, dtype=None, copy=None):
        whole = self.parts[0][:] if len(self.parts) == 1 else np.concatenate(self.parts) if self.parts \
            else np.zeros(0, self.dtype)
        return np.asarray(whole, dtype=dtype)


def read_meta(folder):
    """The meta.json of a prepared folder, checked for format and version."""
    path = os.path.join(folder, META)
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise DataError(f"{folder} has no {META}: it is not a prepared folder, or its prepare did not finish; "
                        f"run `python -m hpr.data prepare --out {folder} ...`") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; {_AGAIN}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(f"{path} is not the meta.json of hpr token shards version {VERSION}; {_AGAIN}")
    return meta


class TokenShards:
    """A prepared folder for the trainer: ``train`` and ``val`` (SplitTokens, memory-mapped), the
    ``tokenizer`` (loaded on first use), ``vocab_size``, ``eot``, ``hash`` (the tokenizer's),
    ``bytes_per_token`` per split (text bytes / tokens, measured when preparing) and ``meta``.
    verify: recompute every shard's checksum now (reads all of it: rank 0 can do it alone and broadcast
    its verdict); sizes, headers and the tokenizer are always checked."""

    def __init__(self, folder, *, verify=True):
        self.path = os.path.abspath(os.fspath(folder))
        self.meta = meta = read_meta(self.path)
        tok = meta["tokenizer"]
        self.hash, self.vocab_size, self.eot = tok["hash"], int(tok["vocab_size"]), tok["eot"]
        self.dtype = np.dtype(meta["dtype"])
        self.bytes_per_token = {}
        for s in SPLITS:
            info = meta["splits"][s]
            parts = [open_shard(os.path.join(self.path, sh["file"]), tokenizer_hash=self.hash, tokens=sh["tokens"],
                                crc32=sh["crc32"], verify=verify) for sh in info["shards"]]
            split = SplitTokens(parts, self.dtype)
            if split.size == 0:
                raise DataError(f"{self.path}: the {s} split has no tokens; prepare it again with more documents "
                                "or another --val-permille")
            setattr(self, s, split)
            self.bytes_per_token[s] = info["bytes"] / info["tokens"]
        self._tokenizer = None

    def __repr__(self):
        return (f"TokenShards({self.path}: {self.train.size} train + {self.val.size} val tokens, vocab "
                f"{self.vocab_size}, {self.bytes_per_token['val']:.2f} bytes/token in val)")

    @property
    def tokenizer(self):
        """The tokenizer the shards were made with (its tokenizer.json checked against the hash)."""
        if self._tokenizer is None:
            if self.hash == BYTES:
                self._tokenizer = ByteTokenizer()
            else:
                tok = Tokenizer.from_file(os.path.join(self.path, TOKENIZER_FILE))
                if tok.hash != self.hash:
                    raise DataError(f"{tok.name} is not the tokenizer {self.path}'s shards were made with "
                                    f"(sha256 {tok.hash[:16]}, meta.json says {self.hash[:16]}); {_AGAIN}")
                self._tokenizer = tok
        return self._tokenizer

    def check_tokenizer(self, expected_hash, what="the checkpoint"):
        """DataError unless these shards were made by the tokenizer whose hash is expected_hash."""
        if expected_hash != self.hash:
            raise DataError(f"{self.path} was prepared with tokenizer {self.hash[:16]}, but {what} uses "
                            f"tokenizer {str(expected_hash)[:16]}: token ids would mean other text. Prepare "
                            f"the data again with {what}'s tokenizer.json (--tokenizer), or start a new run")

    def check_context(self, context):
        """DataError unless both splits hold at least one window of context + 1 tokens."""
        context = _count(context, "context", minimum=1)
        for s in SPLITS:
            n = getattr(self, s).size
            if n < context + 1:
                raise DataError(f"the {s} split of {self.path} has {n} tokens, fewer than one window of "
                                f"context + 1 = {context + 1}: prepare more text or use a smaller context")

    def bits_per_byte(self, nats_per_token, split="val"):
        """A loss in nats per token as bits per byte of text: nats / ln 2 / (bytes per token)."""
        return float(nats_per_token) / np.log(2.0) / self.bytes_per_token[split]
