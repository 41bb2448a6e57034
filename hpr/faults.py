"""Faults injected on purpose, for the failure tests: HPR_FAULT names them, the trainer (hpr.train)
fires them. Unset (always, outside tests) the trainer holds None and each hook costs one test of it.
The value is one or more rules joined by ';', each ``kind@step=N[,rank=R]`` (step=N+ : from step N
on; no rank: every rank), kind one of:

  nan_grad      a NaN in this rank's gradient during backward (before its bucket is reduced)
  kill          SIGKILL this rank after the step's forward (mid-step), as the OOM killer does
  segfault      SIGSEGV there instead (a crash: faulthandler prints the rank's Python stack)
  stall         sleep there instead, alive but silent (a missing peer)
  kill_in_save  SIGKILL this rank in the step's checkpoint save, after its files are written
  kill_mid_file SIGKILL it in the save with half of its first file written (a partial tensor file)
  kill_after_meta, kill_after_rename, kill_after_latest
                SIGKILL it (rank 0: the committing rank) at the save's commit points: meta.json written
                and fsynced; the folder renamed to its final name; `latest` moved
  disk_full     the checkpoint write fails with ENOSPC
  read_only     creating the checkpoint folder fails with EROFS
  drift         nudge one parameter by one ulp after the step (replicas drift apart)
  stall_setup   (step=0) sleep 4 s in the trainer's setup, before the corpus is loaded, saying so on
                stdout (a slow corpus load: a signal then arrives before the first step)

The setting is read once with the others (hpr.config's ``fault``); a run that has it says so on rank 0
("HPR_FAULT=... is set: faults will be injected (tests only)").

Usage: ``HPR_FAULT='nan_grad@step=3,rank=1;kill_in_save@step=6,rank=0' mpiexec -n 2 python
examples/train_lm.py ...``; in code ``faults = Faults.from_config(rank); kinds = faults.at(step)``."""
import errno
import os
import signal
import sys
import time

import numpy as np

from . import config
from .errors import ConfigError


class Faults:
    """The rules of HPR_FAULT for one rank (see the module's docstring)."""

    KINDS = ("nan_grad", "kill", "segfault", "stall", "kill_in_save", "disk_full", "read_only", "drift",
             "kill_mid_file", "kill_after_meta", "kill_after_rename", "kill_after_latest", "stall_setup")
    # hpr.checkpoint.save's fault points, and the kind that kills there
    SAVE_KILLS = {"partial": "kill_mid_file", "written": "kill_in_save", "meta": "kill_after_meta",
                  "renamed": "kill_after_rename", "latest": "kill_after_latest"}

    def __init__(self, spec, rank):
        self.spec, self.rank, self.rules = spec, rank, []
        form = f"HPR_FAULT={spec!r}: write kind@step=N[,rank=R] (step=N+ for N on), kinds {', '.join(self.KINDS)}"
        for item in filter(None, (x.strip() for x in spec.split(";"))):
            kind, _, rest = item.partition("@")
            try:
                opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv.strip())
                step = opts.pop("step")
                rule = (kind.strip(), int(step.rstrip("+")), step.endswith("+"),
                        int(opts.pop("rank")) if "rank" in opts else None)
            except (ValueError, KeyError):
                raise ConfigError(form) from None
            if rule[0] not in self.KINDS or opts:
                raise ConfigError(form)
            self.rules.append(rule)

    @classmethod
    def from_config(cls, rank, settings=None):
        """This rank's rules from the fault setting (HPR_FAULT) of settings (an hpr.config.Config, default
        the current one), or None when it is unset: always, outside tests."""
        spec = (settings if settings is not None else config.current()).fault
        return cls(spec, rank) if spec else None

    def at(self, step):
        """The kinds that fire on this rank at this step (a set, empty for most steps)."""
        return {k for k, s, on, r in self.rules if (step == s or (on and step > s)) and r in (None, self.rank)}

    @staticmethod
    def die(sig=signal.SIGKILL):
        sys.stdout.flush()
        os.kill(os.getpid(), sig)

    def stall_setup(self):
        """The stall_setup kind: say so, then sleep through a slow setup (signals still run their handlers)."""
        if "stall_setup" in self.at(0):
            print(f"rank {self.rank}: setup stalled (HPR_FAULT stall_setup)", flush=True)
            time.sleep(4)

    def save_hook(self, step):
        """hpr.checkpoint.save's fault(point, path) for this step."""
        kinds = self.at(step)

        def hook(point, path):
            if point == "mkdir" and "read_only" in kinds:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS) + " (HPR_FAULT)", path)
            if point == "write" and "disk_full" in kinds:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (HPR_FAULT)", path)
            if self.SAVE_KILLS.get(point) in kinds:
                self.die()
        return hook


def wrap_ready(kinds, ready, grads):
    """backward's on_ready, wrapped for HPR_FAULT: ready(None) kills or stalls this rank (mid-step);
    nan_grad puts a NaN into the first gradient element that becomes final, before its bucket leaves."""
    state = {"nan": "nan_grad" in kinds}

    def wrapped(k):
        if k is None:
            if "kill" in kinds:
                Faults.die()
            if "segfault" in kinds:
                Faults.die(signal.SIGSEGV)
            if "stall" in kinds:
                time.sleep(3600)
            return
        if state["nan"] and k > 0:
            grads[k - 1] = np.nan
            state["nan"] = False
        ready(k)
    return wrapped
