"""hpr's GPT in the names, shapes and config of `transformers.GPT2LMHeadModel`, both ways, and every
check that a model maps. Pure functions on dicts of numpy arrays (no files, no torch).

The two models are the same architecture: pre-LN blocks, learned positions, the tanh GELU (GPT-2's
"gelu_new"), LayerNorm eps 1e-5, scores scaled by 1/sqrt(D), the head tied to the token embedding.
Layouts agree without a transpose: GPT-2's Conv1D stores its weight (in, out) and computes x W + b,
as hpr's Linear does, and c_attn's 3C output columns are [q | k | v] with the heads side by side in
each, as hpr's qkv. Only the names differ:

    hpr                 transformers (under "transformer.")        shape
    wte / wpe           wte.weight / wpe.weight                    (V, C) / (T, C)
    h{i}.ln1.w, .b      h.{i}.ln_1.weight, .bias                   (C,)
    h{i}.attn.qkv.w, .b h.{i}.attn.c_attn.weight, .bias            (C, 3C), (3C,)
    h{i}.attn.proj.w, .b h.{i}.attn.c_proj.weight, .bias           (C, C), (C,)
    h{i}.ln2.w, .b      h.{i}.ln_2.weight, .bias                   (C,)
    h{i}.mlp.fc.w, .b   h.{i}.mlp.c_fc.weight, .bias               (C, 4C), (4C,)
    h{i}.mlp.proj.w, .b h.{i}.mlp.c_proj.weight, .bias             (4C, C), (C,)
    ln_f.w, .b          ln_f.weight, .bias                         (C,)
    (tied to wte)       lm_head.weight (not written; checked equal to wte when read)

The vocabulary: hpr may pad wte's rows (a multiple of 64, for tensor parallelism and fast matmuls);
the Hugging Face side has exactly the tokenizer's rows. Usage: ``hf = to_hf_tensors(params, config, V)``"""
import numpy as np

from ..errors import ConfigError
from ..model import GPTConfig

PREFIX = "transformer."
_PART = {"ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
         "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
_LEAF = {"w": "weight", "b": "bias"}
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")  # the same function: 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
LN_EPS = 1e-5
MAX_HEAD = 128  # hpr.kernels.nn.ATTENTION_MAX_HEAD


def hpr_shapes(config, vocab=None):
    """{hpr name: shape} of the whole model (vocab rows of wte: default config.vocab_size)."""
    c, t, v = config.d_model, config.context, config.vocab_size if vocab is None else vocab
    out = {"wte": (v, c), "wpe": (t, c)}
    for i in range(config.n_layers):
        for part, w, b in (("ln1", (c,), (c,)), ("attn.qkv", (c, 3 * c), (3 * c,)), ("attn.proj", (c, c), (c,)),
                           ("ln2", (c,), (c,)), ("mlp.fc", (c, 4 * c), (4 * c,)), ("mlp.proj", (4 * c, c), (c,))):
            out[f"h{i}.{part}.w"], out[f"h{i}.{part}.b"] = w, b
    out["ln_f.w"], out["ln_f.b"] = (c,), (c,)
    return out


def hf_name(name):
    """hpr's parameter name -> the GPT2LMHeadModel state_dict key."""
    if name in ("wte", "wpe"):
        return f"{PREFIX}{name}.weight"
    head, _, leaf = name.rpartition(".")
    if head == "ln_f":
        return f"{PREFIX}ln_f.{_LEAF[leaf]}"
    block, _, part = head.partition(".")
    return f"{PREFIX}h.{int(block[1:])}.{_PART[part]}.{_LEAF[leaf]}"


def to_hf_tensors(params, config, vocab):
    """{HF key: array} from hpr's whole tensors; wte cut to the tokenizer's `vocab` rows."""
    if config.n_qubits:
        raise ConfigError(f"n_qubits={config.n_qubits}: the QuantumLayer has no GPT-2 counterpart; only models "
                          "trained without --qubits convert to Hugging Face")
    if vocab > config.vocab_size:
        raise ConfigError(f"the tokenizer has {vocab} tokens but the model only {config.vocab_size} embedding rows")
    out = {}
    for name, shape in hpr_shapes(config).items():
        if name not in params:
            raise ConfigError(f"the checkpoint has no tensor {name!r}; it is incomplete or not an hpr GPT")
        a = params[name]
        if tuple(a.shape) != shape:
            raise ConfigError(f"tensor {name!r} is {tuple(a.shape)}, the config says {shape}")
        out[hf_name(name)] = np.ascontiguousarray(a[:vocab] if name == "wte" else a)
    return out


def hf_config(config, vocab, bos=None, eos=None, dtype=None):
    """config.json of a GPT2LMHeadModel equal to hpr's model (dropout 0: hpr trains without it)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": int(vocab),
            "n_positions": config.context, "n_embd": config.d_model, "n_layer": config.n_layers,
            "n_head": config.n_heads, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": LN_EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": bos, "eos_token_id": eos, "dtype": dtype or config.dtype}


def _field(hf, name, where):
    v = hf.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{where}: field {name!r} must be a positive integer, got {v!r}")
    return v


def from_hf_config(hf, where="config.json", dtype="float32", pad_to=64):
    """(GPTConfig, real vocabulary) of a GPT-2 config dict; ConfigError naming the first field that
    has no hpr counterpart. The vocabulary is padded up to a multiple of pad_to."""
    if hf.get("model_type") != "gpt2":
        raise ConfigError(f"{where}: model_type {hf.get('model_type')!r} is not GPT-2's ('gpt2'); hpr converts "
                          "GPT-2-architecture models only")
    for arch in hf.get("architectures") or []:
        if arch not in ("GPT2LMHeadModel", "GPT2Model"):
            raise ConfigError(f"{where}: architectures lists {arch!r}; hpr converts GPT2LMHeadModel / GPT2Model")
    v, t, c, n_layer, n_head = (_field(hf, k, where) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"))
    checks = [
        ("activation_function", hf.get("activation_function", "gelu_new") in GELU_TANH,
         f"hpr's GELU is the tanh approximation ({' = '.join(GELU_TANH)})"),
        ("n_inner", hf.get("n_inner") in (None, 4 * c), f"hpr's MLP is 4 x n_embd = {4 * c} wide"),
        ("layer_norm_epsilon", abs(float(hf.get("layer_norm_epsilon", LN_EPS)) - LN_EPS) < 1e-12,
         f"hpr's LayerNorm uses eps {LN_EPS}"),
        ("scale_attn_weights", hf.get("scale_attn_weights", True) is True, "hpr scales scores by 1/sqrt(D)"),
        ("scale_attn_by_inverse_layer_idx", not hf.get("scale_attn_by_inverse_layer_idx", False),
         "hpr does not scale attention by the layer's index"),
        ("add_cross_attention", not hf.get("add_cross_attention", False), "hpr's GPT has no cross-attention"),
        ("tie_word_embeddings", hf.get("tie_word_embeddings", True) is True, "hpr ties the head to wte"),
        ("n_ctx", hf.get("n_ctx", t) == t, f"n_ctx must equal n_positions ({t})"),
        ("n_head", c % n_head == 0 and c // n_head <= MAX_HEAD,
         f"n_head must divide n_embd={c} into heads of at most {MAX_HEAD}"),
    ]
    for field, ok, why in checks:
        if not ok:
            raise ConfigError(f"{where}: {field}={hf.get(field)!r} has no hpr counterpart ({why})")
    if pad_to < 1:
        raise ConfigError(f"the vocabulary padding multiple must be >= 1, got {pad_to}")
    padded = -(-v // pad_to) * pad_to
    return GPTConfig(vocab_size=padded, context=t, d_model=c, n_layers=n_layer, n_heads=n_head, dtype=dtype), v


def from_hf_tensors(tensors, config, vocab, where="the weights"):
    """hpr's whole tensors (config.dtype; wte padded with zero rows to config.vocab_size) from a
    GPT2LMHeadModel / GPT2Model state_dict; ConfigError naming a missing, extra or misshapen tensor."""
    # GPT2LMHeadModel's keys start "transformer.", GPT2Model's (and the original gpt2 upload's) do not
    original = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): k for k in tensors}
    got = {k: tensors[o] for k, o in original.items()}
    lm_head = got.pop("lm_head.weight", None)
    for k in [k for k in got if k.endswith((".attn.bias", ".attn.masked_bias"))]:
        del got[k]  # the causal-mask buffers older checkpoints saved; not weights
    want = {hf_name(n)[len(PREFIX):]: (n, s) for n, s in hpr_shapes(config, vocab).items()}
    for k in want:
        if k not in got:
            raise ConfigError(f"{where}: no tensor {PREFIX + k!r} (missing; is this a complete GPT-2 model?)")
    extra = sorted(set(got) - set(want))
    if extra:
        raise ConfigError(f"{where}: tensor {original[extra[0]]!r} has no place in hpr's GPT ({len(extra)} such)")
    out = {}
    dt = np.dtype(config.dtype)
    for k, (name, shape) in want.items():
        a = got[k]
        if tuple(a.shape) != shape:
            raise ConfigError(f"{where}: tensor {PREFIX + k!r} is {tuple(a.shape)}; config.json says {shape}")
        out[name] = a.astype(dt)
    if lm_head is not None and (lm_head.shape != got["wte.weight"].shape or not np.array_equal(lm_head, got["wte.weight"])):
        raise ConfigError(f"{where}: tensor 'lm_head.weight' differs from {PREFIX}wte.weight: an untied head, "
                          "which hpr's GPT (head tied to the embedding) cannot hold")
    if config.vocab_size > vocab:
        out["wte"] = np.concatenate([out["wte"], np.zeros((config.vocab_size - vocab, config.d_model), dt)])
    return out
