"""PST modules, small to large: attention op -> block (attention + MLP) -> PST wrapper."""

from .attention import HEAD_DIM, PSTAttention
from .block import PSTBlock
from .pst import PST

__all__ = ("HEAD_DIM", "PST", "PSTAttention", "PSTBlock")
