"""Preparing token shards from text: list the inputs, tokenise them (under MPI, the ranks take disjoint
units of work), split train/validation by document, and write the shards, the tokenizer and meta.json,
whole or not at all. Owns the protocol between ranks and the rules of the prepared folder's life (when
it is current, what replaces what). Does not own the formats (shards.py), the readers (sources.py) or
the tokenizers (tokenizer.py). Usage: ``prepare(["web.jsonl"], "tok.json", "prepared/", comm=comm)``

Ranks (N = comm.size). Rank 0 lists the inputs, cuts them into units (about total / 8N bytes each, 1 to
16 MiB) and broadcasts the plan with the tokenizer's bytes, or the error that stops it. Then round k
gives unit k*N + r to rank r: every rank reads and encodes its unit, rank 0 gathers the N results and
appends them to the shards in unit order, so the shards are the documents' tokens in document order,
byte-identical for any N. Standard input is read by rank 0 alone, a chunk per round (the other ranks
wait for one chunk at most, never for the whole stream). After each round rank 0 broadcasts its verdict:
go on, or the first error in document order (a bad record found by any rank), which every rank raises.

Files: shards are written under temporary names, in the target folder; only after the last round does
rank 0 remove the old meta.json, rename the shards and the tokenizer into place, write meta.json last
and remove shards of an earlier preparation that the new meta.json does not list. An error (or a kill)
before that leaves the folder's previous preparation as it was; nothing half-written is ever under a
final name, and a folder without meta.json is never read.
"""
import dataclasses
import hashlib
import json
import os
import sys
import traceback

import numpy as np
from tqdm import tqdm

from ..errors import DataError, HprError
from .atomic import AtomicFile
from .batches import _count
from .corpus import SUFFIXES, _check_val_permille, default_cache_dir
from .shards import FORMAT, HEADER, META, SHARD_NAME, SPLITS, TOKENIZER_FILE, VERSION, ShardWriter
from .sources import RecordError, SplitRule, list_inputs, plan_units, read_unit
from .tokenizer import from_bytes, load_tokenizer

DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per shard, as llm.c's
STDIN_CHUNK = 1 << 22  # bytes of standard input per round


@dataclasses.dataclass
class Prepared:
    """What prepare did: the folder, its meta.json, and whether it was already current (skipped)."""
    path: str
    meta: dict
    skipped: bool


class Solo:
    """A stand-in communicator for one process (prepare with comm=None)."""
    rank, size = 0, 1

    def bcast_obj(self, obj, root=0):
        return obj

    def gather_obj(self, obj, root=0):
        return [obj]


def prepare(data, tokenizer, out, *, comm=None, text_field="text", val_permille=50,
            shard_tokens=DEFAULT_SHARD_TOKENS, suffixes=SUFFIXES, progress=None, stdin=None, unit_bytes=None):
    """Prepare the inputs data (list_inputs' arguments: files, folders, "-"; None: the standard
    library's sources) with tokenizer (a path, "bytes" or a tokenizer) into the folder out (None: a
    folder under default_cache_dir() named by the inputs, the tokenizer and the options, so the same
    text is prepared once and found again: the trainer's way for raw text). comm: a
    Communicator (all its ranks call this) or None. progress: show a progress bar on rank 0 (default:
    when stderr is a terminal). stdin: a binary stream read for "-" (default sys.stdin.buffer).
    unit_bytes: input bytes per unit of work (default: total / 8N, 1 to 16 MiB); the shards do not
    depend on it.
    Returns Prepared on every rank; raises DataError on every rank."""
    comm = Solo() if comm is None else comm
    held = {}  # rank 0's tokenizer object (the others build theirs from the bytes in the plan)
    plan = _agree(comm, lambda: _plan(held, data, tokenizer, out, comm.size, text_field, val_permille,
                                      shard_tokens, suffixes, unit_bytes))
    if plan["current"] is not None:
        return Prepared(plan["out"], plan["current"], True)
    tok = held["tok"] if comm.rank == 0 else from_bytes(plan["tokenizer"], plan["tokenizer_name"])
    writers = {}
    try:
        if comm.rank == 0:
            writers = {s: ShardWriter(plan["out"], s, tok.dtype, tok.hash, plan["options"]["shard_tokens"])
                       for s in SPLITS}
        stats = _tokenise(comm, plan, tok, writers, progress, stdin)
        meta = _agree(comm, lambda: _finish(plan, tok, writers, stats))
    finally:
        for w in writers.values():
            w.discard()  # after a commit there is nothing left to discard
    return Prepared(plan["out"], meta, False)


def _agree(comm, fn):
    """fn() run on rank 0, its result on every rank; an error in it raised on every rank (rank 0 raises
    its own exception, the others a DataError, or an HprError for an unexpected one, with its text)."""
    result, failure, error = None, None, None
    if comm.rank == 0:
        try:
            result = fn()
        except DataError as e:
            failure, error = ("data", str(e)), e
        except Exception as e:  # a bug or an OS error on rank 0: the others must not wait for it
            failure, error = ("other", f"rank 0 failed: {type(e).__name__}: {e}"), e
    result, failure = comm.bcast_obj((result, failure), root=0)
    if failure is not None:
        if error is not None:
            raise error
        raise (DataError if failure[0] == "data" else HprError)(failure[1])
    return result


def _plan(held, data, tokenizer, out, size, text_field, val_permille, shard_tokens, suffixes, unit_bytes):
    """Rank 0: the plan every rank follows (or a DataError before any work); the tokenizer in held."""
    if not isinstance(text_field, str) or not text_field:
        raise DataError(f"text_field={text_field!r}: give the name of the JSON field or Parquet column that holds "
                        "the text (--text-field)")
    options = {"text_field": text_field, "val_permille": _check_val_permille(val_permille, "50 means 5%"),
               "shard_tokens": _count(shard_tokens, "shard_tokens", minimum=1),
               "suffixes": list((suffixes,) if isinstance(suffixes, str) else suffixes)}
    tok = held["tok"] = load_tokenizer(tokenizer)
    inputs = list_inputs([data] if isinstance(data, (str, os.PathLike)) else data, options["suffixes"])
    target = int(min(16 << 20, max(1 << 20, inputs.total_bytes // (8 * size)))) if unit_bytes is None \
        else _count(unit_bytes, "unit_bytes", minimum=1)
    units = plan_units(inputs.files, target, text_field)  # checks Parquet columns
    if out is None:
        name = json.dumps([inputs.roots, tok.hash, options], sort_keys=True).encode()
        out = os.path.join(default_cache_dir(), "shards-" + hashlib.sha256(name).hexdigest()[:24])
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"--out {out} is a file: prepared shards go in a folder; pass a folder's name")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot make the output folder {out}: {e}") from None
    key = None
    if inputs.fingerprint is not None:
        ident = {"format": FORMAT, "version": VERSION, "tokenizer": tok.hash, "options": options,
                 "inputs": inputs.fingerprint}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return {"out": out, "options": options, "key": key, "current": _current(out, key), "units": units,
            "files": inputs.files, "description": inputs.description, "roots": inputs.roots,
            "total_bytes": inputs.total_bytes, "tokenizer": tok.to_bytes(), "tokenizer_name": tok.name}


def _current(out, key):
    """The folder's meta.json when it was prepared from the same inputs, tokenizer and options and all
    its shards are there at their sizes; else None."""
    if key is None:
        return None
    try:
        with open(os.path.join(out, META), "rb") as f:
            meta = json.loads(f.read())
        if meta.get("key") != key:
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        for s in SPLITS:
            for sh in meta["splits"][s]["shards"]:
                if os.path.getsize(os.path.join(out, sh["file"])) != HEADER.size + sh["tokens"] * itemsize:
                    return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _encode(unit, files, text_field, tok, stream):
    """One unit read and encoded on this rank: ("ok", docs without their texts, tokens, counts),
    ("end",) at the end of stdin, or the error to report: ("record", record, message), ("error", message)."""
    try:
        docs = read_unit(unit, files, text_field, stream)
        if docs is None:
            return ("end",)
        tokens, counts = tok.encode_documents(docs.texts) if docs.texts else (np.zeros(0, tok.dtype),
                                                                             np.zeros(0, np.int64))
        return ("ok", docs._replace(texts=None), tokens, counts)
    except RecordError as e:
        return ("record", e.record, e.message)
    except DataError as e:
        return ("error", str(e))
    except Exception:  # a bug on this rank: reported by every rank, with its traceback, instead of a hang
        return ("bug", traceback.format_exc())


def _rounds(units, size):
    """Each round's units by rank: N file units, or a stdin chunk for rank 0 alone (the caller repeats
    that round until the stream ends)."""
    i = 0
    while i < len(units):
        if units[i].kind == "stdin":
            yield [units[i]._replace(nbytes=STDIN_CHUNK)] + [None] * (size - 1)
            i += 1
            continue
        j = i
        while j < len(units) and j - i < size and units[j].kind != "stdin":
            j += 1
        yield units[i:j] + [None] * (size - (j - i))
        i = j


def _tokenise(comm, plan, tok, writers, progress, stdin):
    """The rounds of the module docstring; returns rank 0's per-split counts (None elsewhere)."""
    files, text_field = plan["files"], plan["options"]["text_field"]
    rule = SplitRule(files, plan["options"]["val_permille"]) if comm.rank == 0 else None
    stats = {s: {"documents": 0, "bytes": 0, "tokens": 0} for s in SPLITS}
    stream = (stdin if stdin is not None else sys.stdin.buffer) if comm.rank == 0 else None
    show = (sys.stderr.isatty() if progress is None else progress) and comm.rank == 0
    with tqdm(total=plan["total_bytes"] or None, unit="B", unit_scale=True, disable=not show,
              desc=f"prepare ({comm.size} rank{'s' if comm.size > 1 else ''})") as bar:
        for batch in _rounds(plan["units"], comm.size):
            while True:
                mine = batch[comm.rank]
                piece = _encode(mine, files, text_field, tok, stream) if mine is not None else None
                pieces = comm.gather_obj(piece, root=0)
                more = _agree(comm, lambda: _append(batch, pieces, rule, writers, stats, bar))
                if not (batch[0].kind == "stdin" and more):
                    break
    return stats if comm.rank == 0 else None


def _append(batch, pieces, rule, writers, stats, bar):
    """Rank 0: a round's results appended to the shards in unit order. True while stdin has more."""
    for unit, piece in zip(batch, pieces):
        if unit is None:
            continue
        if piece[0] == "record":
            raise DataError(f"{rule.where(unit, piece[1])}: {piece[2]}")
        if piece[0] == "error":
            raise DataError(piece[1])
        if piece[0] == "bug":
            raise HprError(f"reading or encoding a unit of {rule.files[unit.file].path} failed:\n{piece[1]}")
        if piece[0] == "end":
            return False
        _, docs, tokens, counts = piece
        is_val = rule.is_val(unit, docs)  # (documents,)
        for s, sel in (("train", ~is_val), ("val", is_val)):
            if not sel.any():
                continue
            writers[s].write(tokens if sel.all() else tokens[np.repeat(sel, counts)])
            st = stats[s]
            st["documents"] += int(sel.sum())
            st["bytes"] += int(docs.nbytes[sel].sum())
            st["tokens"] += int(counts[sel].sum())
        bar.update(unit.nbytes if unit.kind != "stdin" else int(docs.nbytes.sum()))
    return True


def _finish(plan, tok, writers, stats):
    """Rank 0: check the splits, then put the new preparation in place (module docstring); its meta."""
    out, options = plan["out"], plan["options"]
    shards = {s: writers[s].finish() for s in SPLITS}
    n_docs = sum(stats[s]["documents"] for s in SPLITS)
    if n_docs == 0:
        raise DataError(f"{plan['description']}: no documents with text (every input is empty); nothing to prepare")
    for s, other in (("val", "train"), ("train", "val")):
        if stats[s]["tokens"] == 0:
            raise DataError(
                f"{plan['description']}: the {'validation' if s == 'val' else 'training'} split is empty: all "
                f"{n_docs} documents fell into the {other} split with --val-permille {options['val_permille']} "
                "(the split is by file or record, never inside one). Pass more documents (a folder of files, or "
                "JSON Lines with one record per document) or another --val-permille")
    meta = {"format": FORMAT, "version": VERSION, "key": plan["key"], "dtype": tok.dtype.name,
            "header_bytes": HEADER.size, "options": options,
            "tokenizer": {"name": os.path.basename(tok.name), "hash": tok.hash,
                          "vocab_size": tok.vocab_size, "eot": tok.eot,
                          "file": TOKENIZER_FILE if tok.to_bytes() is not None else None},
            "inputs": _describe_inputs(plan),
            "splits": {s: dict(stats[s], bytes_per_token=stats[s]["bytes"] / stats[s]["tokens"], shards=shards[s])
                       for s in SPLITS}}
    try:
        _remove(os.path.join(out, META))  # from here on the folder is not ready until meta.json is back
        for s in SPLITS:
            writers[s].commit()
        tok_path = os.path.join(out, TOKENIZER_FILE)
        if tok.to_bytes() is not None:
            with AtomicFile(tok_path) as f:
                f.write(tok.to_bytes())
        else:
            _remove(tok_path)
        with AtomicFile(os.path.join(out, META)) as f:
            f.write(json.dumps(meta, indent=1).encode())
    except OSError as e:
        raise DataError(f"cannot put the prepared files in place in {out}: {e}; the folder has no meta.json "
                        "now: free some space or fix its permissions, and prepare again") from None
    listed = {sh["file"] for s in SPLITS for sh in shards[s]}
    for name in os.listdir(out):
        if SHARD_NAME.match(name) and name not in listed:
            _remove(os.path.join(out, name))  # a shard of an earlier, longer preparation
    return meta


def _describe_inputs(plan):
    """meta.json's account of the inputs: per --data argument, its kinds, files and bytes."""
    sources = [{"path": root, "kinds": [], "files": 0, "bytes": 0} for root in plan["roots"]]
    for f in plan["files"]:
        d = sources[f.source]
        if f.kind not in d["kinds"]:
            d["kinds"].append(f.kind)
        d["files"] += 1
        d["bytes"] += f.size or 0
    return {"description": plan["description"], "sources": sources}


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
