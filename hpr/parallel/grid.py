"""The process grid (DESIGN.md decision 3): world = dp x pp x tp, tp varying fastest (neighbouring
ranks, one node), then dp, then pp, as Megatron orders them. Each axis is a Communicator made once.
Owns the rank arithmetic and the layout checks; not what runs on the axes.

Worked example, 8 ranks, dp=2, tp=2, pp=2 (world rank -> (pp, dp, tp)):

    rank:  0      1      2      3      4      5      6      7
    pp:    0      0      0      0      1      1      1      1
    dp:    0      0      1      1      0      0      1      1
    tp:    0      1      0      1      0      1      0      1

    tp groups (same pp, dp):  {0,1} {2,3} {4,5} {6,7}
    dp groups (same pp, tp):  {0,2} {1,3} {4,6} {5,7}
    pp groups (same dp, tp):  {0,4} {1,5} {2,6} {3,7}

Usage: ``grid = ProcessGrid(hpr.init(), dp=2, tp=2, pp=2); grid.tp.allreduce(x)``"""
from ..errors import ConfigError


def valid_layouts(world_size, n_heads=None, d_model=None, n_layers=None, batch=None, micro_batches=1,
                  vocab_size=None):
    """Every (dp, tp, pp) with dp*tp*pp = world_size that the model and batch allow."""
    out = []
    for tp in range(1, world_size + 1):
        if world_size % tp:
            continue
        for pp in range(1, world_size // tp + 1):
            if (world_size // tp) % pp:
                continue
            dp = world_size // (tp * pp)
            if layout_problem(dp, tp, pp, world_size, n_heads, d_model, n_layers, batch, micro_batches,
                              vocab_size) is None:
                out.append((dp, tp, pp))
    return out


def layout_problem(dp, tp, pp, world_size, n_heads=None, d_model=None, n_layers=None, batch=None,
                   micro_batches=1, vocab_size=None):
    """What is wrong with a layout (a sentence), or None. dp=None: the ranks left over by tp x pp."""
    if min(tp, pp) < 1 or (dp is not None and dp < 1):
        return f"dp, tp and pp must be at least 1 (got dp={dp}, tp={tp}, pp={pp})"
    if dp is None:
        if world_size % (tp * pp):
            return f"tp x pp = {tp} x {pp} = {tp * pp} does not divide the job's {world_size} ranks"
        dp = world_size // (tp * pp)
    if dp * tp * pp != world_size:
        return f"dp x tp x pp = {dp} x {tp} x {pp} = {dp * tp * pp}, but the job has {world_size} ranks"
    if n_heads is not None and n_heads % tp:
        return f"tp={tp} does not divide the {n_heads} attention heads"
    if vocab_size is not None and vocab_size % tp:
        return f"tp={tp} does not divide the vocabulary of {vocab_size} (split by rows over tp)"
    if n_layers is not None and n_layers < pp:
        return f"pp={pp} stages need at least {pp} layers; the model has {n_layers}"
    if batch is not None and batch % (dp * micro_batches):
        return (f"--batch {batch} does not split evenly over {dp} data-parallel rank(s) x {micro_batches} "
                f"micro-batch(es); use a multiple of {dp * micro_batches}")
    return None


class ProcessGrid:
    """The dp x pp x tp grid over `world` (an hpr Communicator). Collective: every rank makes it."""

    def __init__(self, world, dp=None, tp=1, pp=1, *, n_heads=None, d_model=None, n_layers=None, batch=None,
                 micro_batches=1, vocab_size=None):
        n = world.size
        why = layout_problem(dp, tp, pp, n, n_heads, d_model, n_layers, batch, micro_batches, vocab_size)
        if why is not None:
            ok = valid_layouts(n, n_heads, d_model, n_layers, batch, micro_batches, vocab_size)
            choices = ", ".join(f"--dp {a} --tp {b} --pp {c}" for a, b, c in ok) or "none"
            raise ConfigError(f"layout dp={'auto' if dp is None else dp} tp={tp} pp={pp} cannot run: {why}. "
                              f"Layouts that work for {n} rank(s) and this model: {choices}")
        dp = n // (tp * pp) if dp is None else dp
        self.world, self.dp_size, self.tp_size, self.pp_size = world, dp, tp, pp
        r = world.rank
        self.tp_rank, self.dp_rank, self.pp_rank = self.coords(r)
        # every rank joins every split, in the same order (Communicator.split is collective)
        self.tp = world.split(color=self.pp_rank * dp + self.dp_rank, key=r)
        self.dp = world.split(color=self.pp_rank * tp + self.tp_rank, key=r)
        self.pp = world.split(color=self.dp_rank * tp + self.tp_rank, key=r)
        # the first and the last stage of each pipeline both hold wte (embedding and tied head)
        self.tied = None
        if pp > 1:
            from mpi4py import MPI  # lazy: initialises MPI; single-process tools import hpr.parallel

            ends = self.pp_rank in (0, pp - 1)
            self.tied = world.split(color=self.dp_rank * tp + self.tp_rank if ends else MPI.UNDEFINED, key=r)

    def coords(self, rank):
        """(tp, dp, pp) coordinates of a world rank."""
        tp, dp = self.tp_size, self.dp_size
        return rank % tp, (rank // tp) % dp, rank // (tp * dp)

    def rank_of(self, tp=0, dp=0, pp=0):
        return pp * self.dp_size * self.tp_size + dp * self.tp_size + tp

    def describe(self):
        """A printable table: which world rank holds which coordinates."""
        rows = [f"grid: dp={self.dp_size} x tp={self.tp_size} x pp={self.pp_size} over {self.world.size} rank(s) "
                "(tp fastest, then dp, then pp)"]
        for r in range(self.world.size):
            t, d, p = self.coords(r)
            rows.append(f"  rank {r:>3}: pp {p}  dp {d}  tp {t}")
        return "\n".join(rows)
