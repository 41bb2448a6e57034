"""Small Hugging Face models for the tests of the border (hpr.convert, the trainer's --init-from): a
byte-level BPE tokenizer.json trained here, a random GPT2LMHeadModel saved by transformers itself, and
its logits and loss on a batch. Nothing is downloaded. Not a test module (imported by them); the parts
that need torch / transformers / tokenizers skip the calling test where those are not installed.

Usage: ``text = bpe_text(); hf = hf_model_folder(tmp_path / "hf", vocab=V, text=text)``"""
import numpy as np
import pytest

SAMPLE = ["def forward(self, x):\n    return self.proj(x) + x\n", "the quick brown fox jumps over the lazy dog. "]


def bpe_text(vocab=300, texts=None):
    """tokenizer.json text of a small byte-level BPE with GPT-2's <|endoftext|>."""
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts or SAMPLE * 30, trainer)
    return tok.to_str()


def hf_model_folder(folder, dtype="float64", safe=True, vocab=None, text=None, **cfg):
    """A random GPT2LMHeadModel saved by transformers itself (+ tokenizer.json when text is given)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    conf = dict(vocab_size=vocab or 256, n_positions=20, n_embd=32, n_layer=2, n_head=4,
                bos_token_id=None, eos_token_id=None)
    conf.update(cfg)
    m = transformers.GPT2LMHeadModel(transformers.GPT2Config(**conf)).to(getattr(torch, dtype))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # LayerNorm weights and biases random too
    m.save_pretrained(str(folder), safe_serialization=safe)
    if text is not None:
        (folder / "tokenizer.json").write_text(text)
    return m.eval()


def hf_logits(m, tokens):
    """transformers' logits (B, T, V) of a batch of ids."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        return m(torch.tensor(np.asarray(tokens, np.int64))).logits.numpy()


def hf_loss(m, tokens, targets):
    """transformers' mean cross-entropy of predicting targets from tokens (natural log, over every token)."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        z = m(torch.tensor(np.asarray(tokens, np.int64))).logits
        t = torch.tensor(np.asarray(targets, np.int64))
        return float(torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1)))
