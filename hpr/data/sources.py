"""Where documents come from: folders of text files (each file one document), JSON Lines (one record per
line, its text in a field), Parquet (one row per document, its text in a column, read one row group at
a time in record batches, never the whole file), and ``-``: JSON Lines on standard input. Owns listing
the inputs, cutting them into units of work (a run of text files, a byte range of a JSON Lines file, a
Parquet row group) that any rank can read on its own, reading a unit's documents, and the train /
validation rule. Does not own tokenisation (tokenizer.py) or where tokens go (prepare.py, shards.py).
Usage: ``for text, is_val in documents(list_inputs(["notes/", "web.jsonl"]), "text", 50): ...``

The split is by document, never inside one, and depends only on where the document is:
  * a text file is validation when ``zlib.crc32(relpath) % 1000 < val_permille`` (as Corpus's rule);
  * record i of a JSON Lines or Parquet file (i: its 0-based line or row number) is validation when
    ``splitmix64(crc32(relpath) * 2**32 + i) % 1000 < val_permille``.
relpath is the file's path below the folder given, or its base name when the file itself was given, or
``-`` for standard input. Text is UTF-8: invalid bytes read as U+FFFD (counted by the caller), and the
byte count of a document is that of its UTF-8 encoding, what bits per byte divides by.
"""
import json
import os
import sys
import sysconfig
import zlib
from collections import namedtuple

import numpy as np

from ..errors import DataError
from .batches import splitmix64
from .corpus import SUFFIXES, _list_files

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
STDIN = "-"

# One input file. source: index of the --data argument it came from; rel: its name for the split rule;
# kind: "text", "jsonl", "parquet" or "stdin"; size and mtime_ns: None for stdin.
FileEntry = namedtuple("FileEntry", "source rel path kind size mtime_ns")
# A unit of work. text: files[start:stop]; jsonl: the lines of files[file] that start in bytes
# [start, stop); parquet: row group `start` of files[file]; stdin: the stream (read by rank 0 alone).
# nbytes: input bytes it covers (for the progress bar).
Unit = namedtuple("Unit", "kind file start stop nbytes")


class Inputs:
    """The listed inputs: ``files`` (FileEntry, in order: arguments as given, a folder's files by
    relpath), ``description`` for messages, ``roots`` (each argument as an absolute path, or "-"),
    ``total_bytes`` (stdin not counted) and ``fingerprint``
    (every file's name, size and modification time; None when stdin is read, which cannot be compared)."""

    def __init__(self, files, description, roots):
        self.files, self.description, self.roots = list(files), description, list(roots)
        self.total_bytes = sum(f.size or 0 for f in self.files)
        stdin = any(f.kind == "stdin" for f in self.files)
        self.fingerprint = None if stdin else [[f.source, f.rel, f.path, f.kind, f.size, f.mtime_ns]
                                               for f in self.files]


class RecordError(DataError):
    """A bad record inside a unit; ``record`` is its number counted from the unit's first record (the
    caller, who knows where the unit starts in its file, names the line or row)."""

    def __init__(self, record, message):
        super().__init__(message)
        self.record, self.message = record, message


Docs = namedtuple("Docs", "texts nbytes records n_records")
# texts: the documents' text (empty documents are left out); nbytes: int64, UTF-8 bytes of each;
# records: int64, for a text unit each document's index in Inputs.files, for a record unit its record
# number counted from the unit's first record; n_records: records (lines, rows) the unit spans.


def kind_of(path):
    """The input kind a file's name says: jsonl, parquet, or text."""
    low = path.lower()
    return "jsonl" if low.endswith(JSONL_SUFFIXES) else "parquet" if low.endswith(PARQUET_SUFFIXES) else "text"


def list_inputs(paths=None, suffixes=SUFFIXES):
    """Inputs for the --data arguments: files, folders (read recursively for text files ending in one
    of suffixes, and .jsonl/.ndjson/.parquet/.pq files; hidden and site-packages folders skipped) and
    ``-``; none given: the Python standard library's *.py files (as Corpus's default)."""
    if not paths:
        root = os.path.abspath(sysconfig.get_paths()["stdlib"])
        files = [FileEntry(0, rel, p, "text", size, mt) for rel, p, size, mt in _list_files(root, (".py",))]
        v = sys.version_info
        return Inputs(files, f"Python {v.major}.{v.minor} standard library {root} (*.py)", [root])
    suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    files, roots = [], []
    for i, arg in enumerate(paths):
        arg = os.fspath(arg)
        roots.append(arg if arg == STDIN else os.path.abspath(os.path.expanduser(arg)))
        if arg == STDIN:
            if any(f.kind == "stdin" for f in files):
                raise DataError("- (standard input) is given twice in --data: it can be read once")
            files.append(FileEntry(i, STDIN, STDIN, "stdin", None, None))
            continue
        root = os.path.abspath(os.path.expanduser(arg))
        if os.path.isdir(root):
            found = _list_files(root, suffixes + JSONL_SUFFIXES + PARQUET_SUFFIXES)
            if not found:
                raise DataError(f"folder {root} has no readable files ending in "
                                f"{', '.join(suffixes + JSONL_SUFFIXES + PARQUET_SUFFIXES)}: point --data at "
                                "text files, JSON Lines or Parquet")
            files += [FileEntry(i, rel, p, kind_of(p), size, mt) for rel, p, size, mt in found]
        elif os.path.isfile(root):
            if not os.access(root, os.R_OK):
                raise DataError(f"data file {root} is not readable: fix its permissions or pass another file")
            st = os.stat(root)
            files.append(FileEntry(i, os.path.basename(root), root, kind_of(root), st.st_size, st.st_mtime_ns))
        elif os.path.exists(root):
            raise DataError(f"data path {root} is neither a regular file nor a folder: pass text files, "
                            "folders, JSON Lines or Parquet files, or - for JSON Lines on standard input")
        else:
            raise DataError(f"data path {root} does not exist: pass text files, folders, JSON Lines or "
                            "Parquet files, or - for JSON Lines on standard input")
    return Inputs(files, ", ".join(os.fspath(p) for p in paths), roots)


def plan_units(files, target_bytes, text_field):
    """The units of work over files, in document order, each about target_bytes of input. Parquet files
    are checked here (a column text_field holding strings), before any work."""
    units, run, run_bytes = [], None, 0
    for i, f in enumerate(files):
        if f.kind == "text":
            if run is None:
                run, run_bytes = i, 0
            run_bytes += f.size
            if run_bytes >= target_bytes:
                units.append(Unit("text", run, run, i + 1, run_bytes))
                run = None
            continue
        if run is not None:
            units.append(Unit("text", run, run, i, run_bytes))
            run = None
        if f.kind == "jsonl":
            units += [Unit("jsonl", i, a, min(a + target_bytes, f.size), min(target_bytes, f.size - a))
                      for a in range(0, f.size, target_bytes)]
        elif f.kind == "parquet":
            rows = _parquet_row_groups(f.path, text_field)
            total = max(1, sum(rows))
            units += [Unit("parquet", i, g, g + 1, f.size * n // total) for g, n in enumerate(rows)]
        else:
            units.append(Unit("stdin", i, 0, 0, 0))
    if run is not None:
        units.append(Unit("text", run, run, len(files), run_bytes))
    return units


def read_unit(unit, files, text_field, stream=None):
    """Docs of one unit (stdin: of the next chunk of about unit.nbytes of the stream, None at its end).
    A bad record raises RecordError (counted from the unit's first record); a file that cannot be read,
    DataError naming it."""
    if unit.kind == "text":
        return _read_text_files(files, unit.start, unit.stop)
    if unit.kind == "jsonl":
        path = files[unit.file].path
        try:
            with open(path, "rb") as f:
                data = _line_range(f, unit.start, unit.stop)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from None
        return _parse_jsonl(data, text_field)
    if unit.kind == "parquet":
        return _read_row_group(files[unit.file].path, unit.start, text_field)
    stream = sys.stdin.buffer if stream is None else stream
    data = stream.read(max(1, unit.nbytes))
    if not data:
        return None
    if not data.endswith(b"\n"):
        data += stream.readline()  # finish the line the chunk cut
    return _parse_jsonl(data, text_field)


def where(f, first_record, record):
    """How a message names record `record` of a unit whose first record is first_record in file f."""
    n = first_record + record
    if f.kind == "parquet":
        return f"{f.path}: row {n}"
    return f"{'standard input' if f.kind == 'stdin' else f.path}:{n + 1}"  # a line number, from 1


class SplitRule:
    """The train/validation rule of the module docstring, applied unit by unit in document order; it
    counts each file's records so far to know the record number at which a unit starts."""

    def __init__(self, files, val_permille):
        self.files, self.val_permille = files, val_permille
        self.crc = [zlib.crc32(os.fsencode(f.rel)) for f in files]
        self.first = [0] * len(files)  # records of each file seen so far (in units already applied)

    def is_val(self, unit, docs):
        """Bool per document of docs (the unit's next Docs), and advance past them."""
        if unit.kind == "text":
            return np.array([self.crc[int(i)] % 1000 < self.val_permille for i in docs.records], bool)
        base = self.first[unit.file]
        self.first[unit.file] += docs.n_records
        key = np.uint64(self.crc[unit.file]) * np.uint64(1 << 32) + (base + docs.records).astype(np.uint64)
        return splitmix64(key) % np.uint64(1000) < np.uint64(self.val_permille)

    def where(self, unit, record):
        """The line or row a RecordError raised in unit (at `record` from its start) is at."""
        return where(self.files[unit.file], self.first[unit.file], record)


def documents(inputs, text_field="text", val_permille=50, target_bytes=1 << 22):
    """Every document of inputs in order as (text, is_val): the sequential reader, for training a
    tokenizer and for references. Raises DataError naming the file and line or row of a bad record."""
    rule = SplitRule(inputs.files, val_permille)
    for unit in plan_units(inputs.files, target_bytes, text_field):
        while True:
            if unit.kind == "stdin":
                unit = unit._replace(nbytes=target_bytes)
            try:
                docs = read_unit(unit, inputs.files, text_field)
            except RecordError as e:
                raise DataError(f"{rule.where(unit, e.record)}: {e.message}") from None
            if docs is None:
                break
            yield from zip(docs.texts, rule.is_val(unit, docs).tolist())
            if unit.kind != "stdin":
                break


def _utf8(raw):
    """(text, bytes) of raw bytes read as UTF-8; invalid bytes become U+FFFD (then the count is that of
    the text as read, which is what a tokenizer sees)."""
    try:
        return raw.decode("utf-8"), len(raw)
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        return text, len(text.encode("utf-8"))


def _clean(text):
    """(text, UTF-8 bytes) of a string from JSON or Parquet; lone surrogates (JSON's \\ud800 escapes),
    which no tokenizer can take, become U+FFFD."""
    if text.isascii():
        return text, len(text)
    try:
        return text, len(text.encode("utf-8"))
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
        return text, len(text.encode("utf-8"))


def _read_text_files(files, start, stop):
    texts, nbytes, records = [], [], []
    for i in range(start, stop):
        try:
            with open(files[i].path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise DataError(f"cannot read {files[i].path}: {e}; fix it or leave it out of --data") from None
        if raw:
            text, n = _utf8(raw)
            texts.append(text)
            nbytes.append(n)
            records.append(i)
    return Docs(texts, np.array(nbytes, np.int64), np.array(records, np.int64), stop - start)


def _line_range(f, start, stop):
    """The bytes of the lines of open file f that start at an offset in [start, stop)."""
    f.seek(max(0, start - 1))
    if start > 0 and f.read(1) != b"\n":
        f.readline()  # this line started before `start`: the previous unit has it
    pos = f.tell()
    if pos >= stop:
        return b""
    data = f.read(stop - pos)
    if data and not data.endswith(b"\n"):
        data += f.readline()  # the line at stop - 1 runs on past stop
    return data


def _parse_jsonl(data, text_field):
    """Docs of the JSON Lines in data; blank lines count as records (line numbers stay true) but hold
    no document."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts, nbytes, records = [], [], []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise RecordError(k, f"not a JSON record ({e}); JSON Lines hold one JSON object per line") from None
        if not isinstance(rec, dict):
            raise RecordError(k, f"a JSON {type(rec).__name__} where a record (an object) was expected")
        if text_field not in rec:
            fields = ", ".join(repr(x) for x in list(rec)[:12]) or "none"
            raise RecordError(k, f"the record has no field {text_field!r} (its fields: {fields}); pass "
                                 "--text-field with the field that holds the text")
        text = rec[text_field]
        if not isinstance(text, str):
            raise RecordError(k, f"field {text_field!r} holds a {type(text).__name__}, not text")
        if text:
            text, n = _clean(text)
            texts.append(text)
            nbytes.append(n)
            records.append(k)
    return Docs(texts, np.array(nbytes, np.int64), np.array(records, np.int64), len(lines))


def _parquet():
    import pyarrow.parquet  # lazy: 0.35-0.7 s to import, and only Parquet inputs need it
    return pyarrow, pyarrow.parquet


def _parquet_row_groups(path, text_field):
    """Rows per row group of a Parquet file, after checking it has a string column text_field."""
    pa, pq = _parquet()
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read {path} as Parquet: {e}") from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        cols = ", ".join(repr(n) for n in schema.names[:12])
        raise DataError(f"{path}: no column {text_field!r} (its columns: {cols}); pass --text-field with "
                        "the column that holds the text")
    t = schema.field(text_field).type
    view = getattr(pa.types, "is_string_view", lambda _: False)  # pyarrow >= 16
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or view(t)):
        raise DataError(f"{path}: column {text_field!r} holds {t}, not text; pass --text-field with the "
                        "column that holds the text")
    meta = pf.metadata
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


def _read_row_group(path, group, text_field, batch_rows=4096):
    pa, pq = _parquet()
    texts, nbytes, records = [], [], []
    row = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=[text_field]):
            for j, text in enumerate(batch.column(0).to_pylist()):
                if text is None:
                    raise RecordError(row + j, f"column {text_field!r} is null: give every row text, or "
                                               "filter the null rows out")
                if text:
                    text, n = _clean(text)
                    texts.append(text)
                    nbytes.append(n)
                    records.append(row + j)
            row += batch.num_rows
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read row group {group} of {path}: {e}") from None
    return Docs(texts, np.array(nbytes, np.int64), np.array(records, np.int64), row)
