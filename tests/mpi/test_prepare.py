"""hpr.data.prepare under mpiexec: the ranks tokenise disjoint units, and every file of the prepared folder
is byte-identical to a one-rank prepare of the same inputs (run here on COMM_SELF), for text folders,
JSON Lines, Parquet and standard input together; a bad record found by any rank, or a bad input found
while planning, is the same DataError on every rank, with nothing written. Run by tests/run_all.py under
mpiexec -n 2, 3, 4, 8."""
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.data import TokenShards, prepare, train_bpe
from hpr.errors import DataError

pytestmark = pytest.mark.mpi(min_size=2)

_SELF = []


def self_comm():
    """A one-rank hpr Communicator over COMM_SELF (the single-process reference), made once."""
    if not _SELF:
        from hpr.comm import Communicator

        _SELF.append(Communicator(MPI.COMM_SELF))
    return _SELF[0]


@pytest.fixture(scope="module")
def shared():
    """A folder every rank sees (made by rank 0), removed at the end."""
    comm = MPI.COMM_WORLD
    path = comm.bcast(tempfile.mkdtemp(prefix="hpr-prepare-") if comm.rank == 0 else None, root=0)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def stdin_bytes():
    return b"".join(json.dumps({"text": f"from standard input, record {i} " + "z" * (i % 13)}).encode() + b"\n"
                    for i in range(120))


@pytest.fixture(scope="module")
def inputs(shared):
    """(list of --data arguments, tokenizer path): a folder of text files, JSON Lines, Parquet, stdin."""
    comm = MPI.COMM_WORLD
    root = os.path.join(shared, "inputs")
    if comm.rank == 0:
        import pyarrow as pa
        import pyarrow.parquet as pq

        r = np.random.default_rng(7)
        words = "alpha beta gamma delta εψιλον 日本 def return ( ) : = + 0 1 2".split()
        os.makedirs(os.path.join(root, "texts", "deep"))
        texts = []
        for i in range(40):
            t = " ".join(r.choice(words, int(r.integers(5, 400))))
            texts.append(t)
            with open(os.path.join(root, "texts", "deep" if i % 3 else "", f"f{i:02d}.txt"), "w") as f:
                f.write(t)
        with open(os.path.join(root, "web.jsonl"), "w") as f:
            for i in range(150):
                f.write(json.dumps({"text": texts[i % 40][: 50 + i], "n": i}) + "\n")
        pq.write_table(pa.table({"text": [t[::-1] for t in texts] * 2}), os.path.join(root, "t.parquet"),
                       row_group_size=9)
        train_bpe(texts, 400).save(os.path.join(root, "tok.json"))
    comm.Barrier()
    return [os.path.join(root, "texts"), os.path.join(root, "web.jsonl"), "-", os.path.join(root, "t.parquet")], \
        os.path.join(root, "tok.json")


def files_of(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.mark.parametrize("unit_bytes", [None, 700])
def test_shards_identical_at_any_rank_count(shared, inputs, unit_bytes):
    world = hpr.init()
    data, tok = inputs
    out = os.path.join(shared, f"out-{world.size}-{unit_bytes}")
    stream = io.BytesIO(stdin_bytes()) if world.rank == 0 else None
    r = prepare(data, tok, out, comm=world, val_permille=300, shard_tokens=1500, unit_bytes=unit_bytes,
                stdin=stream)
    metas = MPI.COMM_WORLD.allgather(r.meta)
    assert all(m == metas[0] for m in metas) and not r.skipped
    verdict = None
    if world.rank == 0:
        ref = os.path.join(shared, f"ref-{world.size}-{unit_bytes}")
        prepare(data, tok, ref, comm=self_comm(), val_permille=300, shard_tokens=1500, unit_bytes=unit_bytes,
                stdin=io.BytesIO(stdin_bytes()))
        got, want = files_of(out), files_of(ref)
        verdict = (sorted(got) == sorted(want), [n for n in want if got.get(n) != want[n]], len(want))
    same_names, differ, n_files = MPI.COMM_WORLD.bcast(verdict, root=0)
    assert same_names and differ == [] and n_files > 5
    d = TokenShards(out, verify=False)  # every rank maps the shards
    assert d.train.size == r.meta["splits"]["train"]["tokens"] and d.val.size > 0


def test_bad_record_is_one_error_on_every_rank(shared, inputs):
    world = hpr.init()
    data, tok = inputs
    bad = os.path.join(shared, f"bad-{world.size}.jsonl")
    if world.rank == 0:
        with open(bad, "w") as f:
            for i in range(200):
                f.write(json.dumps({"text": f"doc {i}"} if i != 171 else {"body": "no text here"}) + "\n")
    world.barrier()
    out = os.path.join(shared, f"bad-out-{world.size}")
    with pytest.raises(DataError) as e:
        prepare([data[0], bad], tok, out, comm=world, unit_bytes=300)
    assert f"{bad}:172: the record has no field 'text'" in str(e.value)
    messages = MPI.COMM_WORLD.allgather(str(e.value))
    assert all(m == messages[0] for m in messages)
    world.barrier()
    assert os.listdir(out) == []  # no shard, no temporary file, no meta.json


def test_bad_input_refused_before_any_work(shared, inputs):
    world = hpr.init()
    data, tok = inputs
    out = os.path.join(shared, f"never-{world.size}")
    with pytest.raises(DataError, match="t.parquet: no column 'body'"):
        prepare([data[0], data[3]], tok, out, comm=world, text_field="body")
    with pytest.raises(DataError, match="nowhere does not exist"):
        prepare([data[0], os.path.join(shared, "nowhere")], tok, out, comm=world)
    world.barrier()
    assert not os.path.exists(out)
