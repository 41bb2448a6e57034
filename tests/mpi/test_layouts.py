"""Every dp x tp x pp layout of the job trains the single-process model: for each factorisation of the
world that `valid_layouts` allows for a 4-layer, 4-head tiny model, the first steps' losses, gradient
norms and parameters equal a one-rank run of the same global batch (float64 to 1e-10, float32 to 1e-5),
with replicated or ZeRO-1 optimizer state and 1, 2 or 4 micro-batches. Also: the pipeline runs the 1F1B
order with min(pp - stage, m) replicas, bad layouts are refused on every rank with the reason and the
layouts that would work, and a checkpoint saved in one layout resumes in another (and on one rank) on
the uninterrupted run's losses. Run by tests/run_all.py under mpiexec -n 2, 3, 4, 8; wired as
hpr.train.run wires a job (Pipeline only when pp > 1, norm_skip for the tied wte on the last stage)."""
import os
import re
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr import checkpoint
from hpr.data import Batches
from hpr.model import GPT, GPTConfig
from hpr.optim import AdamW, CosineSchedule
from hpr.parallel import (DataParallel, Pipeline, ProcessGrid, TensorParallel, check_same_params, paged_zeros,
                          valid_layouts)
from hpr.parallel.schedule import one_f_one_b
from hpr.train import Run, build_parser, restore_checkpoint, save_checkpoint, train_step

pytestmark = pytest.mark.mpi(min_size=2)

N = MPI.COMM_WORLD.size  # the same on every rank, so every rank collects the same tests
STEPS = 3
SEED, DATA_SEED = 5, 7
LR, WARMUP, CLIP = 3e-3, 1, 0.5  # CLIP below the first steps' norms: clipping (the global norm) matters
BUCKET_MB = 0.001  # ~130 float64 elements a bucket: many buckets, launched while backward runs
BATCH = 4 * N  # every dp (a divisor of N) times every m (a divisor of 4) divides it
TOKENS = np.random.default_rng(0).integers(0, 256, 20000).astype(np.uint8)  # same on every rank
RTOL = {"float64": 1e-10, "float32": 1e-5}  # losses and gradient norms
PARAM_RTOL = {"float64": 1e-10, "float32": 1e-4}  # per tensor, norm-wise (float32 measured: <= 7e-6)


def config(dtype="float64"):
    return GPTConfig.preset("tiny", n_layers=4, n_heads=4, d_model=32, dtype=dtype)


def layouts(batch=BATCH, m=1):
    c = config()
    return valid_layouts(N, c.n_heads, c.d_model, c.n_layers, batch, m, c.vocab_size)


_SELF = []


def _self():
    """A one-rank hpr Communicator over COMM_SELF (the single-process reference), made once."""
    if not _SELF:
        from hpr.comm import Communicator

        _SELF.append(Communicator(MPI.COMM_SELF))
    return _SELF[0]


class Job:
    """One layout's training state, wired as hpr.train.run wires it."""

    def __init__(self, world, cfg, dp, tp, pp, m=1, zero=0, batch=BATCH, seed=SEED, steps=STEPS):
        self.cfg, self.m, self.batch = cfg, m, batch
        self.grid = grid = ProcessGrid(world, dp=dp, tp=tp, pp=pp, n_heads=cfg.n_heads, d_model=cfg.d_model,
                                       n_layers=cfg.n_layers, batch=batch, micro_batches=m)
        self.tp = tpo = TensorParallel(grid.tp)

        def make_stage(params, grads):
            alloc = grid.dp.alloc if (dp > 1 and grads is None) else None
            if zero >= 2:
                alloc = paged_zeros
            return GPT(cfg, seed=seed, tp=tpo, stage=(grid.pp_rank, pp), params=params, grads=grads, alloc=alloc,
                       params_alloc=paged_zeros if zero == 3 else None)

        self.pipe = Pipeline(grid.pp, make_stage, m, tied=grid.tied) if pp > 1 else None
        self.model = model = self.pipe.model if self.pipe else make_stage(None, None)
        skip = []
        if pp > 1 and model.last:  # the tied wte is counted in the gradient norm on the first stage
            skip = [(model.emb.wte.offset, model.emb.wte.offset + model.emb.wte.size)]
        check_same_params(grid.dp, model.params)
        self.sync = DataParallel(grid.dp, model.layout, BUCKET_MB, "float32", zero, tp=tpo, pp=grid.pp,
                                 norm_skip=skip, units=model.param_units())
        self.sync.attach(self.pipe.models if self.pipe else [model])
        p, g, lo, hi, segments = self.sync.optimizer_buffers(model.params, model.grads)
        self.opt = AdamW(model.layout, p, g, lo=lo, hi=hi, segments=segments)
        self.sched = CosineSchedule(LR, steps, WARMUP)
        self.data = Batches(TOKENS, cfg.context, seed=DATA_SEED)

    def whole_params(self):
        """This rank's flat parameters, whole (ZeRO-3 gathers them from the dp shards: collective)."""
        return self.sync.whole_params(self.model.params)

    def step(self, s):
        """(loss, grad norm) of step s."""
        loss, _, norm = train_step(self.model, self.opt, self.sync, self.sched, self.data, s, self.batch, self.m,
                                   CLIP, pipe=self.pipe)
        return loss, norm


@pytest.fixture(scope="module")
def reference():
    """Single-process runs of the same global batch, computed on every rank (the same bits everywhere):
    {dtype: (losses, grad norms, {name: whole tensor after STEPS steps})}."""
    out = {}
    for dt in RTOL:
        job = Job(_self(), config(dt), 1, 1, 1)
        ln = np.array([job.step(s) for s in range(1, STEPS + 1)])
        out[dt] = (ln[:, 0], ln[:, 1], {p.name: p.data.copy() for p in job.model.layout.entries})
    return out


def without_key_bias(name, x):
    """x less the key third of a qkv bias ([q | k | v], or a tp rank's [q_r | k_r | v_r]). Softmax
    ignores a constant added to a row of scores, so those elements' gradient is exactly zero and only
    rounding noise reaches AdamW, which turns it into steps of random sign that differ by layout."""
    x = np.asarray(x).reshape(-1)
    if not name.endswith("attn.qkv.b"):
        return x
    c = x.size // 3
    return np.concatenate([x[:c], x[2 * c:]])


def assert_params_match(layout, whole, rtol, flat=None):
    """Every parameter this rank holds equals its part of the reference's whole tensor, norm-wise per
    tensor (elements near zero differ by rounding at the tensor's scale, not their own). flat: this
    rank's whole flat parameters, when its views do not hold them (ZeRO-3)."""
    bad = []
    for p in layout.entries:
        full = whole[p.name]
        want = without_key_bias(p.name, p.shard(full) if p.sharded else full)
        got = without_key_bias(p.name, p.data if flat is None else flat[p.offset:p.offset + p.size])
        err = float(np.linalg.norm(got - want)) / max(float(np.linalg.norm(want)), 1e-300)
        if not err <= rtol:
            bad.append(f"{p.name}: relative error {err:.2e}")
    assert not bad, "parameters differ from the single-process run: " + "; ".join(bad)


# -- every layout equals the single-process run -------------------------------------------------------
def _cases():
    """(layout, zero, m, dtype) for this world size: every valid layout in float64 with zero 0 and 1 (1
    only where dp > 1, where it shards something) and each m in {1, 2, 4} with m >= pp; where dp > 1
    also ZeRO-2 (largest m: each micro-batch's gradients reduce-scattered) and ZeRO-3 (smallest and
    largest m); and once in float32 (its largest m and zero). About 60 cases at 8 ranks."""
    out = []
    for lay in layouts():
        dp, tp, pp = lay
        ms = [m for m in (1, 2, 4) if m >= pp]
        zeros = [0, 1] if dp > 1 else [0]
        out += [(lay, z, m, "float64") for m in ms for z in zeros]
        if dp > 1:
            out += [(lay, 2, ms[-1], "float64")] + [(lay, 3, m, "float64") for m in sorted({ms[0], ms[-1]})]
            zeros = [3]
        out.append((lay, zeros[-1], ms[-1], "float32"))
    return out


def _id(case):
    (dp, tp, pp), zero, m, dt = case
    return f"dp{dp}-tp{tp}-pp{pp}-m{m}-zero{zero}-{dt}"


@pytest.mark.parametrize("case", _cases(), ids=_id)
def test_layout_equals_single_process(reference, case):
    (dp, tp, pp), zero, m, dt = case
    world = hpr.init()
    job = Job(world, config(dt), dp, tp, pp, m, zero)
    got = np.array([job.step(s) for s in range(1, STEPS + 1)])
    # collectives first (they fail on every rank alike), then this rank's own checks
    flat = job.whole_params()
    check_same_params(job.grid.dp, flat)  # the data-parallel replicas stay bit-identical
    if job.grid.tied is not None:  # the embedding and the tied head: one tensor on two stages
        wte = job.model.emb.wte
        check_same_params(job.grid.tied, flat[wte.offset:wte.offset + wte.size])
    names = world.mpi.allgather([p.name for p in job.model.layout.entries])
    want_loss, want_norm, want_params = reference[dt]
    rtol = RTOL[dt]
    np.testing.assert_allclose(got[:, 0], want_loss, rtol=rtol, err_msg="losses")
    np.testing.assert_allclose(got[:, 1], want_norm, rtol=rtol, err_msg="global gradient norms")
    # the stages' tp parts together hold exactly the whole model (wte twice when pp > 1: both ends)
    assert set().union(*names) == set(want_params)
    assert_params_match(job.model.layout, want_params, PARAM_RTOL[dt], flat)


def test_every_valid_layout_is_covered():
    """The layouts this world size tests are exactly the valid ones (and the invalid ones are not)."""
    c = config()
    got = {case[0] for case in _cases()}
    assert got == set(layouts())
    every = {(a, b, N // (a * b)) for a in range(1, N + 1) for b in range(1, N + 1) if N % (a * b) == 0}
    for dp, tp, pp in every - got:
        assert c.n_heads % tp or pp > c.n_layers, (dp, tp, pp)
    ms = {case[2] for case in _cases()}
    zeros = {case[1] for case in _cases()}
    assert ms == {1, 2, 4} and zeros == {0, 1, 2, 3}


# -- the 1F1B schedule as the pipeline runs it --------------------------------------------------------
def _schedule_cases():
    return [(lay, m) for lay in layouts() if lay[2] > 1 for m in (1, 2, 4)]


@pytest.mark.parametrize("lay,m", _schedule_cases(), ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple)
                         else f"m{v}")
def test_pipeline_runs_1f1b_with_min_pp_minus_stage_m_replicas(lay, m):
    dp, tp, pp = lay
    world = hpr.init()
    job = Job(world, config(), dp, tp, pp, m, 0)
    pipe, stage = job.pipe, job.grid.pp_rank
    slots = len(pipe.models)

    # what this rank's pipeline will be given at step 1 (train_step's split of the global batch)
    local = BATCH // dp
    micro = local // m
    first = job.grid.dp_rank * local
    given = [job.data.get(first + k * micro, micro)[1] for k in range(m)]
    ran, pending, problems = [], [None] * slots, []

    def spy(r, rep):
        fwd, bwd = rep.stage_forward, rep.stage_backward

        def forward(inp, b, t, targets=None, grad=True):
            hit = [k for k, y in enumerate(given) if np.array_equal(y, targets)]
            k = hit[0] if len(hit) == 1 else None
            if pending[r] is not None:
                problems.append(f"F{k} on replica {r} while F{pending[r]}'s activations await backward")
            pending[r] = k
            ran.append(("F", k, r))
            return fwd(inp, b, t, targets=targets, grad=grad)

        def backward(dout=None, scale=1.0, on_ready=None):
            ran.append(("B", pending[r], r))
            pending[r] = None
            return bwd(dout, scale, on_ready)

        rep.stage_forward, rep.stage_backward = forward, backward

    for r, rep in enumerate(pipe.models):
        spy(r, rep)
    job.step(1)  # the collective part; the checks below are this rank's own
    assert pipe.actions == one_f_one_b(pp, m, stage)
    assert slots == min(pp - stage, m)
    assert all(r.params is job.model.params and r.grads is job.model.grads for r in pipe.models)
    want = [(a.kind, a.micro, a.micro % slots) for a in one_f_one_b(pp, m, stage)]
    assert ran == want, f"stage {stage}: ran {ran}, 1F1B is {want}"
    assert not problems, problems
    alive, most = 0, 0
    for kind, _, _ in ran:
        alive += 1 if kind == "F" else -1
        most = max(most, alive)
    assert most == slots  # the replicas are all needed, and enough


# -- bad layouts are refused on every rank ------------------------------------------------------------
def _smallest_factor(n):
    return next(p for p in range(2, n + 1) if n % p == 0)


def _bad_layouts():
    """name -> (dp, tp, pp, config overrides, batch, m, words the message must hold)."""
    if N < 2:  # collected without mpiexec: every test here skips (min_size=2)
        return {}
    p = _smallest_factor(N)
    heads = 4 if N % 3 == 0 else 3  # tp=p does not divide it
    tp_bad = 3 if N % 3 == 0 else 2
    return {
        "product": (N, 2, 1, {}, BATCH, 1, f"dp x tp x pp = {N} x 2 x 1 = {2 * N}, but the job has {N} ranks"),
        "tp-not-dividing-the-world": (None, N + 1, 1, {}, BATCH, 1, "does not divide the job's"),
        "heads": (N // tp_bad, tp_bad, 1, dict(n_heads=heads, d_model=8 * heads), BATCH, 1,
                  f"tp={tp_bad} does not divide the {heads} attention heads"),
        "layers": (N // p, 1, p, dict(n_layers=p - 1), BATCH, 1,
                   f"pp={p} stages need at least {p} layers; the model has {p - 1}"),
        "batch": (N, 1, 1, {}, 2 * (N // p), 2, f"--batch {2 * (N // p)} does not split evenly over {N} "
                  f"data-parallel rank(s) x 2 micro-batch(es); use a multiple of {2 * N}"),
    }


@pytest.mark.parametrize("name", list(_bad_layouts()))
def test_bad_layout_is_refused_on_every_rank(name):
    dp, tp, pp, over, batch, m, words = _bad_layouts()[name]
    world = hpr.init()
    c = GPTConfig.preset("tiny", **{**dict(n_layers=4, n_heads=4, d_model=32), **over})
    msg = None
    try:
        ProcessGrid(world, dp=dp, tp=tp, pp=pp, n_heads=c.n_heads, d_model=c.d_model, n_layers=c.n_layers,
                    batch=batch, micro_batches=m)
    except hpr.ConfigError as e:
        msg = str(e)
    everyone = world.mpi.allgather(msg)
    assert all(x is not None for x in everyone), f"refused on ranks {[i for i, x in enumerate(everyone) if x]} only"
    assert len(set(everyone)) == 1, everyone
    assert words in msg, msg
    assert f"Layouts that work for {N} rank(s)" in msg, msg
    listed = [tuple(map(int, t)) for t in re.findall(r"--dp (\d+) --tp (\d+) --pp (\d+)", msg)]
    ok = valid_layouts(N, c.n_heads, c.d_model, c.n_layers, batch, m, c.vocab_size)
    assert listed == ok and ok, msg
    # and the first one listed does run
    grid = ProcessGrid(world, *ok[0], n_heads=c.n_heads, d_model=c.d_model, n_layers=c.n_layers, batch=batch,
                       micro_batches=m)
    assert (grid.dp_size, grid.tp_size, grid.pp_size) == ok[0]


# -- a checkpoint from one layout resumes in another ----------------------------------------------------
RESUME_STEPS, SAVE_AT = 6, 3


def _split_layout():
    """The valid layout that splits the model most (pp first), with m >= pp: the layout to compare with
    pure data parallelism."""
    best = max((lay for lay in layouts(m=4)), key=lambda lay: (lay[1] * lay[2], lay[2]))
    return best, (4 if best[2] > 2 else 2)


def _args(ckpt_dir, zero, m):
    """The trainer's flags, as save_checkpoint and restore_checkpoint read them."""
    return build_parser().parse_args([
        "--preset", "tiny", "--dtype", "float64", "--steps", str(RESUME_STEPS), "--batch", str(BATCH),
        "--lr", str(LR), "--warmup", str(WARMUP), "--seed", str(SEED), "--ckpt-dir", ckpt_dir,
        "--zero", str(zero), "--micro-batches", str(m), "--clip", str(CLIP)])


def _resume_job(world, lay, zero, m, ckpt_dir):
    job = Job(world, config(), *lay, m=m, zero=zero, steps=RESUME_STEPS)
    path, meta = checkpoint.load(world, ckpt_dir)
    assert path is not None and os.path.basename(path) == f"step-{SAVE_AT:08d}", path
    step0 = restore_checkpoint(Run(_args(ckpt_dir, zero, m), world, job.cfg, job.grid, job.model, job.opt, job.sync),
                               path, meta)
    assert step0 == SAVE_AT
    return job


@pytest.mark.parametrize("direction", ["split-to-dp", "dp-to-split", "zero3-to-split", "split-zero3-to-dp"])
def test_checkpoint_resumes_in_another_layout(direction):
    """Saved in one layout and ZeRO stage, resumed in another (and at ZeRO 0 on one rank): the
    uninterrupted run's losses. zero3-to-split: saved at dp=N ZeRO-3, resumed at the most split
    layout (dp2 tp2 pp2 at 8 ranks) with ZeRO-1."""
    world = hpr.init()
    split, m_split = _split_layout()
    pure = ((N, 1, 1), 1, 1)  # dp=N, ZeRO-1, one micro-batch
    a, b = ((split, 1 if split[0] > 1 else 0, m_split), pure)
    if direction in ("dp-to-split", "zero3-to-split"):
        a, b = b, a
    if direction == "zero3-to-split":
        a = ((N, 1, 1), 3, 2)
    if direction == "split-zero3-to-dp":
        a = (split, 3 if split[0] > 1 else 0, m_split)
        b = ((N, 1, 1), 2, 1)
    d = world.mpi.bcast(tempfile.mkdtemp(prefix="hpr-layouts-") if world.rank == 0 else None, root=0)
    try:
        # uninterrupted, in layout a, saving at step SAVE_AT
        lay, zero, m = a
        job = Job(world, config(), *lay, m=m, zero=zero, steps=RESUME_STEPS)
        args = _args(d, zero, m)
        ref = []
        for s in range(1, RESUME_STEPS + 1):
            ref.append(job.step(s)[0])
            if s == SAVE_AT:
                save_checkpoint(Run(args, world, job.cfg, job.grid, job.model, job.opt, job.sync), s)
        world.barrier()

        # resumed in layout b, and on one rank (each rank alone, from the same files)
        lay, zero, m = b
        other = _resume_job(world, lay, zero, m, d)
        got = [other.step(s)[0] for s in range(SAVE_AT + 1, RESUME_STEPS + 1)]
        alone = _resume_job(_self(), (1, 1, 1), 0, 1, d)
        got1 = [alone.step(s)[0] for s in range(SAVE_AT + 1, RESUME_STEPS + 1)]
        world.barrier()
    finally:
        if world.rank == 0:
            shutil.rmtree(d, ignore_errors=True)
    np.testing.assert_allclose(got, ref[SAVE_AT:], rtol=1e-12, err_msg=f"resumed at dp/tp/pp {b[0]}")
    np.testing.assert_allclose(got1, ref[SAVE_AT:], rtol=1e-12, err_msg="resumed on one rank")
    assert_params_match(other.model.layout, {p.name: p.data for p in alone.model.layout.entries}, 1e-10)
