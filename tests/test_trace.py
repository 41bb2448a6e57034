"""hpr.trace: the recorder alone (off records nothing; on writes valid Chrome-trace JSON, atomically),
and the timeline of real 2-rank training jobs (--trace, HPR_TRACE): a track per rank, the expected
spans, and their order within each step, across the gradient buckets and across the ranks."""
import json
import os
import re

import pytest

from launch import mpi_job, script
from train_jobs import job, succeeded

SKEW_US = 20  # on one host the ranks share a clock: only rounding to µs separates them


@pytest.fixture
def recorder(monkeypatch):
    """hpr.trace with fresh module state, restored afterwards."""
    from hpr import trace

    monkeypatch.setattr(trace, "_events", [])
    for name, value in (("on", False), ("_path", None), ("_zero", None), ("_dropped", 0)):
        monkeypatch.setattr(trace, name, value)
    return trace


def test_off_records_nothing_and_costs_one_shared_object(recorder, tmp_path):
    t = recorder
    assert not t.on
    a, b = t.span("forward"), t.span("backward", "pipeline", micro=1)
    assert a is b  # one shared do-nothing context: no allocation per span
    with a:
        pass
    assert t._events == [] and t.finish() is None
    assert list(tmp_path.iterdir()) == []


def test_on_writes_chrome_trace_json_atomically(recorder, tmp_path):
    t = recorder
    path = tmp_path / "t.json"
    t.start(str(path))
    t.align(None)
    with t.span("step", step=1):
        with t.span("forward"):
            pass
        t0 = t.now()
        t.add("reduce", "grad bucket 3", t0, t0 + 5000, elements=10)
    assert t.finish(None) == str(path)
    assert not t.on and t._events == []
    assert sorted(os.listdir(tmp_path)) == ["t.json"]  # no temporary left behind
    events = json.loads(path.read_text())["traceEvents"]
    meta = {(e["name"], e["tid"]): e["args"] for e in events if e["ph"] == "M"}
    assert meta[("process_name", 0)] == {"name": "rank 0"}
    assert meta[("thread_name", 0)] == {"name": "compute"} and meta[("thread_name", 103)] == {"name": "grad bucket 3"}
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"step", "forward", "reduce"}
    step, fwd, red = spans["step"], spans["forward"], spans["reduce"]
    assert step["args"] == {"step": 1} and red["args"] == {"elements": 10} and red["dur"] == 5.0
    assert step["ts"] <= fwd["ts"] and fwd["ts"] + fwd["dur"] <= step["ts"] + step["dur"]
    assert all(e["pid"] == 0 and e["ts"] >= 0 for e in spans.values())


def test_bad_trace_path_is_a_config_error(recorder, tmp_path):
    from hpr import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        recorder.start(str(tmp_path / "missing" / "t.json"))
    assert not recorder.on


def load(path):
    """{rank: [X events sorted by start]} and the metadata events of a trace file."""
    doc = json.loads(open(path).read())
    by_rank, meta = {}, []
    for e in doc["traceEvents"]:
        (meta if e["ph"] == "M" else by_rank.setdefault(e["pid"], [])).append(e)
    for evs in by_rank.values():
        evs.sort(key=lambda e: e["ts"])
    return by_rank, meta


def end(e):
    return e["ts"] + e["dur"]


def inside(e, outer):
    return outer["ts"] <= e["ts"] and end(e) <= end(outer)


def test_data_parallel_timeline(corpus, env, tmp_path):
    """2 ranks, 3 gradient buckets, a checkpoint and a validation: every step of every rank runs forward,
    then backward, then waits for the buckets, then the optimizer; each bucket is queued during or
    after backward, reduced after it was queued and before its wait ended, one after another; and the
    two ranks' reductions of the same bucket overlap in time (one needs the other)."""
    path = tmp_path / "trace.json"
    out, _ = succeeded(job(corpus, env, tmp_path, "--steps", 4, "--bucket-mb", 0.05, "--ckpt-dir", tmp_path / "ck",
                           "--eval-every", 2, "--trace", path))
    assert f"trace: {path} (2 rank(s)" in out, out
    by_rank, meta = load(path)
    assert sorted(by_rank) == [0, 1]
    assert {e["args"]["name"] for e in meta if e["name"] == "process_name"} == {"rank 0", "rank 1"}
    threads = {(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"}
    assert {(r, t) for r in (0, 1) for t in ("compute", "grad bucket 0", "grad bucket 1", "grad bucket 2")} <= threads
    reduces = {}
    for r, evs in by_rank.items():
        names = {e["name"] for e in evs}
        assert {"step", "forward", "backward", "sync grads", "grad norm", "optimizer", "queued", "reduce",
                "wait bucket 0", "wait bucket 2", "eval", "checkpoint", "gather state", "write"} <= names, names
        steps = [e for e in evs if e["name"] == "step"]
        assert [e["args"]["step"] for e in steps] == [1, 2, 3, 4]
        assert len([e for e in evs if e["name"] == "checkpoint"]) == 1  # at the end only
        for st in steps:
            mine = [e for e in evs if e["name"] != "step" and inside(e, st)]
            one = {n: [e for e in mine if e["name"] == n] for n in ("forward", "backward", "sync grads", "optimizer")}
            assert all(len(v) == 1 for v in one.values()), {n: len(v) for n, v in one.items()}
            fwd, bwd, sync, opt = (one[n][0] for n in ("forward", "backward", "sync grads", "optimizer"))
            assert end(fwd) <= bwd["ts"] and end(bwd) <= sync["ts"] and end(sync) <= opt["ts"]
            assert all(e["tid"] == 0 for e in (fwd, bwd, sync, opt))
            prev_end = None
            for k in range(3):
                q = [e for e in mine if e["name"] == "queued" and e["tid"] == 100 + k]
                red = [e for e in mine if e["name"] == "reduce" and e["tid"] == 100 + k]
                wait = [e for e in mine if e["name"] == f"wait bucket {k}"]
                assert len(q) == len(red) == len(wait) == 1, (k, q, red, wait)
                q, red, wait = q[0], red[0], wait[0]
                assert bwd["ts"] <= q["ts"] and end(q) <= red["ts"] + 1 and end(red) <= end(wait) + 1
                assert inside(wait, sync)
                assert prev_end is None or prev_end <= red["ts"] + 1  # one background thread, in order
                prev_end = end(red)
                reduces[(r, st["args"]["step"], k)] = red
    for s in range(1, 5):
        for k in range(3):
            a, b = reduces[(0, s, k)], reduces[(1, s, k)]
            assert a["ts"] <= end(b) + SKEW_US and b["ts"] <= end(a) + SKEW_US, (s, k, a, b)


def test_pipeline_timeline(corpus, env, tmp_path):
    """2 stages, 2 micro-batches: stage 1 receives each micro-batch's activations after stage 0 sent them,
    and runs its forward after the receive; stage 0 receives the gradients after stage 1's backward."""
    path = tmp_path / "trace.json"
    succeeded(job(corpus, env, tmp_path, "--steps", 2, "--pp", 2, "--micro-batches", 2, "--trace", path))
    by_rank, meta = load(path)
    assert {(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"} >= {
        (0, "compute"), (0, "pipeline"), (1, "compute"), (1, "pipeline")}
    first, last = by_rank[0], by_rank[1]
    for st0, st1 in zip([e for e in first if e["name"] == "step"], [e for e in last if e["name"] == "step"]):
        def of(evs, st, name, micro):
            got = [e for e in evs if e["name"] == name and inside(e, st) and e.get("args", {}).get("micro") == micro]
            assert len(got) == 1, (name, micro, got)
            return got[0]
        for mb in (0, 1):
            send = of(first, st0, "send activations", mb)
            recv = of(last, st1, "recv activations", mb)
            assert send["tid"] == recv["tid"] == 1 and send["args"]["stage"] == 1 and recv["args"]["stage"] == 0
            assert end(of(first, st0, "forward", mb)) <= send["ts"]
            assert send["ts"] <= end(recv) + SKEW_US  # a message arrives after it is sent
            assert end(recv) <= of(last, st1, "forward", mb)["ts"]
            back = of(first, st0, "recv gradients", mb)
            assert end(of(last, st1, "backward", mb)) <= end(back) + SKEW_US
            assert end(back) <= of(first, st0, "backward", mb)["ts"]
        assert [e for e in first if e["name"] == "wait sends" and inside(e, st0)]


def test_hpr_trace_in_any_program(tmp_path, env):
    """HPR_TRACE=FILE with no trainer: spans of the program's own, merged over the ranks at exit."""
    prog = script(tmp_path, """
        import time, hpr
        from hpr import trace
        comm = hpr.init()
        for i in range(3):
            with trace.span("work", "mine", i=i):
                time.sleep(0.01 * (comm.rank + 1))
        """, "prog.py")
    path = tmp_path / "t.json"
    p = mpi_job(2, [prog], tmp_path, env, 60, HPR_TRACE=path)
    assert p.code == 0, p.err
    by_rank, meta = load(path)
    assert sorted(by_rank) == [0, 1]
    for r, evs in by_rank.items():
        assert [e["args"]["i"] for e in evs if e["name"] == "work"] == [0, 1, 2]
        assert all(e["dur"] >= 1e4 * (r + 1) * 0.9 for e in evs)
    assert {(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"} == {(0, "mine"), (1, "mine")}


def test_clocks_of_ranks_on_other_hosts_are_aligned_by_ping_pong(tmp_path, env):
    """Pretend every rank is on its own host, so align() measures each clock's offset from rank 0's by
    ping-pong; the ranks really share one clock, so the offset found must be (close to) zero."""
    prog = script(tmp_path, """
        import hpr
        from hpr import trace
        comm = hpr.init()
        trace.align(comm, hosts=[f"host{r}" for r in range(comm.size)])
        print(f"OFFSET {comm.rank} {trace._zero - comm.bcast_obj(trace._zero, root=0)}", flush=True)
        """, "prog.py")
    p = mpi_job(3, [prog], tmp_path, env, 60)
    assert p.code == 0, p.err
    got = {int(r): int(v) for r, v in re.findall(r"OFFSET (\d+) (-?\d+)", p.out)}  # lines may interleave
    assert sorted(got) == [0, 1, 2] and got[0] == 0
    assert all(abs(v) < 200_000 for v in got.values()), got  # ns: well under the 1-4 ms of a barrier's skew
