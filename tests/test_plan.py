"""The memory planner (hpr.plan, hpr.model.memory) and activation recomputation (--recompute), on one
process: the memory model's buffers equal a real model's workspace key by key, its parameter counts the
layout's; recomputation's losses and gradients are bit-identical to keeping everything (float32 and
float64) while the kept activations really shrink; the plan's CLI, JSON and refusal; and the planner's
prediction against the trainer's measured peak resident memory (tiny preset)."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from hpr.data import Batches
from hpr.errors import ConfigError
from hpr.model import GPT, GPTConfig
from hpr.model.memory import block_param_elements, is_workspace, split_bytes, stage_buffers, stage_param_elements
from hpr.nn import RECOMPUTE
from hpr.optim import AdamW
from hpr.parallel.zero import ParamGather
from hpr import plan
from hpr.train import evaluate
from train_jobs import BASE, TRAIN, job

MODES = RECOMPUTE
LAUNCHER_BALLAST_MIB = 200  # what test_planner_against_measured_peak holds while it starts the trainer


def _tokens(config, b, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, config.vocab_size, (b, config.context)).astype(np.int32)
    y = r.integers(0, config.vocab_size, (b, config.context)).astype(np.int32)
    return x, y


def _ws_shapes(model):
    return {k: a.shape for k, a in model.ws.buffers().items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stage,pp", [(0, 1), (0, 2), (1, 2), (1, 3)])
def test_memory_model_matches_workspace(mode, stage, pp):
    """stage_buffers names every buffer a stage's step allocates, with its shape; params counted exactly."""
    config = GPTConfig.preset("tiny", n_layers=3)
    b, t = 3, config.context
    m = GPT(config, seed=0, stage=(stage, pp), recompute=mode)
    assert m.layout.size == stage_param_elements(config, 1, stage, pp)
    x, y = _tokens(config, b)
    c = config.d_model
    inp = x if stage == 0 else np.random.default_rng(1).standard_normal((b * t, c)).astype(np.float32)
    m.stage_forward(inp, b, t, targets=y if stage == pp - 1 else None)
    m.stage_backward(None if stage == pp - 1 else np.ones((b * t, c), np.float32))
    assert _ws_shapes(m) == stage_buffers(config, b, t, 1, stage, pp, mode)


def _train(config, mode, steps=3, b=2):
    m = GPT(config, seed=3, recompute=mode)
    opt = AdamW(m.layout, m.params, m.grads)
    losses, grads = [], []
    for s in range(steps):
        x, y = _tokens(config, b, seed=s)
        m.zero_grad()
        losses.append(m.forward(x, y))
        m.backward()
        grads.append(m.grads.copy())
        opt.step(1e-3)
    return losses, grads, m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_recompute_bit_identical(dtype):
    config = GPTConfig.preset("tiny", n_layers=3, dtype=dtype)
    ref_losses, ref_grads, ref = _train(config, "none")
    for mode in MODES[1:]:
        losses, grads, m = _train(config, mode)
        assert losses == ref_losses, mode
        for g, r in zip(grads, ref_grads):
            assert np.array_equal(g, r), mode
        assert np.array_equal(m.params, ref.params), mode


def _activation_bytes(model):
    return sum(a.nbytes for k, a in model.ws.buffers().items() if not is_workspace(k))


def test_recompute_frees_activations():
    """The buffers kept across forward -> backward, measured on real models of preset S (4 blocks),
    drop by the issue's targets (block >= 60%, mlp >= 30%), and the memory model says the same bytes."""
    config = GPTConfig.preset("S")
    b = 2
    got = {}
    for mode in MODES:
        m = GPT(config, seed=0, recompute=mode)
        x, y = _tokens(config, b)
        m.forward(x, y)
        m.backward()
        got[mode] = _activation_bytes(m)
        assert got[mode] == split_bytes(stage_buffers(config, b, config.context, recompute=mode), 4)[0]
    assert got["block"] <= 0.4 * got["none"], got
    assert got["mlp"] <= 0.7 * got["none"], got
    assert got["attn"] < got["none"], got


def test_recompute_rejected():
    with pytest.raises(ConfigError, match="recompute"):
        GPT(GPTConfig.preset("tiny"), recompute="all")


# ---- the planner ----------------------------------------------------------------------------------
def _job(preset="tiny", **kw):
    return plan.Job(GPTConfig.preset(preset), **{"batch": 8, **kw})


def test_zero_stages_shrink_model_state():
    """ZeRO-k at dp 4 (what hpr.parallel.zero keeps): the optimizer state is 1/4 from stage 1; ZeRO-2
    keeps the full parameters plus the optimizer's contiguous shard (4 + 16/N bytes per parameter in
    all), the gradient shard and, at the end of a backward, the paged full gradients (at worst all);
    ZeRO-3 the parameter shard plus the gathered units (embedding, head, the block running and the
    ParamGather.DEPTH blocks prefetched ahead of it)."""
    job = _job("M", batch=8)
    c = job.config
    e = {z: plan.estimate(job, 4, 1, 1, z).roles for z in range(4)}
    p = e[0]["parameters"]
    block = block_param_elements(c) * 4
    wte, wpe = c.padded_vocab * c.d_model * 4, c.context * c.d_model * 4
    assert e[0]["optimizer"] == 2 * p and e[1]["optimizer"] == e[2]["optimizer"] == e[3]["optimizer"] == p // 2
    assert e[1]["gradients"] == p and e[1]["parameters"] == p
    assert e[2]["parameters"] == p + p // 4 and e[2]["gradients"] == p // 4 + p
    assert e[3]["parameters"] == p // 4 + wte + wpe + 2 * c.d_model * 4 + (1 + ParamGather.DEPTH) * block
    assert e[3]["gradients"] == e[2]["gradients"]
    kept = {z: e[z]["parameters"] + e[z]["optimizer"] + (p // 4 if z >= 2 else e[z]["gradients"]) for z in range(4)}
    assert kept[3] < kept[2] < kept[1] < kept[0]  # less the gradients in flight: what each stage keeps


def test_plan_sorted_fits_first_then_time():
    job = _job("S", batch=16)
    est = plan.plan(job, 4, 10 ** 12, 1e10)
    assert {(e.dp, e.tp, e.pp) for e in est} >= {(4, 1, 1), (1, 4, 1), (2, 2, 1), (1, 1, 4)}
    small = sorted(e.node_total for e in est)[len(est) // 2]
    est = plan.plan(job, 4, small, 1e10)
    fits = [e.fits for e in est]
    assert fits == sorted(fits, reverse=True) and any(fits) and not all(fits)
    for a, b in zip(est, est[1:]):
        if a.fits == b.fits:
            assert round(a.step_s, 4) <= round(b.step_s, 4)


def test_check_fits_refuses_and_lists():
    job = _job("S", batch=16)
    est = plan.plan(job, 4, 10 ** 12)
    big = max(est, key=lambda e: e.node_total)
    small = min(est, key=lambda e: e.node_total)
    mem = (big.node_total + small.node_total) // 2
    with pytest.raises(ConfigError, match="Layouts that fit") as ei:
        plan.check_fits(job, big.dp, big.tp, big.pp, big.zero, 4, mem)
    assert small.flags() in str(ei.value)
    assert plan.check_fits(job, small.dp, small.tp, small.pp, small.zero, 4, mem).node_total == small.node_total


def _plan_cli(*flags):
    return subprocess.run([sys.executable, "-m", "hpr.plan", *flags], capture_output=True, text=True, timeout=120)


def test_plan_cli_table_and_json(tmp_path):
    out = tmp_path / "plan.json"
    r = _plan_cli("--preset", "S", "--ranks", "4", "--batch", "8", "--no-rate", "--mem-mib", "100000",
                  "--json", str(out), "--recompute", "block")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    job = plan.Job(GPTConfig.preset("S"), 8, recompute="block")
    assert len(d["layouts"]) == len(plan.plan(job, 4, 10 ** 12))
    for row in d["layouts"]:
        e = plan.estimate(job, row["dp"], row["tp"], row["pp"], row["zero"])
        assert abs(row["total_mib"] - e.total / 2 ** 20) < 1e-9
        assert f"dp {row['dp']} x tp {row['tp']} x pp {row['pp']}" in r.stdout
    assert "total" in r.stdout and "fits" in r.stdout


@pytest.mark.parametrize("flags,what", [(["--preset", "XL", "--ranks", "2"], "preset"),
                                        (["--preset", "S", "--ranks", "0"], "at least 1"),
                                        (["--preset", "S", "--ranks", "2", "--zero", "5"], "--zero"),
                                        (["--preset", "S", "--ranks", "2", "--recompute", "all"], "--recompute"),
                                        (["--preset", "tiny", "--ranks", "3", "--batch", "4", "--no-rate"], "layout")])
def test_plan_cli_bad_flags(flags, what):
    r = _plan_cli(*flags, "--mem-mib", "1000")
    assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr, r.stderr


def _train_cli(corpus, env, tmp_path, *flags):
    return subprocess.run([sys.executable, TRAIN, "--data", str(corpus), *BASE, *map(str, flags)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_trainer_refuses_what_does_not_fit(corpus, env, tmp_path):
    r = _train_cli(corpus, env, tmp_path, "--steps", 1, "--mem-mib", 20)
    assert r.returncode == 2 and "needs about" in r.stderr and "--no-memory-check" in r.stderr, r.stderr
    r = _train_cli(corpus, env, tmp_path, "--steps", 1, "--mem-mib", 20, "--no-memory-check")
    assert r.returncode == 0, r.stderr


def _flag(layout, name, default):
    """The value of a flag in a (flag, value, ...) tuple."""
    return dict(zip(layout[::2], layout[1::2])).get(name, default)


@pytest.mark.parametrize("n,layout", [(1, ()), (2, ("--dp", 2)), (2, ("--pp", 2, "--micro-batches", 2)),
                                      (2, ("--dp", 2, "--zero", 2)), (2, ("--dp", 2, "--zero", 3))])
def test_planner_against_measured_peak(corpus, env, tmp_path, n, layout):
    """The trainer's prediction for its largest rank against the measured peak RSS (VmHWM, the max
    over the ranks): within 10% for the tiny preset (measured: 0.99-1.01; the issue's bound). At this
    size an idle rank and the start's matmul probe are most of it, so this checks the constants and the
    phases (ZeRO-2/3: paged buffers untouched at init, evaluation in the step's micro-batches); bench
    scale checks S and M, where the model state and activations matter. The banner prints what the
    rank keeps (tests/mpi/test_zero_memory.py checks those bytes). The 1-process trainer is this
    process's own child, launched while this process holds LAUNCHER_BALLAST_MIB (well above the
    prediction) resident: its measured peak must be its own, whatever ran before in this session
    (getrusage's ru_maxrss is not: it starts at the launcher's peak)."""
    log = tmp_path / "log.jsonl"
    if n == 1:
        ballast = np.ones(LAUNCHER_BALLAST_MIB * 2 ** 20 // 8)  # written, so resident
        r = _train_cli(corpus, env, tmp_path, "--steps", 3, "--log-json", log)
        del ballast
        code, out, err = r.returncode, r.stdout, r.stderr
    else:
        code, out, err, _ = job(corpus, env, tmp_path, "--steps", 3, "--log-json", log, *layout, n=n)
    assert code == 0, err
    last = json.loads(log.read_text().splitlines()[-1])["memory"]
    ratio = last["peak_rss_mib"] / last["predicted_mib"]
    assert 0.9 <= ratio <= 1.1, (last, out)
    assert "memory plan" in out and "peak resident" in out
    zero = _flag(layout, "--zero", 0)
    if zero >= 2:  # the banner prints what the rank keeps: ZeRO-2 4 + 16/N, ZeRO-3 16/N bytes a parameter
        m = re.search(r"parameters ([\d.]+) MiB, gradients ([\d.]+) MiB, optimizer state ([\d.]+) MiB", out)
        n = int(re.search(r"hpr tiny: ([\d,]+) parameters", out).group(1).replace(",", ""))
        kept = sum(float(v) for v in m.groups()) * 2 ** 20
        assert abs(kept - ((4 * n if zero == 2 else 0) + 16 * n / _flag(layout, "--dp", 1))) < 0.02 * 2 ** 20, \
            (kept, n, out)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 1e-6)])
def test_evaluate_in_micro_batches_equals_whole_batch(dtype, tol):
    """One rank: evaluate in the step's micro-batches (what the trainer runs, so evaluation needs no more
    memory than a step) gives the whole-batch mean loss over the same windows, to float rounding."""
    config = GPTConfig.preset("tiny", dtype=dtype)
    model = GPT(config, seed=3)
    val = Batches(np.random.default_rng(1).integers(0, 256, 20000).astype(np.uint8), config.context, seed=4)
    whole = evaluate(model, val, 3, 8)
    assert evaluate(model, val, 3, 8, micro=8) == whole  # one micro-batch: the same sum, exactly
    for micro in (1, 2, 4):
        got = evaluate(model, val, 3, 8, micro=micro)
        assert abs(got - whole) <= tol * abs(whole), (micro, got, whole)
