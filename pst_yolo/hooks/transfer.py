"""Weight transfer: a stock checkpoint initialises a PST model everywhere except in the PST rows.

Hooks ``ultralytics.nn.tasks.BaseModel.load`` (class level, inherited by every task model), which both transfer
paths call: ``YOLO(cfg).load(pt)`` and the trainer's ``pretrained=...pt`` (``get_model(cfg, weights)``). Why no
official extension point serves: the stock load intersects the two state dicts by tensor *name and shape* only. A PST
row replaces a C3k2 at the same index, and some C3k2 tensors share a PST tensor's name and shape
(``model.13.cv2.bn.*``, ``model.13.cv1.bn.num_batches_tracked``), so they would land inside the PST layer and give its
output BatchNorm another layer's statistics, and the log would count them as transferred.

The wrapper lets the stock load do everything, then puts back the destination tensors of every row where one model
has a PST layer and the other does not (or has a PST layer of another shape), and corrects the count in the stock
``Transferred N/M items`` line, followed by one line saying how many tensors went outside and inside the PST rows. A
load where neither model has a PST layer goes to the stock function untouched (same tensors, same log).
"""

from __future__ import annotations

import logging
import re

import torch

from ..nn import PST
from ._common import install

__all__ = ("register",)


def register() -> None:
    from ultralytics.nn.tasks import BaseModel

    install(BaseModel, "load", ("self", "weights", "verbose"), _wrap_load)


def _layers(model) -> list:
    """The layer list of an Ultralytics model (``model.model``), or ``[]`` for anything else."""
    layers = getattr(model, "model", None)
    return list(layers) if isinstance(layers, (torch.nn.Sequential, torch.nn.ModuleList)) else []


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


class _Plan:
    """Which rows of the destination may take the source's tensors (see the module docstring)."""

    def __init__(self, dst, src):
        dst_layers, src_layers = _layers(dst), _layers(src)
        self.pst_rows, self.same, self.blocked = [], [], {}  # blocked: row -> what the source has there
        for i in range(len(dst_layers)):
            d, s = dst_layers[i], src_layers[i] if i < len(src_layers) else None
            d_pst, s_pst = isinstance(d, PST), isinstance(s, PST)
            if not (d_pst or s_pst):
                continue
            if d_pst:
                self.pst_rows.append(i)
            if d_pst and s_pst and _shapes(d) == _shapes(s):
                self.same.append(i)
            else:
                self.blocked[i] = "a PST layer of another shape" if s_pst else type(s).__name__ if s else "no layer"
        self.any_pst = any(isinstance(m, PST) for m in (*dst_layers, *src_layers))

    def keys(self, state: dict, rows) -> list[str]:
        prefixes = tuple(f"model.{i}." for i in rows)
        return [k for k in state if k.startswith(prefixes)]


def _wrap_load(load):
    from ultralytics.utils import LOGGER

    def load_with_pst(self, weights, verbose=True):
        """Ultralytics' ``BaseModel.load``, with nothing transferred into or out of mismatched PST rows."""
        src = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
        plan = _Plan(self, src)
        if not plan.any_pst:
            return load(self, weights, verbose)

        dst_state, src_state = self.state_dict(), src.state_dict()
        blocked = plan.keys(dst_state, plan.blocked)
        kept = {k: dst_state[k].detach().clone() for k in blocked}  # the destination's own initialisation
        wrong = sum(k in src_state and src_state[k].shape == dst_state[k].shape for k in blocked)
        fix = _CountFix(wrong)
        LOGGER.addFilter(fix)
        try:
            result = load(self, weights, verbose)
        finally:
            LOGGER.removeFilter(fix)
        with torch.no_grad():
            for k, v in kept.items():
                dst_state[k].copy_(v)
        if verbose and fix.total is not None:
            inside = plan.keys(dst_state, plan.same)
            outside = fix.count - sum(k in src_state and src_state[k].shape == dst_state[k].shape for k in inside)
            lines = [f"PST transfer: {outside} tensors outside the PST rows"]
            if plan.same:
                lines.append(f"{len(inside)} into PST rows {_rows(plan.same)} (the source has the same PST layers)")
            if plan.blocked:
                why = "; ".join(f"row {i}: source has {w}" for i, w in plan.blocked.items())
                kept_n = f"{len(blocked)} tensors keep their own values"
                lines.append(f"none into rows {_rows(plan.blocked)} ({kept_n}; {why})")
            LOGGER.info(", ".join(lines))
        return result

    return load_with_pst


def _rows(rows) -> str:
    return ", ".join(map(str, rows))


class _CountFix(logging.Filter):
    """Subtract the tensors put back from the stock ``Transferred N/M items`` line (and remember N and M)."""

    LINE = re.compile(r"Transferred (\d+)/(\d+) items")

    def __init__(self, wrong: int):
        super().__init__()
        self.wrong, self.count, self.total = wrong, None, None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if m := self.LINE.search(message):
            self.count, self.total = int(m.group(1)) - self.wrong, int(m.group(2))
            record.msg, record.args = self.LINE.sub(f"Transferred {self.count}/{self.total} items", message), None
        return True
