"""Inputs users have: JSON Lines, Parquet, standard input and mixed folders, read by hpr.data.sources and
prepared into shards equal to the reference built here (the records this test wrote, split by the
documented rule, encoded by bytes); units cut anywhere (a JSON Lines byte range, a Parquet row group)
read the same documents; and a bad record is a DataError naming the file and line or row, with nothing
written."""
import io
import json
import os
import zlib

import numpy as np
import pytest

from hpr.data import TokenShards, documents, list_inputs, prepare, preparation, splitmix64
from hpr.data.sources import plan_units, read_unit
from hpr.errors import DataError

TEXTS = ["plain ascii text", "ünïcödé and 日本語", "", "emoji 🧪 here", "line\nbreaks\ninside", "x" * 300,
         "lone \ud800 surrogate", "tabs\tand  spaces"]


def record_is_val(rel, index, permille):
    """The documented rule for record `index` (0-based line or row) of a file named rel."""
    key = np.uint64(zlib.crc32(rel.encode())) * np.uint64(1 << 32) + np.uint64(index)
    return int(splitmix64(np.array([key]))[0] % np.uint64(1000)) < permille


def clean(text):
    return text.encode("utf-8", "replace").decode("utf-8")


def expected(rel, records, permille):
    """{split: bytes} of records [(index, text)] of file rel: text as UTF-8, lone surrogates as '?'
    (what encode('utf-8', 'replace') gives, the rule the readers apply)."""
    out = {"train": b"", "val": b""}
    for i, text in records:
        if text:
            out["val" if record_is_val(rel, i, permille) else "train"] += clean(text).encode()
    return out


def jsonl_records(n, seed=0):
    """[(line index, text or None for a blank line)]: varied texts, some blank lines, other fields."""
    r = np.random.default_rng(seed)
    return [(i, None if i % 17 == 5 else f"{TEXTS[i % len(TEXTS)]} #{i} " + "w" * int(r.integers(0, 40)))
            for i in range(n)]


def write_jsonl(path, records, field="text"):
    lines = []
    for i, text in records:
        lines.append("" if text is None else json.dumps({"id": i, field: text, "meta": {"k": [1, 2]}}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def shard_bytes(out):
    d = TokenShards(out)
    return {s: bytes(np.asarray(getattr(d, s)).astype(np.uint8)) for s in ("train", "val")}


@pytest.mark.parametrize("unit", [None, 13, 37, 500])
def test_jsonl(tmp_path, unit):
    recs = jsonl_records(300)
    write_jsonl(tmp_path / "web.jsonl", recs)
    want = expected("web.jsonl", [(i, t) for i, t in recs if t is not None], 300)
    prepare([tmp_path / "web.jsonl"], "bytes", tmp_path / "out", val_permille=300, unit_bytes=unit)
    assert shard_bytes(tmp_path / "out") == want
    got = list(documents(list_inputs([tmp_path / "web.jsonl"]), "text", 300, target_bytes=unit or 1 << 20))
    assert [t for t, _ in got] == [clean(t) for _, t in recs if t]


def test_jsonl_without_trailing_newline_and_crlf(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "one"}\r\n\r\n{"text": "two"}\r\n{"text": "three"}')
    for unit in (1, 5, 100):
        inputs = list_inputs([tmp_path / "a.jsonl"])
        texts = []
        for u in plan_units(inputs.files, unit, "text"):
            texts += read_unit(u, inputs.files, "text").texts
        assert texts == ["one", "two", "three"], unit


@pytest.mark.parametrize("row_group", [1, 7, 1000])
def test_parquet(tmp_path, row_group):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [TEXTS[i % len(TEXTS)] + f" row {i}" for i in range(120)]
    texts[9] = ""  # an empty row holds no document
    table = pa.table({"id": list(range(120)), "content": [clean(t) for t in texts]})
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=row_group)
    want = expected("data.parquet", list(enumerate(texts)), 250)
    prepare([tmp_path / "data.parquet"], "bytes", tmp_path / "out", text_field="content", val_permille=250)
    assert shard_bytes(tmp_path / "out") == want
    d = TokenShards(tmp_path / "out")
    assert sum(d.meta["splits"][s]["documents"] for s in ("train", "val")) == 119


def test_stdin(tmp_path, monkeypatch):
    recs = jsonl_records(200, seed=3)
    write_jsonl(tmp_path / "s.jsonl", recs)
    stream = io.BytesIO((tmp_path / "s.jsonl").read_bytes())
    monkeypatch.setattr(preparation, "STDIN_CHUNK", 300)  # many rounds
    r = prepare(["-"], "bytes", tmp_path / "out", val_permille=300, stdin=stream)
    assert shard_bytes(tmp_path / "out") == expected("-", [(i, t) for i, t in recs if t is not None], 300)
    assert r.meta["key"] is None  # standard input cannot be compared: a re-run prepares again
    again = prepare(["-"], "bytes", tmp_path / "out", val_permille=300, stdin=io.BytesIO(b'{"text": "x"}\n' * 40))
    assert not again.skipped


def test_mixed_folder_and_order(tmp_path):
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("file a")
    (root / "sub" / "b.md").write_text("file b")
    (root / "bad.txt").write_bytes(b"not utf-8: \xff\xfe end")
    write_jsonl(root / "sub" / "c.jsonl", [(0, "record c0"), (1, "record c1")])
    (root / "ignored.bin").write_bytes(b"\x00" * 10)
    inputs = list_inputs([root, tmp_path / "mixed" / "a.txt"])
    assert [(f.rel, f.kind) for f in inputs.files] == [("a.txt", "text"), ("bad.txt", "text"), ("sub/b.md", "text"),
                                                       ("sub/c.jsonl", "jsonl"), ("a.txt", "text")]
    docs = [t for t, _ in documents(inputs)]
    assert docs == ["file a", "not utf-8: \ufffd\ufffd end", "file b", "record c0", "record c1", "file a"]
    r = prepare([root], "bytes", tmp_path / "out", val_permille=500)
    total = sum(r.meta["splits"][s]["bytes"] for s in ("train", "val"))
    assert total == sum(len(d.encode()) for d in docs[:5])  # U+FFFD counts as the 3 bytes it is


def jsonl_error(tmp_path, bad_line, bad):
    recs = [(i, f"doc {i}") for i in range(60)]
    write_jsonl(tmp_path / "e.jsonl", recs)
    lines = (tmp_path / "e.jsonl").read_text().split("\n")
    lines[bad_line - 1] = bad
    (tmp_path / "e.jsonl").write_text("\n".join(lines))
    return tmp_path / "e.jsonl"


@pytest.mark.parametrize("bad, message", [
    ('{"body": "x", "id": 3}', "the record has no field 'text' \\(its fields: 'body', 'id'\\); pass --text-field"),
    ('{"text": 12}', "field 'text' holds a int, not text"),
    ('[1, 2]', "a JSON list where a record \\(an object\\) was expected"),
    ('{"text": "unterminated', "not a JSON record"),
])
@pytest.mark.parametrize("unit", [None, 40])
def test_jsonl_errors_name_file_and_line(tmp_path, bad, message, unit):
    path = jsonl_error(tmp_path, 47, bad)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"{path}:47: {message}"):
        prepare([path], "bytes", out, unit_bytes=unit)
    assert os.listdir(out) == []  # nothing at all: no shard, no temporary, no meta.json


def test_parquet_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"row {i}" for i in range(30)]
    texts[23] = None
    pq.write_table(pa.table({"text": texts}), tmp_path / "n.parquet", row_group_size=10)
    with pytest.raises(DataError, match=f"{tmp_path / 'n.parquet'}: row 23: column 'text' is null"):
        prepare([tmp_path / "n.parquet"], "bytes", tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match="c.parquet: no column 'text' \\(its columns: 'body', 'n'\\); pass --text-field"):
        prepare([tmp_path / "c.parquet"], "bytes", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()  # found while planning, before any work
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "i.parquet")
    with pytest.raises(DataError, match="i.parquet: column 'text' holds int64, not text"):
        prepare([tmp_path / "i.parquet"], "bytes", tmp_path / "out3")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read .*junk.parquet as Parquet"):
        prepare([tmp_path / "junk.parquet"], "bytes", tmp_path / "out4")


def test_input_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere does not exist"):
        list_inputs([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no readable files"):
        list_inputs([tmp_path / "empty"])
    with pytest.raises(DataError, match="given twice"):
        list_inputs(["-", "-"])
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no documents with text"):
        prepare([tmp_path / "blank.jsonl"], "bytes", tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file: prepared shards go in a folder"):
        prepare([tmp_path / "blank.jsonl"], "bytes", tmp_path / "f")
    with pytest.raises(DataError, match="val_permille=0"):
        prepare([tmp_path / "blank.jsonl"], "bytes", tmp_path / "out", val_permille=0)
