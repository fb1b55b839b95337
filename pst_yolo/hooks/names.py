"""Names: pst_yolo's configs and datasets resolve by bare name from any directory.

Hooks ``check_file`` in ``ultralytics.utils.checks`` (which ``check_yaml`` looks up in its own module at call time,
so model YAMLs are covered) and in ``ultralytics.data.utils`` (which ``check_det_dataset`` uses for ``data=``). Why no
official extension point serves: Ultralytics searches only its own package and the working directory for a bare name.
Names that exist as files, or that are not pst_yolo's, go to the stock function untouched.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from ..data import load_index
from ..utils import resource_path
from ._common import install, target

__all__ = ("register",)


def register() -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks

    target(checks, "check_yaml", ("file", "suffix", "hard"))  # resolves through checks.check_file at call time
    for module in (checks, data_utils):
        install(module, "check_file", ("file", "suffix", "download"), _wrap_check_file)


@cache
def _resources() -> dict[str, Path]:
    """Bare file name -> path for every YAML under ``cfg/``, plus ``NAME``/``NAME.yaml`` for each named dataset."""
    files = {p.name: p for p in sorted(resource_path("cfg").rglob("*.yaml"))}
    for name, entry in load_index().items():
        if entry.get("yaml") in files:  # datasets defined by Ultralytics itself (coco, coco8) resolve the stock way
            files[name] = files[f"{name}.yaml"] = files[entry["yaml"]]
    return files


def _wrap_check_file(check_file):
    def check_file_with_pst(file, *args, **kwargs):
        """Resolve pst_yolo's bare config/dataset names first, then defer to Ultralytics' ``check_file``."""
        name = str(file).strip()
        if name and not os.path.exists(name) and not any(s in name for s in "/\\:"):
            if (path := _resources().get(name)) is not None:
                return str(path)
        return check_file(file, *args, **kwargs)

    return check_file_with_pst


