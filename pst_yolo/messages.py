"""What pst_yolo tells a user: its configs, named datasets and arguments in a few lines, for help and for errors.

Library functions behind ``pst-yolo help`` / ``pst-yolo checks`` and the not-found messages of ``model=`` / ``data=``
(``hooks/names.py``); each returns text and prints nothing.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

from .data import load_index
from .utils import resource_path

__all__ = ("checks_text", "configs_line", "data_not_found", "datasets_lines", "finished_run", "help_text",
           "model_not_found", "pst_configs")


@cache
def pst_configs() -> tuple[str, ...]:
    """The PST model configs by family, with their scales in braces.

    Examples:
        >>> pst_configs()[-2:]
        ('yolo26{n,s,m,l,x}-pst.yaml', 'yolo26{n,s,m,l,x}-seg-pst.yaml')
    """
    names = []
    for file in sorted(resource_path("cfg", "models").glob("*.yaml")):
        scales = list((yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("scales") or {})
        # Ultralytics' scale position: after the family's version digits (yolo11-pst.yaml -> yolo11n-pst.yaml)
        names.append(re.sub(r"(\d+)", rf"\1{{{','.join(scales)}}}", file.name, count=1) if scales else file.name)
    return tuple(names)


def configs_line() -> str:
    """One line naming the PST configs: ``PST configs (model=NAME, from any directory): yolo11{n,s,m,l,x}-pst...``."""
    return f"PST configs (model=NAME, from any directory): {', '.join(pst_configs())}"


def datasets_lines(indent: str = "  ") -> list[str]:
    """One line per named dataset of ``datasets.yaml``: its name and description."""
    index = load_index()
    width = max(map(len, index))
    return [f"{indent}{name:<{width}}  {entry.get('description', '')}".rstrip() for name, entry in index.items()]


def model_not_found(message: str) -> str:
    """Ultralytics' ``'X' does not exist`` for a model YAML, plus the PST configs and what else ``model=`` takes."""
    return f"{message}. {configs_line()}; or a path to a model YAML or .pt"


def data_not_found(message: str) -> str:
    """Ultralytics' ``'X' does not exist`` for ``data=``, plus the named datasets, one per line."""
    return "\n".join([f"{message}. data= takes a path to a data YAML or one of these names:", *datasets_lines()])


def help_text() -> str:
    """What ``pst-yolo`` adds to Ultralytics' help, in a few lines."""
    from . import __version__

    return "\n".join([
        f"pst_yolo {__version__}: the Pyramid Sparse Transformer (PST) plugin. 'pst-yolo' takes every 'yolo' command "
        "above, plus:",
        f"    {configs_line()}",
        "    Named datasets (data=NAME, from any directory):",
        *datasets_lines(indent="      "),
        "    pst_topk=K  fine attention, any mode: 0 = coarse only, K > 0 = on (K coarse tokens' fine patches), "
        "e.g. pst_topk=8",
        "    pst_topk_train=0,4,8,16  train only: each step runs a K drawn from the set (any-K training)",
        "    pst-yolo demo [epochs=40 imgsz=160 ...]  train yolo11n-pst on shapes (CPU, ~10 min), "
        "compare pst_topk 0 and 8",
        "    pst-yolo explain model=best.pt source=IMG pst_topk=8  pictures of what each PST layer selects and "
        "attends to",
        "    model=AUTHORS.pt  the paper's COCO weights (the authors' Model Zoo) load as they are: "
        "docs/authors_weights.md",
    ])


def checks_text() -> str:
    """What ``pst-yolo checks`` adds to Ultralytics' report: the plugin's version and supported range, its names."""
    import ultralytics
    from ultralytics.utils.checks import check_version

    from . import __version__
    from .hooks import SUPPORTED

    ok = "✅" if check_version(ultralytics.__version__, SUPPORTED.removeprefix("ultralytics"), hard=False) else "❌"
    return "\n".join([
        f"{'pst-yolo':<23}{ok} {__version__} (tested with {SUPPORTED}; found {ultralytics.__version__})",
        f"{'PST configs':<23}{', '.join(pst_configs())}",
        f"{'named datasets':<23}{', '.join(load_index())}",
    ])


def finished_run(args: list[str]) -> str | None:
    """The one sentence for ``train resume model=LAST.pt`` when LAST.pt is a PST model's finished training run.

    Ultralytics' ``yolo`` (and so ``pst-yolo``) otherwise starts a new training of that checkpoint on the task's
    default dataset (``coco8``, downloaded) after a warning that it is not resumable. Stock models are left to it.

    Args:
        args: The command line after ``pst-yolo``.

    Returns:
        The sentence, or None for every other command line, checkpoint or model.
    """
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    resume = "resume" in args or kv.get("resume", "").lower() == "true"
    model = kv.get("model", "")
    if not ("train" in args and resume and model.endswith(".pt") and Path(model).is_file()):
        return None
    import torch.nn as nn
    from ultralytics.nn.tasks import torch_safe_load

    from .nn import PSTAttention

    ckpt, _ = torch_safe_load(model)
    net = ckpt.get("ema") or ckpt.get("model")
    results, train_args = ckpt.get("train_results") or {}, ckpt.get("train_args") or {}
    resumable = ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None
    if resumable or not results or not isinstance(net, nn.Module):
        return None
    if not any(isinstance(m, PSTAttention) for m in net.modules()):
        return None
    epochs = len(results.get("epoch") or []) or train_args.get("epochs", 0)
    data = train_args.get("data") or "DATA"
    if Path(str(data)).parent == resource_path("cfg", "datasets"):  # a pst_yolo dataset: its bare name
        data = Path(data).stem
    return (
        f"{model} is the final checkpoint of a finished training run ({epochs} epoch{'s' * (epochs != 1)}), so there "
        f"is nothing to resume; to train it further, start a new run from it: pst-yolo train model={model} "
        f"data={data} epochs=N"
    )
