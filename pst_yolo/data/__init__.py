"""Datasets: the offline synthetic ``shapes`` generators and the index of named datasets (``datasets.yaml``).

Nothing here imports Ultralytics; :func:`dataset_yaml` returns what Ultralytics' ``data=`` argument accepts.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..utils import resource_path
from .context import NAMES as CONTEXT_NAMES
from .context import generate_context
from .shapes import NAMES, generate
from .tasks import TASKS, generate_task

__all__ = [
    "CONTEXT_NAMES",
    "NAMES",
    "TASKS",
    "dataset_yaml",
    "generate",
    "generate_context",
    "generate_task",
    "load_index",
]


def load_index() -> dict:
    """Read the index of named datasets.

    Returns:
        ``{name: {"yaml": ..., "ann": ..., "description": ...}}`` as written in ``datasets.yaml``; ``ann`` (the COCO
        val json relative to the dataset root) is absent for datasets without one; an image-folder (classification)
        set has ``dir`` (its folder name in Ultralytics' ``datasets_dir``) and ``generate`` (the arguments of
        :func:`generate_task` that make it) instead of ``yaml``.

    Examples:
        >>> sorted(load_index())
        ['coco', 'coco8', 'shapes', 'shapes-cls', 'shapes-context', 'shapes-obb', 'shapes-pose', 'shapes-seg']
    """
    with open(resource_path("datasets.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def dataset_yaml(name: str) -> Path | str:
    """Data YAML for a named dataset.

    Args:
        name: A key of :func:`load_index`, e.g. ``"shapes"`` or ``"coco8"``.

    Returns:
        The absolute path of a YAML shipped in pst_yolo's ``cfg/datasets`` (``shapes``), else the bare file name
        of an Ultralytics built-in (``"coco8.yaml"``), which Ultralytics resolves itself, or for an image-folder set
        its name (``"shapes-cls"``, generated on first use by ``data=shapes-cls``).

    Raises:
        KeyError: If ``name`` is not in the index; the message lists the known names.

    Examples:
        >>> dataset_yaml("coco8")
        'coco8.yaml'
        >>> dataset_yaml("shapes").name
        'shapes.yaml'
    """
    index = load_index()
    if name not in index:
        raise KeyError(f"unknown dataset {name!r}; known datasets (datasets.yaml): {', '.join(sorted(index))}")
    file = index[name].get("yaml") or index[name]["dir"]
    try:
        return resource_path("cfg", "datasets", file)
    except FileNotFoundError:  # not shipped by pst_yolo: an Ultralytics built-in
        return file
