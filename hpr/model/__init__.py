"""The GPT built from hpr.nn (and, for model-parallel layouts, hpr.parallel), and its generation with a
key/value cache. Usage: ``from hpr.model import GPT, GPTConfig; m = GPT(GPTConfig.preset("S"), seed=0)``"""
from .gpt import DTYPES, GPT, PRESETS, GPTConfig
from .kvcache import KVCache, Sampler, generate
from .tokenizer import Tokenizer

__all__ = ["GPT", "GPTConfig", "PRESETS", "DTYPES", "KVCache", "Sampler", "generate", "Tokenizer"]
