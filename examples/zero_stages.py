"""ZeRO stages side by side on the ranks of one job (pure data parallelism): every stage's model is
built in each process and their steps alternate, so each ratio comes from the same run on the same
(possibly shared) machine. Prints each rank's model state (the arrays it keeps between steps) against
16·Ψ/N, the step times of ZeRO 0-3 (min and median over the steps, slowest rank) and their tokens/s
against ZeRO-1's, and ZeRO-3's exposed communication: the main thread's "wait ..." spans on the
compute track of hpr.trace (gathers and reduce-scatters it had to wait for), as a share of the step.

Usage: ``mpiexec -n 4 python examples/zero_stages.py --preset M --steps 6``"""
import argparse

import numpy as np

import hpr
from hpr import trace
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import DataParallel, paged_zeros
from hpr.train import train_step

STAGES = (0, 1, 2, 3)


def build(world, cfg, zero, bucket_mb):
    """(model, sync, opt) of one ZeRO stage, wired as the trainer wires it."""
    alloc = paged_zeros if zero >= 2 else (world.alloc if world.size > 1 else None)
    model = GPT(cfg, seed=1, alloc=alloc, params_alloc=paged_zeros if zero == 3 else None)
    sync = DataParallel(world, model.layout, bucket_mb, "float32", zero, units=model.param_units())
    sync.attach([model])
    p, g, lo, hi, seg = sync.optimizer_buffers(model.params, model.grads)
    return model, sync, AdamW(model.layout, p, g, lo=lo, hi=hi, segments=seg)


def state_bytes(model, sync, opt):
    """Bytes of the arrays this rank keeps between steps (paged full buffers hold nothing then)."""
    kept = opt.params.nbytes + opt.grads.nbytes + opt.m.nbytes + opt.v.nbytes
    if sync.zero < 2:
        return kept if opt.params is model.params else kept + model.params.nbytes
    return kept + (model.params.nbytes if sync.zero == 2 else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="M")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--bucket-mb", type=float, default=4.0)
    ap.add_argument("--trace", default="zero_stages_trace.json", help="the timeline written at the end")
    ap.add_argument("--stages", default="0,1,2,3", help="comma-separated ZeRO stages to run (default 0,1,2,3; "
                    "1 and 3 at least: the ratios are against ZeRO-1, the exposed share is ZeRO-3's)")
    a = ap.parse_args()
    stages = tuple(int(z) for z in a.stages.split(","))
    if not {1, 3} <= set(stages) or not set(stages) <= set(STAGES):
        raise SystemExit(f"--stages {a.stages}: ZeRO stages from 0-3 including 1 and 3")
    world = hpr.init()
    n = world.size
    cfg = GPTConfig.preset(a.preset, dtype="float32")
    batch = 2 * n
    tokens = np.random.default_rng(0).integers(0, 256, 400000).astype(np.uint8)
    data = Batches(tokens, cfg.context, seed=2)
    sched = CosineSchedule(1e-3, 1000, 1)
    jobs = {z: build(world, cfg, z, a.bucket_mb) for z in stages}
    psi = jobs[1][0].layout.size
    times = {z: [] for z in stages}
    exposed = []
    trace.start(a.trace)
    compute = trace.TRACKS["compute"]
    for i in range(a.steps + 1):  # step 0 warms up
        for z in stages:
            model, sync, opt = jobs[z]
            n0 = trace.recorded()
            world.barrier()
            t0 = trace.now()
            train_step(model, opt, sync, sched, data, i + 1, batch)
            dt = (trace.now() - t0) / 1e9
            if i:
                times[z].append(dt)
                if z == 3:
                    ev = trace.events()[n0:]
                    wait = sum(e["dur"] for e in ev if e["tid"] == compute and e["name"].startswith("wait "))
                    exposed.append(wait / 1e6 / dt)
    state = {z: state_bytes(*jobs[z]) for z in stages}
    everyone = world.gather_obj((state, times, exposed), root=0)
    path = trace.finish(world)  # collective
    if world.rank:
        return
    print(f"preset {a.preset}: {psi:,} parameters, {n} data-parallel ranks, batch {batch} x {cfg.context}, "
          f"buckets {a.bucket_mb:g} MiB; 16·Ψ/N = {16 * psi / n / 2**20:.1f} MiB")
    slow = {z: np.array([max(e[1][z][k] for e in everyone) for k in range(a.steps)]) for z in stages}
    ref = np.median(slow[1])
    for z in stages:
        st = max(e[0][z] for e in everyone)
        print(f"ZeRO-{z}: model state per rank {st / 2**20:7.1f} MiB ({st / (16 * psi / n):.3f} x 16·Ψ/N); step "
              f"min {slow[z].min():.3f} s, median {np.median(slow[z]):.3f} s; tokens/s vs ZeRO-1 "
              f"{ref / np.median(slow[z]):.3f} (median), {slow[1].min() / slow[z].min():.3f} (min)")
    ex = np.array([np.mean([e[2][k] for e in everyone]) for k in range(a.steps)])
    print(f"ZeRO-3 exposed communication: median {np.median(ex):.1%} of the step (min {ex.min():.1%}, max "
          f"{ex.max():.1%}), mean over ranks; timeline {path} (gathers on the \"param gather\" track)")


if __name__ == "__main__":
    main()
