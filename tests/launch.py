"""Starting the programs under test as a user would (alone, or under mpiexec) and ending them whole.

Owns: finding the mpiexec launcher, listing a process's descendants, killing a process tree, running
a command in its own session under a time limit (run_tree), and a test's MPI job (script, mpi_job).
Not the fixtures (tests/conftest.py, which re-exports these names) nor the trainer's command line
(tests/train_jobs.py). A plain module, not a test module, so that tests/run_all.py (a script) shares it
with the tests.

Usage: ``r = mpi_job(2, [script(tmp_path, "import hpr; hpr.init()")], tmp_path, env)``, then r.code, r.out"""
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

NO_MPIEXEC = "no mpiexec found: pip install mpich (or load your site's MPI) and try again"


def find_mpiexec():
    """The mpiexec beside this Python (a virtual environment with PyPI's mpich), else the one on PATH;
    None when there is neither."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def mpiexec():
    """find_mpiexec(), or FileNotFoundError saying how to get one."""
    found = find_mpiexec()
    if found is None:
        raise FileNotFoundError(NO_MPIEXEC)
    return found


@functools.lru_cache(maxsize=None)
def is_hydra():
    """Whether mpiexec is MPICH's hydra (whose reports of a failed job the tests read)."""
    r = subprocess.run([mpiexec(), "--version"], capture_output=True, text=True, timeout=60)
    return "HYDRA" in r.stdout


def _children():
    """{ppid: [pid]} of every process now alive."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces and ")"
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid):
    """Every process below pid, parents before their children (the ranks of mpiexec sit below
    hydra_pmi_proxy, each in its own session, so killing mpiexec's process group does not reach them)."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc, sig=signal.SIGKILL):
    """sig to proc and everything below it, deepest first, then to proc's process group (what was
    started in its own session and has since lost its parent) and proc. Returns the descendants' pids."""
    pids = descendants(proc.pid)
    for p in reversed(pids):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, sig)  # proc is not reaped yet, so its pid (= its group's id) is not reused
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    return pids


@dataclasses.dataclass
class Finished:
    """How a command run by run_tree ended: exit code, its output (None where not captured), seconds,
    and whether it outlived its limit (then the tree was killed and code is the kill's)."""
    code: int
    out: str | None
    err: str | None
    seconds: float
    timed_out: bool


def run_tree(cmd, limit, capture=False, merge=False, **popen):
    """Run cmd in its own session and wait for it; past `limit` seconds kill the whole tree
    (kill_tree) and report timed_out. capture: keep stdout and stderr (text); merge: stderr into
    stdout. Other keywords (cwd, env, ...) go to subprocess.Popen."""
    if capture:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True)
    t0 = time.time()
    proc = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **popen)
    try:
        out, err = proc.communicate(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        timed_out = True
    return Finished(proc.returncode, out, err, time.time() - t0, timed_out)


def script(folder, body, name="job.py"):
    """folder/name holding body (dedented): a program for mpi_job. Returns its path."""
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def mpi_job(n, argv, cwd, env, limit=90, merge=False, launcher=(), **extra):
    """``mpiexec [launcher] -n n python argv...`` in cwd with env and the extra variables, output captured
    (merge: stderr into stdout). A job that outlives limit is killed, tree and all, and fails the test."""
    e = dict(env, **{k: str(v) for k, v in extra.items()})
    cmd = [mpiexec(), *launcher, "-n", str(n), sys.executable, *map(str, argv)]
    r = run_tree(cmd, limit, capture=True, merge=merge, env=e, cwd=cwd)
    if r.timed_out:
        pytest.fail(f"mpiexec -n {n} {' '.join(map(str, argv))} outlived {limit} s (a hang)\n{r.out}\n{r.err or ''}")
    return r
