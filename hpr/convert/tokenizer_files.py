"""The tokenizer at the border: what a Hugging Face folder needs beside tokenizer.json for
`AutoTokenizer` (tokenizer_config.json, special_tokens_map.json), a tokenizer.json equal to hpr's
byte vocabulary (id = byte, for checkpoints trained on bytes), and a tokenizer.json made from GPT-2's
original vocab.json + merges.txt. Uses Hugging Face `tokenizers` (imported when needed).

Usage: ``bos, eos = write_hf_tokenizer(out_dir, tokenizer_json_text, context=1024)``"""
import json
import os

from ..errors import ConfigError

END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token: its bos, eos and unk


def _tokenizers():
    try:
        import tokenizers  # lazy: optional (Rust extension), only for files of a BPE vocabulary
    except ImportError:
        raise ConfigError("writing or reading a tokenizer.json needs Hugging Face tokenizers: "
                          "pip install tokenizers") from None
    return tokenizers


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def bytes_tokenizer_json():
    """tokenizer.json of hpr's byte vocabulary: 256 tokens, token id = the byte, no merges, no
    special tokens; decoding joins the bytes and reads them as UTF-8."""
    tk = _tokenizers()
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tk.decoders.ByteLevel()
    return tok.to_str()


def from_vocab_merges(vocab_path, merges_path):
    """tokenizer.json of a GPT-2-style slow tokenizer (vocab.json + merges.txt)."""
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer(tk.models.BPE.from_file(vocab_path, merges_path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own Exception type
        raise ConfigError(f"cannot read {vocab_path} + {merges_path} as a BPE vocabulary: {e}") from None
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    if tok.token_to_id(END_OF_TEXT) is not None:
        tok.add_special_tokens([END_OF_TEXT])
    return tok.to_str()


def end_of_text_id(text):
    """The id of <|endoftext|> in a tokenizer.json text, or None."""
    return _tokenizers().Tokenizer.from_str(text).token_to_id(END_OF_TEXT)


def write_hf_tokenizer(out_dir, text, context):
    """tokenizer.json (text), tokenizer_config.json and special_tokens_map.json into out_dir, so that
    AutoTokenizer.from_pretrained(out_dir) loads exactly this tokenizer. Returns (bos, eos) ids."""
    path = os.path.join(out_dir, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    eos = end_of_text_id(text)
    special = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT} if eos is not None else {}
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
           "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False, **special}
    for name, obj in (("tokenizer_config.json", cfg), ("special_tokens_map.json", special)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=1)
    return eos, eos


def vocab_of(text):
    """Tokens (special ones included) of a tokenizer.json's text."""
    try:
        return _tokenizers().Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own Exception type
        raise ConfigError(f"not a tokenizer.json Hugging Face tokenizers can read: {e}") from None


def read_hf_tokenizer(folder, vocab_size, override=None):
    """tokenizer.json text of a Hugging Face folder (the file `override` if given, else tokenizer.json,
    else vocab.json + merges.txt), or None for a 256-token model without one (hpr's bytes).
    ConfigError when there is none to find."""
    path = override or os.path.join(folder, "tokenizer.json")
    if override or os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the tokenizer {path}: {e}") from None
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    if os.path.exists(vocab) and os.path.exists(merges):
        return from_vocab_merges(vocab, merges)
    if vocab_size == 256:
        return None
    raise ConfigError(f"{folder} has no tokenizer.json (nor vocab.json + merges.txt); pass --tokenizer FILE "
                      "with the model's tokenizer.json")
