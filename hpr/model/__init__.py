"""The GPT built from hpr.nn (and, for model-parallel layouts, hpr.parallel). Usage:
``from hpr.model import GPT, GPTConfig; m = GPT(GPTConfig.preset("S"), seed=0)``"""
from .gpt import DTYPES, GPT, PRESETS, GPTConfig, vocab_multiple

__all__ = ["GPT", "GPTConfig", "PRESETS", "DTYPES", "vocab_multiple"]
