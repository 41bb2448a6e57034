"""hpr's layers as forward/backward pairs on flat buffers: ParamLayout (one flat array per role,
named views) and the GPT's layers. Never imports comm. Usage: ``from hpr.nn import ParamLayout, Block``."""
from .layers import RECOMPUTE, Block, CausalSelfAttention, Embedding, LayerNorm, Linear, MLP, Workspace
from .params import Param, ParamLayout

__all__ = ["RECOMPUTE", "Block", "CausalSelfAttention", "Embedding", "LayerNorm", "Linear", "MLP", "Workspace",
           "Param", "ParamLayout"]
