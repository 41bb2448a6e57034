"""The trainer's command line as a user runs it: examples/train_lm.py in subprocesses, alone and under
mpiexec, on a tiny corpus in tmp_path. Exact resumption, a kill -9 while saving, damaged checkpoints,
SIGTERM / SIGUSR1 (preemption) on one rank, rejected flags, and the same parameters on any layout."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import descendants, kill_tree, mpiexec
from train_jobs import BASE, REPO, TRAIN, complete, latest, losses, steps_in


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"PMI_RANK="):
                    return int(item[9:])
    except (OSError, ValueError):
        pass
    return None


def start(corpus, env, cwd, *flags, n=1, out=None):
    cmd = [sys.executable, TRAIN, "--data", str(corpus), *BASE, *map(str, flags)]
    if n > 1:
        cmd = [mpiexec(), "-n", str(n)] + cmd
    so = open(out, "w") if out else subprocess.PIPE
    return subprocess.Popen(cmd, stdout=so, stderr=subprocess.PIPE if not out else so, text=True, env=env,
                            cwd=cwd, start_new_session=True)


def train(corpus, env, cwd, *flags, n=1, limit=60):
    """Run the trainer to the end: (exit code, stdout, stderr); killed (tree and all) past limit."""
    p = start(corpus, env, cwd, *flags, n=n)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        out, err = p.communicate()
        pytest.fail(f"train_lm {' '.join(map(str, flags))} (-n {n}) outlived {limit} s\n{out}\n{err}")
    return p.returncode, out, err


def ok(res):
    code, out, err = res
    assert code == 0, f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert "Traceback" not in err, err
    return out, err


def params(path):
    from safetensors.numpy import load_file

    return load_file(os.path.join(path, "params.safetensors"))  # {name: whole tensor}


def wait_for(cond, limit, proc=None, what=""):
    t0 = time.time()
    while time.time() - t0 < limit:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the job ended (exit {proc.returncode}) before {what}")
        time.sleep(0.005)
    return False


# 1 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,extra", [(1, []), (2, ["--zero", "1"])], ids=["1rank", "2ranks-zero1"])
def test_resume_continues_bit_for_bit(corpus, env, tmp_path, n, extra):
    full, part = tmp_path / "full", tmp_path / "part"
    ok(train(corpus, env, tmp_path, "--steps", 12, "--ckpt-dir", full, "--ckpt-every", 6,
             "--log-json", tmp_path / "full.json", *extra, n=n))
    assert steps_in(full) == [6, 12] and latest(full) == 12
    ref = losses(tmp_path / "full.json")
    assert sorted(ref) == list(range(1, 13))

    part.mkdir()
    shutil.copytree(full / "step-00000006", part / "step-00000006")  # no `latest`: found by its name
    out, _ = ok(train(corpus, env, tmp_path, "--steps", 12, "--ckpt-dir", part, "--resume",
                      "--log-json", tmp_path / "part.json", *extra, n=n))
    assert "resume: continuing from" in out and "(step 6)" in out, out
    got = losses(tmp_path / "part.json")
    assert sorted(got) == list(range(7, 13))
    for s in range(7, 13):
        assert got[s] == ref[s], f"step {s}: resumed loss {got[s]!r} != uninterrupted {ref[s]!r}"
    for fname in os.listdir(full / "step-00000012"):
        if fname.endswith(".safetensors"):
            a = (full / "step-00000012" / fname).read_bytes()
            b = (part / "step-00000012" / fname).read_bytes()
            assert a == b, f"step-12 {fname} differs between the uninterrupted and the resumed run"


# 2 ---------------------------------------------------------------------------------------------------
def test_kill_9_while_saving_leaves_a_checkpoint_to_resume_from(corpus, env, tmp_path):
    ck = tmp_path / "ck"
    p = start(corpus, env, tmp_path, "--steps", 2000, "--ckpt-dir", ck, "--ckpt-every", 1, "--zero", 1, n=2,
              out=tmp_path / "killed.out")
    try:
        assert wait_for(lambda: ck.is_dir() and len(steps_in(ck)) >= 3, 60, p, "its third checkpoint")
        # aim for the middle of a save: a .tmp-step-* folder is there (any moment is a valid test)
        wait_for(lambda: any(n.startswith(".tmp-") for n in os.listdir(ck)), 2, p, "a save in progress")
        killed = kill_tree(p)
    finally:
        kill_tree(p)
        p.wait(30)
    assert killed
    time.sleep(0.2)  # none of the job's processes is left running (a zombie has no cmdline)
    assert not [q for q in killed if os.path.exists(f"/proc/{q}") and "train_lm.py" in cmdline(q)]

    newest = steps_in(ck)[-1]
    committed = latest(ck)
    complete(ck / f"step-{committed:08d}")
    # `latest` moves after the folder's rename: a kill between the two leaves it one step behind
    assert committed in (newest, newest - 1), (committed, steps_in(ck))
    out, err = ok(train(corpus, env, tmp_path, "--steps", committed + 5, "--ckpt-dir", ck, "--resume",
                        "--zero", 1, "--log-json", tmp_path / "resumed.json", n=2))
    assert f"(step {committed})" in out, out
    assert sorted(losses(tmp_path / "resumed.json")) == list(range(committed + 1, committed + 6))
    assert latest(ck) == committed + 5
    complete(ck / f"step-{committed + 5:08d}")
    assert not [n for n in os.listdir(ck) if n.startswith(".")], os.listdir(ck)  # leftovers removed


# 3 ---------------------------------------------------------------------------------------------------
def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _remove_meta(path):
    (path / "meta.json").unlink()


@pytest.mark.parametrize("damage", [lambda d: _flip_byte(d / "params.safetensors"), _remove_meta],
                         ids=["flipped-params-byte", "no-meta"])
def test_damaged_newest_checkpoint_falls_back_to_the_older(corpus, env, tmp_path, damage):
    ck = tmp_path / "ck"
    ok(train(corpus, env, tmp_path, "--steps", 12, "--ckpt-dir", ck, "--ckpt-every", 6,
             "--log-json", tmp_path / "full.json"))
    ref = losses(tmp_path / "full.json")
    damage(ck / "step-00000012")
    out, err = ok(train(corpus, env, tmp_path, "--steps", 12, "--ckpt-dir", ck, "--resume",
                        "--log-json", tmp_path / "again.json"))
    warned = [ln for ln in err.splitlines() if "step-00000012" in ln]
    assert warned and "skipping checkpoint" in warned[0], err
    assert "(step 6)" in out, out
    got = losses(tmp_path / "again.json")
    assert sorted(got) == list(range(7, 13))
    assert all(got[s] == ref[s] for s in got)
    complete(ck / "step-00000012")  # rewritten whole by the resumed run


# 4 ---------------------------------------------------------------------------------------------------
def _stepping(out_file, step=2):
    def cond():
        try:
            with open(out_file) as f:
                return any(ln.startswith("step") and f" {step}/" in ln for ln in f)
        except OSError:
            return False
    return cond


@pytest.mark.parametrize("n,sig", [(2, signal.SIGTERM), (1, signal.SIGUSR1)], ids=["SIGTERM-2ranks", "SIGUSR1-1rank"])
def test_signal_on_one_rank_saves_and_exits_0(corpus, env, tmp_path, n, sig):
    ck, out_file = tmp_path / "ck", tmp_path / "job.out"
    p = start(corpus, env, tmp_path, "--steps", 2000, "--ckpt-dir", ck, "--log-every", 1,
              "--log-json", tmp_path / "log.json", n=n, out=out_file)
    try:
        assert wait_for(_stepping(out_file), 60, p, "step 2"), out_file.read_text()
        if n == 1:
            target = p.pid
        else:
            ranks = {}
            for q in descendants(p.pid):
                if "train_lm.py" in cmdline(q):
                    ranks[rank_of(q)] = q
            assert len(ranks) == n, ranks
            target = ranks.get(1, sorted(ranks.values())[-1])  # a rank other than 0 when we can tell
        os.kill(target, sig)
        code = p.wait(30)
    finally:
        if p.poll() is None:
            kill_tree(p)
            p.wait(30)
    text = out_file.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    said = [ln for ln in text.splitlines() if f"signal {sig.value} received" in ln]
    assert said and "checkpoint saved" in said[0], text
    stopped = int(said[0].split(":")[0].split()[1])  # "step N: signal 15 received; ..."
    assert 2 <= stopped < 2000
    assert steps_in(ck) == [stopped] and latest(ck) == stopped
    assert complete(ck / f"step-{stopped:08d}")["step"] == stopped
    assert max(losses(tmp_path / "log.json")) == stopped


def test_sigterm_during_setup_saves_at_the_first_step_and_exits_0(corpus, env, tmp_path):
    """SIGTERM to rank 1 while the setup is still running (HPR_FAULT stall_setup: 4 s before the corpus
    is loaded, as a slow corpus would): the handler is already in place, so the job stops at its first
    step boundary with a checkpoint, exit 0 on every rank."""
    ck, out_file = tmp_path / "ck", tmp_path / "job.out"
    p = start(corpus, dict(env, HPR_FAULT="stall_setup@step=0"), tmp_path, "--steps", 2000, "--ckpt-dir", ck,
              "--log-every", 1, n=2, out=out_file)
    try:
        assert wait_for(lambda: "rank 1: setup stalled" in out_file.read_text(), 60, p, "the setup stall"), \
            out_file.read_text()
        ranks = {rank_of(q): q for q in descendants(p.pid) if "train_lm.py" in cmdline(q)}
        assert 1 in ranks, ranks
        os.kill(ranks[1], signal.SIGTERM)
        code = p.wait(60)
    finally:
        if p.poll() is None:
            kill_tree(p)
            p.wait(30)
    text = out_file.read_text()
    assert code == 0 and "Traceback" not in text, text
    assert "step 2:" not in text and "step 1: signal 15 received; checkpoint saved, exiting" in text, text
    assert steps_in(ck) == [1] and latest(ck) == 1 and complete(ck / "step-00000001")["step"] == 1


# 5 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,want", [
    (["--dtype", "float16"], "--dtype"),
    (["--preset", "XL"], "--preset"),
    (["--lr", "-1"], "--lr"),
    (["--steps", "0"], "--steps"),
    (["--resume"], "--resume needs --ckpt-dir"),
    (["--zero", "4"], "--zero 4"),
    (["--grad-comm-dtype", "int8"], "--grad-comm-dtype"),
    (["--data", "/nonexistent/corpus"], "/nonexistent/corpus does not exist"),
    (["--data", "{empty}"], "has no readable files"),
], ids=["dtype", "preset", "lr", "steps", "resume", "zero", "comm-dtype", "no-data", "empty-folder"])
def test_bad_flag_is_rejected_cleanly(corpus, env, tmp_path, flags, want):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    flags = [f.replace("{empty}", str(empty)) for f in flags]
    ck = tmp_path / "ck"
    if flags != ["--resume"]:
        flags += ["--ckpt-dir", str(ck)]
    code, out, err = train(corpus, env, tmp_path, "--steps", 3, *flags, limit=60)
    assert code == 2, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and want in err, err
    assert not ck.exists()


def test_batch_not_divisible_by_ranks_fails_on_every_rank(corpus, env, tmp_path):
    ck = tmp_path / "ck"
    code, out, err = train(corpus, env, tmp_path, "--steps", 3, "--batch", 6, "--ckpt-dir", ck, n=4, limit=90)
    assert code != 0
    assert "Traceback" not in err, err
    want = "--batch 6 does not split evenly over 4 data-parallel rank(s)"
    assert err.count(want) == 4, err
    assert not ck.exists()


# 6 ---------------------------------------------------------------------------------------------------
def without_key_bias(name, x):
    """The tensor, less the key third of a qkv bias. Softmax ignores a constant added to a row of scores,
    so the loss's gradient there is exactly zero and only rounding noise (about 1e-11 in float32) reaches
    AdamW, which turns it into steps of random sign: those elements differ between layouts without
    meaning anything."""
    if not name.endswith("attn.qkv.b"):
        return x
    c = x.size // 3
    return np.concatenate([x[:c], x[2 * c:]])


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-10)])
def test_zero1_on_2_ranks_trains_the_same_parameters_as_1_rank(corpus, env, tmp_path, dtype, rtol):
    a, b = tmp_path / "one", tmp_path / "two"
    ok(train(corpus, env, tmp_path, "--steps", 8, "--dtype", dtype, "--ckpt-dir", a))
    ok(train(corpus, env, tmp_path, "--steps", 8, "--dtype", dtype, "--ckpt-dir", b, "--zero", 1, n=2))
    pa, pb = params(a / "step-00000008"), params(b / "step-00000008")
    assert pa.keys() == pb.keys()
    for name in pa:
        x, y = without_key_bias(name, pa[name]), without_key_bias(name, pb[name])
        assert x.dtype == y.dtype == np.dtype(dtype) and x.shape == y.shape
        # elements that pass near zero differ by rounding of the weights' scale, not their own
        np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * float(np.abs(x).max()), err_msg=name)
    # the optimizer state, saved whole from two ZeRO-1 shards, is the 1-rank state
    from safetensors.numpy import load_file

    whole = load_file(str(a / "step-00000008" / "optim.safetensors"))
    joined = load_file(str(b / "step-00000008" / "optim.safetensors"))
    assert whole.keys() == joined.keys() and {k[:2] for k in whole} == {"m.", "v."}
    for k in whole:
        x, y = without_key_bias(k, whole[k]), without_key_bias(k, joined[k])
        np.testing.assert_allclose(y, x, rtol=rtol * 10, atol=float(np.abs(x).max()) * rtol, err_msg=k)


def test_slurm_script_is_valid_bash():
    """The batch script parses (it cannot run without Slurm here) and asks for the preemption signal."""
    path = os.path.join(REPO, "examples", "slurm", "train_lm.sbatch")
    text = open(path).read()
    assert "#SBATCH --signal=USR1@" in text and "--resume" in text and "srun" in text
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    r = subprocess.run([bash, "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# 7 ---------------------------------------------------------------------------------------------------
def test_checkpoint_from_tp2_pp2_resumes_at_dp4_and_on_1_rank(corpus, env, tmp_path):
    """Saved by --tp 2 --pp 2 on 4 ranks (1F1B, 2 micro-batches) at step 3 of 6; resumed by --dp 4 with
    ZeRO-1 on 4 ranks and by one rank: the resumed steps' losses are the uninterrupted run's, and so are
    the final parameters."""
    flags = ["--steps", 6, "--dtype", "float64", "--ckpt-every", 3]
    full = tmp_path / "full"
    ok(train(corpus, env, tmp_path, *flags, "--ckpt-dir", full, "--tp", 2, "--pp", 2, "--micro-batches", 2,
             "--log-json", tmp_path / "full.json", n=4, limit=90))
    ref = losses(tmp_path / "full.json")
    assert sorted(ref) == list(range(1, 7)) and steps_in(full) == [3, 6]
    assert complete(full / "step-00000003")["layout"] == {"dp": 1, "tp": 2, "pp": 2, "zero": 0, "micro_batches": 2}
    want = params(full / "step-00000006")
    for name, n, extra in [("dp4", 4, ["--dp", 4, "--zero", 1]), ("alone", 1, [])]:
        d = tmp_path / name
        d.mkdir()
        shutil.copytree(full / "step-00000003", d / "step-00000003")
        out, _ = ok(train(corpus, env, tmp_path, *flags, "--ckpt-dir", d, "--resume", *extra,
                          "--log-json", tmp_path / f"{name}.json", n=n, limit=90))
        assert "(step 3)" in out, out
        got = losses(tmp_path / f"{name}.json")
        assert sorted(got) == [4, 5, 6], got
        for s in got:
            assert got[s] == pytest.approx(ref[s], rel=1e-12), f"{name}: step {s}: {got[s]!r} != {ref[s]!r}"
        have = params(d / "step-00000006")
        assert have.keys() == want.keys()
        for k in want:
            x, y = without_key_bias(k, want[k]), without_key_bias(k, have[k])
            assert np.linalg.norm(y - x) <= 1e-10 * np.linalg.norm(x), f"{name}: {k}"


def test_progress_writes_to_the_stdout_of_the_moment(monkeypatch):
    """The trainer's progress lines go to sys.stdout as it is when the run starts, not as it was when
    hpr.train was imported (a caller's redirect or pytest's capture then, perhaps closed since: the
    default argument bound at import raised "I/O operation on closed file" in a later test)."""
    import io

    from hpr.train.loop import Progress

    now = io.StringIO()
    monkeypatch.setattr(sys, "stdout", now)  # after the import: the stream a run starting now must use
    p = Progress(20, 10)
    for step in range(1, 21):
        p.update(step, loss=f"{step / 10:.1f}")
    assert now.getvalue().splitlines() == ["step     10/20  loss 1.0", "step     20/20  loss 2.0"]
