"""Failures injected into real training jobs (examples/train_lm.py under mpiexec, tiny model, tmp corpus),
each asserted by its outcome: exit code, message, what is on disk, and that --resume reproduces the
uninterrupted run's losses. Faults come from HPR_FAULT (hpr.faults): a rank killed mid-step or
mid-save, a stalled (missing) peer, a NaN in one rank's gradient, a full disk and a read-only folder
while saving, and replicas that drift apart; and the trainer's refusal of bad failure flags. (The
HPR_FAULT grammar alone: test_faults.py; the communicator's deadlines: test_comm_failures.py.)"""
import json
import os
import subprocess
import time

import pytest

from launch import is_hydra, mpiexec
from train_jobs import complete, job, latest, losses, steps_in, succeeded


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def disable_auto_cleanup():
    """MPICH's launcher option that leaves the other ranks running when one dies (as srun without
    --kill-on-bad-exit does), so hpr's own deadline has to end them."""
    h = subprocess.run([mpiexec(), "-help"], capture_output=True, text=True).stdout
    if "-disable-auto-cleanup" not in h:
        pytest.skip("this mpiexec (not MPICH's hydra) has no -disable-auto-cleanup")
    return ("-disable-auto-cleanup",)


@pytest.fixture(scope="module")
def reference(corpus, env, tmp_path_factory):
    """{step: loss} of an uninterrupted 6-step, 2-rank run."""
    d = tmp_path_factory.mktemp("reference")
    succeeded(job(corpus, env, d, "--steps", 6, "--log-json", d / "log.json"))
    ref = losses(d / "log.json")
    assert sorted(ref) == list(range(1, 7))
    return ref


def resume_matches(corpus, env, cwd, ck, ref, after):
    """--resume from ck continues from step `after` with the uninterrupted run's losses, exactly."""
    out, _ = succeeded(job(corpus, env, cwd, "--steps", 6, "--ckpt-dir", ck, "--resume",
                           "--log-json", cwd / "resumed.json"))
    assert f"(step {after})" in out, out
    got = losses(cwd / "resumed.json")
    assert sorted(got) == list(range(after + 1, 7))
    for s in got:
        assert got[s] == ref[s], f"step {s}: resumed {got[s]!r} != uninterrupted {ref[s]!r}"
    assert latest(ck) == 6 and not [n for n in os.listdir(ck) if n.startswith(".")], os.listdir(ck)


# a dead rank -------------------------------------------------------------------------------------------
def test_rank_killed_mid_step_ends_the_job_and_resume_reproduces_the_losses(corpus, env, tmp_path, reference):
    ck = tmp_path / "ck"
    code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                               "--log-json", tmp_path / "killed.json", fault="kill@step=3,rank=1")
    assert code != 0 and took < 60, (code, took, out, err)
    got = losses(tmp_path / "killed.json")
    assert sorted(got) == [1, 2] and all(got[s] == reference[s] for s in got)
    assert steps_in(ck) == [2] and latest(ck) == 2
    assert complete(ck / "step-00000002")["step"] == 2
    resume_matches(corpus, env, tmp_path, ck, reference, 2)


def test_crashed_rank_prints_where_it_was_and_the_launcher_names_it(corpus, env, tmp_path):
    """A segfault: the rank's Python stack (faulthandler) shows the operation in flight; the launcher's
    report names its pid, and the trainer's "processes:" line maps that pid to the rank."""
    import re

    code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, fault="segfault@step=3,rank=1")
    assert code != 0 and took < 60, (code, out, err)
    assert "Fatal Python error: Segmentation fault" in err and "in train_step" in err, err
    pids = dict((int(p), int(r)) for r, p in re.findall(r"rank (\d+) pid (\d+)", out))
    assert sorted(pids.values()) == [0, 1], out
    # MPICH's hydra names the first process it saw end badly (other launchers word it otherwise): the
    # segfaulted rank, or a survivor that hpr ended first; either way the processes line maps it
    named = re.findall(r"PID (\d+) RUNNING AT[^\n]*\n=\s*EXIT CODE: (\d+)", out + err)
    if not named and not is_hydra():
        pytest.skip("the stack was checked; this launcher (not MPICH's hydra) words its report otherwise")
    assert named, f"hydra's report names no process:\n{out}\n{err}"
    for pid, exit_code in named:
        assert int(pid) in pids, (named, pids)
        if int(exit_code) in (11, 139):  # SIGSEGV: must be the rank the fault was injected into
            assert pids[int(pid)] == 1, (named, pids)


@pytest.mark.parametrize("kind,want", [("kill", "It is dead: its process"), ("stall", "It is alive but did not arrive")])
def test_survivors_name_the_missing_rank_and_the_operation(corpus, env, tmp_path, kind, want):
    """Under a launcher that leaves the other ranks running, they end within HPR_TIMEOUT, non-zero, with
    a message naming the dead (or stuck) rank, the operation and the step; never a hang or a traceback.
    (Step 4, not 3: right after step 2's save the survivors may still be inside MPI calls, where MPICH
    itself ends them on a peer's death, before hpr's deadline can speak. And even with
    -disable-auto-cleanup, hydra's proxy sometimes SIGKILLs the survivors at once (about 1 run in 4
    here, seen with strace): such a run ends at once, non-zero and silent, and is tried again.)"""
    timeout = 3
    for attempt in range(6):
        ck, log = tmp_path / f"ck{attempt}", tmp_path / f"log{attempt}.json"
        code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, "--batch", 6, "--ckpt-dir", ck,
                                   "--ckpt-every", 2, "--log-json", log, n=3, fault=f"{kind}@step=4,rank=1",
                                   launcher=disable_auto_cleanup(), HPR_TIMEOUT=timeout)
        # how long the survivors outlived step 3's log line (not `took`, which holds the start-up too)
        lived = time.time() - log.stat().st_mtime
        assert code != 0, (out, err)
        assert took < timeout + 30, took
        assert steps_in(ck) == [2] and latest(ck) == 2
        complete(ck / "step-00000002")
        if "error:" in err or lived >= timeout:
            break
    # (checked as substrings: the survivors' stderr lines may interleave)
    assert "error: step 4: iallreduce #4 on rank " in err and "waiting for rank 1. " + want in err, err
    assert "waiting for rank 0" not in err and "waiting for rank 2" not in err, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("rank", [0, 1], ids=["writer", "other"])
def test_rank_killed_mid_save_keeps_the_last_checkpoint(corpus, env, tmp_path, reference, rank):
    ck = tmp_path / "ck"
    code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                               fault=f"kill_in_save@step=4,rank={rank}")
    assert code != 0 and took < 60, (code, out, err)
    assert steps_in(ck) == [2] and latest(ck) == 2
    complete(ck / "step-00000002")
    tmp = [n for n in os.listdir(ck) if n.startswith(".tmp-step-00000004")]
    assert len(tmp) == 1  # the interrupted save, never renamed: the next save removes it
    if rank == 0:  # killed after writing its files, before the commit
        assert sorted(os.listdir(ck / tmp[0])) == ["optim.safetensors", "params.safetensors"]
    resume_matches(corpus, env, tmp_path, ck, reference, 2)


# (kind, the steps committed, `latest`, what the interrupted save left under .tmp-*, the step resumed from)
COMMIT_POINTS = [
    ("kill_mid_file", [2], 2, "partial", 2),     # a tensor file half written
    ("kill_after_meta", [2], 2, "meta.json", 2),  # every file and meta.json fsynced, folder not renamed
    ("kill_after_rename", [2, 4], 2, None, 2),    # step-4 committed, `latest` not moved: it is followed
    ("kill_after_latest", [2, 4], 4, None, 4),    # `latest` moved: the save is complete
]


@pytest.mark.parametrize("kind,steps,last,left,after", COMMIT_POINTS, ids=[c[0] for c in COMMIT_POINTS])
def test_kill_at_each_commit_point_of_a_save_resumes_from_a_complete_checkpoint(
        corpus, env, tmp_path, reference, kind, steps, last, left, after):
    """SIGKILL of the committing rank at each point of step 4's save: what is on disk is a complete
    checkpoint under its final name (never a partial one), and --resume continues from the one
    `latest` names with the uninterrupted run's losses (after a kill past the rename, re-saving step 4
    replaces the committed folder in one swap)."""
    ck = tmp_path / "ck"
    code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                               fault=f"{kind}@step=4,rank=0")
    assert code != 0 and took < 60, (code, out, err)
    assert steps_in(ck) == steps and latest(ck) == last, (os.listdir(ck), out, err)
    for s in steps:
        assert complete(ck / f"step-{s:08d}")["step"] == s
    tmp = [n for n in os.listdir(ck) if n.startswith(".tmp-step-00000004")]
    assert len(tmp) == (left is not None), os.listdir(ck)
    if left == "partial":  # the first file is shorter than the same file of the committed step 2
        names = os.listdir(ck / tmp[0])
        assert len(names) == 1 and "meta.json" not in names, names
        assert (ck / tmp[0] / names[0]).stat().st_size < (ck / "step-00000002" / names[0]).stat().st_size
    elif left == "meta.json":
        assert sorted(os.listdir(ck / tmp[0])) == ["meta.json", "optim.safetensors", "params.safetensors"]
    resume_matches(corpus, env, tmp_path, ck, reference, after)


def test_dead_rank_mid_save_does_not_hang_the_survivors(corpus, env, tmp_path):
    """In a save the survivors wait inside MPI point-to-point calls, where MPICH's own failure detection
    may end them first (without a message of hpr's); either way the job ends non-zero within
    HPR_TIMEOUT, and whatever hpr says names the dead rank."""
    ck, log, timeout = tmp_path / "ck", tmp_path / "log.json", 3
    code, out, err, took = job(corpus, env, tmp_path, "--steps", 6, "--batch", 6, "--ckpt-dir", ck,
                               "--ckpt-every", 2, "--log-json", log, n=3, fault="kill_in_save@step=4,rank=1",
                               launcher=disable_auto_cleanup(), HPR_TIMEOUT=timeout)
    lived = time.time() - log.stat().st_mtime  # rank 0 logs step 4 just before the save begins
    assert code != 0 and took < timeout + 30, (code, took)
    said = "error:" in err
    # a survivor that reaches its deadline must say why it stops; only one ended before it may be silent
    assert said or lived < timeout, f"the survivors outlived the save's start by {lived:.1f} s, past " \
                                    f"HPR_TIMEOUT={timeout} s, and hpr said nothing:\n{out}\n{err}"
    if said:  # rank 0 waits for rank 1 in the save; rank 2 waits for rank 0, and says why
        assert "error: step 4: saving checkpoint step-00000004: " in err, err
        assert "waiting for rank 1. It is dead" in err or "Rank 1 (pid" in err, err
    assert "Traceback" not in err, err
    assert steps_in(ck) == [2] and latest(ck) == 2
    complete(ck / "step-00000002")


# NaN / Inf -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [["--zero", 1], ["--zero", 2], ["--zero", 3], ["--tp", 2], ["--pp", 2]],
                         ids=["dp2-zero1", "dp2-zero2", "dp2-zero3", "tp2", "pp2"])
def test_nan_in_one_ranks_gradient_skips_the_step_on_every_rank(corpus, env, tmp_path, layout):
    ck = tmp_path / "ck"
    out, err = succeeded(job(corpus, env, tmp_path, "--steps", 5, "--ckpt-dir", ck, "--ckpt-every", 1,
                             "--ckpt-keep", 10, "--log-json", tmp_path / "log.json", *layout,
                             fault="nan_grad@step=3,rank=1"))
    skipped = [ln for ln in out.splitlines() if "skipped" in ln]
    assert len(skipped) == 1 and skipped[0].startswith("step 3: skipped") and "optimizer state untouched" in skipped[0]
    lines = {d["step"]: d for d in log_lines(tmp_path / "log.json") if "val_loss" not in d and "step" in d}
    assert sorted(lines) == [1, 2, 3, 4, 5] and lines[3]["skipped"] is True
    assert all("skipped" not in lines[s] and lines[s]["loss"] == lines[s]["loss"] for s in (1, 2, 4, 5))
    # step 3 changed nothing: parameters, moments and AdamW's step count are step 2's, bit for bit
    for f in ("params.safetensors", "optim.safetensors"):
        assert (ck / "step-00000002" / f).read_bytes() == (ck / "step-00000003" / f).read_bytes(), f
    assert [complete(ck / f"step-{s:08d}")["optimizer"]["t"] for s in (2, 3, 4)] == [2, 2, 3]
    assert (ck / "step-00000004" / "params.safetensors").read_bytes() != (ck / "step-00000003" / "params.safetensors").read_bytes()


def test_nan_every_step_stops_after_max_bad_steps_with_a_checkpoint(corpus, env, tmp_path, reference):
    ck = tmp_path / "ck"
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                            "--ckpt-keep", 10, "--max-bad-steps", 2, fault="nan_grad@step=3+,rank=0")
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    assert [ln for ln in out.splitlines() if "skipped" in ln][-1].startswith("step 4: skipped")
    # the same verdict on both ranks (counted, not split into lines: the ranks' lines may interleave)
    assert err.count("error: stopped at step 4: 2 steps in a row had a NaN or Inf") == 2, err
    assert err.count("step-00000004 holds the parameters of the last good step") == 2, err
    assert steps_in(ck) == [2, 4] and latest(ck) == 4
    for f in ("params.safetensors", "optim.safetensors"):
        assert (ck / "step-00000002" / f).read_bytes() == (ck / "step-00000004" / f).read_bytes(), f
    assert complete(ck / "step-00000004")["optimizer"]["t"] == 2
    # the fault gone (a bad stretch of data, say), the run resumes after the bad steps
    out, _ = succeeded(job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--resume"))
    assert "(step 4)" in out and latest(ck) == 6


# the disk ------------------------------------------------------------------------------------------------
def test_disk_full_while_saving_keeps_the_previous_checkpoint(corpus, env, tmp_path, reference):
    ck = tmp_path / "ck"
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                            fault="disk_full@step=4")
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    assert err.count("error: could not save checkpoint step-00000004") == 2 and "No space left on device" in err
    assert err.count(f"The previous checkpoint, {ck}/step-00000002, is intact: --resume continues from it.") == 2
    assert sorted(os.listdir(ck)) == ["latest", "step-00000002"]  # no half-written leftovers
    assert latest(ck) == 2
    complete(ck / "step-00000002")
    resume_matches(corpus, env, tmp_path, ck, reference, 2)


def test_read_only_checkpoint_folder(corpus, env, tmp_path, reference):
    """chmod makes the folder read-only for a normal user; root writes through it, so then the fault
    hook raises EROFS where the folder is written."""
    ck = tmp_path / "ck"
    succeeded(job(corpus, env, tmp_path, "--steps", 2, "--ckpt-dir", ck))
    before = {n: (ck / n).stat().st_mtime_ns for n in os.listdir(ck)}
    fault = None
    if os.geteuid() == 0:
        fault = "read_only@step=4"
    else:
        ck.chmod(0o555)
    try:
        code, out, err, _ = job(corpus, env, tmp_path, "--steps", 6, "--ckpt-dir", ck, "--ckpt-every", 2,
                                "--resume", fault=fault)
    finally:
        ck.chmod(0o755)
    assert code == 2, (code, out, err)
    assert "error: could not save checkpoint step-00000004" in err, err
    assert "Read-only file system" in err or "Permission denied" in err, err
    assert f"{ck}/step-00000002, is intact" in err, err
    assert {n: (ck / n).stat().st_mtime_ns for n in os.listdir(ck)} == before  # untouched
    complete(ck / "step-00000002")


# drift ---------------------------------------------------------------------------------------------------
def test_replicas_that_drift_apart_are_caught_by_the_checksum(corpus, env, tmp_path):
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", 8, "--check-every", 2, fault="drift@step=3,rank=1")
    assert code == 2, (code, out, err)
    assert err.count("error: data-parallel replicas drifted apart by step 4") == 2, err
    assert "(world rank 1 differs from world rank 0)" in err, err
    # the check is what catches it: without it the run goes on
    succeeded(job(corpus, env, tmp_path, "--steps", 5, "--check-every", 0, fault="drift@step=3,rank=1"))


# the flags ------------------------------------------------------------------------------------------------
def test_bad_failure_flags_are_rejected(corpus, env, tmp_path):
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", 2, "--max-bad-steps", 0, n=1)
    assert code == 2 and err.startswith("error: --max-bad-steps must be >= 1"), err
    code, out, err, _ = job(corpus, env, tmp_path, "--steps", 2, n=1, fault="kill@step=two")
    assert code == 2 and "error: HPR_FAULT='kill@step=two'" in err and "Traceback" not in err, err


def test_a_run_with_hpr_fault_set_says_so_once_on_rank_0(corpus, env, tmp_path):
    """HPR_FAULT in production would inject faults: a run that has it prints a banner, once (rank 0, not
    every rank), and a run without it prints none. The fault here (step 99) never fires."""
    banner = "is set: faults will be injected (tests only)"
    out, err = succeeded(job(corpus, env, tmp_path, "--steps", 1, fault="drift@step=99,rank=1"))
    lines = [ln for ln in (out + err).splitlines() if banner in ln]
    assert lines == ["HPR_FAULT='drift@step=99,rank=1' " + banner], out + err
    out, err = succeeded(job(corpus, env, tmp_path, "--steps", 1))
    assert "HPR_FAULT" not in out + err, out + err
