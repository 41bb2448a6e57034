"""``python -m hpr.bench scale [--presets S,M] [--layouts 1x1x1,2x1x1z3,...] [--zeros 0,2,3]
[--recompute-preset S] [--quick] [--json FILE]``: the memory planner against the memory a real run
takes, and activation recomputation's
memory and time.

1. Planner vs measured: for each preset and dp x tp x pp layout it runs the trainer (``python -m
   hpr.train``, under mpiexec for more than one rank; a layout written 2x1x1z3 runs at --zero 3, and
   --zeros adds every listed ZeRO stage to each layout with dp > 1) for a few steps on the default corpus, and reads
   from its --log-json the planner's predicted peak resident memory of the largest rank and the peak
   measured there (VmHWM, the max over the ranks). Prints both and the ratio, and exits 2 when a
   ratio is outside 1 +- --tolerance (default 10%).
2. Recomputation: for each --recompute mode, one rank builds the preset's model and runs forward +
   backward: the activation bytes kept across forward -> backward (measured: the Workspace's buffers
   that are not backward temporaries; beside it the planner's figure), the step's CPU time on one
   thread (forward + backward; the least over interleaved rounds, every mode once per round: CPU
   time and the minimum keep other processes' load out of it), and both as
   ratios to --recompute none, against the issue's targets (block: >= 60% less memory for <= 35% more
   time; mlp: >= 30% for <= 10%).

JSON: {"tolerance", "runs": [{"preset", "dp", "tp", "pp", "zero", "ranks", "predicted_mib", "peak_rss_mib",
"ratio", "ok"}], "recompute": {"preset", "batch", "rows": [{"mode", "act_mib", "act_mib_planner",
"act_ratio", "step_ms", "time_ratio"}]}}

Usage: ``python -m hpr.bench scale --presets S,M``"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from hpr import cpu
from hpr.bench import write_json
from hpr.bench.report import find_mpiexec
from hpr.model import GPT, GPTConfig
from hpr.model.memory import measured_split, split_bytes, stage_buffers
from hpr.nn import RECOMPUTE

TARGETS = {"block": (0.60, 0.35), "mlp": (0.30, 0.10)}  # (least activation cut, most extra time)


def parse_layout(text):
    """'dp x tp x pp [z ZeRO stage]' written 2x1x1 or 2x1x1z3 -> (2, 1, 1, 0) or (2, 1, 1, 3)."""
    try:
        shape, _, z = text.lower().partition("z")
        dp, tp, pp = (int(v) for v in shape.split("x"))
        zero = int(z) if z else 0
    except ValueError:
        raise SystemExit(f"--layouts: {text!r} is not DPxTPxPP[zK] (e.g. 2x1x1 or 2x1x1z3)") from None
    return dp, tp, pp, zero


def with_zeros(layouts, zeros):
    """Each layout, then the same layout at every ZeRO stage of `zeros` it is not already at (dp > 1)."""
    out = []
    for lay in layouts:
        for z in [lay[3]] + [z for z in zeros if lay[0] > 1 and z != lay[3]]:
            if lay[:3] + (z,) not in out:
                out.append(lay[:3] + (z,))
    return out


def run_trainer(preset, layout, batch, steps, env):
    """One training run as a child process; returns its {"predicted_mib", "peak_rss_mib"} (or raises
    with the run's output when it failed)."""
    dp, tp, pp, zero = layout
    n = dp * tp * pp
    m = 2 if pp > 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.jsonl")
        cmd = [sys.executable, "-m", "hpr.train", "--preset", preset, "--steps", str(steps), "--batch", str(batch),
               "--dp", str(dp), "--tp", str(tp), "--pp", str(pp), "--micro-batches", str(m), "--zero", str(zero),
               "--eval-every", "0",
               "--eval-batches", "1", "--sample-tokens", "0", "--threads", "1", "--log-json", log]
        if n > 1:
            launcher = find_mpiexec()
            if launcher is None:
                raise SystemExit("no mpiexec found (pip install mpich)")
            cmd = [launcher, "-n", str(n)] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        with open(log) as f:
            return json.loads(f.read().splitlines()[-1])["memory"]


def planner_vs_measured(presets, layouts, batch, steps, tol):
    """Rows of part 1 (module docstring), printed as they come."""
    env = dict(os.environ)
    env.setdefault("HPR_TIMEOUT", "120")
    rows = []
    print(f"# planner vs measured peak resident memory of the largest rank (--steps {steps}, batch {batch}, "
          f"default corpus); tolerance +-{tol:.0%}")
    print(f"{'preset':<8} {'layout':<16} {'zero':>4} {'predicted MiB':>14} {'measured MiB':>13} {'ratio':>6}  verdict")
    for preset in presets:
        for lay in layouts:
            mem = run_trainer(preset, lay, batch, steps, env)
            ratio = mem["peak_rss_mib"] / mem["predicted_mib"]
            ok = abs(ratio - 1) <= tol
            rows.append({"preset": preset, "dp": lay[0], "tp": lay[1], "pp": lay[2], "zero": lay[3],
                         "ranks": int(np.prod(lay[:3])),
                         **mem, "ratio": ratio, "ok": ok})
            print(f"{preset:<8} {'dp {} tp {} pp {}'.format(*lay[:3]):<16} {lay[3]:>4} {mem['predicted_mib']:>14.1f} "
                  f"{mem['peak_rss_mib']:>13.1f} {ratio:>6.2f}  {'ok' if ok else 'OUTSIDE'}", flush=True)
    return rows


def recompute_table(preset, batch, rounds):
    """Rows of part 2 (module docstring): per mode, activation bytes and step time vs none."""
    config = GPTConfig.preset(preset)
    r = np.random.default_rng(0)
    x = r.integers(0, config.vocab_size, (batch, config.context)).astype(np.int32)
    cpu.set_num_threads(1)  # one thread: the step's CPU time is its cost, whatever else the machine runs
    models = {mode: GPT(config, seed=0, recompute=mode) for mode in RECOMPUTE}
    times = {mode: [] for mode in RECOMPUTE}
    for k in range(rounds + 1):  # round 0 warms up (allocates every buffer)
        for mode, m in models.items():
            t0 = time.process_time()
            m.forward(x, x)
            m.backward()
            if k:
                times[mode].append(time.process_time() - t0)
    rows = []
    for mode, m in models.items():
        act = measured_split(m.ws)[0]
        planned = split_bytes(stage_buffers(config, batch, config.context, recompute=mode), m.dtype.itemsize)[0]
        rows.append({"mode": mode, "act_mib": act / 2 ** 20, "act_mib_planner": planned / 2 ** 20,
                     "step_ms": 1e3 * min(times[mode])})
    for row in rows:
        row["act_ratio"] = row["act_mib"] / rows[0]["act_mib"]
        row["time_ratio"] = row["step_ms"] / rows[0]["step_ms"]
    print(f"\n# --recompute on {preset}, batch {batch} x {config.context}, one rank, one thread; step = forward + "
          f"backward, CPU time, min of {rounds} interleaved rounds")
    print(f"{'mode':<6} {'activations MiB':>16} {'planner MiB':>12} {'vs none':>8} {'step ms':>8} {'vs none':>8}  "
          "target")
    for row in rows:
        tgt = TARGETS.get(row["mode"])
        verdict = ""
        if tgt:
            cut, extra = 1 - row["act_ratio"], row["time_ratio"] - 1
            verdict = (f">= {tgt[0]:.0%} less for <= {tgt[1]:.0%} more: "
                       f"{'met' if cut >= tgt[0] and extra <= tgt[1] else 'missed'} ({cut:.0%} less, {extra:+.0%})")
        print(f"{row['mode']:<6} {row['act_mib']:>16.2f} {row['act_mib_planner']:>12.2f} {row['act_ratio']:>8.2f} "
              f"{row['step_ms']:>8.1f} {row['time_ratio']:>8.2f}  {verdict}")
    return {"preset": preset, "batch": batch, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="S,M", help="comma-separated presets for part 1 (default S,M)")
    ap.add_argument("--layouts", default="1x1x1,2x1x1,1x2x1,1x1x2,2x2x1",
                    help="comma-separated DPxTPxPP layouts (default 1x1x1,2x1x1,1x2x1,1x1x2,2x2x1)")
    ap.add_argument("--zeros", default="", help="comma-separated ZeRO stages to run each dp > 1 layout at as "
                    "well (e.g. 1,2,3; default none)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    ap.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    ap.add_argument("--tolerance", type=float, default=0.10, help="largest |measured/predicted - 1| (default 0.10)")
    ap.add_argument("--recompute-preset", default="S", help="preset of part 2 (default S)")
    ap.add_argument("--recompute-batch", type=int, default=8, help="batch of part 2 (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of part 2 (default 5)")
    ap.add_argument("--quick", action="store_true", help="tiny, 1x1x1, 2x1x1 and 2x1x1z3, 2 steps, 2 rounds: a smoke "
                    "run")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON to FILE")
    a = ap.parse_args(argv)
    if a.quick:
        a.presets, a.layouts, a.steps, a.rounds, a.recompute_preset = "tiny", "1x1x1,2x1x1,2x1x1z3", 2, 2, "tiny"
    zeros = [int(z) for z in a.zeros.split(",") if z]
    layouts = with_zeros([parse_layout(v) for v in a.layouts.split(",") if v], zeros)
    runs = planner_vs_measured([p for p in a.presets.split(",") if p], layouts, a.batch, a.steps, a.tolerance)
    rec = recompute_table(a.recompute_preset, a.recompute_batch, a.rounds)
    if a.json:
        write_json(a.json, {"tolerance": a.tolerance, "runs": runs, "recompute": rec})
    bad = [r for r in runs if not r["ok"]]
    if bad:
        print("error: the planner is off by more than the tolerance for " + ", ".join(
            f"{r['preset']} dp {r['dp']} tp {r['tp']} pp {r['pp']} zero {r['zero']} (ratio {r['ratio']:.2f})" for r in bad),
            file=sys.stderr)
        return 2
    return 0
