"""Attention FLOP counts of PST: the matrix products a per-module counter does not see.

The 1x1/7x7 convolutions of a PST layer are modules and counted by any per-module counter (Ultralytics' GFLOPs
included); the attention products (``Q Kᵀ``, ``A V``, the top-k selection, the fine path, the gate) run outside
modules. :func:`attention_flops` counts them analytically for every PST layer of a model at an image size,
:func:`layer_attention_flops` for one layer and given map sizes.

The development benchmark that compares YOLO11 with YOLO11-PST (latency, training step, the PST module alone) is
``scripts/benchmark.py`` in the source tree.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .nn import PSTAttention
from .topk import image_hw

__all__ = ("attention_flops", "layer_attention_flops")


# ------------------------------------------------------------------------------------------------------------- FLOPs
def layer_attention_flops(
    attn: PSTAttention, fine_hw: tuple[int, int], coarse_hw: tuple[int, int], batch: int = 1, topk: int | None = None
) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of the attention products of one ``PSTAttention`` call, as the fast path runs them.

    Only the products outside ``nn.Module`` calls are counted; the 1x1/7x7 convolutions (``conv_q``, ``conv_kv`` on the
    coarse map, ``pe``, ``proj``) are modules and counted by any per-module counter. Softmax, the mean query and the
    gated mix are elementwise and not counted (like activations in Ultralytics' GFLOPs). Per image and head, with
    ``N = H * W`` queries, ``M = Hc * Wc`` coarse tokens, head dim ``d``, width ``C`` and ``T = 4 * min(topk, M)`` fine
    slots:

    - ``coarse``: ``Q Kᵀ`` and ``A V``, ``2 N M d`` each;
    - ``select``: the mean query against all coarse keys, ``2 M d`` (no ``N x M`` matrix);
    - ``fine``: keys/values projected at the ``T`` gathered positions only, ``2 T C (2d)``, then ``Q K_fᵀ`` and
      ``A V_f``, ``2 N T d`` each (eager PyTorch clamps ``topk`` to ``M``; a traced/exported graph keeps constant
      shapes and computes ``4 * topk`` slots, the padding masked);
    - ``gate``: the gate logits ``W_g [O_c ‖ O_f]`` as per-head matmuls, ``2 N (2d) d``.

    Args:
        attn (PSTAttention): The layer (its head count, head dim and width are read).
        fine_hw (tuple[int, int]): ``(H, W)`` of the fine map.
        coarse_hw (tuple[int, int]): ``(Hc, Wc)`` of the coarse map.
        batch (int): Images per call.
        topk (int | None): Fine-attention top-k; defaults to ``attn.topk``.

    Returns:
        (dict[str, int]): FLOPs under ``coarse``, ``select``, ``fine``, ``gate`` and ``total``.

    Examples:
        >>> attn = PSTAttention(32, topk=8)  # one head of dim 32, the P3 layer of yolo11n-pst at 640 px
        >>> f = layer_attention_flops(attn, (80, 80), (40, 40))
        >>> f["coarse"] == 4 * 6400 * 1600 * 32, f["total"] / 1e9
        (True, 1.363382272)
    """
    topk = attn.topk if topk is None else topk
    nh, d = attn.num_heads, attn.head_dim
    n, m = fine_hw[0] * fine_hw[1], coarse_hw[0] * coarse_hw[1]
    t = 4 * min(topk, m)
    per_head = {
        "coarse": 2 * (2 * n * m * d),
        "select": 2 * m * d if topk else 0,
        "fine": (2 * t * (nh * d) * (2 * d) + 2 * (2 * n * t * d)) if topk else 0,
        "gate": 2 * n * (2 * d) * d if topk else 0,
    }
    flops = {key: batch * nh * value for key, value in per_head.items()}
    flops["total"] = sum(flops.values())
    return flops


def attention_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, topk: int | None = None) -> list[dict]:
    """Attention-product FLOPs of every ``PSTAttention`` in ``model`` for one image (see ``layer_attention_flops``).

    The map sizes each layer sees are read from one batch-1 forward pass at ``imgsz`` (eval mode, no gradients).

    Args:
        model (nn.Module): A detector (or any module) containing PST layers.
        imgsz (int | tuple[int, int]): Input image size.
        topk (int | None): Fine-attention top-k to count; defaults to each layer's own.

    Returns:
        (list[dict]): Per layer: ``name``, ``fine_hw``, ``coarse_hw``, ``heads``, ``topk`` and the FLOPs of
            ``layer_attention_flops`` (``coarse``, ``select``, ``fine``, ``gate``, ``total``).

    Examples:
        >>> from ultralytics.nn import DetectionModel
        >>> model = DetectionModel("yolo11n-pst.yaml", verbose=False)
        >>> [(r["fine_hw"], r["heads"], round(r["total"] / 1e9, 3)) for r in attention_flops(model, 640, topk=0)]
        [((40, 40), 2, 0.164), ((80, 80), 1, 1.311)]
    """
    h, w = image_hw(imgsz)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PSTAttention)]
    if not layers:
        raise ValueError(f"attention_flops: {type(model).__name__} has no PST layers")
    shapes = {}

    def record(name):
        def hook(module, args):  # returns None: the call's arguments are left as they are
            shapes.setdefault(name, (args[0].shape, args[1].shape))

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in layers]
    training = model.training
    p = next(model.parameters())
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, h, w, device=p.device, dtype=p.dtype))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    rows = []
    for name, m in layers:
        x_shape, u_shape = shapes[name]
        fine_hw, coarse_hw = tuple(x_shape[2:]), tuple(u_shape[2:])
        k = m.topk if topk is None else topk
        rows.append(
            dict(name=name, fine_hw=fine_hw, coarse_hw=coarse_hw, heads=m.num_heads, topk=k)
            | layer_attention_flops(m, fine_hw, coarse_hw, topk=k)
        )
    return rows
