"""Failures under mpiexec, each in its own small job: an absent peer ends in CommTimeout naming the
operation and the peer; an exception or a death on one rank does not leave the others hanging."""
import os
import subprocess
import sys
import textwrap
import time

import pytest


def mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else "mpiexec"


def launch(n, body, tmp_path, limit=90, **env):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    e = dict(os.environ, **{k: str(v) for k, v in env.items()})
    t0 = time.time()
    p = subprocess.run([mpiexec(), "-n", str(n), sys.executable, str(script)], capture_output=True, text=True,
                       timeout=limit, env=e, cwd=tmp_path)
    return p, time.time() - t0


@pytest.mark.parametrize("algo", ["shm", "ring"])
def test_absent_peer_raises_comm_timeout(tmp_path, algo):
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
        """, tmp_path, HPR_TIMEOUT=1.5, HPR_ALLREDUCE=algo)
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("TIMEOUT:")]
    assert line, p.stdout + p.stderr
    assert "allreduce #2" in line[0] and "rank 0 of 2" in line[0] and "waiting for rank 1" in line[0]
    assert took < 30


def test_exception_on_one_rank_aborts_the_job(tmp_path):
    p, took = launch(3, """
        import numpy as np, hpr
        comm = hpr.init()
        if comm.rank == 1:
            raise ValueError("bad input on rank 1")
        comm.allreduce(np.ones(10))  # ranks 0 and 2 would wait for rank 1 until HPR_TIMEOUT
        """, tmp_path, HPR_TIMEOUT=300)
    assert p.returncode != 0
    assert "bad input on rank 1" in p.stderr and "aborting the job" in p.stderr
    assert took < 60


def test_stuck_rank_ends_the_others_with_a_named_timeout(tmp_path):
    p, took = launch(3, """
        import time, numpy as np, hpr
        comm = hpr.init()
        comm.allreduce(np.ones(10))
        if comm.rank == 2:
            time.sleep(120)  # stuck: alive, but never arrives
        comm.allreduce(np.ones(10))
        """, tmp_path, HPR_TIMEOUT=2)
    assert p.returncode != 0
    assert "CommTimeout" in p.stderr and "waiting for rank 2" in p.stderr
    assert took < 60


def test_bad_environment_is_a_config_error(tmp_path):
    p, _ = launch(1, """
        import hpr
        try:
            hpr.init()
        except hpr.ConfigError as e:
            print("CONFIG:", e)
        """, tmp_path, HPR_ALLREDUCE="butterfly")
    assert "CONFIG: HPR_ALLREDUCE='butterfly' is not an algorithm" in p.stdout, p.stdout + p.stderr


def test_benchmark_runs_and_writes_json(tmp_path):
    import json

    out = tmp_path / "ar.json"
    p, _ = launch(2, f"""
        import sys
        from hpr.bench.__main__ import main
        sys.exit(main(["allreduce", "--max-bytes", "64K", "--budget", "0.01", "--json", {str(out)!r}]))
        """, tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["ranks"] == 2 and "MPICH" in data["mpi"] or data["mpi"]
    assert [r["bytes"] for r in data["rows"]] == [8, 32, 128, 512, 2048, 8192, 32768]
    for r in data["rows"]:
        assert r["hpr_us"] > 0 and r["mpi_us"] > 0 and r["hpr_busbw_gbps"] > 0 and r["mpi_busbw_gbps"] > 0


@pytest.mark.parametrize("where", ["elsewhere", "repo root"])
def test_config_reports_the_installation(tmp_path, where):
    # from the repo root, ``python -m`` puts the source hpr/ (no compiled kernels) first on sys.path:
    # the source package must hand over to the installed one
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if where == "repo root" else tmp_path
    p = subprocess.run([sys.executable, "-m", "hpr", "config"], capture_output=True, text=True, timeout=60,
                       cwd=cwd)
    assert p.returncode == 0, p.stderr
    for want in ("hpr 0.1.0", "compiled kernels: yes", "OpenMP", "MPI library", "mpi4py", "CuPy",
                 "allreduce algorithm"):
        assert want in p.stdout, p.stdout
