"""Fine attention switch: ``set_topk`` for library users; ``pst_topk=K`` on the CLI and in the YOLO API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn
from ultralytics.utils import LOGGER

from .nn import PSTAttention
from .nn.attention import check_topk

__all__ = ("attention_layers", "check_topk", "get_topk", "quiet_clamp_warnings", "set_topk")


def attention_layers(model) -> list[PSTAttention]:
    """The PSTAttention layers of ``model`` (a YOLO object or any nn.Module), in module order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a YOLO model or torch nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, PSTAttention)]


def set_topk(model, k: int, verbose: bool = True) -> int:
    """Set fine-attention top-k of every PST layer in ``model`` (0 = coarse only); returns the number of layers set.

    Args:
        model (ultralytics.YOLO | nn.Module): A YOLO object, its ``.model``, or any module containing PST layers.
            The value is the model's own from now on: every later run that does not pass ``pst_topk`` uses it, also
            a predictor that already exists (it runs a copy of the module, made before).
        k (int): Coarse tokens kept per image and head for fine attention. Values above a layer's coarse token count
            are clamped for that layer at run time (with one warning).
        verbose (bool): Log the value applied.

    Examples:
        >>> from pst_yolo import PST
        >>> set_topk(PST(256, 128, 64, n=2), 8, verbose=False)
        2
    """
    k = check_topk(k)
    layers = attention_layers(model)
    for attn in layers:
        attn.topk = k
        attn._warned_clamp = False

    if verbose:
        if layers:
            LOGGER.info(f"PST: pst_topk={k} ({'coarse only' if k == 0 else 'fine attention on'}, {len(layers)} layers)")
        else:
            LOGGER.warning(f"pst_topk={k} ignored: the {type(model).__name__} has no PST layer")
    return len(layers)


def get_topk(model) -> int | None:
    """Return the fine-attention top-k of the PST layers in ``model``, or None if it has none.

    Raises:
        ValueError: If the layers disagree (only possible after setting ``PSTAttention.topk`` by hand).
    """
    values = {attn.topk for attn in attention_layers(model)}
    if len(values) > 1:
        raise ValueError(f"PST layers have different pst_topk values {sorted(values)}: call set_topk(model, k)")
    return values.pop() if values else None


@contextlib.contextmanager
def quiet_clamp_warnings(model) -> Iterator[None]:
    """Hold back the PST layers' one-time top-k clamp warning while ``model`` runs on inputs where it is expected.

    Ultralytics' FLOP count and export dry runs feed tiny proxy images, where ``pst_topk`` often exceeds a layer's
    coarse tokens; without this, each layer's single warning would be spent on (and describe) the proxy.
    """
    layers = attention_layers(model) if isinstance(model, nn.Module) else []
    warned = [m._warned_clamp for m in layers]
    for m in layers:
        m._warned_clamp = True
    try:
        yield
    finally:
        for m, w in zip(layers, warned):
            m._warned_clamp = w
