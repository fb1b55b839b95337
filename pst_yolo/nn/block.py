"""PST block: pyramid sparse attention and a convolutional MLP, each with a residual connection."""

from __future__ import annotations

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv

from .attention import PSTAttention

__all__ = ("PSTBlock",)


class PSTBlock(nn.Module):
    """``x = x + Attn(x, u)`` then ``x = x + MLP(x)``; only convolutions and BatchNorm (no LayerNorm).

    Args:
        dim (int): Channels of ``x``, ``u`` and the output; a multiple of the head dim (32).
        mlp_ratio (float): Hidden width of the MLP relative to ``dim``.
        topk (int): Fine-attention top-k (0 = coarse only), see ``PSTAttention``.
        num_heads (int | None): Attention heads; defaults to ``dim // 32`` (head dim 32).

    Examples:
        >>> block = PSTBlock(64, mlp_ratio=2.0)
        >>> print(block(torch.randn(1, 64, 16, 12), torch.randn(1, 64, 8, 6)).shape)
        torch.Size([1, 64, 16, 12])
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0, topk: int = 0, num_heads: int | None = None):
        super().__init__()
        self.attn = PSTAttention(dim, num_heads, topk=topk)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), Conv(hidden, dim, 1, act=False))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Refine the fine map ``x`` (B, C, H, W) with the coarse map ``u`` (B, C, Hc, Wc)."""
        x = x + self.attn(x, u)
        return x + self.mlp(x)
