"""The one place where pst_yolo touches Ultralytics internals: one module per concern.

``register()`` (called by ``import pst_yolo``; idempotent) installs them all. Each module's docstring says what it
hooks and why no official extension point serves; every hooked name is checked before it is wrapped, so a newer
Ultralytics that moves one fails loudly at import (pst_yolo is tested with ``SUPPORTED``).

- ``models``: YAML rows naming ``PST`` build like stock modules (``parse_model``).
- ``names``: configs and datasets resolve by bare name from any directory; a name found nowhere lists the known ones,
  ``shapes``, ``shapes-context`` and ``shapes-cls`` are generated (not "downloaded") on first use, and a failed
  ``data=`` leaves no empty run directory (``check_file``, ``BaseTrainer.get_dataset``, ``BaseValidator.__call__``).
- ``topk``: ``pst_topk`` is an argument of every mode and reaches the PST layers that run.
- ``ddp``: multi-GPU workers import pst_yolo.
- ``safe_load``: restricted loading accepts PST checkpoints; a damaged checkpoint is named as such.
- ``export``: exports run the requested ``pst_topk``; TensorRT export of PST models fails in one sentence and checks
  ops first.
- ``transfer``: loading stock weights into a PST model transfers nothing into the PST rows.
- ``coco``: the detections of pst_yolo's COCO runs record their image's path (``pred_to_json``, wrapped on that run's
  validator object only).
"""

from __future__ import annotations

from . import coco, ddp, export, models, names, safe_load, topk, transfer
from ._common import HOOK, SUPPORTED

__all__ = ("HOOK", "SUPPORTED", "register")


def register() -> None:
    """Install pst_yolo's hooks into Ultralytics (idempotent)."""
    for module in (models, names, topk, ddp, safe_load, export, transfer, coco):
        module.register()
