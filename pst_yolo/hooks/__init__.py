"""The one place where pst_yolo touches Ultralytics internals: one module per concern.

``register()`` (called by ``import pst_yolo``; idempotent) installs them all. :data:`HOOKS` is the hook surface: every
wrapped name, its module here, why no official extension point serves (one line) and whether it is essential or a
convenience (a test compares it with what is installed). Each module's docstring has the details; every hooked name
is checked before it is wrapped, so a newer Ultralytics that moves one fails loudly at import (pst_yolo is tested
with ``SUPPORTED``, the pin of ``pyproject.toml``).

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

from typing import NamedTuple

from . import coco, ddp, export, models, names, safe_load, topk, transfer
from ._common import HOOK, INSTALLED, PER_RUN, SUPPORTED

__all__ = ("HOOK", "HOOKS", "SUPPORTED", "Hook", "hook_table", "register")


class Hook(NamedTuple):
    """One name of Ultralytics that pst_yolo wraps: where, why no official extension point serves, and whether a PST
    user would lose something they need without it (``essential``) or only a nicer behaviour (convenience)."""

    name: str  # dotted name of the wrapped function or method
    module: str  # the module of pst_yolo.hooks that wraps it (its docstring has the details)
    why: str  # one line: why no callback, registry or subclass does the job
    essential: bool


HOOKS = (
    Hook("ultralytics.nn.tasks.parse_model", "models", "the YAML parser knows only its own modules and keeps its "
         "channel bookkeeping local: a PST row cannot be built otherwise", True),
    Hook("ultralytics.utils.checks.check_file", "names", "a bare config name is searched only in Ultralytics' "
         "package and the working directory", True),
    Hook("ultralytics.data.utils.check_file", "names", "the same for data=: the offline sets resolve by name and "
         "are generated (checked against their manifest) instead of downloaded", True),
    Hook("ultralytics.engine.trainer.BaseTrainer.get_dataset", "names", "data=shapes-cls is generated before the "
         "classification loader looks for it (else a download by name); a failed data= removes the empty run folder",
         True),
    Hook("ultralytics.engine.validator.BaseValidator.__call__", "names", "the same for a standalone validation",
         True),
    Hook("ultralytics.cfg.check_dict_alignment", "topk", "the only place an argument key is accepted; pst_topk and "
         "pst_topk_train are checked there without entering Ultralytics' defaults", True),
    Hook("ultralytics.engine.model.Model.train", "topk", "the trainer rebuilds the model from its YAML, dropping the "
         "model's own pst_topk; only the YOLO object still has it", True),
    Hook("ultralytics.engine.trainer.BaseTrainer.setup_model", "topk", "the first step of every training (DDP "
         "workers too) before the EMA copy: no callback runs there", True),
    Hook("ultralytics.engine.validator.BaseValidator.get_model", "topk", "a standalone validation runs its own copy "
         "of the model, which no callback sees before it runs", True),
    Hook("ultralytics.engine.predictor.BasePredictor.setup_model", "topk", "the predictor deep-copies the model; "
         "this remembers the original so set_topk reaches an existing predictor", True),
    Hook("ultralytics.engine.predictor.BasePredictor.setup_source", "topk", "the first step of every predict/track "
         "run once the predictor has its model, inside its lock", True),
    Hook("ultralytics.engine.model.Model.benchmark", "topk", "benchmark passes only each format's export arguments "
         "on: pst_topk would be silently ignored", True),
    Hook("ultralytics.utils.dist.generate_ddp_file", "ddp", "DDP workers are new processes that import only "
         "Ultralytics: without import pst_yolo they reject PST configs and pst_topk", True),
    Hook("ultralytics.nn.tasks.torch_safe_load", "safe_load", "the authors' checkpoints pickle classes stock lacks; "
         "also names a damaged file and another fork's missing classes", True),
    Hook("ultralytics.nn.tasks._SafeLoad._build", "safe_load", "restricted loading builds its allow-list from "
         "Ultralytics' modules only", True),
    Hook("ultralytics.engine.exporter.Exporter.__call__", "export", "device selection and format checks run before "
         "any export callback: the pst_topk copy and one-sentence refusals must come first", True),
    Hook("ultralytics.utils.export.engine.onnx2engine", "export", "no callback sees the intermediate ONNX file "
         "before TensorRT parses it (op check, clear refusal)", True),
    Hook("ultralytics.nn.tasks.BaseModel.load", "transfer", "the stock load matches tensors by name and shape only: "
         "some C3k2 tensors would land inside a PST row", True),
    Hook("ultralytics.models.yolo.detect.val.DetectionValidator.pred_to_json", "coco", "per run, on pst_yolo's COCO "
         "runs only: no callback sees which image a detection belongs to", True),
)


def hook_table() -> str:
    """:data:`HOOKS` as a markdown table (``docs/layout.md`` and ``pst-yolo`` users can print it).

    Examples:
        >>> print(hook_table().splitlines()[0])
        | hooked name | pst_yolo.hooks | kind | why no official extension point serves |
    """
    rows = ["| hooked name | pst_yolo.hooks | kind | why no official extension point serves |", "|---|---|---|---|"]
    rows += [f"| `{h.name}` | {h.module} | {'essential' if h.essential else 'convenience'} | {h.why} |" for h in HOOKS]
    return "\n".join(rows)


def installed() -> set[str]:
    """The names wrapped now: class- or module-level (at import) and per run (on single objects)."""
    return set(INSTALLED) | set(PER_RUN)


def register() -> None:
    """Install pst_yolo's hooks into Ultralytics (idempotent)."""
    for module in (models, names, topk, ddp, safe_load, export, transfer, coco):
        module.register()
