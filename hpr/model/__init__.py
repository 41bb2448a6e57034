"""The GPT built from hpr.nn (and, for model-parallel layouts, hpr.parallel). Usage:
``from hpr.model import GPT, GPTConfig; m = GPT(GPTConfig.preset("S"), seed=0)``"""
from .gpt import DTYPES, GPT, PRESETS, GPTConfig

__all__ = ["GPT", "GPTConfig", "PRESETS", "DTYPES"]
