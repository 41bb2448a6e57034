"""Polite waiting on MPI requests, and the deadline every wait in hpr carries.

A wait tests its requests in a short spin, then sleeps for an eighth of the time it has already waited
(20 µs to 2 ms), so a rank waiting in hpr gives its core to a rank that computes, whatever the launcher
(MPICH's hydra puts each rank in its own session, where a spinning waiter starves a computing rank
~5×). The spin keeps latency low when the peer is about to arrive; the sleep is at most ~12% of the
wait. Past the deadline it raises CommTimeout naming the operation and the peers still missing.

Owns the wait loop, the OpContext a wait belongs to and the timeout message. Does not own the settings:
the deadline and the spin are the channel's (from its CommConfig: ``timeout``, ``spin_seconds``), carried
by the OpContext, so two communicators with different settings never change each other's waits.

Usage: ``wait_all([req1, req2], [peer1, peer2], ctx)`` where ctx describes the operation."""
import os
import socket
import time

from mpi4py import MPI

from ..cpu import cpu_kernels
from ..errors import CommTimeout


def short_sleeps():
    """Let this thread's sleeps be as short as asked (Linux timer slack 1 µs instead of 50 µs)."""
    cpu_kernels().set_timer_slack(1000)


def process_state(host, pid):
    """'dead' or 'alive' for process pid on host when host is this machine (a zombie is dead: it has
    exited and awaits its parent); None when it runs elsewhere and hpr cannot tell."""
    if host != socket.gethostname():
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return "dead" if stat[stat.rindex(")") + 2] in "ZXx" else "alive"
    except FileNotFoundError:
        return "dead"
    except (OSError, ValueError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "dead"
        except OSError:
            pass
        return "alive"


class OpContext:
    """What a wait is part of: operation, sequence number, rank, size (for the timeout message), and
    how it waits: timeout, the deadline in seconds; spin, seconds to test before the first sleep."""

    __slots__ = ("op", "seq", "rank", "size", "timeout", "peer_names", "peer_procs", "spin")

    def __init__(self, op, seq, rank, size, timeout, peer_names=None, peer_procs=None, spin=0.0):
        self.op, self.seq, self.rank, self.size, self.timeout = op, seq, rank, size, timeout
        self.peer_names = peer_names  # maps a peer index in this comm to a name, e.g. world rank
        self.peer_procs = peer_procs  # [(host, pid)] of every rank of this comm, to tell dead from stuck
        self.spin = spin

    def timeout_error(self, peers):
        """CommTimeout naming the operation and the missing peers, and whether they are dead (their
        process has exited, seen for ranks on this node) or alive and stuck; a dead rank of the group
        that this wait did not name (the peer is waiting for it in turn) is named too."""
        who = ", ".join(self.name(p) for p in peers) or "?"
        head = (f"{self.op} #{self.seq} on rank {self.rank} of {self.size} timed out after {self.timeout:g} s "
                f"waiting for rank {who}. ")
        state = {p: process_state(*self.peer_procs[p]) for p in range(self.size)} if self.peer_procs else {}
        missing = {state.get(p) for p in peers}
        others = [p for p in range(self.size) if p != self.rank and p not in peers and state.get(p) == "dead"]
        restart = ("The job cannot go on: restart it (the trainer's --resume continues from the last complete "
                   "checkpoint).")
        if peers and missing == {"dead"}:
            pids = ", ".join(str(self.peer_procs[p][1]) for p in peers)
            return CommTimeout(head + f"It is dead: its process (pid {pids}, on this node) has exited - killed, "
                               f"crashed or out of memory; its own output or the launcher's says why. {restart}")
        if others:
            dead = ", ".join(f"{self.name(p)} (pid {self.peer_procs[p][1]})" for p in others)
            return CommTimeout(head + f"Rank {dead} of this group is dead (its process has exited - killed, "
                               f"crashed or out of memory), and rank {who} is likely waiting for it. {restart}")
        if peers and missing == {"alive"}:
            return CommTimeout(head + "It is alive but did not arrive: stuck, slower than HPR_TIMEOUT allows, or "
                               "in a different collective. Check its output; raise HPR_TIMEOUT if it is only slow; "
                               "HPR_CHECK=1 finds mismatched calls.")
        return CommTimeout(head + "That rank has likely died, or is stuck, or called a different collective. "
                           "Check its output; raise HPR_TIMEOUT if it is only slow; HPR_CHECK=1 finds "
                           "mismatched calls.")

    def name(self, p):
        return str(p) if self.peer_names is None else self.peer_names(p)


def abandon(reqs, grace=1.0):
    """Cancel the requests still in flight, wait up to grace seconds for the cancels to complete, and
    free whatever is left (MPI then completes it on its own), so no request handle leaks."""
    live = [r for r in reqs if r != MPI.REQUEST_NULL]
    for r in live:
        try:
            r.Cancel()
        except MPI.Exception:
            pass
    t0 = time.perf_counter()
    while live and time.perf_counter() - t0 < grace:
        live = [r for r in live if r != MPI.REQUEST_NULL and not r.Test()]
        if live:
            time.sleep(0.001)
    for r in live:
        if r != MPI.REQUEST_NULL:
            try:
                r.Free()
            except MPI.Exception:
                pass


def wait_all(reqs, peers, ctx):
    """Wait for every request (reqs[i] talks to peers[i]) politely, within ctx.timeout."""
    if MPI.Request.Testall(reqs):
        return
    t0 = time.perf_counter()
    testall, sleep, perf, spin = MPI.Request.Testall, time.sleep, time.perf_counter, ctx.spin
    while True:
        if testall(reqs):
            return
        waited = perf() - t0
        if waited > spin:
            if waited > ctx.timeout:
                pending = [p for r, p in zip(reqs, peers) if not r.Test()]
                abandon(reqs)
                raise ctx.timeout_error(pending)
            d = waited * 0.125
            sleep(0.000002 if d < 0.000002 else (0.002 if d > 0.002 else d))
