"""Pipeline schedules as plain data: which forward (F) and backward (B) of which micro-batch each stage
runs, in what order, and the point-to-point messages each one implies. Decided once, identical on
every rank, printable, and checked here by a discrete-event simulation (dependencies, deadlock, bubble).

Owns: the non-interleaved 1F1B schedule (PipeDream-Flush, Megatron's
`forward_backward_pipelining_without_interleaving`), GPipe for comparison, their expansion into
recv/compute/send steps, activation-memory and bubble accounting. Does not own: MPI, tensors, the
model split into stages, or executing a step (the pipeline engine walks `steps()` and does that).

1F1B on stage s of pp, with m micro-batches: warmup of w = min(pp - s - 1, m) forwards, then m - w
steady pairs (one forward, one backward), then w cooldown backwards. At most pp - s micro-batches are
alive (forward done, backward not) on stage s, against m for GPipe; both idle the same
(pp - 1) / (m + pp - 1) of the time with uniform costs. Worked example, pp=4, m=8::

    # stage 0: F0 F1 F2 | F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 | B5 B6 B7    warmup 3, steady 5, cooldown 3
    # stage 1: F0 F1    | F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 | B6 B7 warmup 2, steady 6, cooldown 2
    # stage 2: F0       | F1 B0 F2 B1 ... F7 B6 | B7                   warmup 1, steady 7, cooldown 1
    # stage 3:            F0 B0 F1 B1 ... F7 B7                        warmup 0, steady 8

Usage: ``for st in steps(pp, m, stage): ...`` or ``print(format_schedule(4, 8))``.
"""
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Action:
    """One unit of stage work: kind "F" (forward) or "B" (backward) of micro-batch `micro`."""
    kind: str
    micro: int

    def __str__(self):
        return f"{self.kind}{self.micro}"


@dataclass(frozen=True)
class Step:
    """One entry of a stage's program. op is "recv", "compute" or "send"; kind is the action's "F" or
    "B"; peer is the other stage for recv/send (None for compute). The tensor on the wire follows from
    kind: F moves activations downstream (s-1 -> s -> s+1), B moves gradients upstream."""
    op: str
    kind: str
    micro: int
    peer: int = None

    @property
    def tensor(self):
        return "act" if self.kind == "F" else "grad"

    def __str__(self):
        if self.op == "compute":
            return f"{self.kind}{self.micro}"
        arrow = "<-" if self.op == "recv" else "->"
        return f"{self.op} {self.tensor}{self.micro} {arrow} {self.peer}"


def _check(pp, m, stage=0):
    for name, v, lo in (("pp (pipeline stages)", pp, 1), ("m (micro-batches)", m, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage < pp:
        raise ConfigError(f"stage must be an integer in [0, {pp}) for pp={pp}, got {stage!r}")


def one_f_one_b(pp, m, stage):
    """The 1F1B (PipeDream-Flush) action order of `stage`: warmup forwards, F/B pairs, cooldown Bs."""
    _check(pp, m, stage)
    warmup = min(pp - stage - 1, m)
    acts = [Action("F", i) for i in range(warmup)]
    for i in range(m - warmup):             # steady: forward of i+warmup, then backward of i
        acts += [Action("F", i + warmup), Action("B", i)]
    acts += [Action("B", i) for i in range(m - warmup, m)]
    return acts


def gpipe(pp, m, stage):
    """GPipe's action order: every forward, then every backward (all m micro-batches alive at once)."""
    _check(pp, m, stage)
    return [Action("F", i) for i in range(m)] + [Action("B", i) for i in range(m)]


def steps(pp, m, stage, schedule=one_f_one_b):
    """Expand `schedule(pp, m, stage)` into the stage's program of recv / compute / send steps.
    F: recv act from stage-1 (unless first), compute, send act to stage+1 (unless last).
    B: recv grad from stage+1 (unless last), compute, send grad to stage-1 (unless first)."""
    _check(pp, m, stage)
    out = []
    first, last = stage == 0, stage == pp - 1
    for a in schedule(pp, m, stage):
        src, dst = (stage - 1, stage + 1) if a.kind == "F" else (stage + 1, stage - 1)
        has_src = not first if a.kind == "F" else not last
        has_dst = not last if a.kind == "F" else not first
        if has_src:
            out.append(Step("recv", a.kind, a.micro, src))
        out.append(Step("compute", a.kind, a.micro))
        if has_dst:
            out.append(Step("send", a.kind, a.micro, dst))
    return out


def max_in_flight(actions):
    """Most micro-batches alive at once (forward run, backward not yet): the activation memory bound."""
    alive = peak = 0
    for a in actions:
        alive += 1 if a.kind == "F" else -1
        peak = max(peak, alive)
    return peak


def bubble_fraction(pp, m):
    """Idle fraction of a flushed pipeline in theory: (pp - 1) / (m + pp - 1)."""
    _check(pp, m)
    return (pp - 1) / (m + pp - 1)


@dataclass(frozen=True)
class Simulation:
    """Result of `simulate`: per stage, the actions and their start / end times (aligned lists)."""
    pp: int
    m: int
    f_cost: float
    b_cost: float
    actions: tuple
    start: tuple
    end: tuple
    makespan: float

    @property
    def bubble(self):
        """Idle fraction of the stage-time, mean over stages of 1 - busy / makespan (stage s is busy
        m * (f_s + b_s))."""
        fc, bc = _per_stage(self.f_cost, self.pp), _per_stage(self.b_cost, self.pp)
        return sum(1.0 - self.m * (f + b) / self.makespan for f, b in zip(fc, bc)) / self.pp


def _per_stage(cost, pp):
    """A cost for every stage: one number for all, or a sequence of pp."""
    return [float(cost)] * pp if isinstance(cost, (int, float)) else [float(c) for c in cost]


def simulate(pp, m, schedule=one_f_one_b, f_cost=1.0, b_cost=2.0):
    """Discrete-event run of all pp stages. Each stage runs its actions in order, one at a time; F of
    micro i on stage s waits for F of i on s-1, B of i on s for B of i on s+1 and F of i on s.
    f_cost, b_cost: one cost per action for every stage, or a sequence with each stage's own (unequal
    stages). Communication is free. Raises ConfigError (a ValueError) if the action lists are malformed
    or if some stage's next action can never start (deadlock)."""
    _check(pp, m)
    fc, bc = _per_stage(f_cost, pp), _per_stage(b_cost, pp)
    if len(fc) != pp or len(bc) != pp or not all(c > 0 for c in fc + bc):
        raise ConfigError(f"f_cost and b_cost must be > 0, one number or one per stage, got {f_cost!r}, "
                          f"{b_cost!r}")
    acts = [list(schedule(pp, m, s)) for s in range(pp)]
    want = sorted((k, i) for k in "FB" for i in range(m))
    for s, lst in enumerate(acts):
        if sorted((a.kind, a.micro) for a in lst) != want:
            raise ConfigError(f"stage {s}'s schedule must hold F and B of each micro-batch 0..{m - 1} "
                              f"exactly once, got {' '.join(map(str, lst))}")
    done = {}                                # (stage, kind, micro) -> end time
    start = [[] for _ in range(pp)]
    end = [[] for _ in range(pp)]
    free = [0.0] * pp                        # when each stage finishes its current action
    nxt = [0] * pp                           # index of each stage's next action
    progress = True
    while progress:
        progress = False
        for s in range(pp):
            while nxt[s] < len(acts[s]):
                a = acts[s][nxt[s]]
                if a.kind == "F":
                    deps = [(s - 1, "F", a.micro)] if s > 0 else []
                else:
                    deps = [(s, "F", a.micro)] + ([(s + 1, "B", a.micro)] if s < pp - 1 else [])
                if any(d not in done for d in deps):
                    break
                t0 = max([free[s]] + [done[d] for d in deps])
                t1 = t0 + (fc[s] if a.kind == "F" else bc[s])
                start[s].append(t0)
                end[s].append(t1)
                done[(s, a.kind, a.micro)] = free[s] = t1
                nxt[s] += 1
                progress = True
    stuck = [f"stage {s} at {acts[s][nxt[s]]}" for s in range(pp) if nxt[s] < len(acts[s])]
    if stuck:
        raise ConfigError(f"pipeline schedule deadlocks (pp={pp}, m={m}): {', '.join(stuck)} can "
                          "never start")
    return Simulation(pp, m, f_cost, b_cost, tuple(tuple(a) for a in acts),
                      tuple(map(tuple, start)), tuple(map(tuple, end)), max(free))


def format_schedule(pp, m, schedule=one_f_one_b):
    """One line per stage, e.g. ``stage 0: F0 F1 B0 F2 B1 B2`` (pp=2, m=3)."""
    _check(pp, m)
    return "\n".join(f"stage {s}: " + " ".join(map(str, schedule(pp, m, s))) for s in range(pp))
