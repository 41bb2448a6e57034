"""A timeline of the whole job: each rank records spans (forward, backward, each gradient bucket's
reduction, pipeline sends and receives, optimizer, checkpoint ...), and at the end rank 0 gathers them
into one Chrome-trace / Perfetto JSON file (open it in https://ui.perfetto.dev or chrome://tracing):
a process per rank ("rank k"), a thread per track of that rank: "compute" (what the main thread does),
"pipeline" (sends, and receives = idle time) and "grad bucket k" (each bucket's reduction).

Off (the default) `on` is False and `span()` returns one shared do-nothing context (about 0.4 µs a
span); every other hook sits behind an `if trace.on:` test (one attribute check). On, a span costs
about 1.4 µs: two perf_counter_ns() readings and a tuple appended to a list. Clocks: align() (at
start; finish() does it if nobody did) gives every rank a common zero: exact for the ranks on rank 0's
host, which share its clock, and within half the shortest ping-pong round trip for ranks elsewhere.
(Taking each rank's zero at a barrier's exit was tried first: under load its exit skew was 1-4 ms,
longer than a gradient bucket's whole reduction.)

A floor module (the bottom layer, with hpr.errors and hpr.config): it imports no other part of hpr but
hpr.errors (for a bad path), so every layer may record into it. It owns the recording and the file,
not what is recorded, and reads no settings: hpr.init() starts it when the configuration asks
(HPR_TRACE, hpr.config) and tells it the world to gather over at exit.

Usage::

    trace.start("job.json")            # or HPR_TRACE=job.json: hpr.init() starts it
    trace.align(comm)                  # collective, optional: a common zero for the ranks' clocks
    with trace.span("forward"): ...
    trace.add("reduce", "grad bucket 0", t0, t1, elements=n)  # a span known by its ends (perf_counter_ns)
    trace.finish(comm)                 # collective: rank 0 writes the file (atexit does it otherwise)
"""
import atexit
import json
import os
import sys
import time

import numpy as np

from .errors import ConfigError

now = time.perf_counter_ns

on = False
TRACKS = {"compute": 0, "pipeline": 1}  # thread ids; "grad bucket k" is 100 + k, other names follow
MAX_EVENTS = 2_000_000  # per rank (about 200 MB at worst); spans past it are counted, not kept

_events = []  # (name, track, t0_ns, t1_ns, args or None)
_dropped = 0
_path = None
_zero = None  # the common zero, read on this rank's perf_counter_ns() clock
_world = None  # the Communicator an unfinished trace is gathered over at exit (set by hpr.init)
PINGS = 16  # round trips per rank on another host than rank 0's, when aligning clocks
_TAG = 7377  # of align()'s ping-pong, on the user's communicator


class _Null:
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _Null()


class _Span:
    __slots__ = ("name", "track", "args", "t0")

    def __init__(self, name, track, args):
        self.name, self.track, self.args = name, track, args

    def __enter__(self):
        self.t0 = now()
        return self

    def __exit__(self, *exc):
        add(self.name, self.track, self.t0, now(), **self.args)
        return False


def span(name, track="compute", **args):
    """A context manager timing its block as one span on `track` (a no-op when tracing is off)."""
    return _Span(name, track, args) if on else _NULL


def add(name, track, t0, t1, **args):
    """Record a span from t0 to t1 (perf_counter_ns values) on `track`; args go into the event."""
    global _dropped
    if len(_events) < MAX_EVENTS:
        _events.append((name, track, t0, t1, args or None))
    else:
        _dropped += 1


def recorded():
    """How many spans this rank holds now."""
    return len(_events)


def start(path):
    """Turn recording on; `finish` (or the exit of the process) writes `path`."""
    global on, _path
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ConfigError(f"trace file {path}: folder {d} does not exist; create it first")
    if _path is None:
        atexit.register(_at_exit)
    _path, on = path, True


def align(comm, hosts=None):
    """Collective over comm (an hpr Communicator): a common zero for every rank's clock. Ranks on rank
    0's host share its clock (perf_counter_ns is the host's CLOCK_MONOTONIC), so their zero is rank 0's
    reading exactly; a rank on another host learns its clock's offset from rank 0's by ping-pong,
    keeping the round trip that was shortest (Cristian's method: the error is at most half of it).
    hosts: each rank's host name (default: the Communicator's record of them)."""
    global _zero
    if comm is None or comm.size == 1:
        _zero = now()
        return
    hosts = hosts or [h for h, _ in comm.procs]
    far = [r for r in range(comm.size) if hosts[r] != hosts[0]]
    ref = comm.bcast_obj(now() if comm.rank == 0 else None, root=0)
    offset = np.zeros(1, np.int64)  # this rank's clock minus rank 0's
    ping, stamp = np.zeros(1, np.int64), np.zeros(1, np.int64)
    if comm.rank == 0:
        for r in far:
            best = None
            for _ in range(PINGS):
                t1 = now()
                comm.send(ping, r, _TAG)
                comm.recv(stamp, r, _TAG)
                t2 = now()
                if best is None or t2 - t1 < best[0]:
                    best = (t2 - t1, int(stamp[0]) - (t1 + t2) // 2)
            comm.send(np.array([best[1]], np.int64), r, _TAG)
    elif comm.rank in far:
        for _ in range(PINGS):
            comm.recv(ping, 0, _TAG)
            stamp[0] = now()
            comm.send(stamp, 0, _TAG)
        comm.recv(offset, 0, _TAG)
    _zero = ref + int(offset[0])


def events(rank=0):
    """This rank's spans as Chrome-trace "X" events (timestamps in µs from the common zero)."""
    z = _zero if _zero is not None else (_events[0][2] if _events else 0)
    out = []
    for name, track, t0, t1, args in _events:
        e = {"name": name, "ph": "X", "pid": rank, "tid": _tid(track), "ts": (t0 - z) / 1e3, "dur": (t1 - t0) / 1e3}
        if args:
            e["args"] = args
        out.append(e)
    return out


def _tid(track):
    t = TRACKS.get(track)
    if t is None:
        t = 100 + int(track[12:]) if track.startswith("grad bucket ") else TRACKS.setdefault(track, len(TRACKS))
    return t


def finish(comm=None, path=None):
    """Collective: gather every rank's spans to rank 0 and write one trace file there (written to a
    temporary name and renamed). Returns the path on rank 0, None elsewhere. Recording stops."""
    global on, _path
    path = path or _path
    if path is None:
        return None
    on, _path = False, None
    if _zero is None:
        align(comm)
    rank = comm.rank if comm is not None else 0
    mine = (events(rank), sorted({track for _, track, _, _, _ in _events}, key=_tid), _dropped)
    everyone = comm.gather_obj(mine, root=0) if comm is not None and comm.size > 1 else [mine]
    _events.clear()
    if rank != 0:
        return None
    first = min((e["ts"] for evs, _, _ in everyone for e in evs), default=0.0)  # the file starts at 0
    out = []
    for r, (evs, tracks, dropped) in enumerate(everyone):
        for e in evs:
            e["ts"] -= first
        out.append({"name": "process_name", "ph": "M", "pid": r, "tid": 0, "args": {"name": f"rank {r}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": r, "tid": 0, "args": {"sort_index": r}})
        for t in tracks:
            out.append({"name": "thread_name", "ph": "M", "pid": r, "tid": _tid(t), "args": {"name": t}})
            out.append({"name": "thread_sort_index", "ph": "M", "pid": r, "tid": _tid(t),
                        "args": {"sort_index": _tid(t)}})
        if dropped:
            out.append({"name": f"{dropped} spans dropped (over {MAX_EVENTS})", "ph": "i", "s": "p", "pid": r,
                        "tid": 0, "ts": 0})
        out.extend(evs)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": out, "displayTimeUnit": "ms"}, f, separators=(",", ":"))
    os.replace(tmp, path)
    return path


def set_world(comm):
    """The Communicator (hpr's world) that an unfinished trace is gathered over at exit; hpr.init()
    sets it. None: at exit, each process writes its own spans."""
    global _world
    _world = comm


def _at_exit():
    """A program that never called finish() (HPR_TRACE, or start() alone): gather over the world
    hpr.init() made (every rank exits through here), else write this process's spans alone."""
    path = _path
    if path is None:
        return
    try:
        finish(_world)
    except Exception as e:  # noqa: BLE001 - at exit, say why there is no trace rather than raise
        sys.stderr.write(f"hpr.trace: could not write {path}: {e}\n")
