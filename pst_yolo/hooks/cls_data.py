"""Classification data by name: ``data=shapes-cls`` generates the offline image folder on first use.

Hooks ``check_cls_dataset`` where Ultralytics' trainer, validator and exporter bound it at import
(``ultralytics.engine.{trainer,validator,exporter}``). Why no official extension point serves: a classification
dataset is a directory, found in the working directory or Ultralytics' ``datasets_dir`` and otherwise downloaded from
Ultralytics' assets by name; unlike a detection data YAML it has no ``download:`` script a plugin could supply. The
wrapper generates the folder for the image-folder names in ``datasets.yaml`` (entries with ``dir``) when it is
missing, then calls the stock function with the folder's path; every other value goes to the stock function untouched.
"""

from __future__ import annotations

from pathlib import Path

from ..data import generate_task, load_index
from ._common import install

__all__ = ("register",)


def register() -> None:
    import ultralytics.engine.exporter as exporter
    import ultralytics.engine.trainer as trainer
    import ultralytics.engine.validator as validator

    for module in (trainer, validator, exporter):
        install(module, "check_cls_dataset", ("dataset", "split"), _wrap_check_cls_dataset)


def _wrap_check_cls_dataset(check_cls_dataset):
    def check_cls_dataset_with_pst(dataset, *args, **kwargs):
        """Generate a missing pst_yolo image-folder set named by ``dataset``, then defer to the stock function."""
        entry = load_index().get(str(dataset).strip())
        if entry and entry.get("dir") and not Path(str(dataset)).is_dir():
            from ultralytics.data import utils as data_utils

            dataset = str(generate_task(Path(data_utils.DATASETS_DIR) / entry["dir"], "classify", n_train=240,
                                        n_val=60, imgsz=64))
        return check_cls_dataset(dataset, *args, **kwargs)

    return check_cls_dataset_with_pst
