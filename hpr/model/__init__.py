"""The GPT built from hpr.nn (and, for model-parallel layouts, hpr.parallel), and its generation with a
key/value cache, and reading a checkpoint back for use (saved; its tokenizer is hpr.data's). Usage: ``from hpr.model import GPT, GPTConfig; m = GPT(GPTConfig.preset("S"), seed=0)``"""
from .gpt import DTYPES, GPT, PRESETS, GPTConfig, vocab_multiple
from .kvcache import KVCache, Sampler, generate

__all__ = ["GPT", "GPTConfig", "PRESETS", "DTYPES", "KVCache", "Sampler", "generate", "vocab_multiple"]
