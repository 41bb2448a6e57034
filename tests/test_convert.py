"""hpr.convert against transformers: hpr checkpoints written as GPT-2 folders load in
GPT2LMHeadModel / AutoTokenizer with no warning and give the same logits (1e-4 in float32, 1e-10 in
float64); GPT-2 folders (safetensors, pytorch_model.bin with and without torch) come back as hpr
checkpoints that GPT.load and the trainer's --resume read; every refusal names the field or tensor
and leaves nothing behind. The models are small random ones built here (no downloads).
The transformers / torch / tokenizers parts skip where those are not installed (the `test` extra
installs them)."""
import contextlib
import dataclasses
import io
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import hpr
from hpr.convert import from_hf, to_hf, write_checkpoint
from hpr.convert.layout import hf_name, hpr_shapes
from hpr.convert.readers import read_torch_bin
from hpr.data import load_tokenizer
from hpr.model import GPT, GPTConfig
from hf_models import bpe_text, hf_logits, hf_model_folder

ENV = dict(os.environ, HPR_TIMEOUT="60", PYTHONDONTWRITEBYTECODE="1")


def random_model(config, seed=0):
    """A GPT whose every parameter (LayerNorm weights and biases too) is random, so a swapped or
    transposed tensor changes the logits."""
    m = GPT(config, seed=seed)
    m.params += np.random.default_rng(seed + 100).standard_normal(m.n_params) * 0.05
    return m


def save_hpr(folder, model, tokenizer_text=None):
    params = {p.name: p.data.copy() for p in model.layout.entries}
    return write_checkpoint(str(folder), model.config, params, tokenizer_text)


@contextlib.contextmanager
def hf_log():
    """transformers' log (warnings and up) as text."""
    from transformers.utils import logging as hl

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = hl.get_logger()
    old = hl.get_verbosity()
    root.addHandler(handler)
    hl.set_verbosity_warning()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        hl.set_verbosity(old)


def load_hf(folder, dtype):
    """GPT2LMHeadModel from folder in dtype; asserts the load reported nothing missing or unexpected."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": getattr(torch, dtype)}
    with hf_log() as log:
        m, info = transformers.GPT2LMHeadModel.from_pretrained(str(folder), output_loading_info=True, **kw)
    text = log.getvalue().lower()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    for word in ("missing", "unexpected", "newly initialized", "not initialized", "were not used", "mismatch"):
        assert word not in text, log.getvalue()
    return m.eval()


TOL = {"float32": 1e-4, "float64": 1e-10}


# ---- names and shapes ----

@pytest.mark.parametrize("preset,count", [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168)])
def test_gpt2_presets_have_gpt2_shapes(preset, count):
    """hpr's gpt2 presets, named the Hugging Face way, are GPT2LMHeadModel's tensors, and count
    GPT-2's published parameters (tied head counted once)."""
    c = GPTConfig.preset(preset, vocab_size=50257)
    shapes = {hf_name(n): s for n, s in hpr_shapes(c).items()}
    assert sum(int(np.prod(s)) for s in shapes.values()) == count
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hfc = transformers.GPT2Config(vocab_size=50257, n_positions=c.context, n_embd=c.d_model, n_layer=c.n_layers,
                                  n_head=c.n_heads)
    with torch.device("meta"):
        m = transformers.GPT2LMHeadModel(hfc)
    theirs = {k: tuple(v.shape) for k, v in m.state_dict().items() if k != "lm_head.weight"}
    assert theirs == shapes


def test_name_table_is_the_models_layout():
    c = GPTConfig(vocab_size=64, context=8, d_model=16, n_layers=3, n_heads=2)
    assert hpr_shapes(c) == {p.name: p.full_shape for p in GPT(c).layout.entries}


# ---- hpr -> Hugging Face ----

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_hf_loads_in_transformers_with_equal_logits(tmp_path, dtype):
    text = bpe_text()
    vocab = json.loads(text)["model"]["vocab"]
    n_tok = len(vocab) + 0  # <|endoftext|> is in the trained vocabulary
    c = GPTConfig(vocab_size=-(-n_tok // 64) * 64, context=24, d_model=32, n_layers=2, n_heads=4, dtype=dtype)
    m = random_model(c)
    save_hpr(tmp_path / "ck", m, text)
    to_hf(str(tmp_path / "ck"), str(tmp_path / "hf"))
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "generation_config.json", "model.safetensors",
                                                  "special_tokens_map.json", "tokenizer.json",
                                                  "tokenizer_config.json"]
    hf = load_hf(tmp_path / "hf", dtype)
    assert hf.config.vocab_size == n_tok < c.vocab_size  # the padded rows stay behind
    tokens = np.random.default_rng(1).integers(0, n_tok, (3, 24))
    want = hf_logits(hf, tokens)
    got = GPT.load(str(tmp_path / "ck")).logits(tokens)
    assert got.shape == want.shape == (3, 24, n_tok)
    assert np.abs(got - want).max() < TOL[dtype]
    transformers = pytest.importorskip("transformers")
    with hf_log() as log:
        at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert "warn" not in log.getvalue().lower()
    sample = "def forward(self, x): return x  # naïve ✓ <|endoftext|>"
    ours = load_tokenizer(str(tmp_path / "ck" / "step-00000000" / "tokenizer.json"))
    assert at(sample)["input_ids"] == ours.encode_batch([sample])[0]
    assert at.eos_token == "<|endoftext|>" and at.eos_token_id == hf.config.eos_token_id == ours.eot


def test_bytes_checkpoint_gets_a_bytes_tokenizer(tmp_path):
    c = GPTConfig(vocab_size=256, context=16, d_model=32, n_layers=2, n_heads=4, dtype="float64")
    m = random_model(c, seed=4)
    save_hpr(tmp_path / "ck", m)
    to_hf(str(tmp_path / "ck"), str(tmp_path / "hf"))
    transformers = pytest.importorskip("transformers")
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    s = "héllo, wörld ✓\n\t"
    assert at(s)["input_ids"] == list(s.encode("utf-8"))
    assert at.decode(list(s.encode("utf-8"))) == s
    tokens = np.random.default_rng(2).integers(0, 256, (2, 16))
    assert np.abs(hf_logits(load_hf(tmp_path / "hf", "float64"), tokens) - m.logits(tokens)).max() < 1e-10


def test_a_forgotten_transpose_is_caught(tmp_path, monkeypatch):
    """The comparison above can fail: a converter that transposes the (square) attention projection
    writes a folder that loads cleanly, but its logits are far from hpr's."""
    import hpr.convert as conv
    from hpr.convert import layout

    real = layout.to_hf_tensors

    def broken(params, config, vocab):
        out = real(params, config, vocab)
        for k in out:
            if k.endswith("attn.c_proj.weight"):
                out[k] = np.ascontiguousarray(out[k].T)
        return out

    monkeypatch.setattr(conv, "to_hf_tensors", broken)
    c = GPTConfig(vocab_size=256, context=16, d_model=32, n_layers=2, n_heads=4, dtype="float64")
    m = random_model(c, seed=5)
    save_hpr(tmp_path / "ck", m)
    to_hf(str(tmp_path / "ck"), str(tmp_path / "hf"))
    tokens = np.random.default_rng(3).integers(0, 256, (2, 16))
    assert np.abs(hf_logits(load_hf(tmp_path / "hf", "float64"), tokens) - m.logits(tokens)).max() > 1e-3


# ---- Hugging Face -> hpr ----

@pytest.mark.parametrize("fmt", ["safetensors", "bin-torch", "bin-no-torch"])
def test_from_hf_equals_transformers(tmp_path, fmt, monkeypatch):
    text = bpe_text()
    n_tok = len(json.loads(text)["model"]["vocab"])
    hf = hf_model_folder(tmp_path / "hf", safe=fmt == "safetensors", vocab=n_tok, text=text)
    if fmt == "bin-no-torch":  # the zip + pickle reader that builds tensors only
        import hpr.convert.readers as readers

        monkeypatch.setattr(readers, "read_torch_bin", lambda p: read_torch_bin(p, use_torch=False))
    step = from_hf(str(tmp_path / "hf"), str(tmp_path / "ck"), dtype="float64")
    assert os.path.basename(step) == "step-00000000"
    m = GPT.load(str(tmp_path / "ck"))
    assert m.config.vocab_size % 64 == 0 and m.vocab_size == n_tok and m.tokenizer.vocab_size == n_tok
    tokens = np.random.default_rng(4).integers(0, n_tok, (2, 20))
    assert np.abs(m.logits(tokens) - hf_logits(hf, tokens)).max() < 1e-10
    m32 = GPT.load(str(tmp_path / "ck"), dtype="float32")
    assert np.abs(m32.logits(tokens) - hf_logits(hf, tokens)).max() < 1e-4


def test_round_trip_keeps_every_bit(tmp_path):
    c = GPTConfig(vocab_size=320, context=16, d_model=32, n_layers=2, n_heads=4, dtype="float64")
    m = random_model(c, seed=6)
    m.layout["wte"].data[300:] = 0  # the padding rows (the tokenizer has 300 tokens)
    save_hpr(tmp_path / "ck", m, bpe_text(300))
    to_hf(str(tmp_path / "ck"), str(tmp_path / "hf"))
    from_hf(str(tmp_path / "hf"), str(tmp_path / "back"), dtype="float64")
    a = load_file(str(tmp_path / "ck" / "step-00000000" / "params.safetensors"))
    b = load_file(str(tmp_path / "back" / "step-00000000" / "params.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_pytorch_bin_reader_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "b": torch.randn(5, dtype=torch.float64),
          "c": torch.tensor([1.5, -2.25], dtype=torch.bfloat16), "d": torch.nn.Parameter(torch.ones(2, 2))}
    torch.save(sd, tmp_path / "w.bin")
    got = read_torch_bin(str(tmp_path / "w.bin"), use_torch=False)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.detach().float().numpy() if k == "c" else v.detach().numpy())


# ---- the trainer resumes a converted checkpoint, in another layout too ----

def test_trainer_resumes_a_converted_checkpoint(tmp_path):
    hf_model_folder(tmp_path / "hf", n_positions=16, n_embd=32, n_layer=2, n_head=4)  # preset tiny's shape, bytes
    out = subprocess.run([sys.executable, "-m", "hpr.convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "ck")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0 and "--preset tiny" in out.stdout, out.stdout + out.stderr
    (tmp_path / "data.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 400)
    args = ["-m", "hpr.train", "--preset", "tiny", "--dtype", "float32", "--ckpt-dir", str(tmp_path / "ck"),
            "--resume", "--steps", "2", "--batch", "16", "--data", str(tmp_path / "data.txt"), "--threads", "1",
            "--eval-every", "0", "--sample-tokens", "0"]
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for launch in ([sys.executable], [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", "2", sys.executable]):
        extra = ["--tp", "2"] if len(launch) > 1 else []
        run = subprocess.run(launch + args + extra, capture_output=True, text=True, env=ENV, timeout=300,
                             cwd=str(tmp_path))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "continuing from" in run.stdout, run.stdout
        shutil.rmtree(tmp_path / "ck" / "step-00000002", ignore_errors=True)


# ---- refusals: a ConfigError naming what does not map, and nothing written ----

def _set(key, value):
    def edit(folder):
        p = folder / "config.json"
        cfg = json.loads(p.read_text())
        cfg[key] = value
        p.write_text(json.dumps(cfg))
    return edit


def _tensors(fn):
    def edit(folder):
        p = str(folder / "model.safetensors")
        t = load_file(p)
        fn(t)
        save_file(t, p, metadata={"format": "pt"})
    return edit


def _evil_bin(folder):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {folder}/pwned",))

    os.remove(folder / "model.safetensors")
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"transformer.wte.weight": Evil()}, protocol=2))
        z.writestr("archive/byteorder", "little")


REFUSALS = [
    ("model-type", _set("model_type", "llama"), r"model_type 'llama' is not GPT-2's"),
    ("architecture", _set("architectures", ["GPT2ForSequenceClassification"]), r"architectures lists 'GPT2ForSeq"),
    ("activation", _set("activation_function", "gelu"), r"activation_function='gelu' has no hpr counterpart"),
    ("n-inner", _set("n_inner", 100), r"n_inner=100 has no hpr counterpart"),
    ("layer-idx-scaling", _set("scale_attn_by_inverse_layer_idx", True), r"scale_attn_by_inverse_layer_idx=True"),
    ("ln-eps", _set("layer_norm_epsilon", 1e-6), r"layer_norm_epsilon=1e-06"),
    ("cross-attention", _set("add_cross_attention", True), r"add_cross_attention=True"),
    ("missing-field", _set("n_embd", None), r"field 'n_embd' must be a positive integer"),
    ("missing-tensor", _tensors(lambda t: t.pop("transformer.h.1.mlp.c_fc.bias")),
     r"no tensor 'transformer\.h\.1\.mlp\.c_fc\.bias'"),
    ("shape", _tensors(lambda t: t.__setitem__("transformer.h.0.attn.c_attn.weight", np.zeros((32, 64), np.float64))),
     r"'transformer\.h\.0\.attn\.c_attn\.weight' is \(32, 64\); config\.json says \(32, 96\)"),
    ("extra-tensor", _tensors(lambda t: t.__setitem__("transformer.h.0.attn.q_norm.weight", np.ones(8))),
     r"tensor 'transformer\.h\.0\.attn\.q_norm\.weight' has no place"),
    ("untied-head", _tensors(lambda t: t.__setitem__("lm_head.weight", np.ones((256, 32)))), r"lm_head\.weight' differs"),
    ("no-weights", lambda f: os.remove(f / "model.safetensors"), r"has no weights: expected model\.safetensors"),
    ("pickle-code", _evil_bin, r"asks for (posix|os|nt)\.system"),
]


@pytest.fixture(scope="module")
def good_hf(tmp_path_factory):
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("good")
    c = GPTConfig(vocab_size=256, context=16, d_model=32, n_layers=2, n_heads=4, dtype="float64")
    save_hpr(root / "ck", random_model(c, seed=7))
    to_hf(str(root / "ck"), str(root / "hf"))
    return root / "hf"


@pytest.mark.parametrize("name,edit,message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_from_hf_refuses_what_does_not_map(tmp_path, good_hf, name, edit, message, monkeypatch):
    src = tmp_path / "hf"
    shutil.copytree(good_hf, src)
    edit(src)
    if name == "pickle-code":  # with torch: weights_only refuses too; without: hpr's own reader
        for use_torch in (True, False):
            import hpr.convert.readers as readers

            monkeypatch.setattr(readers, "read_torch_bin", lambda p, u=use_torch: read_torch_bin(p, use_torch=u))
            with pytest.raises(hpr.ConfigError):
                from_hf(str(src), str(tmp_path / "out"))
        assert not (src / "pwned").exists()
        with pytest.raises(hpr.ConfigError, match=message):
            read_torch_bin(str(src / "pytorch_model.bin"), use_torch=False)
    else:
        with pytest.raises(hpr.ConfigError, match=message):
            from_hf(str(src), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # no output, no temporary folder left


def test_other_refusals(tmp_path, good_hf):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(hpr.ConfigError, match="already exists and is not an empty folder"):
        from_hf(str(good_hf), str(tmp_path / "taken"))
    assert os.listdir(tmp_path / "taken") == ["x"]
    c = GPTConfig(vocab_size=512, context=16, d_model=32, n_layers=2, n_heads=4)
    save_hpr(tmp_path / "notok", random_model(c))
    with pytest.raises(hpr.ConfigError, match="no tokenizer.json and a vocabulary of 512"):
        to_hf(str(tmp_path / "notok"), str(tmp_path / "o1"))
    q = GPTConfig(vocab_size=256, context=16, d_model=32, n_layers=2, n_heads=4, n_qubits=2)
    save_hpr(tmp_path / "quantum", GPT(q))
    with pytest.raises(hpr.ConfigError, match="n_qubits=2: the QuantumLayer has no GPT-2 counterpart"):
        to_hf(str(tmp_path / "quantum"), str(tmp_path / "o2"))
    with pytest.raises(hpr.CheckpointError, match="is not a folder"):
        to_hf(str(tmp_path / "nothing"), str(tmp_path / "o3"))
    with pytest.raises(hpr.ConfigError, match="config.json is missing"):
        from_hf(str(tmp_path / "quantum"), str(tmp_path / "o4"))
    assert not any(n.startswith("o") for n in os.listdir(tmp_path))


def test_cli_exit_codes(tmp_path, good_hf):
    run = subprocess.run([sys.executable, "-m", "hpr.convert", "from-hf", str(good_hf), str(tmp_path / "ck")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert run.returncode == 0 and "wrote" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "hpr.convert", "to-hf", str(tmp_path / "ck"), str(good_hf)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert bad.returncode == 2 and "already exists" in bad.stderr


def test_gpt_config_round_trips_through_meta(tmp_path):
    c = GPTConfig(vocab_size=256, context=16, d_model=32, n_layers=2, n_heads=4)
    step = save_hpr(tmp_path / "ck", GPT(c))
    meta = json.loads(open(os.path.join(step, "meta.json")).read())
    assert meta["config"] == dataclasses.asdict(c) and meta["optimizer"]["t"] == 0
