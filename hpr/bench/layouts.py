"""``mpiexec -n N python -m hpr.bench layouts --preset M|S|tiny [--batch B] [--micro-batches m] [--steps N]
[--threads K] [--json FILE]``: every dp x tp x pp layout of the world, side by side. For each layout that
hpr.parallel.valid_layouts allows for N ranks, this model, the batch and m, it builds the grid, the
tensor-parallel group, the 1F1B pipeline, DataParallel and AdamW exactly as hpr.train.Run.build does, runs one
untimed step and then --steps timed optimizer steps of hpr.train.train_step (the same global batch of
random-corpus windows for every layout, m micro-batches per data-parallel rank: 1F1B micro-batches with
stages, plain gradient accumulation without), and prints one row per layout:

  tokens/s   of the job (global batch x context / median step time, a step timed on the slowest rank),
             and the ratio to the dp-only layout (N, 1, 1), the reference measured in this same run;
  memory     per rank, max over the ranks: parameters, gradients, optimizer state (AdamW's m + v) and
             activations (every buffer in the Workspace of every stage replica the pipeline keeps alive);
             total = the max over ranks of the four summed;
  bubble     measured: per stage, 1 - busy / makespan, summed over the timed steps, where busy is the
             stage's time inside Pipeline.run less its time waiting for a neighbour (Pipeline.idle_s)
             and makespan the pipeline's wall time from the first stage entering run to the last leaving
             it (one node: perf_counter is the same clock in every process); the mean over the stages
             (and the pipelines) is shown. Theory: (pp-1)/(m+pp-1), which assumes equal stage costs
             (here the first stage also embeds, the last also runs the tied head and the loss); the notes
             add the bubble 1F1B would have with each stage's measured busy time (simulated, free
             communication), which separates unequal stages from waiting on messages;
  bytes/step per axis, summed over the ranks (each rank's payload): dp, the gradient allreduce (counted
             at DataParallel's iallreduce calls; analytic: the flat gradient buffer, every rank, when
             dp > 1); tp, TensorParallel.bytes_moved per step, beside the analytic count of the
             tensor-parallel activations (per micro-batch, 2 allreduces of B_micro*T*C elements per
             block forward and 2 backward, plus the embedding's one forward and the tied head's one
             backward); the measured figure also holds the vocab-parallel cross-entropy's 3 float64
             reductions per token on the last stage and the gradient norm's 8 bytes, and the bench checks
             measured == analytic + those exactly on every rank; pp, activations and their gradients
             sent between stages (counted at the pp group's isend; analytic m x B_micro*T*C*itemsize
             x 2 x (pp-1) per pipeline, dp*tp pipelines). Not in any column: the tied wte gradient's
             allreduce between the first and last stage (in the JSON as pp_tied_bytes), scalar loss
             reductions.

Defaults: m = 4 x the largest pp any layout of N ranks can have for this model (so m >= 4 pp, where the
bubble is at most 1/5); the batch is the smallest multiple of N*m (so every dp divides it) that is at
least 16; steps 2 for M, 3 for S, 5 for tiny. Only rank 0 prints; ``--json FILE`` writes the rows.

JSON: {"preset", "ranks", "threads", "batch", "micro_batches", "steps", "context", "reference":
{"layout", "tokens_per_s"}, "skipped": [{"layout", "why"}], "rows": [{"dp", "tp", "pp", "step_ms",
"tokens_per_s", "ratio_vs_dp", "mem_bytes": {"params", "grads", "opt", "act", "total"}, "bubble",
"bubble_theory", "bubble_sim", "bubble_per_stage", "recv_wait_per_stage", "dp_bytes", "dp_bytes_analytic",
"tp_bytes", "tp_bytes_analytic", "tp_bytes_extra_analytic", "tp_exact", "pp_bytes",
"pp_bytes_analytic", "pp_tied_bytes"}]} (bytes per step, summed over the ranks; bubble fields null
without stages)."""
import argparse
import os
import statistics
import sys
import time

import numpy as np

import hpr
from hpr import cpu
from hpr.errors import ConfigError
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW
from hpr.parallel import DataParallel, Pipeline, ProcessGrid, TensorParallel, check_same_params, valid_layouts
from hpr.parallel.grid import layout_problem
from hpr.parallel.schedule import bubble_fraction, simulate
from hpr.train import BETA2, train_step

from . import settings_with_timeout, write_json
from .train import random_batches

STAGE_TIMEOUT = 1800  # seconds: slow presets on few cores wait long between stages (unless HPR_TIMEOUT is set)
DEFAULT_STEPS = {"M": 2, "S": 3, "tiny": 5}
MIB = 2 ** 20


def default_micro_batches(n, config):
    """4 x the largest pp of any layout of n ranks this model allows."""
    return 4 * max(pp for _, _, pp in valid_layouts(n, config.n_heads, config.d_model, config.n_layers,
                                                    vocab_size=config.vocab_size))


def default_batch(n, m, at_least=16):
    """The smallest multiple of n*m (every dp of n divides n) that is at least `at_least`."""
    k = n * m
    return k * max(1, -(-at_least // k))


def _count_calls(obj, name, counter):
    """Wrap obj.name (an instance attribute shadowing the method) to add its first argument's nbytes."""
    orig = getattr(obj, name)

    def wrapped(x, *a, **k):
        counter[0] += x.nbytes
        return orig(x, *a, **k)
    setattr(obj, name, wrapped)


def measure(world, config, layout, batch, m, steps, batches, seed=0, lr=1e-3, bucket_mb=1.0):
    """One layout: build it as hpr.train's Run.build does, 1 untimed + `steps` timed train_steps over
    `batches`. Returns this rank's figures (a dict), to be gathered on rank 0."""
    dp, tp_n, pp = layout
    grid = ProcessGrid(world, dp=dp, tp=tp_n, pp=pp, n_heads=config.n_heads, d_model=config.d_model,
                       n_layers=config.n_layers, batch=batch, micro_batches=m, vocab_size=config.vocab_size)
    tp = TensorParallel(grid.tp)

    def make_stage(params, grads):
        alloc = grid.dp.alloc if (dp > 1 and grads is None) else None
        return GPT(config, seed=seed, tp=tp, stage=(grid.pp_rank, pp), params=params, grads=grads, alloc=alloc)

    pipe = Pipeline(grid.pp, make_stage, m, tied=grid.tied) if pp > 1 else None
    model = pipe.model if pipe else make_stage(None, None)
    skip = []
    if pp > 1 and model.last:  # the tied wte is counted in the gradient norm on the first stage
        skip = [(model.emb.wte.offset, model.emb.wte.offset + model.emb.wte.size)]
    sync = DataParallel(grid.dp, model.layout, bucket_mb, "float32", 0, tp=tp, pp=grid.pp, norm_skip=skip)
    lo, hi = sync.opt_range()
    opt = AdamW(model.layout, model.params, model.grads, betas=(0.9, BETA2), weight_decay=0.1, lo=lo, hi=hi)
    check_same_params(grid.dp, model.params)

    dp_sent, pp_sent = [0], [0]
    _count_calls(grid.dp, "iallreduce", dp_sent)  # DataParallel's gradient buckets
    _count_calls(grid.pp, "isend", pp_sent)       # the pipeline's activations and their gradients
    windows = []  # per timed step: (start, end, idle seconds) of this stage's Pipeline.run
    if pipe is not None:
        run = pipe.run

        def timed_run(*a, **k):
            idle0, t0 = pipe.idle_s, time.perf_counter()
            out = run(*a, **k)
            windows.append((t0, time.perf_counter(), pipe.idle_s - idle0))
            return out
        pipe.run = timed_run

    times = []
    for i in range(1 + steps):
        if i == 1:  # after the warmup: count the timed steps only
            tp.bytes_moved = 0
            dp_sent[0] = pp_sent[0] = 0
            windows.clear()
            if pipe is not None:
                pipe.idle_s = 0.0
        world.barrier()
        t0 = time.perf_counter()
        loss, _, _ = train_step(model, opt, sync, lambda s: lr, batches, i + 1, batch, m, 1.0, pipe=pipe)
        dt = time.perf_counter() - t0
        if not np.isfinite(loss):
            raise RuntimeError(f"layout {layout}: the loss became {loss} at step {i + 1}")
        if i >= 1:
            times.append(dt)

    # analytic counts for this rank, per step
    micro = batch // (dp * m)
    item = model.params.itemsize
    act = micro * config.context * config.d_model * item  # one (B_micro*T, C) activation
    tp_act = tp_extra = 0
    if tp_n > 1:
        tp_act = m * (4 * len(model.blocks) * act + (act if model.first else 0) + (act if model.last else 0))
        tp_extra = (m * 3 * micro * config.context * 8 if model.last else 0) + 8  # CE reductions, norm
    replicas = pipe.models if pipe is not None else [model]
    out = {
        "coords": (grid.dp_rank, grid.tp_rank, grid.pp_rank), "times": times,
        "params": model.params.nbytes, "grads": model.grads.nbytes, "opt": opt.m.nbytes + opt.v.nbytes,
        "act": sum(r.ws.nbytes for r in replicas),
        "dp_bytes": dp_sent[0] / steps, "dp_bytes_analytic": model.grads.nbytes if dp > 1 else 0,
        "tp_bytes": tp.bytes_moved / steps, "tp_act": tp_act, "tp_extra": tp_extra,
        "pp_bytes": pp_sent[0] / steps,
        "pp_tied": model.emb.wte.grad.nbytes if (pp > 1 and (model.first or model.last)) else 0,
        "windows": windows, "blocks": model.block_range,
    }
    # release this layout's communicators (and the node-shared gradient buffer: unused from here) before the next
    world.barrier()
    for c in (grid.tied, grid.pp, grid.dp, grid.tp):
        if c is not None:
            c.free()
    return out


def simulated_bubble(busy, m, b_over_f=2.0):
    """The 1F1B bubble (mean over stages of 1 - busy/makespan) with each stage's own cost: stage s spends
    busy[s] on its m forwards and backwards, a backward b_over_f times a forward; communication free
    (hpr.parallel.schedule.simulate with per-stage costs)."""
    f = [t / (m * (1.0 + b_over_f)) for t in busy]
    return simulate(len(busy), m, f_cost=f, b_cost=[x * b_over_f for x in f]).bubble


def _bubble(ranks, pp, steps, m):
    """Mean over stages (and pipelines) of 1 - busy/makespan, per-stage lists of it and of the recv-wait
    share of the makespan, and the bubble 1F1B would have with the stages' measured busy times."""
    pipes = {}
    for r in ranks:
        d, t, s = r["coords"]
        pipes.setdefault((d, t), {})[s] = r["windows"]
    bub = [[] for _ in range(pp)]
    wait = [[] for _ in range(pp)]
    sim = []
    for stages in pipes.values():
        span = sum(max(stages[s][k][1] for s in range(pp)) - min(stages[s][k][0] for s in range(pp))
                   for k in range(steps))
        busy = [sum(e - b - idle for b, e, idle in stages[s]) for s in range(pp)]
        for s in range(pp):
            bub[s].append(1.0 - busy[s] / span)
            wait[s].append(sum(idle for _, _, idle in stages[s]) / span)
        sim.append(simulated_bubble(busy, m))
    per_stage = [sum(v) / len(v) for v in bub]
    return sum(per_stage) / pp, per_stage, [sum(v) / len(v) for v in wait], sum(sim) / len(sim)


def summarize(ranks, layout, batch, m, steps, config):
    dp, tp_n, pp = layout
    step_max = np.max(np.array([r["times"] for r in ranks]), axis=0)  # the slowest rank, per step
    med = statistics.median(step_max.tolist())
    mem = {k: max(r[k] for r in ranks) for k in ("params", "grads", "opt", "act")}
    mem["total"] = max(r["params"] + r["grads"] + r["opt"] + r["act"] for r in ranks)
    micro = batch // (dp * m)
    item = np.dtype(config.dtype).itemsize
    row = {"dp": dp, "tp": tp_n, "pp": pp, "step_ms": med * 1e3, "tokens_per_s": batch * config.context / med,
           "ratio_vs_dp": None, "mem_bytes": mem, "bubble": None, "bubble_theory": None, "bubble_sim": None,
           "bubble_per_stage": None, "recv_wait_per_stage": None,
           "dp_bytes": sum(r["dp_bytes"] for r in ranks),
           "dp_bytes_analytic": sum(r["dp_bytes_analytic"] for r in ranks),
           "tp_bytes": sum(r["tp_bytes"] for r in ranks),
           "tp_bytes_analytic": sum(r["tp_act"] for r in ranks),
           "tp_bytes_extra_analytic": sum(r["tp_extra"] for r in ranks),
           "tp_exact": all(r["tp_bytes"] == r["tp_act"] + r["tp_extra"] for r in ranks),
           "pp_bytes": sum(r["pp_bytes"] for r in ranks),
           "pp_bytes_analytic": dp * tp_n * m * micro * config.context * config.d_model * item * 2 * (pp - 1),
           "pp_tied_bytes": sum(r["pp_tied"] for r in ranks),
           "stage_blocks": sorted({(r["coords"][2], tuple(r["blocks"])) for r in ranks})}
    if pp > 1:
        row["bubble"], row["bubble_per_stage"], row["recv_wait_per_stage"], row["bubble_sim"] = \
            _bubble(ranks, pp, steps, m)
        row["bubble_theory"] = bubble_fraction(pp, m)
    return row


def _mib(x):
    return f"{x / MIB:.2f}"


def print_table(rows, ref):
    head = (f"{'dp':>3} {'tp':>3} {'pp':>3} | {'ms/step':>8} {'tokens/s':>9} {'vs dp':>6} | "
            f"{'params':>7} {'grads':>7} {'opt':>7} {'act':>7} {'total':>7} | {'bubble':>6} {'theory':>6} | "
            f"{'dp':>7} {'tp':>7} {'tp an.':>7} {'pp':>7} {'pp an.':>7}")
    print(f"\n{'layout':^11} | {'job throughput':^26} | {'memory per rank, MiB (max over ranks)':^39} | "
          f"{'pp bubble':^13} | {'MiB moved per step, sum over ranks':^39}")
    print(head)
    print("-" * len(head))
    for r in rows:
        b = r["mem_bytes"]
        bub = (f"{r['bubble']:>6.1%} {r['bubble_theory']:>6.1%}" if r["bubble"] is not None
               else f"{'-':>6} {'-':>6}")
        ratio = f"{r['ratio_vs_dp']:>5.2f}x" if r["ratio_vs_dp"] is not None else f"{'-':>6}"
        print(f"{r['dp']:>3} {r['tp']:>3} {r['pp']:>3} | {r['step_ms']:>8.1f} {r['tokens_per_s']:>9,.0f} {ratio} | "
              f"{_mib(b['params']):>7} {_mib(b['grads']):>7} {_mib(b['opt']):>7} {_mib(b['act']):>7} "
              f"{_mib(b['total']):>7} | {bub} | {_mib(r['dp_bytes']):>7} {_mib(r['tp_bytes']):>7} "
              f"{_mib(r['tp_bytes_analytic']):>7} {_mib(r['pp_bytes']):>7} {_mib(r['pp_bytes_analytic']):>7}")
    if ref is not None:
        print(f"\nreference (this run): dp-only layout ({ref['dp']}, 1, 1): {ref['tokens_per_s']:,.0f} tokens/s; "
              "'vs dp' = tokens/s over that.")
    else:
        print("\nreference: the dp-only layout is not valid for this batch / m, so no 'vs dp' ratio "
              "(choose --batch as a multiple of ranks x m).")


def print_notes(rows, m):
    pipes = [r for r in rows if r["pp"] > 1]
    if pipes:
        print("bubble: measured = mean over stages of 1 - busy/makespan of Pipeline.run (busy = time in run "
              "less recv waits); theory (pp-1)/(m+pp-1) assumes equal stage costs. Per stage "
              "(bubble / recv-wait share):")
        for r in pipes:
            ok = abs(r["bubble"] - r["bubble_theory"]) <= 0.1 * r["bubble_theory"]
            print(f"  dp {r['dp']} tp {r['tp']} pp {r['pp']} (blocks "
                  + ", ".join(f"{b[0]}-{b[1] - 1}" for _, b in r["stage_blocks"]) + "): "
                  + ", ".join(f"s{s} {b:.1%}/{w:.1%}" for s, (b, w) in
                              enumerate(zip(r["bubble_per_stage"], r["recv_wait_per_stage"])))
                  + f"; mean {r['bubble']:.1%} vs theory {r['bubble_theory']:.1%} (m={m} "
                  + (">=" if m >= 4 * r["pp"] else "<") + " 4pp): "
                  + ("within" if ok else "NOT within") + " 10% of theory; 1F1B with these stages' measured "
                  f"busy times (unequal stages, free communication) would give {r['bubble_sim']:.1%}")
    tps = [r for r in rows if r["tp"] > 1]
    if tps:
        print("tp bytes: measured TensorParallel.bytes_moved = analytic activations (2+2 allreduces of "
              "B_micro*T*C per block, embedding fwd, head bwd, per micro-batch) + vocab-parallel "
              "cross-entropy (3 float64 per token on the last stage) + gradient norm (8 B):")
        for r in tps:
            print(f"  dp {r['dp']} tp {r['tp']} pp {r['pp']}: {r['tp_bytes']:,.0f} B = {r['tp_bytes_analytic']:,} "
                  f"+ {r['tp_bytes_extra_analytic']:,} B -> "
                  + ("exact on every rank" if r["tp_exact"] else "MISMATCH on some rank"))
    bad = [r for r in rows if r["dp_bytes"] != r["dp_bytes_analytic"] or r["pp_bytes"] != r["pp_bytes_analytic"]]
    print("dp and pp bytes: counted at the calls "
          + ("equal the analytic counts in every layout" if not bad else
             "DIFFER from the analytic counts in " + ", ".join(f"({r['dp']},{r['tp']},{r['pp']})" for r in bad))
          + "; the tied wte gradient allreduce between the end stages (not in the table): "
          + (", ".join(f"({r['dp']},{r['tp']},{r['pp']}) {_mib(r['pp_tied_bytes'])} MiB" for r in pipes)
             if pipes else "none") + ".")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench layouts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="S", help="tiny, S or M (default S)")
    ap.add_argument("--batch", type=int, default=None,
                    help="sequences per optimizer step, the whole job (default: smallest multiple of ranks x m >= 16)")
    ap.add_argument("--micro-batches", type=int, default=None,
                    help="micro-batches per data-parallel rank and step (default 4 x the largest possible pp)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per layout after 1 warmup "
                                                            "(default 2 for M, 3 for S, 5 for tiny)")
    ap.add_argument("--threads", type=int, default=None, help="threads per rank (default: cores / ranks on the node)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON (rank 0)")
    a = ap.parse_args(argv)
    config = GPTConfig.preset(a.preset)
    world = hpr.init(threads=a.threads, settings=settings_with_timeout(STAGE_TIMEOUT))
    n, lead = world.size, world.rank == 0
    m = a.micro_batches or default_micro_batches(n, config)
    batch = a.batch or default_batch(n, m)
    steps = a.steps or DEFAULT_STEPS.get(a.preset, 3)
    if m < 1 or batch < 1 or steps < 1:
        raise ConfigError("--batch, --micro-batches and --steps must be at least 1")
    layouts = valid_layouts(n, config.n_heads, config.d_model, config.n_layers, batch, m, config.vocab_size)
    skipped = []
    for tp in range(1, n + 1):
        for pp in range(1, n + 1):
            if n % (tp * pp) == 0 and (n // (tp * pp), tp, pp) not in layouts:
                why = layout_problem(n // (tp * pp), tp, pp, n, config.n_heads, config.d_model, config.n_layers,
                                     batch, m, config.vocab_size)
                skipped.append({"layout": (n // (tp * pp), tp, pp), "why": why})
    if not layouts:
        raise ConfigError(f"no layout of {n} rank(s) fits preset {a.preset} with batch {batch} and m={m}")
    threads = cpu.num_threads()
    batches = random_batches(config)  # the same windows for every layout
    if lead:
        print(f"hpr.bench layouts: preset {a.preset} ({config.n_layers} layers, d_model {config.d_model}, "
              f"{config.n_heads} heads, context {config.context}, {config.dtype}), {n} ranks x {threads} thread(s) "
              f"on {os.cpu_count()} cores; batch {batch} x {config.context} = {batch * config.context:,} tokens/step, "
              f"m = {m} micro-batches per data-parallel rank; {steps} timed step(s) after 1 warmup per layout; "
              f"layouts (dp, tp, pp): {', '.join(map(str, layouts))}", flush=True)
        for s in skipped:
            print(f"  skipped {s['layout']}: {s['why']}")
    rows = []
    for lay in layouts:
        mine = measure(world, config, lay, batch, m, steps, batches)
        ranks = world.mpi.gather(mine, root=0)
        if lead:
            row = summarize(ranks, lay, batch, m, steps, config)
            rows.append(row)
            print(f"  {lay}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:,.0f} tokens/s", flush=True)
    if not lead:
        return 0
    ref = next((r for r in rows if (r["tp"], r["pp"]) == (1, 1)), None)
    for r in rows:
        r["ratio_vs_dp"] = r["tokens_per_s"] / ref["tokens_per_s"] if ref else None
    print_table(rows, ref)
    print_notes(rows, m)
    if n > (os.cpu_count() or 1):
        print(f"note: {n} ranks share {os.cpu_count()} cores: a computing rank's wall time includes waiting for a "
              "core (and a waiting rank yields its core), which skews throughput ratios and the bubble; "
              "compare layouts on a machine with a core per rank.")
    if a.json:
        out = {"preset": a.preset, "ranks": n, "threads": threads, "batch": batch, "micro_batches": m,
               "steps": steps, "context": config.context,
               "reference": {"layout": (ref["dp"], 1, 1), "tokens_per_s": ref["tokens_per_s"]} if ref else None,
               "skipped": skipped, "rows": rows}
        write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
