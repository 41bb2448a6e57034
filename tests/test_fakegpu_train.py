"""``train_lm.py --device gpu`` under mpiexec, on the numpy-backed stand-in for CuPy (tests/fakegpu: it
refuses host/device mixing as CuPy does and routes the CUDA launchers to the CPU kernels), against the
same run with --device cpu: every layout's losses must agree, with MPI staging device buffers through
host memory and with device buffers passed straight to MPI (HPR_CUDA_AWARE=1). A resumed GPU run must
continue bit for bit. What this cannot show: the CUDA kernels' own numbers (test_gpu.py, on a GPU)."""
import json
import os
import shutil

import pytest

from launch import mpi_job
from train_jobs import TRAIN

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "fakegpu", "run.py")
BASE = ["--preset", "tiny", "--batch", "4", "--steps", "4", "--eval-every", "2", "--sample-tokens", "8",
        "--threads", "1", "--dtype", "float64", "--peak-tflops", "1"]  # no 8192^3 matmul on the fake


def train(corpus, env, cwd, name, *flags, n=2, extra_env=None, limit=120):
    log = cwd / f"{name}.json"
    argv = [RUN, TRAIN, "--data", corpus, *BASE, "--log-json", log, *flags]
    r = mpi_job(n, argv, cwd, env, limit, **{"FAKECUPY_DEVICES": "2", **(extra_env or {})})
    assert r.code == 0, f"{name}: exit {r.code}\n--- stdout\n{r.out}\n--- stderr\n{r.err}"
    rows = [json.loads(line) for line in open(log)]
    return r.out, {(("val", o["step"]) if "val_loss" in o else o["step"]): o.get("loss", o.get("val_loss"))
                   for o in rows if "step" in o}  # not the closing {"memory": ...} record


@pytest.mark.parametrize("layout,aware", [(["--dp", "2"], "0"), (["--dp", "2"], "1"), (["--tp", "2"], "0"),
                                          (["--pp", "2", "--micro-batches", "2"], "1"),
                                          (["--dp", "2", "--zero", "1"], "0"),
                                          (["--dp", "2", "--dtype", "float32", "--grad-comm-dtype", "float16"], "1")],
                         ids=["dp-staged", "dp-cuda-aware", "tp-staged", "pp-cuda-aware", "zero1-staged",
                              "dp-f32-grads-in-f16"])
def test_gpu_run_matches_cpu_run(corpus, env, tmp_path, layout, aware):
    out_g, gpu = train(corpus, env, tmp_path, "gpu", "--device", "gpu", *layout, extra_env={"HPR_CUDA_AWARE": aware})
    _, cpu = train(corpus, env, tmp_path, "cpu", "--device", "cpu", *layout)
    assert sorted(gpu, key=str) == sorted(cpu, key=str) and len(gpu) == 6  # 4 steps, 2 validations
    rel = 1e-5 if "float32" in layout else 1e-12  # the GPU's attention sums in another order
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], rel=rel, abs=rel), f"{k}: gpu {gpu[k]} cpu {cpu[k]}"
    assert "devices: rank 0 GPU 0 (Fake GPU), rank 1 GPU 1 (Fake GPU)" in out_g, out_g  # node-local ranks
    assert "share GPU" not in out_g
    how = "takes device buffers (CUDA-aware)" if aware == "1" else "stages through pinned host memory"
    assert how in out_g and "--- sample ---" in out_g
    if "float16" in layout:
        assert "communication in float16" in out_g


def test_more_ranks_than_gpus_share_and_say_so(corpus, env, tmp_path):
    out, _ = train(corpus, env, tmp_path, "shared", "--device", "gpu", extra_env={"FAKECUPY_DEVICES": "1"})
    assert "devices: rank 0 GPU 0 (Fake GPU), rank 1 GPU 0 (Fake GPU)" in out
    assert "note: ranks [0, 1] share GPU 0" in out, out


def test_gpu_resume_continues_bit_for_bit(corpus, env, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _, ref = train(corpus, env, tmp_path, "full", "--device", "gpu", "--ckpt-dir", full, "--ckpt-every", 2)
    part.mkdir()
    shutil.copytree(full / "step-00000002", part / "step-00000002")
    out, got = train(corpus, env, tmp_path, "part", "--device", "gpu", "--ckpt-dir", part, "--resume")
    assert "(step 2)" in out
    assert [got[s] for s in (3, 4)] == [ref[s] for s in (3, 4)]
    for f in os.listdir(full / "step-00000004"):
        if f.endswith(".safetensors"):
            assert (full / "step-00000004" / f).read_bytes() == (part / "step-00000004" / f).read_bytes(), f


@pytest.mark.parametrize("aware", ["0", "1"])
def test_allreduce_benchmark_on_devices(env, tmp_path, aware):
    """python -m hpr.bench allreduce --device gpu under mpiexec: a row per size, beside its reference."""
    out = tmp_path / "ar.json"
    argv = [RUN, "-m", "hpr.bench", "allreduce", "--device", "gpu", "--max-bytes", "4K", "--budget", "0.01",
            "--json", out]
    r = mpi_job(2, argv, tmp_path, env, 120, HPR_CUDA_AWARE=aware)
    assert r.code == 0, r.out + r.err
    res = json.loads(out.read_text())
    assert res["cuda_aware"] == (aware == "1") and [row["bytes"] for row in res["rows"]] == [8, 32, 128, 512, 2048, 4096]
    assert ("on the device buffer" if aware == "1" else "copy to host") in res["reference"]
    assert all(row["hpr_us"] > 0 and row["ref_us"] > 0 for row in res["rows"])
