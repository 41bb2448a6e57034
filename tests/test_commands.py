"""hpr's own commands as a user runs them: ``python -m hpr config`` (what the installation has, from
anywhere, the repository's root included) and ``python -m hpr.bench allreduce --json`` under mpiexec
(a row per size, every time and bandwidth measured, the MPI library named)."""
import json
import os
import subprocess
import sys

import pytest

from launch import mpi_job, script


def test_benchmark_runs_and_writes_json(tmp_path, env):
    out = tmp_path / "ar.json"
    p = mpi_job(2, [script(tmp_path, f"""
        import sys
        from hpr.bench.__main__ import main
        sys.exit(main(["allreduce", "--max-bytes", "64K", "--budget", "0.01", "--json", {str(out)!r}]))
        """)], tmp_path, env)
    assert p.code == 0, p.err
    data = json.loads(out.read_text())
    # the library's own first line of MPI_Get_library_version, asked of mpi4py in another process
    lib = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
                         capture_output=True, text=True, timeout=60, env=env).stdout.strip().splitlines()[0]
    assert data["ranks"] == 2, data["ranks"]
    assert data["mpi"] == lib.strip(), (data["mpi"], lib)
    assert [r["bytes"] for r in data["rows"]] == [8, 32, 128, 512, 2048, 8192, 32768, 65536]  # the sweep ends at --max-bytes
    for r in data["rows"]:
        assert r["hpr_us"] > 0 and r["mpi_us"] > 0 and r["hpr_busbw_gbps"] > 0 and r["mpi_busbw_gbps"] > 0


@pytest.mark.parametrize("where", ["elsewhere", "repo root"])
def test_config_reports_the_installation(tmp_path, where):
    import hpr
    from hpr.cpu import cpu_kernels

    # from the repo root, ``python -m`` puts the source hpr/ first on sys.path: an editable install's
    # is that tree (with its kernels built); beside a regular install it has no compiled kernels and
    # says so, as NumPy and mpi4py do, instead of loading the installed copy in its place
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = root if where == "repo root" else tmp_path
    p = subprocess.run([sys.executable, "-m", "hpr", "config"], capture_output=True, text=True, timeout=60,
                       cwd=cwd)
    if where == "repo root" and os.path.dirname(os.path.dirname(os.path.abspath(hpr.__file__))) != root:
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"you are importing hpr from its source tree at {root} without the compiled kernels" in p.stdout
        assert "pip install --no-build-isolation -e ." in p.stdout and "Traceback" not in p.stderr
        return
    assert p.returncode == 0, p.stderr
    openmp = "OpenMP: yes" if cpu_kernels().info()["openmp"] else "OpenMP: no"  # what the build has
    for want in ("hpr 0.1.0", "compiled kernels: yes", openmp, "MPI library", "mpi4py", "CuPy",
                 "allreduce algorithm"):
        assert want in p.stdout, p.stdout
