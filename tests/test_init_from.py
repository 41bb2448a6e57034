"""The trainer's --init-from HF_DIR: a random GPT2LMHeadModel saved by transformers (with a BPE tokenizer
trained here) starts an hpr run whose loss and logits on the first batch equal transformers' on the
same batch (1e-10 in float64, 1e-4 in float32), with the folder's tokenizer preparing the text; the
checkpoints record the folder and --resume continues only a run that started from it; every flag that
makes no sense with it is refused before any work, nothing written. The MPI side (tp 2, dp 2, pp 2)
is tests/mpi/test_init_from.py. Skips without torch / transformers / tokenizers (the `test` extra)."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hpr.convert import write_checkpoint
from hpr.data import Batches, TokenShards, prepare
from hpr.model import GPTConfig
from hpr.train import Run, build_parser, main
from hf_models import bpe_text, hf_logits, hf_loss, hf_model_folder

pytest.importorskip("torch")
pytest.importorskip("transformers")

TOL = {"float32": 1e-4, "float64": 1e-10}
CTX, VOCAB, BATCH = 32, 300, 4


@pytest.fixture(scope="module")
def hf(tmp_path_factory, corpus):
    """(the Hugging Face folder, its transformers model in float64, the corpus prepared with its tokenizer)."""
    root = tmp_path_factory.mktemp("hf")
    text = bpe_text(VOCAB - 20, [p.read_text() for p in sorted(corpus.rglob("*.txt"))])
    model = hf_model_folder(root / "gpt2", dtype="float64", vocab=VOCAB, text=text, n_positions=CTX)
    prepare([str(corpus)], str(root / "gpt2" / "tokenizer.json"), str(root / "shards"), progress=False)
    return root / "gpt2", model, root / "shards"


def flags(folder, data, *more, dtype="float64", steps=1):
    return ["--init-from", str(folder), "--data", str(data), "--dtype", dtype, "--steps", str(steps), "--batch",
            str(BATCH), "--eval-every", "0", "--eval-batches", "1", "--sample-tokens", "0", "--seed", "3", *more]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_run_starts_at_transformers_loss(hf, dtype):
    folder, ref, shards = hf
    run = Run.build(build_parser().parse_args(flags(folder, shards, dtype=dtype)))
    assert (run.config.context, run.config.vocab_size, run.config.dtype) == (CTX, VOCAB, dtype)
    assert run.config.padded_vocab == 320 and run.args.preset is None  # no preset has this shape
    x, y = run.train.get(0, BATCH)  # the first step's batch
    assert abs(run.model.loss(x, y) - hf_loss(ref, x, y)) < TOL[dtype]
    assert np.abs(run.model.logits(x) - hf_logits(ref, x)).max() < TOL[dtype]


def test_cli_prepares_text_with_the_folders_tokenizer_and_resumes(hf, corpus, env, tmp_path):
    folder, ref, _ = hf
    ck, log = tmp_path / "ck", tmp_path / "log.jsonl"

    def train(*more, steps=1):
        return subprocess.run([sys.executable, "-m", "hpr.train", *flags(folder, corpus, "--ckpt-dir", str(ck),
                                                                          "--log-json", str(log), *more, steps=steps)],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)

    r = train()
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"init: weights of {folder}" in r.stdout
    cache = re.search(r"prepared now in the cache (.+?)\)", r.stdout)[1]
    shards = TokenShards(cache)
    assert shards.hash == TokenShards(hf[2]).hash  # the folder's tokenizer, not bytes
    x, y = Batches(shards.train, CTX, 3).get(0, BATCH)
    first = json.loads(log.read_text().splitlines()[0])
    assert first["step"] == 1 and abs(first["loss"] - hf_loss(ref, x, y)) < 1e-10
    meta = json.loads((ck / "step-00000001" / "meta.json").read_text())
    assert meta["init_from"]["path"] == str(folder) and meta["config"]["vocab_size"] == VOCAB
    assert (ck / "step-00000001" / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    r = train("--resume", steps=2)  # the same folder: continues the checkpoint, not the folder's weights
    assert r.returncode == 0 and "resume: continuing from" in r.stdout and "init: weights" not in r.stdout, r.stderr
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    r = subprocess.run([sys.executable, "-m", "hpr.train", *flags(other, corpus, "--ckpt-dir", str(ck), "--resume")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and f"started from {folder}" in r.stderr and "Traceback" not in r.stderr


def _drop_tensor(folder):
    t = load_file(str(folder / "model.safetensors"))
    del t["transformer.h.1.mlp.c_fc.bias"]
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _relu(folder):
    c = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(c, activation_function="relu")))


REFUSALS = [  # (name, edit of a copy of the folder, extra flags, message)
    ("preset", None, ["--preset", "tiny"], "--preset tiny is .* leave --preset out"),
    ("qubits", None, ["--qubits", "2"], "--qubits 2 with --init-from"),
    ("gpu", None, ["--device", "gpu"], "--init-from with --device gpu: not verified"),
    ("tokenizer", None, ["--tokenizer", "bytes"], "is not the tokenizer of --init-from"),
    ("resume-other", None, ["--resume"], "did not start from a Hugging Face folder"),
    ("missing-tensor", _drop_tensor, [], "no tensor 'transformer.h.1.mlp.c_fc.bias'"),
    ("activation", _relu, [], "activation_function='relu' has no hpr counterpart"),
    ("no-folder", shutil.rmtree, [], "config.json is missing"),
    ("byte-shards", None, ["BYTES"], "tokenise|tokenizer"),
]


@pytest.mark.parametrize("name,edit,more,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_come_before_any_work(hf, corpus, tmp_path, capsys, name, edit, more, message):
    folder, _, shards = hf
    src = tmp_path / "hf"
    shutil.copytree(folder, src)
    if edit:
        edit(src)
    ck = tmp_path / "ck"
    if name == "resume-other":  # a checkpoint of a run that started from random weights
        c = GPTConfig(vocab_size=VOCAB, context=CTX, d_model=32, n_layers=2, n_heads=4, dtype="float64")
        write_checkpoint(str(ck), c, {"wte": np.zeros((VOCAB, 32))})
    data = shards
    if more == ["BYTES"]:
        data, more = tmp_path / "bytes", []
        prepare([str(corpus)], "bytes", str(data), progress=False)
    before = sorted(os.listdir(tmp_path))
    assert main(flags(src, data, "--ckpt-dir", str(ck), *more)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written: no checkpoint, no cache
    assert name == "resume-other" or not ck.exists()
