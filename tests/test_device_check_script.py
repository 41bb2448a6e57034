"""tests/gpu/device_check.sh (the device machine's GPU checks) exits non-zero, naming the step, when any
step fails, and 0 when all pass: run here with stand-in nvidia-smi, python3, mpiexec and timeout on PATH
(no GPU needed; the stand-in python3 fails the commands whose arguments contain FAIL_ON)."""
import os
import stat
import subprocess

import pytest

from train_jobs import REPO

SCRIPT = os.path.join(REPO, "tests", "gpu", "device_check.sh")
STUB = """#!/usr/bin/env bash
case " $* " in *" $FAIL_ON "*) echo "stand-in failure: $*"; exit 3;; esac
exit 0
"""
TIMEOUT = """#!/usr/bin/env bash
shift; exec "$@"
"""


def run_script(tmp_path, fail_on):
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, body in (("nvidia-smi", STUB), ("python3", STUB), ("mpiexec", STUB), ("timeout", TIMEOUT)):
        (stubs / name).write_text(body)
        (stubs / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", OUT=str(tmp_path / "out"), FAIL_ON=fail_on)
    return subprocess.run(["bash", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_all_steps_passing_exits_0(tmp_path):
    r = run_script(tmp_path, "nothing-fails")
    assert r.returncode == 0 and "all steps passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("fail_on,step", [("pytest", "gpu_tests"), ("train", "bench_train"),
                                          ("allreduce", "bench_allreduce")])
def test_a_failing_step_makes_the_script_fail(tmp_path, fail_on, step):
    r = run_script(tmp_path, fail_on)
    assert r.returncode != 0, r.stdout + r.stderr
    assert f"== {step}: exit 3" in r.stdout and "FAILED:" in r.stdout.splitlines()[-1], r.stdout
    assert step in r.stdout.splitlines()[-1], r.stdout
