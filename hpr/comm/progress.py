"""Operations in flight: the Handle of a background allreduce, the Request of a point-to-point
message, and the progress thread that runs iallreduce calls on a channel of their own while the caller
computes. Owns when an operation counts as done and what its wait returns or raises; a staged device
array is copied back in wait(), in the waiting thread (which owns the device). Does not own how a
collective runs (channel.py) or how arrays are staged (buffers.py).

Usage: ``h = comm.iallreduce(bucket); ...; h.wait()``; at exit ``stop_progress_threads()``."""
import queue
import sys
import threading
import weakref
from time import perf_counter_ns

from . import wait
from .wait import wait_all

_running = weakref.WeakSet()  # every started Progress, for stop_progress_threads


class Handle:
    """A background collective in flight: ``done()`` tests, ``wait()`` blocks (sleeping, not spinning)
    and returns the array, or raises what the collective raised. t_start / t_done: when the background
    thread began and ended it (perf_counter_ns; for timelines, hpr.trace)."""

    __slots__ = ("_event", "_exc", "_x", "_buf", "t_start", "t_done")

    def __init__(self, x, buf=None):
        self._event, self._exc, self._x = threading.Event(), None, x
        self._buf = buf  # the buffers.Buffer the thread reduces: finished (copied back) in wait()
        self.t_start = self.t_done = 0

    def done(self):
        return self._event.is_set()

    def wait(self):
        self._event.wait()
        if self._buf is not None:
            self._buf.finish(ok=self._exc is None)
        if self._exc is not None:
            raise self._exc
        return self._x


class Request:
    """A point-to-point operation in flight; ``wait()`` is polite and has the deadline. A receive into
    a device array staged through host memory copies it to the device when waited on."""

    __slots__ = ("_req", "_peer", "_ctx", "_buf")

    def __init__(self, req, peer, ctx, buf=None):
        self._req, self._peer, self._ctx, self._buf = req, peer, ctx, buf

    def done(self):
        return bool(self._req.Test())

    def wait(self):
        wait_all([self._req], [self._peer], self._ctx)
        if self._buf is not None:
            self._buf.finish()


class Progress:
    """The background thread that runs iallreduce (and ireduce_scatter, iallgather) calls in submission
    order on its own Channel."""

    def __init__(self, channel):
        self.channel = channel
        self.queue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="hpr-progress", daemon=True)
        self.thread.start()
        _running.add(self)

    def submit(self, handle, x, dcode, ocode, avg, gpu=None):
        """Queue an in-place allreduce of x (1-D; on device gpu when not None) for the thread."""
        self.queue.put((handle, x, dcode, ocode, avg, gpu))

    def submit_call(self, handle, run):
        """Queue run(channel) -> result (another collective on the thread's channel, e.g. a
        reduce_scatter or an allgather); handle.wait() returns the result."""
        self.queue.put((handle, run))

    def _run(self):
        wait.short_sleeps()
        while True:
            item = self.queue.get()
            if item is None:
                return
            h = item[0]
            h.t_start = perf_counter_ns()
            try:
                if len(item) == 2:  # submit_call: the result replaces the handle's array
                    h._x = item[1](self.channel)
                else:
                    _, x, dcode, ocode, avg, gpu = item
                    self.channel.allreduce(x, dcode, ocode, avg, "iallreduce", gpu)
            except BaseException as e:  # handed to the waiter
                h._exc = e
            h.t_done = perf_counter_ns()
            h._event.set()

    def stop(self):
        """Ask the thread to end after the collectives queued so far and wait for it, at most the
        channel's deadline plus a second (each of their waits ends by then). Returns whether it
        stopped; says so on stderr when it did not (MPI may then finalize under it)."""
        self.queue.put(None)
        limit = self.channel.timeout + 1.0
        self.thread.join(timeout=limit)
        _running.discard(self)
        if self.thread.is_alive():
            print(f"hpr: the iallreduce progress thread did not stop within {limit:g} s (a collective is "
                  "still waiting); MPI may finalize under it", file=sys.stderr, flush=True)
            return False
        return True


def stop_progress_threads():
    """At exit, before mpi4py finalizes MPI: stop background threads so none is inside MPI then.
    (Windows and communicators are left to MPI_Finalize: freeing them is collective, and ranks may
    reach exit in different states.)"""
    for p in list(_running):
        p.stop()
