"""Generation with the heads split over tensor-parallel ranks: each rank caches only its own heads'
keys and values, and every step's logits equal the single-process model's full recomputation (float64,
1e-12), with the same greedy and sampled tokens, for a batch of prompts of different lengths and past
the context. The world is cut into groups of tp consecutive ranks (tp = 2, and 4 where the world
allows); a rank left over (3 ranks: rank 2) runs the same checks alone (tp = 1). Also a checkpoint
loaded under tensor parallelism (GPT.load(..., tp=...)) with a vocabulary tp does not divide."""
import os
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.convert import write_checkpoint
from hpr.model import GPT, GPTConfig, Sampler, generate
from hpr.parallel import TensorParallel

pytestmark = pytest.mark.mpi(min_size=2)

N = MPI.COMM_WORLD.size
CONFIG = dict(vocab_size=256, context=20, d_model=32, n_layers=2, n_heads=4, dtype="float64")


def weights(config):
    """The same random parameters on every rank (a whole single-process model)."""
    m = GPT(config, seed=3)
    m.params += np.random.default_rng(3).standard_normal(m.n_params) * 0.05
    return m


def group(world, tp):
    """This rank's tp group of consecutive ranks (a leftover rank: a group of its own), as a
    TensorParallel, and the group's size."""
    full = world.size // tp  # whole groups; 3 ranks at tp = 2: group 0 = ranks 0, 1; rank 2 alone
    color = world.rank // tp if world.rank < full * tp else full + world.rank - full * tp
    sub = world.split(color, world.rank)
    return TensorParallel(sub), sub.size


def sharded(whole, tp):
    m = GPT(whole.config, seed=0, tp=tp)
    for p in m.layout.entries:
        full = whole.layout[p.name].data
        p.data[...] = p.shard(full) if p.sharded else full
    return m


@pytest.mark.parametrize("tp_size", [2, 4])
def test_tensor_parallel_cache_equals_recomputation(tp_size):
    world = hpr.init()
    if world.size < tp_size:
        pytest.skip(f"tp={tp_size} needs at least {tp_size} ranks, the world has {world.size}")
    tp, size = group(world, tp_size)
    whole = weights(GPTConfig(**CONFIG))
    m = sharded(whole, tp)
    cache = m.new_cache(1, 20)
    assert cache.k[0].shape == (1, 4 // size, 20, 8)  # this rank's heads only
    prompt = [5, 17, 42, 99, 3]
    z = m.prefill([prompt], cache)
    seq = list(prompt)
    for _ in range(12):
        ref = whole.logits_last(np.array([seq], np.int32))  # the one-process recomputation
        assert np.abs(z - ref).max() < 1e-12
        seq.append(int(np.argmax(ref[0])))
        z = m.decode_step(np.array([seq[-1]]), cache)
        cache.pos += 1
    prompts = [[1, 2, 3], list(range(60, 75)), [200]]  # different lengths; the second outgrows 20
    want = [generate(whole, [p], 10, Sampler(0))[0] for p in prompts]  # greedy: each row as if alone
    assert generate(m, prompts, 10, Sampler(0)) == want
    sampled = generate(whole, prompts, 10, Sampler(0.9, top_k=20, top_p=0.9, seed=7))  # one stream for the batch
    assert generate(m, prompts, 10, Sampler(0.9, top_k=20, top_p=0.9, seed=7)) == sampled
    tp.comm.free()


def test_load_under_tensor_parallelism_pads_the_vocabulary():
    world = hpr.init()
    tp, size = group(world, 2)
    c = GPTConfig(**{**CONFIG, "vocab_size": 257})  # odd: tp = 2 cannot split it without padding
    whole = weights(c)
    tmp = world.bcast_obj(tempfile.mkdtemp() if world.rank == 0 else None)
    if world.rank == 0:
        write_checkpoint(os.path.join(tmp, "ck"), c, {p.name: p.data.copy() for p in whole.layout.entries})
    world.barrier()
    m = GPT.load(os.path.join(tmp, "ck"), tp=tp)
    assert m.config.vocab_size == 257 + (257 % size and size - 257 % size) and m.vocab_size == 257
    want = generate(whole, [[1, 2, 3]], 12, Sampler(0))[0]
    assert generate(m, [[1, 2, 3]], 12, Sampler(0))[0] == want
    tokens = np.array([[4, 5, 6, 7]])
    assert np.abs(m.logits(tokens) - whole.logits(tokens)).max() < 1e-12
    world.barrier()
    if world.rank == 0:
        shutil.rmtree(tmp)
    tp.comm.free()
