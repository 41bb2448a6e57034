"""``python -m hpr.bench train --preset S|M [--threads K] [--no-compile] [--device gpu] [--json FILE]``: one full training step of hpr's
GPT (forward, backward, gradient norm, AdamW) timed over several steps, with tokens/s and model FLOPs
utilisation (achieved FLOP/s over the float32 matmul FLOP/s numpy's BLAS reaches in this same run),
and, when PyTorch happens to be installed, the same model and recipe in PyTorch eager with the same
thread count, side by side, with the ratio, and a torch.compile (inductor) row when compiling works on
the machine (--no-compile skips it). hpr and torch alternate in rounds so drift on a noisy machine hits
both; medians of all timed steps are compared, by wall time and by the process's CPU time (on a machine
shared with other work the CPU time is the steadier figure). The header names the CPU, the instruction
set hpr's kernels run at and the load average.

With --device gpu the step runs on one GPU (CuPy; parameters, activations and optimizer state there) and
MFU is against the float32 and float16 matmul FLOP/s cuBLAS reaches on that GPU in this same run (the
tensor-core peak is the float16 one); no torch reference there.

The step is hpr.train.train_step, the trainer's own, on one process (hpr.init over MPI.COMM_SELF: its
DataParallel has nothing to average), over windows of a random corpus (random_batches, which the dp and
layouts benchmarks use too)."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from mpi4py import MPI

import hpr
from hpr import cpu
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW
from hpr.parallel import DataParallel
from hpr.train import train_step

from . import torch_reference, write_json

RANDOM_CORPUS_SEED = 1234  # the random corpus is the same in every process and every run


def random_batches(config, seed=0, n_tokens=1 << 20):
    """train_step's batches over a random corpus: n_tokens tokens drawn uniformly from the vocabulary
    (the same in every process), windows in hpr.data.Batches's order for `seed`."""
    tokens = np.random.default_rng(RANDOM_CORPUS_SEED).integers(0, config.vocab_size, n_tokens)
    return Batches(tokens.astype(np.uint8 if config.vocab_size <= 256 else np.int32), config.context, seed)


def hpr_step_times(world, config, batch, steps, warmup, seed=0, lr=1e-3, device=None):
    """Wall seconds and CPU seconds (the process's, every thread) of `steps` train_steps of `batch`
    sequences after `warmup` untimed ones, on the ranks of world (one, here), and every step's loss."""
    model = GPT(config, seed=seed, device=device)
    sync = DataParallel(world, model.layout)
    opt = AdamW(model.layout, model.params, model.grads)
    batches = random_batches(config, seed)
    finish = device.synchronize if device is not None else (lambda: None)
    times, cpus, losses = [], [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _, _ = train_step(model, opt, sync, lambda step: lr, batches, i + 1, batch)
        finish()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        losses.append(loss)
        if i >= warmup:
            times.append(dt)
            cpus.append(dc)
    return times, cpus, losses


def torch_in_subprocess(preset, batch, threads, steps, seed, compile=False):
    """torch_reference's figures (step_s, cpu_s, matmul_flops) from its own process; None when it
    failed (torch.compile needs a working C++ compiler: its failure is reported, not fatal)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "torch.json")
        cmd = [sys.executable, "-m", "hpr.bench.torch_reference", "--preset", preset, "--batch", str(batch),
               "--threads", str(threads), "--steps", str(steps), "--warmup", "2", "--seed", str(seed), "--json", out]
        env = dict(os.environ)
        if cpu.set_wait_policy:  # hpr's choice for its own OpenMP, not torch's
            env.pop("OMP_WAIT_POLICY", None)
            if env.get("GOMP_SPINCOUNT") == hpr.config.OMP_SPINCOUNT:
                env.pop("GOMP_SPINCOUNT")
        if compile:
            r = subprocess.run(cmd + ["--compile"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            if r.returncode != 0:
                why = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                print(f"torch.compile did not work here: {why[:200]}")
                return None
        else:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(out) as f:
            return json.load(f)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="S", help="S or M (or tiny)")
    ap.add_argument("--threads", type=int, default=1, help="threads for hpr's kernels and matmuls and torch (default 1)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 16 for S, 8 for M)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 6 for S, 3 for M)")
    ap.add_argument("--rounds", type=int, default=2, help="hpr/torch alternations (default 2)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference even if installed")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (its compile takes a while)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu (default) or gpu (CuPy)")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.device == "gpu":
        return gpu_main(a)
    config = GPTConfig.preset(a.preset)
    batch = a.batch or (8 if a.preset == "M" else 16)
    steps = a.steps or (3 if a.preset == "M" else 6)
    world = hpr.init(MPI.COMM_SELF, threads=a.threads)  # this process alone, a.threads threads
    tv = None if a.no_torch else torch_reference.available()

    peaks = [cpu.matmul_flops("float32")]  # probed again after every hpr round: a peak, so the best
    cpu_peaks = [cpu.matmul_flops("float32", clock=time.process_time)]  # (one probe in a slow moment of a
    # shared host read low, and every MFU of the run high: 86-88% here for steps worth 68-74%)
    ftok = config.flops_per_token()
    tokens = batch * config.context
    print(f"hpr.bench train: preset {a.preset} ({config.n_layers} layers, d_model {config.d_model}, context "
          f"{config.context}), batch {batch} = {tokens:,} tokens/step, {a.threads} thread(s), "
          f"{ftok / 1e6:.2f} MFLOP/token")
    print(f"CPU: {cpu.cpu_model()}; {cpu.isa_summary()}; load average {os.getloadavg()[0]:.2f}")
    print(cpu.blas_summary())
    runs = {"hpr": ([], [])}
    torch_peak = None
    for r in range(a.rounds):
        t, c, _ = hpr_step_times(world, config, batch, steps, warmup=1, seed=r)
        runs["hpr"][0].extend(t)
        runs["hpr"][1].extend(c)
        peaks.append(cpu.matmul_flops("float32"))
        cpu_peaks.append(cpu.matmul_flops("float32", clock=time.process_time))
        if tv:  # in its own process: torch's OpenMP threads would otherwise spin beside hpr's next round
            res = torch_in_subprocess(a.preset, batch, a.threads, steps, seed=r)
            runs.setdefault(f"torch {tv}", ([], []))[0].extend(res["step_s"])
            runs[f"torch {tv}"][1].extend(res["cpu_s"])
            torch_peak = res["matmul_flops"]
    if tv and not a.no_compile:
        res = torch_in_subprocess(a.preset, batch, a.threads, steps, seed=0, compile=True)
        if res is not None:
            runs["torch.compile"] = (res["step_s"], res["cpu_s"])
    peak, cpu_peak = max(peaks), max(cpu_peaks)
    print(f"reference: numpy float32 matmul (1024^3 on {a.threads} thread(s), {cpu.blas_info()}) "
          f"{peak / 1e9:.1f} GFLOP/s wall, {cpu_peak / 1e9:.1f} GFLOP per CPU-second (the best of {len(peaks)} "
          "probes: before the rounds and after each of hpr's)")
    rows = [step_row(name, t, c, tokens, ftok, peak, cpu_peak) for name, (t, c) in runs.items()]
    print_rows(rows)
    out = {"preset": a.preset, "batch": batch, "threads": a.threads, "matmul_gflops": peak / 1e9,
           "matmul_gflops_per_cpu_s": cpu_peak / 1e9, "rows": rows,
           "cpu_model": cpu.cpu_model(), "isa": cpu.isa()[0], "load_average": os.getloadavg()[0]}
    if tv:
        ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
        cratio = rows[1]["cpu_ms"] / rows[0]["cpu_ms"]
        out.update(ratio_hpr_over_torch=ratio, ratio_cpu_time=cratio, torch_matmul_gflops=torch_peak / 1e9)
        print(f"\nhpr / torch eager tokens/s: {ratio:.2f}x wall (medians), {cratio:.2f}x CPU time; torch's own "
              f"matmul: {torch_peak / 1e9:.1f} GFLOP/s (MFU of every row is against numpy's)")
    else:
        print("\n(no side-by-side reference: " + ("--no-torch was given)" if a.no_torch else
                                                "PyTorch is not installed; pip install torch to get one)"))
    if a.json:
        write_json(a.json, out)
    return 0


def step_row(name, times, cpus, tokens, ftok, peak, cpu_peak):
    """One row of the table: medians of the wall and CPU seconds of the timed steps, the fastest step,
    tokens/s and MFU from the wall median, and the CPU-time MFU: model FLOPs per CPU-second of the
    step over the matmul's FLOPs per CPU-second."""
    med, cmed = statistics.median(times), statistics.median(cpus)
    tps = tokens / med
    return {"name": name, "step_ms": med * 1e3, "min_ms": min(times) * 1e3, "cpu_ms": cmed * 1e3,
            "tokens_per_s": tps, "mfu": tps * ftok / peak, "cpu_mfu": tokens * ftok / cmed / cpu_peak,
            "steps": len(times)}


def print_rows(rows):
    print(f"\n{'':<18}{'step ms':>10}{'min ms':>9}{'CPU ms':>9}{'tokens/s':>12}{'MFU':>7}{'CPU MFU':>9}")
    for rw in rows:
        print(f"{rw['name']:<18}{rw['step_ms']:>10.1f}{rw['min_ms']:>9.1f}{rw['cpu_ms']:>9.1f}"
              f"{rw['tokens_per_s']:>12,.0f}{rw['mfu']:>7.0%}{rw['cpu_mfu']:>9.0%}")


def gpu_main(a):
    world = hpr.init(MPI.COMM_SELF)
    dev = hpr.device.select("gpu", local_rank=0)
    config = GPTConfig.preset(a.preset)
    batch = a.batch or 64
    steps = a.steps or 10
    ftok = config.flops_per_token()
    tokens = batch * config.context
    print(f"hpr.bench train --device gpu: {dev.name()}, preset {a.preset} ({config.n_layers} layers, d_model "
          f"{config.d_model}, context {config.context}), batch {batch} = {tokens:,} tokens/step, "
          f"{ftok / 1e6:.2f} MFLOP/token", flush=True)
    peak32 = cpu.matmul_flops("float32", device=dev)
    peak16 = cpu.matmul_flops("float16", device=dev)
    print(f"reference: cuBLAS matmul (8192^3) float32 {peak32 / 1e12:.1f} TFLOP/s, float16 {peak16 / 1e12:.1f} TFLOP/s",
          flush=True)
    times = []
    for r in range(a.rounds):
        t, _, losses = hpr_step_times(world, config, batch, steps, warmup=2, seed=r, device=dev)
        times += t
    med = statistics.median(times)
    tps = tokens / med
    print(f"\n{'':<18}{'step ms':>10}{'tokens/s':>12}{'MFU fp32':>10}{'MFU fp16':>10}")
    print(f"{'hpr (GPU)':<18}{med * 1e3:>10.2f}{tps:>12,.0f}{tps * ftok / peak32:>10.1%}{tps * ftok / peak16:>10.1%}")
    out = {"preset": a.preset, "batch": batch, "device": dev.name(), "matmul_fp32_tflops": peak32 / 1e12,
           "matmul_fp16_tflops": peak16 / 1e12, "rows": [{"name": "hpr gpu", "step_ms": med * 1e3,
                                                          "tokens_per_s": tps, "mfu": tps * ftok / peak32,
                                                          "mfu_fp16": tps * ftok / peak16, "steps": len(times)}]}
    if a.json:
        write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
