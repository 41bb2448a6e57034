"""Failures of the communicator, each in its own small job under mpiexec: an absent peer ends in
CommTimeout naming the operation and the peer (on collectives and on bcast_obj / gather_obj), the
message tells a dead peer from a stuck one, an exception or a death on one rank does not leave the
others hanging, and a bad HPR_ALLREDUCE is a ConfigError. (The trainer's failures, injected with
HPR_FAULT: test_train_failures.py.)"""
import os
import re
import subprocess
import sys

import pytest

from launch import mpi_job, run_tree, script


def mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else "mpiexec"


def launch(n, body, tmp_path, env, limit=90, **extra):
    """(the finished job, seconds) of ``mpiexec -n n python job.py``, job.py holding body, in tmp_path."""
    r = mpi_job(n, [script(tmp_path, body)], tmp_path, env, limit, **extra)
    return r, r.seconds


@pytest.mark.parametrize("algo", ["shm", "ring"])
def test_absent_peer_raises_comm_timeout(tmp_path, env, algo):
    p, took = launch(2, """
        import time, numpy as np, hpr
        comm = hpr.init(abort_on_exception=False)
        x = np.ones(1000, np.float32)
        comm.allreduce(x)  # one good call first: the failing one is #2
        if comm.rank == 0:
            try:
                comm.allreduce(x)
            except hpr.CommTimeout as e:
                print("TIMEOUT:", e, flush=True)
        else:
            time.sleep(4)  # never arrives
        """, tmp_path, env, HPR_TIMEOUT=1.5, HPR_ALLREDUCE=algo)
    assert p.code == 0, p.err
    line = [ln for ln in p.out.splitlines() if ln.startswith("TIMEOUT:")]
    assert line, p.out + p.err
    assert "allreduce #2" in line[0] and "rank 0 of 2" in line[0] and "waiting for rank 1" in line[0]
    assert took < 30


def test_exception_on_one_rank_aborts_the_job(tmp_path, env):
    p, took = launch(3, """
        import numpy as np, hpr
        comm = hpr.init()
        if comm.rank == 1:
            raise ValueError("bad input on rank 1")
        comm.allreduce(np.ones(10))  # ranks 0 and 2 would wait for rank 1 until HPR_TIMEOUT
        """, tmp_path, env, HPR_TIMEOUT=300)
    assert p.code != 0
    assert "bad input on rank 1" in p.err and "aborting the job" in p.err
    assert took < 60


def test_stuck_rank_ends_the_others_with_a_named_timeout(tmp_path, env):
    p, took = launch(3, """
        import time, numpy as np, hpr
        comm = hpr.init()
        comm.allreduce(np.ones(10))
        if comm.rank == 2:
            time.sleep(120)  # stuck: alive, but never arrives
        comm.allreduce(np.ones(10))
        """, tmp_path, env, HPR_TIMEOUT=2)
    assert p.code != 0
    assert "CommTimeout" in p.err and "waiting for rank 2" in p.err
    assert took < 60


def test_bad_environment_is_a_config_error(tmp_path, env):
    p, _ = launch(1, """
        import hpr
        try:
            hpr.init()
        except hpr.ConfigError as e:
            print("CONFIG:", e)
        """, tmp_path, env, HPR_ALLREDUCE="butterfly")
    assert "CONFIG: HPR_ALLREDUCE='butterfly' is not an algorithm" in p.out, p.out + p.err


def test_timeout_message_tells_dead_from_alive():
    import socket

    from hpr.comm.wait import OpContext, process_state

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    assert process_state(host, os.getpid()) == "alive" and process_state(host, child.pid) == "dead"
    assert process_state("another-node", os.getpid()) is None
    procs = [(host, os.getpid()), (host, child.pid), (host, os.getpid()), ("another-node", 1)]
    ctx = OpContext("allreduce", 7, 0, 4, 2.0, None, procs)
    msg = str(ctx.timeout_error([1]))
    assert msg.startswith("allreduce #7 on rank 0 of 4 timed out after 2 s waiting for rank 1.")
    assert f"It is dead: its process (pid {child.pid}, on this node) has exited" in msg
    assert f"Rank 1 (pid {child.pid}) of this group is dead" in str(ctx.timeout_error([2, 3]))
    alive = OpContext("barrier", 1, 0, 4, 2.0, None, [procs[0], procs[2], procs[2], procs[3]])
    assert "It is alive but did not arrive" in str(alive.timeout_error([1, 2]))
    assert "likely died" in str(alive.timeout_error([3]))


def test_object_collectives_carry_the_deadline(tmp_path, env):
    p, _ = launch(3, """
        import time, hpr
        comm = hpr.init(abort_on_exception=False)
        got = comm.gather_obj({"rank": comm.rank}, root=0)
        assert got == ([{"rank": r} for r in range(comm.size)] if comm.rank == 0 else None), got
        assert comm.bcast_obj(list(range(5)) if comm.rank == 1 else None, root=1) == list(range(5))
        if comm.rank == 2:
            time.sleep(3)  # never arrives (HPR_TIMEOUT is 1.5 s)
        else:
            try:
                comm.gather_obj("x", root=0)  # rank 1 sends and goes on; rank 0 waits for rank 2
                comm.bcast_obj(None, root=2)  # rank 1 waits for rank 2
            except hpr.CommTimeout as e:
                open(f"timeout{comm.rank}.txt", "w").write(str(e))  # not stdout: the ranks' lines interleave
        """, tmp_path, env, limit=60, HPR_TIMEOUT=1.5)
    assert p.code == 0, p.out + p.err
    assert sorted(os.listdir(tmp_path)) == ["job.py", "timeout0.txt", "timeout1.txt"], p.out + p.err
    said = [(tmp_path / f"timeout{r}.txt").read_text() for r in (0, 1)]
    assert said[0].startswith("gather #") and "waiting for rank 2. It is alive" in said[0], said[0]
    assert said[1].startswith("broadcast #") and "waiting for rank 2. It is alive" in said[1], said[1]


@pytest.mark.parametrize("first", ["allreduce", "barrier", "alloc"])
def test_the_first_collective_has_a_deadline(tmp_path, env, first):
    """The node's shared window is made inside the first collective (or alloc) with MPI's blocking
    calls: a deadline barrier comes first, so a peer that never arrives is named, not waited for forever."""
    p, took = launch(2, f"""
        import time, numpy as np, hpr
        comm = hpr.init(abort_on_exception=False)
        if comm.rank == 0:
            t0 = time.perf_counter()
            try:
                x = np.ones(1000, np.float32)
                comm.{first}(*{{"allreduce": (x,), "barrier": (), "alloc": (1000,)}}["{first}"])
            except hpr.CommTimeout as e:
                print("TIMEOUT: %.1f" % (time.perf_counter() - t0), e, flush=True)
        else:
            time.sleep(8)  # never arrives
        """, tmp_path, env, limit=60, HPR_TIMEOUT=2, HPR_ALLREDUCE="shm")
    assert p.code == 0, p.out + p.err
    line = [ln for ln in p.out.splitlines() if ln.startswith("TIMEOUT:")]
    assert line, p.out + p.err
    assert f" {first} #1 on rank 0 of 2 timed out after 2 s waiting for rank 1" in line[0], line[0]
    assert 1.9 <= float(line[0].split()[1]) < 6, line[0]


SETUP_CALLS = {  # what rank 0 runs while rank 1 sleeps, and the operation its CommTimeout names
    "init": ("hpr.init(abort_on_exception=False)", "communicator setup"),
    "Communicator": ("hpr.comm.Communicator(MPI.COMM_WORLD)", "communicator setup"),
    "split": ("world.split(0)", "split"),
    "cuda_aware": ("world.cuda_aware", "cuda-aware agreement"),
}


@pytest.mark.parametrize("call", list(SETUP_CALLS))
def test_building_a_communicator_has_a_deadline(tmp_path, env, call):
    """Making a Communicator (hpr.init, Communicator(), split) and its first CUDA-aware agreement run
    MPI's blocking collectives (allgather, Dup, Split, the node split): a point-to-point meeting under
    the deadline comes first, so a rank that never comes is named instead of waited for forever.
    (Before: rank 0 hung in mpi4py's allgather / Split / allreduce until the job limit.)"""
    code, want = SETUP_CALLS[call]
    both = "init" not in call and "Communicator" not in call  # the call after a good hpr.init on both ranks
    p, took = launch(2, f"""
        import time, hpr, hpr.comm
        from mpi4py import MPI  # MPI starts on both ranks; only the communicator is missing
        world = hpr.init(abort_on_exception=False) if {both} else None
        if MPI.COMM_WORLD.Get_rank() == 0:
            t0 = time.perf_counter()
            try:
                {code}
            except hpr.CommTimeout as e:
                print("TIMEOUT: %.1f" % (time.perf_counter() - t0), e, flush=True)
        else:
            time.sleep(8)  # never builds it
        """, tmp_path, env, limit=45, HPR_TIMEOUT=2)
    line = [ln for ln in p.out.splitlines() if ln.startswith("TIMEOUT:")]
    assert line, (p.code, p.out + p.err)
    assert re.search(f" {want} #\\d+ on rank 0 of 2 timed out after 2 s waiting for rank 1\\.", line[0]), line[0]
    assert 1.9 <= float(line[0].split()[1]) < 6, line[0]
    assert p.code == 0, p.out + p.err


def test_a_broken_communicator_stays_broken(tmp_path, env):
    """After a collective times out, every later call on that communicator raises CommError at once,
    naming the first failure, instead of running with the ranks' counters out of step."""
    p, _ = launch(2, """
        import time, numpy as np, hpr
        comm = hpr.init(abort_on_exception=False)
        x = np.ones(1000, np.float32)
        comm.allreduce(x)
        if comm.rank == 0:
            try:
                comm.allreduce(x)
            except hpr.CommTimeout:
                pass
            calls = [lambda: comm.allreduce(x), comm.barrier, lambda: comm.bcast_obj(1),
                     lambda: comm.iallreduce(x).wait(), lambda: comm.send(x, 1), lambda: comm.alloc(10)]
            for call in calls:
                t0 = time.perf_counter()
                try:
                    call()
                    print("RAN", flush=True)
                except hpr.CommError as e:
                    print("BROKEN: %s %.2f %s" % (type(e).__name__, time.perf_counter() - t0, e), flush=True)
        else:
            time.sleep(4)  # misses allreduce #2
        """, tmp_path, env, limit=60, HPR_TIMEOUT=1.5, HPR_ALLREDUCE="shm")
    assert p.code == 0, p.out + p.err
    lines = [ln for ln in p.out.splitlines() if ln.startswith(("BROKEN:", "RAN"))]
    assert len(lines) == 6 and all(ln.startswith("BROKEN: CommError ") for ln in lines), p.out + p.err
    for ln in lines:
        assert float(ln.split()[2]) < 0.5, ln
        assert "broken since allreduce #2 failed on rank 0 (CommTimeout: allreduce #2" in ln, ln


COMPARE_WITH_MPI = """
    import sys, warnings, numpy as np, hpr
    from mpi4py import MPI
    warnings.simplefilter("always")
    comm = hpr.init(abort_on_exception=False)
    for n in (10, 1000, {big}):
        x = np.random.default_rng(comm.rank + n).standard_normal(n).astype(np.float32)
        want = np.empty_like(x)
        comm.mpi.Allreduce(x, want)
        comm.allreduce(x)
        np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-4)
    g = comm.alloc(300000, np.float32)
    g[:] = comm.rank + 1
    comm.allreduce(g, "max")
    assert np.all(g == comm.size)
    comm.barrier()
    y = np.full(7, comm.rank, np.int64)
    comm.broadcast(y, root=1)
    assert np.all(y == 1)
    # one write per line: the tests run with PYTHONUNBUFFERED=1, where print's pieces are separate writes
    # that Hydra may interleave with another rank's
    sys.stdout.write(f"AGREES {{comm.rank}} {{comm.algorithm_for(4000)}}\\n")
    sys.stdout.flush()
"""


def test_two_nodes_over_tcp_fall_back_inside_the_node(tmp_path, env):
    """MPIR_CVAR_NOLOCAL=1 makes every rank its own node to MPICH (traffic goes through its network
    module) while HPR_NODE_SIZE=2 asks for two nodes of two: no shared window can be made, and hpr says
    so once and runs point-to-point inside the node, with MPI's results."""
    p, _ = launch(4, COMPARE_WITH_MPI.format(big=600000), tmp_path, env, limit=120, HPR_TIMEOUT=30,
                  MPIR_CVAR_NOLOCAL=1, HPR_NODE_SIZE=2)
    assert p.code == 0, p.out + p.err
    # findall, not line starts: under load Hydra may forward two ranks' lines into one
    assert sorted(re.findall(r"AGREES (\d+)", p.out)) == ["0", "1", "2", "3"], p.out
    warned = [ln for ln in p.err.splitlines() if "the node's shared window could not be made" in ln]
    assert len(warned) == 1 and "MPI could not make a shared window" in warned[0], p.err


def unshare_works():
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1M tmpfs /dev/shm"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_a_small_dev_shm_falls_back_with_one_warning(tmp_path, env):
    """A /dev/shm too small for the node's window (Docker's default is 64 MiB; here 4 MiB, half of it
    MPICH's own, in a private mount namespace): one warning on rank 0 per window saying how to enlarge
    it, and the same results as MPI's."""
    if not unshare_works():
        pytest.skip("unshare -m with a tmpfs mount is not permitted here (needs root or user namespaces)")
    job = script(tmp_path, COMPARE_WITH_MPI.format(big=2_000_000))
    e = dict(env, HPR_TIMEOUT="30")
    e.pop("HPR_NODE_SIZE", None)
    e.pop("MPIR_CVAR_NOLOCAL", None)
    inner = f"mount -t tmpfs -o size=4M tmpfs /dev/shm && exec {mpiexec()} -n 2 {sys.executable} {job}"
    r = run_tree(["unshare", "-m", "sh", "-c", inner], 120, capture=True, env=e, cwd=tmp_path)
    assert not r.timed_out and r.code == 0, r.out + r.err
    assert sorted(re.findall(r"AGREES (\d+)", r.out)) == ["0", "1"], r.out
    warned = [ln for ln in r.err.splitlines() if "could not be made" in ln]
    assert len(warned) == 2, r.err  # the node's window, and the alloc, each once
    assert all("/dev/shm has" in w and "--shm-size" in w for w in warned), r.err
