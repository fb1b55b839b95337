"""PST: the C2f-style wrapper that fuses two adjacent pyramid levels with ``n`` PST blocks.

Checkpoints pickle this class by its path ``pst_yolo.nn.pst.PST``: do not move it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv

from .attention import HEAD_DIM
from .block import PSTBlock

__all__ = ("PST",)


class PST(nn.Module):
    """Pyramid Sparse Transformer: fuse a fine map with the next coarser one (docs/method.md §1).

    ``x = cv1(X)``, ``u = cvup(U)``; ``n`` blocks refine ``x`` in sequence (all with the same ``u``); ``cv2`` maps the
    concatenation ``[x, block_1, ..., block_n]`` to ``c2`` channels.

    Args:
        c1 (int): Channels of the fine input ``X`` (B, c1, H, W).
        c_up (int): Channels of the coarse input ``U`` (B, c_up, ceil(H/2), ceil(W/2)).
        c2 (int): Output channels.
        n (int): Number of PST blocks.
        mlp_ratio (float): MLP hidden width relative to the hidden width ``c_``.
        e (float): Hidden width ratio, ``c_ = int(c2 * e)``; ``c_`` must be a multiple of 32 (the head dim).
        k (int): Fine-attention top-k (0 = coarse attention only); change later with ``pst_yolo.set_topk``.
        num_heads (int | None): Attention heads per block; defaults to ``c_ // 32`` (head dim 32). Set only to hold
            weights made with another head count (``pst_yolo.authors`` converts such checkpoints).

    Examples:
        >>> m = PST(384, 256, 128, n=1)
        >>> print(m([torch.randn(1, 384, 40, 40), torch.randn(1, 256, 20, 20)]).shape)
        torch.Size([1, 128, 40, 40])
        >>> # both fusions of a YOLO11n neck at 640 px: P4 (U = P5, 20x20), then P3 (U = backbone P4, 40x40)
        >>> for c1, c_up, c2, size in ((384, 256, 128, 40), (256, 128, 64, 80)):
        ...     x, u = torch.randn(1, c1, size, size), torch.randn(1, c_up, size // 2, size // 2)
        ...     print(size, PST(c1, c_up, c2)([x, u]).shape)
        40 torch.Size([1, 128, 40, 40])
        80 torch.Size([1, 64, 80, 80])
    """

    def __init__(self, c1: int, c_up: int, c2: int, n: int = 1, mlp_ratio: float = 2.0, e: float = 0.5, k: int = 0,
                 num_heads: int | None = None):
        super().__init__()
        c_ = int(c2 * e)
        if num_heads is None and (c_ < HEAD_DIM or c_ % HEAD_DIM):
            raise ValueError(
                f"PST hidden width c_ = int(c2 * e) = int({c2} * {e}) = {c_} must be a positive multiple of the head "
                f"dim {HEAD_DIM}: raise c2 or e"
            )
        self.c_ = c_
        self.cv1 = Conv(c1, c_, 1)
        self.cvup = Conv(c_up, c_, 1)
        self.m = nn.ModuleList(PSTBlock(c_, mlp_ratio, k, num_heads) for _ in range(n))
        self.cv2 = Conv((n + 1) * c_, c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Fuse ``xs = [X (B, c1, H, W), U (B, c_up, ceil(H/2), ceil(W/2))]``; returns (B, c2, H, W)."""
        if not isinstance(xs, (list, tuple)) or len(xs) != 2:
            raise TypeError(f"{self._name()} expects [x_fine, x_coarse]: its YAML 'from' must name two layers")
        X, U = xs
        if not torch.jit.is_tracing():  # in a trace (export) they would be constants; the eager dry run checks them
            self._check_inputs(X, U)
        x, u = self.cv1(X), self.cvup(U)
        y = [x]
        for block in self.m:
            y.append(block(y[-1], u))
        return self.cv2(torch.cat(y, 1))

    def _check_inputs(self, X: torch.Tensor, U: torch.Tensor) -> None:
        """Raise a ValueError naming this layer if ``X``/``U`` have the wrong channels or are not adjacent levels."""
        c1, c_up = self.cv1.conv.in_channels, self.cvup.conv.in_channels
        if X.shape[1] != c1 or U.shape[1] != c_up:
            raise ValueError(
                f"{self._name()}: got {X.shape[1]} fine and {U.shape[1]} coarse channels, built for {c1} and {c_up}; "
                f"pass [x_fine, x_coarse] in this order with the channels given to PST(c1, c_up, ...)"
            )
        if X.shape[2] != 2 * U.shape[2] - X.shape[2] % 2 or X.shape[3] != 2 * U.shape[3] - X.shape[3] % 2:
            raise ValueError(
                f"{self._name()}: coarse map {tuple(U.shape[2:])} is not the next pyramid level of the fine map "
                f"{tuple(X.shape[2:])} (expected ceil(H/2) x ceil(W/2)); check the YAML 'from' of this PST row"
            )

    def _name(self) -> str:
        """``PST`` plus the YAML row index and ``from`` that Ultralytics' parser sets on layers (``i``, ``f``)."""
        return f"PST row {self.i} (from {self.f})" if hasattr(self, "i") else "PST"
