"""The trainer's --init-from in model-parallel and data-parallel layouts: a random GPT2LMHeadModel saved by
transformers (a BPE tokenizer trained here) trains one step at tp 2, pp 2 and dp 2 (what the world
allows), and the first step's loss, logged by rank 0, equals transformers' loss on the same batch
(float64, 1e-10): the weights reached every rank's shard (heads and vocabulary split over tp, blocks
over pp). Skips without torch / transformers / tokenizers."""
import json
import os
import pathlib
import shutil
import tempfile

import pytest
from mpi4py import MPI

import hpr
from hpr.data import Batches, TokenShards, prepare
from hpr.train import main
from hf_models import bpe_text, hf_loss, hf_model_folder

pytestmark = pytest.mark.mpi(min_size=2)
pytest.importorskip("torch")
pytest.importorskip("transformers")

N = MPI.COMM_WORLD.size
CTX, VOCAB, BATCH, SEED = 16, 300, 8, 5  # BATCH: split evenly at 2, 4 and 8 ranks in every layout here
TEXT = ["def forward(self, x):\n    return self.proj(x) + x\n", "the quick brown fox jumps over the lazy dog. ",
        "import numpy as np\nprint(np.arange(10).sum())\n"]


@pytest.fixture(scope="module")
def hf():
    """(folder, float64 transformers model on rank 0 else None, prepared shards), in a folder every rank sees."""
    world = hpr.init()
    root = world.bcast_obj(tempfile.mkdtemp(prefix="hpr-init-from-") if world.rank == 0 else None)
    model = None
    if world.rank == 0:
        folder = pathlib.Path(root) / "gpt2"
        model = hf_model_folder(folder, dtype="float64", vocab=VOCAB, text=bpe_text(VOCAB - 20, TEXT * 20),
                                n_positions=CTX, n_embd=32, n_layer=2, n_head=4)
        texts = pathlib.Path(root) / "text"
        texts.mkdir()
        for i in range(6):
            (texts / f"t{i}.txt").write_text("".join(TEXT[(i + k) % 3] for k in range(40)))
    world.barrier()
    prepare([os.path.join(root, "text")], os.path.join(root, "gpt2", "tokenizer.json"), os.path.join(root, "shards"),
            comm=world, progress=False, val_permille=500)
    yield os.path.join(root, "gpt2"), model, os.path.join(root, "shards")
    world.barrier()
    if world.rank == 0:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("layout", [["--tp", "2"], ["--pp", "2", "--micro-batches", "2"], ["--dp", str(N)]],
                         ids=["tp2", "pp2", "dp"])
def test_first_step_loss_equals_transformers(hf, layout):
    world = hpr.init()
    folder, ref, shards = hf
    if N % 2:
        pytest.skip("the layouts here need an even world")
    log = world.bcast_obj(os.path.join(tempfile.mkdtemp(prefix="hpr-init-log-"), "log.jsonl") if world.rank == 0
                          else None)
    code = main(["--init-from", folder, "--data", shards, "--dtype", "float64", "--steps", "1", "--batch", str(BATCH),
                 "--eval-every", "0", "--eval-batches", "1", "--sample-tokens", "0", "--seed", str(SEED),
                 "--log-json", log, *layout])
    assert code == 0
    diff = None
    if world.rank == 0:  # the loss rank 0 logged against transformers', decided on rank 0 for every rank
        first = json.loads(open(log).read().splitlines()[0])
        x, y = Batches(TokenShards(shards).train, CTX, SEED).get(0, BATCH)
        diff = abs(first["loss"] - hf_loss(ref, x, y)) if first["step"] == 1 else float("inf")
        shutil.rmtree(os.path.dirname(log), ignore_errors=True)
    diff = world.bcast_obj(diff)  # every rank passes or fails alike, so the next test starts together
    assert diff < 1e-10, f"first-step loss differs from transformers' by {diff}"
