"""``mpiexec -n N python -m hpr.bench dp --preset S|M [--batch-per-rank B] [--steps N] [--threads K]
[--json FILE]``: weak scaling of data-parallel training. For k = 1, 2, 4, ... ranks (powers of two up to
N, and N itself) the first k ranks train hpr's GPT together — every rank a whole model on its own B
sequences, gradients averaged by hpr.parallel.DataParallel (1 MiB buckets, allreduce overlapped with
backward) — while the other ranks wait in hpr's polite barrier; the job's tokens per step are k*B*T.
Per k it prints the median step time, the job's tokens/s, the ideal (k x the tokens/s of k = 1), the
efficiency (tokens/s over ideal) and the exposed communication share (time spent waiting in
DataParallel.finish over the timed step time, averaged over the k ranks), and, when PyTorch happens to
be installed, the same model and recipe in PyTorch DDP (gloo, same ranks, same threads, DDP's own
bucket size unless --ddp-bucket-mb) side by side with the ratio hpr/torch. Only rank 0 prints;
``--json FILE`` writes the rows.

A step is hpr.train.train_step, the trainer's own: zero_grad, forward, backward with the bucketed
allreduce launched from backward's on_ready callback, finish (wait for the buckets), global gradient
norm, AdamW with clipping at 1.0, gather_params, over windows of a random corpus (each rank its own). A step's time is the slowest rank's; the median over the timed steps is
reported. Rounds (``--rounds``) repeat the whole sweep, hpr and torch alternating per k, so drift on a
noisy machine hits both; times of all rounds are pooled.

JSON: {"preset", "ranks", "batch_per_rank", "threads", "steps", "warmup", "rounds", "bucket_mb",
"ddp_bucket_mb", "torch", "reference": {"hpr_tokens_per_s", "torch_tokens_per_s"}, "rows": [{"k", "tokens_per_step",
"hpr_step_ms", "hpr_tokens_per_s", "hpr_ideal_tokens_per_s", "hpr_efficiency", "hpr_exposed_comm",
"torch_step_ms", "torch_tokens_per_s", "torch_efficiency", "ratio_hpr_over_torch", "hpr_other_cores",
"torch_other_cores"}]} (torch_* are null without torch). *_other_cores: cores the machine kept busy
(/proc/stat) beyond the k ranks' own CPU time during the timed steps — other processes, and the idle
ranks' polite waiting; on a shared machine this says how far to trust a row (null without /proc/stat)."""
import argparse
import os
import socket
import statistics
import sys
import time

import numpy as np

import hpr
from hpr.errors import ConfigError
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW
from hpr.parallel import DataParallel
from hpr.train import train_step

from . import settings_with_timeout, torch_reference, write_json
from .train import random_batches

IDLE_TIMEOUT = 3600  # seconds: the idle ranks wait in a barrier through whole sweeps (unless HPR_TIMEOUT is set)


def rank_counts(n):
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def _machine_snap():
    """(busy, total) jiffies of the whole machine from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(v) - v[3] - v[4], sum(v)  # idle + iowait are not busy


class _Load:
    """The cores the whole machine kept busy over a window, and this process's CPU seconds in it."""

    def __init__(self):
        self.m0, self.c0, self.w0 = _machine_snap(), time.process_time(), time.perf_counter()

    def stop(self):
        m1 = _machine_snap()
        cpu, wall = time.process_time() - self.c0, time.perf_counter() - self.w0
        busy = None
        if self.m0 is not None and m1 is not None and m1[1] > self.m0[1]:
            busy = (m1[0] - self.m0[0]) / (m1[1] - self.m0[1]) * (os.cpu_count() or 1)
        return cpu, wall, busy


def _outside(sub, load):
    """Cores busy with other processes over the timed steps: the machine's busy cores (rank 0's view)
    minus the CPU the k ranks used (their own threads included), per second. None without /proc/stat or
    when the window is too short for its 10 ms ticks (under 0.5 s)."""
    cpu, wall, busy = load
    total = float(sub.allreduce(np.array([cpu], np.float64), op="sum")[0])
    return None if busy is None or wall < 0.5 else max(0.0, busy - total / wall)


def hpr_dp_step_times(sub, config, batch, steps, warmup, bucket_mb=1.0, seed=0, lr=1e-3):
    """Time `steps` full data-parallel train_steps after `warmup` untimed ones on the ranks of `sub`,
    each rank with its own `batch` sequences. Returns (this rank's step times, this rank's seconds spent
    waiting in sync.finish over the timed steps, (cpu s, wall s, machine busy cores) of the timed steps)."""
    model = GPT(config, seed=seed, alloc=sub.alloc)
    sync = DataParallel(sub, model.layout, bucket_mb=bucket_mb)
    lo, hi = sync.opt_range()
    opt = AdamW(model.layout, model.params, model.grads, lo=lo, hi=hi)
    batches = random_batches(config, seed)  # rank r of k takes samples r*batch .. of each step's k*batch
    times = []
    sub.barrier()
    for i in range(warmup + steps):
        if i == warmup:
            waited0 = sync.wait_s  # what the warmup steps waited: not counted
            load = _Load()
        t0 = time.perf_counter()
        train_step(model, opt, sync, lambda step: lr, batches, i + 1, batch * sub.size)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times, sync.wait_s - waited0, load.stop()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_ddp_step_times(sub, cfg, batch, threads, steps, warmup, bucket_mb=None, seed=0, lr=1e-3):
    """The same steps in PyTorch DDP (gloo) over the ranks of `sub`: torch_reference's model and
    AdamW/clip recipe wrapped in DistributedDataParallel (bucket_mb None: DDP's own default). Returns this
    rank's step times and (cpu s, wall s, machine busy cores) of the timed steps."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)
    import torch.distributed as dist  # lazy: optional and heavy

    V, T = int(cfg["vocab_size"]), int(cfg["context"])
    port = sub.mpi.bcast(_free_port() if sub.rank == 0 else None, root=0)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=sub.rank, world_size=sub.size)
    try:
        torch.manual_seed(seed)
        kw = {} if bucket_mb is None else {"bucket_cap_mb": bucket_mb}
        model = torch.nn.parallel.DistributedDataParallel(torch_reference.build_model(cfg).float(), **kw)
        opt = torch_reference.adamw(model.module, lr)
        gen = torch.Generator().manual_seed(seed * 1000 + sub.rank)
        times = []
        dist.barrier()
        for i in range(warmup + steps):
            if i == warmup:
                load = _Load()
            tok = torch.randint(0, V, (batch, T + 1), generator=gen)  # (B, T+1)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = model(tok[:, :-1], tok[:, 1:])
            loss.backward()  # DDP's reducer allreduces the buckets as their gradients are ready
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss.item()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
        load = load.stop()
        dist.barrier()
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(old_threads)
    return times, load


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.bench dp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="S", help="S or M (or tiny)")
    ap.add_argument("--batch-per-rank", type=int, default=None,
                    help="sequences per rank per step (default 16 for S, 8 for M): weak scaling")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per k and round (default 8 for S, 4 for M)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 for S, 1 for M)")
    ap.add_argument("--threads", type=int, default=1, help="threads per rank for hpr (BLAS + kernels) and torch "
                                                           "(default 1)")
    ap.add_argument("--rounds", type=int, default=1, help="sweeps, hpr and torch alternating per k (default 1)")
    ap.add_argument("--bucket-mb", type=float, default=1.0, help="hpr's gradient bucket MiB (default 1)")
    ap.add_argument("--ddp-bucket-mb", type=float, default=None,
                    help="DDP's bucket_cap_mb (default: DDP's own, 25; on this model that is faster than 1)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch DDP even if installed")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON (rank 0)")
    return ap


class Sweep:
    """The settings of one run of the benchmark, and the times its rounds collect, per k."""

    def __init__(self, a):
        self.a, self.config = a, GPTConfig.preset(a.preset)
        big = a.preset == "M"
        self.batch = a.batch_per_rank or (8 if big else 16)
        self.steps = a.steps or (4 if big else 8)
        self.warmup = a.warmup if a.warmup is not None else (1 if big else 2)
        if self.batch < 1 or self.steps < 1 or self.warmup < 0 or a.threads < 1 or a.rounds < 1:
            raise ConfigError("--batch-per-rank, --steps, --threads and --rounds must be >= 1, --warmup >= 0")
        self.tv = None if a.no_torch else torch_reference.available()
        c = self.config
        self.cfg = dict(vocab_size=c.vocab_size, context=c.context, d_model=c.d_model, n_layers=c.n_layers,
                        n_heads=c.n_heads)
        self.tok_rank = self.batch * c.context

    def over(self, n):
        """The world's n ranks: k = 1, 2, 4, ..., n of them train in turn."""
        self.n, self.ks = n, rank_counts(n)
        self.ht = {k: [] for k in self.ks}  # slowest rank's step times
        self.hw = {k: [] for k in self.ks}  # per round: exposed share averaged over the ranks
        self.tt = {k: [] for k in self.ks}
        self.other = {k: {"hpr": [], "torch": []} for k in self.ks}  # cores busy with other processes, per round
        self.base_h = self.k1_torch = None  # tokens/s at k = 1: the ideal's base (rows() sets them)

    def header(self):
        a, c, tv = self.a, self.config, self.tv
        torch_s = (f"torch {tv}, gloo, buckets " + (f"{a.ddp_bucket_mb:g} MiB" if a.ddp_bucket_mb else "DDP default")
                   if tv else "skipped (--no-torch)" if a.no_torch else "not installed")
        return (f"hpr.bench dp: preset {a.preset} ({c.n_layers} layers, d_model {c.d_model}, context "
                f"{c.context}), {self.batch} sequences = {self.tok_rank:,} tokens per rank per step (weak scaling), "
                f"{a.threads} thread(s) per rank, {self.n} ranks on {os.cpu_count()} cores, k = "
                f"{', '.join(map(str, self.ks))}; {self.steps} timed steps after {self.warmup} warm-up x "
                f"{a.rounds} round(s), hpr buckets {a.bucket_mb:g} MiB; torch DDP: {torch_s}")

    def run(self, comm):
        """Every round, every k: the first k ranks train (hpr, then torch), the others wait politely."""
        a, rank, lead = self.a, comm.rank, comm.rank == 0
        for r in range(a.rounds):
            for k in self.ks:
                sub = comm.split(color=0 if rank < k else 1)
                if rank < k:
                    self.measure(sub, k, r)
                    if lead:
                        med = statistics.median(self.ht[k][-self.steps:])
                        print(f"  round {r + 1} k={k}: hpr {med * 1e3:.1f} ms/step"
                              + (f", torch DDP {statistics.median(self.tt[k][-self.steps:]) * 1e3:.1f} ms/step"
                                 if self.tv else ""), flush=True)
                sub.free()
                comm.barrier()  # the idle ranks wait here, politely

    def measure(self, sub, k, r):
        """One round at k ranks (the ranks of sub): hpr's steps, then torch DDP's when installed."""
        a = self.a
        times, waited, load = hpr_dp_step_times(sub, self.config, self.batch, self.steps, self.warmup,
                                                a.bucket_mb, seed=r)
        self.other[k]["hpr"].append(_outside(sub, load))
        t = sub.allreduce(np.array(times, np.float64), op="max")
        share = sub.allreduce(np.array([waited / sum(times)], np.float64), op="avg")[0]
        self.ht[k] += t.tolist()
        self.hw[k].append((float(share), float(sum(times))))
        if self.tv:
            times, load = torch_ddp_step_times(sub, self.cfg, self.batch, a.threads, self.steps, self.warmup,
                                               a.ddp_bucket_mb, seed=r)
            self.other[k]["torch"].append(_outside(sub, load))
            self.tt[k] += sub.allreduce(np.array(times, np.float64), op="max").tolist()

    def rows(self):
        """Per k: the medians, tokens/s, ideal, efficiency and exposed communication (rank 0)."""
        rows = []
        for k in self.ks:
            tokens = k * self.tok_rank
            hmed = statistics.median(self.ht[k])
            htps = tokens / hmed
            if k == 1:
                self.base_h = htps
            exposed = sum(s * w for s, w in self.hw[k]) / sum(w for _, w in self.hw[k])
            row = {"k": k, "tokens_per_step": tokens, "hpr_step_ms": hmed * 1e3, "hpr_tokens_per_s": htps,
                   "hpr_ideal_tokens_per_s": k * self.base_h, "hpr_efficiency": htps / (k * self.base_h),
                   "hpr_exposed_comm": exposed, "torch_step_ms": None, "torch_tokens_per_s": None,
                   "torch_efficiency": None, "ratio_hpr_over_torch": None,
                   "hpr_other_cores": mean_or_none(self.other[k]["hpr"]),
                   "torch_other_cores": mean_or_none(self.other[k]["torch"])}
            if self.tv:
                tmed = statistics.median(self.tt[k])
                ttps = tokens / tmed
                if k == 1:
                    self.k1_torch = ttps
                row.update(torch_step_ms=tmed * 1e3, torch_tokens_per_s=ttps,
                           torch_efficiency=ttps / (k * self.k1_torch), ratio_hpr_over_torch=htps / ttps)
            rows.append(row)
        return rows

    def json(self, rows):
        a = self.a
        return {"preset": a.preset, "ranks": self.n, "batch_per_rank": self.batch, "threads": a.threads,
                "steps": self.steps, "warmup": self.warmup, "rounds": a.rounds, "bucket_mb": a.bucket_mb,
                "ddp_bucket_mb": a.ddp_bucket_mb, "torch": self.tv,
                "reference": {"hpr_tokens_per_s": self.base_h, "torch_tokens_per_s": self.k1_torch}, "rows": rows}


def mean_or_none(v):
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None


def print_table(sw, rows):
    tv = sw.tv
    print(f"\n{'k':>3} {'tokens/step':>11} | {'hpr ms':>8} {'tokens/s':>10} {'ideal':>10} {'eff':>6} {'comm':>6} | "
          + (f"{'DDP ms':>8} {'tokens/s':>10} {'eff':>6} | {'hpr/DDP':>7}" if tv else "(no torch)"))
    for rw in rows:
        line = (f"{rw['k']:>3} {rw['tokens_per_step']:>11,} | {rw['hpr_step_ms']:>8.1f} {rw['hpr_tokens_per_s']:>10,.0f} "
                f"{rw['hpr_ideal_tokens_per_s']:>10,.0f} {rw['hpr_efficiency']:>6.1%} {rw['hpr_exposed_comm']:>6.1%} | ")
        if tv:
            line += (f"{rw['torch_step_ms']:>8.1f} {rw['torch_tokens_per_s']:>10,.0f} {rw['torch_efficiency']:>6.1%} | "
                     f"{rw['ratio_hpr_over_torch']:>6.2f}x")
        print(line)
    print(f"\nreference (ideal's base, this run): 1 rank x {sw.a.threads} thread(s): hpr {sw.base_h:,.0f} tokens/s"
          + (f", torch DDP {sw.k1_torch:,.0f} tokens/s" if tv else "")
          + "; ideal = k x that. comm = time waiting in DataParallel.finish / step time, mean over ranks.")


def print_notes(sw, rows):
    cores = os.cpu_count() or 1
    over = [k for k in sw.ks if k > cores]
    if over:
        print(f"note: k = {', '.join(map(str, over))} run(s) more ranks than the {os.cpu_count()} cores: the "
              f"efficiency can be at most cores/k there (e.g. {cores / over[-1]:.0%} at k={over[-1]}).")
    loads = [(rw["k"], nm, rw[f"{nm}_other_cores"]) for rw in rows for nm in ("hpr", "torch")
             if rw[f"{nm}_other_cores"] is not None]
    if loads:
        print(f"other processes kept busy, during the timed steps (cores of {os.cpu_count()}): "
              + ", ".join(f"k={k} {'hpr' if nm == 'hpr' else 'DDP'} {c:.2f}" for k, nm, c in loads))
        worst = max(c for _, _, c in loads)
        if worst > 0.25:
            print(f"warning: up to {worst:.2f} cores were taken by other processes while timing; the figures "
                  "above are skewed (mostly the larger k). Rerun on a quiet machine, or with --rounds 3.")
    if not sw.tv and not sw.a.no_torch:
        print("(PyTorch is not installed: no DDP side by side. pip install torch to get one.)")


def main(argv=None):
    a = build_parser().parse_args(argv)
    sw = Sweep(a)  # a bad flag is a ConfigError here, before MPI starts
    comm = hpr.init(threads=a.threads, settings=settings_with_timeout(IDLE_TIMEOUT))
    comm.barrier()  # the world's node engine exists before any sub-communicator changes the spin setting
    sw.over(comm.size)
    if comm.rank == 0:
        print(sw.header(), flush=True)
    sw.run(comm)
    if comm.rank != 0:
        return 0
    rows = sw.rows()
    print_table(sw, rows)
    print_notes(sw, rows)
    if a.json:
        write_json(a.json, sw.json(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
