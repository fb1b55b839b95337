"""Names: pst_yolo's configs and datasets resolve by bare name from any directory; unknown names list the known ones.

Hooks ``check_file`` in ``ultralytics.utils.checks`` (which ``check_yaml`` looks up in its own module at call time,
so model YAMLs are covered) and in ``ultralytics.data.utils`` (which ``check_det_dataset`` uses for ``data=``). Why no
official extension point serves: Ultralytics searches only its own package and the working directory for a bare name.
Names that exist as files, or that are not pst_yolo's, go to the stock function untouched. Three additions:

- a name found nowhere fails with Ultralytics' own ``FileNotFoundError`` (same type, same first sentence), which goes
  on to list the PST configs (``model=``) or the named datasets (``data=``);
- a data YAML of pst_yolo's that is generated rather than downloaded (``shapes``, ``shapes-context``, ``shapes-seg``,
  ``shapes-pose``, ``shapes-obb``) has its set checked each time ``data=`` resolves to it: against its stamp
  (generator version and parameters) and its manifest (files and bytes per folder); a missing, incomplete, damaged
  or outdated set is generated again with one log line, before ``check_det_dataset`` would report images missing
  and run the YAML's ``download:`` script (the fallback for copies of the YAML) under "Dataset download success"; a
  folder there that pst_yolo did not make is refused, naming it;
- ``BaseTrainer.get_dataset`` and ``BaseValidator.__call__`` (their ``data=`` checks run after the run directory was
  made): a classification set named in ``datasets.yaml`` (``data=shapes-cls``, an entry with ``dir``) is generated
  on first use and passed on as its folder (Ultralytics finds a classification directory only in the working
  directory or ``datasets_dir``, else downloads it by name from its assets); a bare name that exists nowhere and is
  a near miss of a named dataset (``shapes-cl``) fails as a name found nowhere does, instead of a download attempt
  of ``shapes-cl.zip``; when ``data=`` names nothing that exists, the run directory left empty (a trainer's
  ``args.yaml`` and empty ``weights/``, a validator's empty directory) is removed.
"""

from __future__ import annotations

import os
import shutil
from functools import cache, partial
from pathlib import Path

from ..data import load_index
from ..utils import resource_path
from ._common import install, target

__all__ = ("register",)

_NOT_FOUND = "_pst_yolo_name_not_found"  # marks the FileNotFoundError of a name that exists nowhere


def register() -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.engine.validator import BaseValidator

    target(checks, "check_yaml", ("file", "suffix", "hard"))  # resolves through checks.check_file at call time
    install(checks, "check_file", ("file", "suffix", "download"), partial(_wrap_check_file, data=False))
    install(data_utils, "check_file", ("file", "suffix", "download"), partial(_wrap_check_file, data=True))
    install(BaseTrainer, "get_dataset", ("self",), _wrap_leaving_no_empty_run)
    install(BaseValidator, "__call__", ("self", "trainer", "model"), _wrap_leaving_no_empty_run)


@cache
def _resources() -> dict[str, Path]:
    """Bare file name -> path for every YAML under ``cfg/``, plus ``NAME``/``NAME.yaml`` for each named dataset."""
    files = {p.name: p for p in sorted(resource_path("cfg").rglob("*.yaml"))}
    for name, entry in load_index().items():
        if entry.get("yaml") in files:  # datasets defined by Ultralytics itself (coco, coco8) resolve the stock way
            files[name] = files[f"{name}.yaml"] = files[entry["yaml"]]
    return files


def _wrap_check_file(check_file, data: bool):
    from ultralytics.utils import LOGGER

    from ..messages import data_not_found, model_not_found

    def check_file_with_pst(file, *args, **kwargs):
        """Resolve pst_yolo's bare config/dataset names first, then defer to Ultralytics' ``check_file``."""
        name = str(file).strip()
        path = None
        if name and not os.path.exists(name) and not any(s in name for s in "/\\:"):
            path = _resources().get(name)
        try:
            path = str(path) if path is not None else check_file(file, *args, **kwargs)
        except FileNotFoundError as e:
            if "does not exist" not in str(e):  # e.g. "Multiple files match": Ultralytics' message says it all
                raise
            if not data and not name.endswith((".yaml", ".yml")):
                raise
            error = FileNotFoundError((data_not_found if data else model_not_found)(str(e)))
            setattr(error, _NOT_FOUND, True)
            raise error from None
        if data and path:
            _generate_if_missing(path, LOGGER)
        return path

    return check_file_with_pst


def _generators() -> dict:
    """pst_yolo's generated data YAMLs (detection-style sets) -> the generator of their set, with its defaults."""
    from ..data import context, shapes, tasks

    return {"shapes.yaml": shapes.generate, "shapes-context.yaml": context.generate_context,
            **{f"shapes-{s}.yaml": partial(tasks.generate_task, task=t)
               for s, t in (("seg", "segment"), ("pose", "pose"), ("obb", "obb"))}}


def _ensure_generated(name: str, root: Path, generator, logger) -> None:
    """Check the set at ``root`` against its stamp and manifest; (re)generate it with one log line where needed.

    A set pst_yolo made with other parameters (another version), or one with missing, extra or altered files, is made
    again; a folder pst_yolo did not make is refused by the generator (``FileExistsError`` naming it).
    """
    from ..data.shapes import _read_meta, manifest_problem

    before = _read_meta(root)
    problem = manifest_problem(root) if before is not None else None
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        logger.info(f"{name}: generating the offline synthetic dataset in {root} (first use; nothing is downloaded)")
        generator(root)
        logger.info(f"{name}: dataset ready in {root}")
        return
    generator(root, force=before is not None)  # returns at once if the set is there, complete and current
    if before != _read_meta(root):
        why = f"it was made with other parameters or by another pst_yolo version: {before}"
    elif problem:
        why = f"it was incomplete or damaged: {problem}"
    else:
        return
    logger.info(f"{name}: regenerated the offline synthetic dataset in {root} ({why}; nothing is downloaded)")


def _generate_if_missing(yaml_file: str, logger) -> None:
    """Make sure the set of one of pst_yolo's generated data YAMLs is in Ultralytics' ``datasets_dir``, complete and
    current (see ``_ensure_generated``); other YAMLs are left alone."""
    import ultralytics.data.utils as data_utils

    file = Path(yaml_file)
    generators = _generators()
    if file.name not in generators or file.resolve() != _resources()[file.name].resolve():
        return
    import yaml

    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    _ensure_generated(file.stem, Path(data_utils.DATASETS_DIR) / data["path"], generators[file.name], logger)


def _image_folder(data) -> str | None:
    """The path of pst_yolo's named image-folder dataset ``data`` (``datasets.yaml`` entries with ``dir``), generated
    on first use into Ultralytics' ``datasets_dir`` with the entry's ``generate`` arguments; None for any other value.

    A set left there by an older pst_yolo (its metadata names other parameters) is regenerated: it is pst_yolo's own
    output, and validating on it would silently score another dataset. A folder that pst_yolo did not generate is
    never touched (``generate_task`` refuses it).
    """
    entry = load_index().get(str(data).strip()) if isinstance(data, str) else None
    if not (entry and entry.get("dir")) or Path(data).is_dir():
        return None
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import LOGGER

    from ..data import generate_task

    root = Path(data_utils.DATASETS_DIR) / entry["dir"]
    kwargs = dict(entry["generate"])
    _ensure_generated(str(data).strip(), root, partial(generate_task, task=kwargs.pop("task"), **kwargs), LOGGER)
    return str(root)


def _check_near_miss(data) -> None:
    """Raise the named-datasets ``FileNotFoundError`` for a bare ``data=`` name that exists nowhere and is a near miss
    of one of pst_yolo's named datasets (a typo such as ``shapes-cl``), before Ultralytics tries to download it."""
    import difflib

    from ..messages import data_not_found

    name = data.strip() if isinstance(data, str) else ""
    names = list(load_index())
    if not name or name in names or any(s in name for s in "/\\:.") or os.path.exists(name):
        return
    import ultralytics.data.utils as data_utils

    if (Path(data_utils.DATASETS_DIR) / name).exists() or not difflib.get_close_matches(name, names, 1, 0.8):
        return  # a folder of that name exists, or a name that is not ours (e.g. Ultralytics' imagenette160)
    error = FileNotFoundError(data_not_found(f"'{name}' does not exist"))
    setattr(error, _NOT_FOUND, True)
    raise error


def _wrap_leaving_no_empty_run(method):
    def leaving_no_empty_run(self, *args, **kwargs):
        """Run ``method`` with a named image-folder ``data=`` resolved to its (generated) folder; if it fails because
        ``data=`` exists nowhere, remove the run directory it left empty."""
        if (folder := _image_folder(getattr(self.args, "data", None))) is not None:
            self.args.data = folder  # classification data is a directory: Ultralytics' check_cls_dataset takes paths
        try:
            _check_near_miss(getattr(self.args, "data", None))
            return method(self, *args, **kwargs)
        except Exception as e:
            if (getattr(e, _NOT_FOUND, False) or getattr(e.__cause__, _NOT_FOUND, False)) and self.save_dir:
                _remove_if_empty(Path(self.save_dir))
            raise

    return leaving_no_empty_run


def _remove_if_empty(save_dir: Path) -> None:
    """Remove ``save_dir`` if it holds nothing but what a trainer or validator wrote first (args.yaml, weights/)."""
    weights = save_dir / "weights"
    if save_dir.is_dir() and {p.name for p in save_dir.iterdir()} <= {"args.yaml", "weights"}:
        if not weights.exists() or (weights.is_dir() and not any(weights.iterdir())):
            shutil.rmtree(save_dir, ignore_errors=True)
