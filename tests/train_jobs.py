"""The trainer as a user runs it (examples/train_lm.py under mpiexec), and what a run leaves behind:
its --log-json losses and its checkpoint folders, read here without hpr so that the tests do not trust
the code under test.

Owns: TRAIN and BASE (the tiny run's flags), job / succeeded (one run under mpiexec and its verdict),
losses, steps_in, latest, complete. Not the corpus and env fixtures (tests/conftest.py) nor the
process plumbing (tests/launch.py). Shared by test_train_cli.py, test_train_failures.py and
test_trace.py.

Usage: ``out, err = succeeded(job(corpus, env, tmp_path, "--steps", 4, n=2))``"""
import hashlib
import json
import os

from launch import mpi_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "examples", "train_lm.py")
BASE = ["--preset", "tiny", "--batch", "4", "--eval-every", "0", "--sample-tokens", "0", "--threads", "1"]


def job(corpus, env, cwd, *flags, n=2, fault=None, launcher=(), limit=90, **extra):
    """Run the trainer: (exit code, stdout, stderr, seconds). fault: HPR_FAULT; launcher: mpiexec options;
    extra: more environment variables. A run that outlives limit is killed, tree and all, and fails the test."""
    e = dict(env)
    e.pop("HPR_FAULT", None)
    if fault:
        e["HPR_FAULT"] = fault
    r = mpi_job(n, [TRAIN, "--data", corpus, *BASE, *flags], cwd, e, limit, launcher=launcher, **extra)
    return r.code, r.out, r.err, r.seconds


def succeeded(res):
    """stdout, stderr of a job() that exited 0 without a traceback."""
    code, out, err, _ = res
    assert code == 0, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    return out, err


def losses(path):
    """{step: loss} of a --log-json file (training lines, not validation lines)."""
    got = {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if "loss" in d and "val_loss" not in d:
                assert d["step"] not in got, f"step {d['step']} logged twice in {path}"
                got[d["step"]] = d["loss"]
    return got


def steps_in(ckpt_dir):
    """The steps of the committed checkpoint folders (step-NNNNNNNN) in ckpt_dir, sorted."""
    return sorted(int(n[5:]) for n in os.listdir(ckpt_dir) if n.startswith("step-") and n[5:].isdigit())


def latest(ckpt_dir):
    """The step the `latest` pointer of ckpt_dir names."""
    with open(os.path.join(ckpt_dir, "latest")) as f:
        name = f.read().strip()
    assert name.startswith("step-"), name
    return int(name[5:])


def complete(path):
    """meta of a checkpoint folder whose every listed file is there with its sha256 (checked here, not
    with hpr.checkpoint, so the test does not trust the code under test)."""
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    assert meta["files"] and "params.safetensors" in meta["files"], meta
    for fname, want in meta["files"].items():
        with open(os.path.join(path, fname), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want, f"{path}/{fname} fails its hash"
    return meta
