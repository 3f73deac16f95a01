"""Transformer building blocks: norms, MLPs, attention (MHA/GQA/MLA, gated), single- and
dual-stream blocks."""

from k2_dit.blocks._attention import Attention, attend, sdpa
from k2_dit.blocks._dual import DualStreamBlock, StreamLayers
from k2_dit.blocks._mlp import GeluMLP, SwiGLU, make_mlp
from k2_dit.blocks._norm import RMSNorm, make_norm
from k2_dit.blocks._single import SingleStreamBlock

__all__ = [
    "Attention",
    "DualStreamBlock",
    "GeluMLP",
    "RMSNorm",
    "SingleStreamBlock",
    "StreamLayers",
    "SwiGLU",
    "attend",
    "make_mlp",
    "make_norm",
    "sdpa",
]
