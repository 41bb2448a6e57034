"""The memory planner: ``python -m hpr.plan --preset P --ranks N``. For every dp x tp x pp layout of N
ranks (hpr.parallel.grid.valid_layouts) and every ZeRO stage, the bytes one rank holds, by role, and
whether the job fits the node; sorted by fits, then by estimated step time. The trainer calls
`check_fits` for its own layout: its plan line, or the refusal of a layout that does not fit.

Where the numbers come from (docs/architecture.md has the long form):
  parameters, gradients, optimizer state  hpr.model.memory.stage_param_elements, the flat buffers'
      sizes (AdamW: m and v). ZeRO-1: m and v are 1/dp. ZeRO-2 (hpr.parallel.zero): the replicated
      parameters plus the contiguous shard the optimizer updates (Ψ + Ψ/N elements), the gradient
      shard (Ψ/N) and the full gradients in flight in the paged buffer (only touched pages are
      resident; at the end of a backward, at worst all of them: zero_inflight); ZeRO-3: the parameter
      shard (Ψ/N) plus the gathered units (the embedding and head, kept from forward through the
      update, and a block), gradients as ZeRO-2. Paged buffers are untouched at the init and the probe.
  activations, workspace  hpr.model.memory.stage_buffers, the layers' workspace buffers by name and
      shape (held equal to a real model's by tests/test_plan.py); a pipeline stage s keeps
      min(pp - s, m) replicas' (1F1B), each with its own buffers.
  communication  the pipeline's send copies (m per direction, held until the step's end) and the
      received input each replica keeps; the pages of the node's shared gradient window a rank maps
      from its neighbours (the in-place allreduce reads this rank's 1/dp piece of every neighbour's
      copy, then each owner's piece: 2 (dp-1)/dp x the gradients, measured at M, dp 2 and 4; none
      that shows for ZeRO-1's reduce-scatter): counted in the rank's RSS, but once in the node's total, since they are the neighbours' gradients; ZeRO-1's reduce-scatter
      result (1/dp of the gradients: freed, but kept by glibc's heap) and the allgathered parameters'
      new array (the whole flat buffer), both counted at the peak (measured at M, dp 2 and 4).
  evaluation  nothing beyond the step: the trainer's validation runs in the step's micro-batches
      (hpr.train.evaluate's micro), a forward into the same buffers.
  baseline  BASELINE_MIB = IDLE_RANK_MIB + HEAP_SLACK_MIB. IDLE_RANK_MIB is the resident memory of
      an idle rank: Python, numpy, mpi4py + MPICH initialised, hpr with its compiled kernels and the
      trainer's imports, BLAS threads started; measured on this project's machine (x86-64, CPython
      3.11, MPICH 4) as the VmHWM of ``import hpr.train; hpr.init(); K.matmul`` on a small product
      under mpiexec -n 2: 62 MiB. HEAP_SLACK_MIB is what glibc's allocator keeps beyond the live
      arrays after the start: the matmul probe's freed arrays (below malloc's 32 MiB mmap threshold)
      stay in the heap and later buffers reuse only part of them; measured at presets S and M (the
      runs of ``python -m hpr.bench scale``, per-phase VmRSS): 5 MiB. The probe's own phase has no
      slack (it is the probe's memory).
  data  the corpus every rank holds (what the trainer measured; --data-mib here), plus DATA_OVERHEAD
      (10%: reading the 30 MiB default corpus left 33 MiB resident).
  the peak  the largest of: the steady state after a step; the model's init (ParamLayout.build draws
      each whole tensor in float64: two float64 copies of the largest, wte or fc, at once); the
      start's matmul probe (hpr.cpu.matmul_flops: three 1024^2 matrices and a float64 draw).
Step time: the step's FLOPs (GPTConfig.flops_per_token, plus what recomputation repeats) over the
node's measured matmul rate (hpr.cpu.matmul_flops, every core), times the pipeline's (m + pp - 1) / m;
communication is not counted.

Usage: ``python -m hpr.plan --preset gpt2 --ranks 8 --batch 8 --recompute block``"""
import argparse
import dataclasses
import json
import sys

import numpy as np

from . import cpu
from .errors import ConfigError, HprError
from .model import PRESETS, GPTConfig, vocab_multiple
from .model.gpt import stage_blocks
from .model.memory import block_param_elements, largest_init_draw, loss_transient, split_bytes, stage_buffers, stage_param_elements
from .nn import RECOMPUTE
from .parallel.grid import valid_layouts
from .parallel.zero import ParamGather

MIB = 2 ** 20
IDLE_RANK_MIB = 62.0  # an idle rank's resident memory (module docstring: how it was measured)
HEAP_SLACK_MIB = 5.0  # the allocator's keep beyond the live arrays after the probe (module docstring)
DATA_OVERHEAD = 0.10  # the corpus reader leaves this fraction of the corpus resident beyond its bytes
BASELINE_MIB = IDLE_RANK_MIB + HEAP_SLACK_MIB
PROBE_N = 1024  # hpr.cpu.matmul_flops's matrix size on the CPU
ZERO_STAGES = (0, 1, 2, 3)
ROLES = ("parameters", "gradients", "optimizer", "activations", "workspace", "communication", "data", "baseline",
         "peak")  # peak: what the peak holds beyond the steady state (init or the probe)


@dataclasses.dataclass
class Estimate:
    """One layout at one ZeRO stage: the largest rank's bytes by role (ROLES), its peak (total), the
    sum over the node's ranks, the estimated step time and whether the node holds it."""
    dp: int
    tp: int
    pp: int
    zero: int
    recompute: str
    stage: int  # the pipeline stage of the largest rank
    roles: dict
    total: int
    node_total: int = 0
    step_s: float = 0.0
    fits: bool = True

    @property
    def layout(self):
        return f"dp {self.dp} x tp {self.tp} x pp {self.pp}"

    def flags(self):
        return f"--dp {self.dp} --tp {self.tp} --pp {self.pp} --zero {self.zero}"

    def as_dict(self):
        return {"dp": self.dp, "tp": self.tp, "pp": self.pp, "zero": self.zero, "recompute": self.recompute,
                "stage": self.stage, "mib": {k: v / MIB for k, v in self.roles.items()},
                "total_mib": self.total / MIB, "node_total_mib": self.node_total / MIB, "step_s": self.step_s,
                "fits": self.fits}


@dataclasses.dataclass(frozen=True)
class Job:
    """What the planner needs to know of a run besides the layout."""
    config: GPTConfig          # with the tokenizer's vocab_size (padded per tp here)
    batch: int                 # sequences per optimizer step (the whole job's)
    micro_batches: int = 1
    recompute: str = "none"
    bucket_mb: float = 1.0
    data_bytes: int = 0        # the corpus every rank holds
    baseline_mib: float = BASELINE_MIB


def rank_roles(job, dp, tp, pp, stage, zero):
    """({role: bytes} in the steady state after a step, peak bytes, bytes of the peak that are the
    neighbours' shared gradient windows) of one rank at `stage`."""
    config = dataclasses.replace(job.config, vocab_multiple=vocab_multiple(job.config.vocab_size, tp))
    item = np.dtype(config.dtype).itemsize
    m, t = job.micro_batches, config.context
    b = job.batch // (dp * m)  # one micro-batch of this dp rank
    p = stage_param_elements(config, tp, stage, pp) * item
    block = block_param_elements(config, tp) * item
    c = config.d_model
    sharded = dp > 1
    roles = dict.fromkeys(ROLES, 0)
    paged = zero >= 2 and sharded  # full gradients (ZeRO-3: parameters too) in paged memory, touched pages only
    inflight = zero_inflight(config, tp, stage, pp, block, item, p) if paged else (0, 0)
    if zero >= 3 and sharded:  # the shard, plus the gathered units (zero_inflight)
        roles["parameters"] = p // dp + inflight[0]
    elif paged:  # the replicated parameters and the shard the optimizer updates (a contiguous copy)
        roles["parameters"] = p + p // dp
    else:
        roles["parameters"] = p
    roles["gradients"] = p // dp + inflight[1] if paged else p
    roles["optimizer"] = 2 * p // dp if zero >= 1 and sharded else 2 * p
    slots = max(1, min(pp - stage, m)) if pp > 1 else 1
    act, ws = split_bytes(stage_buffers(config, b, t, tp, stage, pp, job.recompute), item)
    roles["activations"] = slots * act
    roles["workspace"] = slots * ws + (loss_transient(config, b, t, tp) if stage == pp - 1 else 0)
    n_c = b * t * c * item  # one (N, C) activation or its gradient
    comm = 0
    if pp > 1:
        comm += m * n_c * ((stage < pp - 1) + (stage > 0)) + (slots * n_c if stage > 0 else 0)
    shared = 0  # pages of the neighbours' gradient windows: in this rank's RSS, the same physical memory
    if sharded and zero == 0:  # the in-place allreduce's reduce-scatter reads this rank's piece of every
        shared = 2 * p * (dp - 1) // dp  # neighbour's copy, its allgather each owner's piece: 2(dp-1)/dp
    # ZeRO-1 after the update: the allgathered parameters' new array (p) beside the reduce-scatter's
    # result (p/dp; freed, but glibc keeps it in the heap)
    transient = p + p // dp if sharded and zero == 1 else 0
    roles["communication"] = comm + shared
    roles["data"] = int(job.data_bytes * (1 + DATA_OVERHEAD))
    roles["baseline"] = int(job.baseline_mib * MIB)
    slack = int(HEAP_SLACK_MIB * MIB) if job.baseline_mib >= HEAP_SLACK_MIB else 0
    steady = sum(roles[k] for k in ROLES[:6])
    g0 = 0 if paged else p  # paged gradients are untouched until the first backward
    init = p + g0 + 2 * 8 * largest_init_draw(config, tp, stage, pp)
    probe = p + g0 + PROBE_N ** 2 * (3 * item + 8)
    peak = roles["data"] + roles["baseline"] + max(steady + transient, init - slack, probe - slack)
    roles["peak"] = peak - sum(roles[k] for k in ROLES[:8])
    return roles, peak, shared


def zero_inflight(config, tp, stage, pp, block, item, p):
    """(bytes of gathered parameters, bytes of full gradients in flight) of a ZeRO-2/3 rank at its peak,
    the end of a backward (hpr.parallel.zero). Gradients: the paged buffer's pages from each layer's
    write until its chunk's reduce-scatter is collected; the chunks are launched as backward goes but
    waited for only at its end, on a progress thread that competes with compute, so at worst all p of
    them are resident then (measured at M, dp 2 and 4: nearly all). Parameters (ZeRO-3): the embedding
    and head units (the tied wte), gathered from forward through the update (ParamGather.KEEP), and the
    block running plus the ParamGather.DEPTH blocks prefetched ahead of it (or, at the turn from forward
    to backward, the last DEPTH blocks kept gathered for backward) - at most 1 + DEPTH of the stage's."""
    c, vl = config.d_model, config.padded_vocab // tp
    lo, hi = stage_blocks(config.n_layers, pp)[stage]
    emb = (vl * c if stage in (0, pp - 1) else 0) + (config.context * c if stage == 0 else 0)
    head = 2 * c if stage == pp - 1 else 0
    return min(1 + ParamGather.DEPTH, hi - lo) * block + (emb + head) * item, p


def estimate(job, dp, tp, pp, zero):
    """The Estimate of a layout: its largest rank (over the pipeline stages) and the node's sum."""
    best, node = None, 0
    for s in range(pp):
        roles, peak, shared = rank_roles(job, dp, tp, pp, s, zero)
        node += (peak - shared) * dp * tp  # the node's memory holds each shared window once
        if best is None or peak > best[2]:
            best = (s, roles, peak)
    s, roles, peak = best
    return Estimate(dp, tp, pp, zero, job.recompute, s, roles, peak, node_total=node)


def step_seconds(job, pp, rate):
    """The step's FLOPs (plus recomputation's) over the node's matmul rate, with the 1F1B bubble."""
    c = job.config
    tokens = job.batch * c.context
    C, T, L = c.d_model, c.context, c.n_layers
    # forward FLOPs per token that backward repeats: mlp none (element-wise only: LayerNorms, GELU); attn:
    # the attention's qkv (2*3C^2) and core (2*2*T*C, the full square, as flops_per_token counts it);
    # block: fc (2*4C^2), both of attn's, and the attention's proj
    extra = {"none": 0, "mlp": 0, "attn": 6 * C * C + 4 * T * C,
             "block": 8 * C * C + 6 * C * C + 4 * T * C + 2 * C * C}[job.recompute] * L
    bubble = (job.micro_batches + pp - 1) / job.micro_batches
    return tokens * (c.flops_per_token() + extra) * bubble / rate if rate else 0.0


def plan(job, ranks, mem_available, rate=None, zeros=ZERO_STAGES, layouts=None):
    """Every layout of `ranks` (or the given [(dp, tp, pp)]) at every ZeRO stage in `zeros` (stages
    above 0 only where dp > 1: with one data-parallel rank they are stage 0), sorted: those that fit
    in mem_available bytes first, then by estimated step time, then by the node's total."""
    c = job.config
    if layouts is None:
        layouts = [(d, t, p) for d, t, p in valid_layouts(ranks, c.n_heads, c.d_model, c.n_layers, job.batch,
                                                          job.micro_batches)]
    out = []
    for dp, tp, pp in layouts:
        for z in zeros:
            if z and dp == 1:
                continue
            e = estimate(job, dp, tp, pp, z)
            e.step_s = step_seconds(job, pp, rate)
            e.fits = e.node_total <= mem_available
            out.append(e)
    out.sort(key=lambda e: (not e.fits, round(e.step_s, 4), e.node_total))
    return out


def mem_available():
    """MemAvailable of /proc/meminfo in bytes (what the node's ranks share), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def format_table(estimates, mem, measured=None):
    """The plan as a table, MiB per rank (the largest); measured: {(dp, tp, pp, zero): MiB} adds a column."""
    head = (f"{'layout':<20} {'zero':>4} {'params':>8} {'grads':>8} {'optim':>8} {'activ':>8} {'wkspace':>8} "
            f"{'comm':>7} {'data':>6} {'base':>5} {'+peak':>7} {'total':>8} {'node':>8} {'step s':>8} fits")
    if measured is not None:
        head += f" {'measured':>9} {'ratio':>6}"
    lines = [f"# MiB per rank (the largest; its pipeline stage in the layout column), node: the sum over "
             f"the ranks; MemAvailable {mem / MIB:,.0f} MiB", head]
    for e in estimates:
        r = {k: v / MIB for k, v in e.roles.items()}
        row = (f"{e.layout + (f' s{e.stage}' if e.pp > 1 else ''):<20} {e.zero:>4} {r['parameters']:>8.1f} "
               f"{r['gradients']:>8.1f} {r['optimizer']:>8.1f} {r['activations']:>8.1f} {r['workspace']:>8.1f} "
               f"{r['communication']:>7.1f} {r['data']:>6.1f} {r['baseline']:>5.0f} {r['peak']:>7.1f} "
               f"{e.total / MIB:>8.1f} {e.node_total / MIB:>8.0f} {e.step_s:>8.2f} {'yes' if e.fits else 'NO'}")
        if measured is not None:
            got = measured.get((e.dp, e.tp, e.pp, e.zero))
            row += f" {got:>9.1f} {got / (e.total / MIB):>6.2f}" if got else f" {'-':>9} {'-':>6}"
        lines.append(row)
    return "\n".join(lines)


def check_fits(job, dp, tp, pp, zero, ranks, mem):
    """ConfigError when the layout's node total exceeds mem bytes, naming the layouts that fit."""
    mine = estimate(job, dp, tp, pp, zero)
    if mem is None or mine.node_total <= mem:
        return mine
    ok = [e for e in plan(job, ranks, mem) if e.fits]
    raise ConfigError(
        f"layout dp {dp} x tp {tp} x pp {pp} at ZeRO-{zero} (--recompute {job.recompute}) needs about "
        f"{mine.node_total / MIB:,.0f} MiB on this node ({mine.total / MIB:,.0f} MiB on its largest rank), more than "
        f"its {mem / MIB:,.0f} MiB available (python -m hpr.plan shows why). Layouts that fit: "
        + ("; ".join(f"{e.flags()} ({e.node_total / MIB:,.0f} MiB)" for e in ok[:8]) or
           "none at this batch and recompute mode; lower --batch, raise --micro-batches or use --recompute block")
        + ". --no-memory-check runs it anyway.")


def default_vocab(preset):
    """GPT-2's 50257-token vocabulary for the gpt2 presets, bytes (256) for the others."""
    return 50257 if preset.startswith("gpt2") else 256


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True, help=f"model size: {', '.join(PRESETS)}")
    ap.add_argument("--ranks", type=int, required=True, help="ranks of the job, all on this node")
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step (default 16)")
    ap.add_argument("--micro-batches", type=int, default=1, help="micro-batches per data-parallel rank (default 1)")
    ap.add_argument("--zero", type=int, default=None, help="only this ZeRO stage (default: 0 to 3)")
    ap.add_argument("--recompute", default="none", help=f"activation recomputation: {', '.join(RECOMPUTE)}")
    ap.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    ap.add_argument("--vocab-size", type=int, default=None, help="the tokenizer's vocabulary (default: 50257 for "
                    "gpt2*, else 256, bytes)")
    ap.add_argument("--data-mib", type=float, default=0.0, help="corpus held by every rank, MiB (default 0)")
    ap.add_argument("--bucket-mb", type=float, default=1.0, help="gradient bucket size, MiB (default 1)")
    ap.add_argument("--mem-mib", type=float, default=None, help="memory the ranks share (default: MemAvailable)")
    ap.add_argument("--no-rate", action="store_true", help="skip measuring the matmul rate (step times 0)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the plan as JSON to FILE")
    return ap


def job_from_args(a):
    """The Job of parsed plan flags; ConfigError for a bad one."""
    if a.preset not in PRESETS:
        raise ConfigError(f"unknown --preset {a.preset!r}; choose one of {', '.join(PRESETS)}")
    if a.ranks < 1 or a.batch < 1 or a.micro_batches < 1:
        raise ConfigError(f"--ranks, --batch and --micro-batches must be at least 1 (got {a.ranks}, {a.batch}, "
                          f"{a.micro_batches})")
    if a.zero is not None and a.zero not in ZERO_STAGES:
        raise ConfigError(f"--zero {a.zero}: use one of {', '.join(map(str, ZERO_STAGES))}")
    if a.recompute not in RECOMPUTE:
        raise ConfigError(f"--recompute {a.recompute!r}: use one of {', '.join(RECOMPUTE)}")
    if a.data_mib < 0 or not a.bucket_mb > 0 or (a.mem_mib is not None and not a.mem_mib > 0):
        raise ConfigError("--data-mib must be >= 0, --bucket-mb and --mem-mib positive")
    vocab = a.vocab_size if a.vocab_size is not None else default_vocab(a.preset)
    config = GPTConfig.preset(a.preset, dtype=a.dtype, vocab_size=vocab)
    return Job(config, a.batch, a.micro_batches, a.recompute, a.bucket_mb, int(a.data_mib * MIB))


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        job = job_from_args(a)
        mem = int(a.mem_mib * MIB) if a.mem_mib is not None else mem_available()
        if mem is None:
            raise ConfigError("no /proc/meminfo here: pass --mem-mib, the memory the node's ranks may use")
        rate = None if a.no_rate else cpu.matmul_flops(job.config.dtype)
        zeros = ZERO_STAGES if a.zero is None else (a.zero,)
        est = plan(job, a.ranks, mem, rate, zeros)
        if not est:
            raise ConfigError(f"no dp x tp x pp layout of {a.ranks} ranks runs {a.preset} at --batch {a.batch} "
                              f"with {a.micro_batches} micro-batch(es); change --ranks or --batch")
    except HprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = job.config
    print(f"# hpr plan: {a.preset} ({c.n_layers} layers, d_model {c.d_model}, context {c.context}, vocabulary "
          f"{c.vocab_size}, {c.dtype}), {a.ranks} ranks, batch {a.batch} in {a.micro_batches} micro-batch(es), "
          f"--recompute {a.recompute}" + (f", matmul {rate / 1e9:.1f} GFLOP/s" if rate else ""))
    print(format_table(est, mem))
    print(f"# base: {job.baseline_mib:g} MiB, an idle rank (Python, numpy, MPI, hpr) and the allocator's slack "
          f"(measured, constants: hpr.plan's docstring); +peak: "
          "what the peak holds beyond the steady state (ZeRO-1's allgathered "
          "parameters, the init's float64 draw or the matmul probe); comm counts the neighbours' gradient windows a rank maps, node counts them "
          "once; step s: FLOPs / the matmul rate, communication not counted; ZeRO 1-3 listed only where dp > 1")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"preset": a.preset, "ranks": a.ranks, "batch": a.batch, "micro_batches": a.micro_batches,
                       "recompute": a.recompute, "mem_available_mib": mem / MIB, "matmul_flops": rate,
                       "layouts": [e.as_dict() for e in est]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
