"""The canonical form of a model's state: every parameter (and optimizer moment) as its whole named
tensor, as the single-rank model holds it, whatever the layout that trained it. Checkpoints are
written in this form, so a run saved at dp=2, tp=2, pp=2 resumes at dp=8, or tp=4, or alone; the final
sample is generated from it on one rank.

gather: each rank sends the tensors it is canonical for (its tp part of a sharded tensor; a replicated
tensor only from tp rank 0; wte only from the first stage), rank 0 of the world joins the tp parts
(rows, columns, or the q/k/v column blocks) back into whole tensors. scatter: rank 0 sends the whole
tensors, each rank keeps its part. ZeRO-1 shards of the moments are first allgathered over dp.

Usage: ``full = gather(world, tp, model.layout, {"params": model.params})`` (a dict on rank 0)"""
import numpy as np


def _unshard(kind, parts):
    """The whole tensor from its tp parts (in tp rank order), for a shard kind of TensorParallel."""
    if kind == "rows":
        return np.concatenate(parts, axis=0)
    if kind == "columns":
        return np.concatenate(parts, axis=-1)
    if kind == "qkv_columns":  # each part is [q_r | k_r | v_r]
        thirds = [np.split(p, 3, axis=-1) for p in parts]
        return np.concatenate([np.concatenate([t[j] for t in thirds], axis=-1) for j in range(3)], axis=-1)
    raise ValueError(f"unknown shard kind {kind!r}")


def _mine(layout, tp_rank, first_stage):
    """The parameters this rank is canonical for: (param, shard kind or None)."""
    out = []
    for p in layout.entries:
        if p.name == "wte" and not first_stage:
            continue  # the last stage's copy of the tied embedding is the same tensor
        if p.sharded:
            out.append((p, p.shard.__name__))
        elif tp_rank == 0:
            out.append((p, None))
    return out


def gather(world, tp, layout, flats, dp=None, ranges=None, first_stage=True, contribute=True):
    """flats: {kind: flat array over this rank's buffer, or its [lo, hi) slice when ranges[kind] is
    given (ZeRO-1 shards, joined over dp first)}. Returns {kind: {name: whole tensor}} on world rank 0,
    None elsewhere. contribute=False: this rank's tensors are copies another rank sends (a data-parallel
    replica other than dp rank 0). Collective over world (and dp)."""
    tp_rank = tp.rank if tp is not None else 0
    tp_size = tp.size if tp is not None else 1
    full = {}
    for kind, a in flats.items():
        if ranges and ranges.get(kind) is not None and dp is not None and dp.size > 1:
            a = dp.allgather(a)  # the ZeRO-1 shards, in order, are the whole buffer
        full[kind] = a
    mine = {kind: {p.name: (k, tp_rank, np.array(a[p.offset:p.offset + p.size]).reshape(p.shape))
                   for p, k in (_mine(layout, tp_rank, first_stage) if contribute else [])}
            for kind, a in full.items()}
    everyone = world.gather_obj(mine, root=0)
    if world.rank != 0:
        return None
    out = {}
    for kind in flats:
        pieces = {}
        for contrib in everyone:
            for name, (k, r, arr) in contrib[kind].items():
                pieces.setdefault(name, [k, [None] * tp_size])
                pieces[name][1][r if k else 0] = arr
        out[kind] = {name: (arr_list[0] if k is None else _unshard(k, arr_list))
                     for name, (k, arr_list) in pieces.items()}
    return out


def scatter(world, layout, tensors, flats, lo=0, hi=None):
    """tensors: {kind: {name: whole tensor}} on world rank 0 (ignored elsewhere); flats: {kind: this
    rank's flat array to fill, over [lo, hi) of the buffer (a ZeRO-1 shard) or all of it}. Every
    parameter this rank holds is written from its part of the whole tensor. Collective over world."""
    tensors = world.bcast_obj(tensors if world.rank == 0 else None, root=0)
    hi = layout.size if hi is None else hi
    for kind, flat in flats.items():
        whole = np.empty(layout.size, flat.dtype)
        src = tensors[kind]
        for p in layout.entries:
            if p.name not in src:
                raise KeyError(p.name)
            t = src[p.name]
            if tuple(t.shape) != p.full_shape:
                raise ValueError(f"{p.name}: saved {tuple(t.shape)}, the model has {p.full_shape}")
            whole[p.offset:p.offset + p.size] = (p.shard(t) if p.sharded else t).reshape(-1)
        flat[...] = whole[lo:hi]
