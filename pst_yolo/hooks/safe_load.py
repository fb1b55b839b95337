"""Checkpoint loading: PST checkpoints and the PST authors' checkpoints load, also restricted; bad files are named.

Hooks:

- ``ultralytics.nn.tasks._SafeLoad._build`` (the allow-list builder of Ultralytics' restricted unpickler, used with
  ``ULTRALYTICS_SAFE_LOAD=1``): PST, PSTBlock and PSTAttention are added, and the authors' three class paths
  (``ultralytics.nn.modules.block.PST``, ``PSAttnBlock``, ``PSAttn``) as the shells of ``pst_yolo.authors``, and
  nothing else, so any other unknown class is still refused. Why no official extension point serves: the allow-list
  is built from Ultralytics' own modules.
- ``ultralytics.nn.tasks.torch_safe_load`` (looked up in its module by ``load_checkpoint`` at call time), three
  reasons, each only where stock would fail:

  1. the PST authors' checkpoints (their fork of Ultralytics 8.3.105) pickle three classes stock lacks: the load runs
     with their class paths resolving to the shells of ``pst_yolo.authors`` (Ultralytics' own ``temporary_modules``,
     the mechanism it uses for its renamed legacy classes), then every shell PST becomes a ``pst_yolo.PST``, with one
     log line naming the file and the rows;
  2. a checkpoint of another fork, with classes nobody here defines, fails with one message naming the file, the
     missing classes and what loads, instead of a bare ``AttributeError``;
  3. Ultralytics names a damaged file only for the errors a half-written zip raises; a file cut short elsewhere (a
     broken download) reaches the user as ``OSError: [Errno 22] Invalid argument`` without a file name. Such an error
     on an existing file is raised again naming the file and what to do.

  Every other outcome is Ultralytics' own.
"""

from __future__ import annotations

import errno
import os
import pickle
from functools import wraps

import torch.nn as nn

from ..authors import AUTHORS_CLASSES, convert_authors_model, is_authors_model
from ..nn import PST, PSTAttention
from ._common import HOOK, INSTALLED, SUPPORTED, install

__all__ = ("DamagedCheckpointError", "UnknownClassesError", "register")


class DamagedCheckpointError(OSError):
    """A checkpoint file exists but cannot be read: it is truncated or corrupt."""


class UnknownClassesError(AttributeError, TypeError):
    """A checkpoint pickles classes that neither Ultralytics nor pst_yolo defines (a model of another fork).

    Both an ``AttributeError`` (what the plain unpickler raises) and a ``TypeError`` (what Ultralytics' restricted
    loading raises), so code that caught either still does.
    """


def _missing_classes(file) -> list[str]:
    """The globals a checkpoint names that cannot be imported here (empty if the file cannot be scanned)."""
    import importlib

    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # not a zip checkpoint, or an older torch: nothing to report beyond the original error
        return []
    legacy = {"ultralytics.nn.modules.block.Silence", "ultralytics.nn.tasks.YOLOv10DetectionModel",
              "ultralytics.utils.loss.v10DetectLoss", *AUTHORS_CLASSES}  # resolved by Ultralytics' loader or ours
    missing = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if name in legacy or name.startswith("__builtin__.") or not module:
            continue
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            missing.append(name)
    return missing


def _unknown_classes(weight, missing: list[str]) -> UnknownClassesError:
    import ultralytics

    return UnknownClassesError(
        f"checkpoint '{weight}' was written by a modified Ultralytics: it pickles {len(missing)} class"
        f"{'es' if len(missing) > 1 else ''} that neither ultralytics {ultralytics.__version__} nor pst_yolo defines: "
        f"{', '.join(missing)}. pst_yolo loads Ultralytics checkpoints, its own PST checkpoints and the PST authors' "
        f"checkpoints (classes {', '.join(n.rpartition('.')[2] for n in AUTHORS_CLASSES)} of their fork); open this "
        f"file with the code that wrote it, or train from its model YAML"
    )


def _convert(ckpt, file) -> None:
    """Turn the authors' modules of a loaded checkpoint (model and EMA) into pst_yolo's, with one log line."""
    from ultralytics.utils import LOGGER

    rows = None
    for key in ("model", "ema"):
        model = ckpt.get(key) if isinstance(ckpt, dict) else None
        if isinstance(model, nn.Module) and is_authors_model(model):  # anything else is Ultralytics' to judge
            rows = convert_authors_model(model)
    if rows is not None:
        version = ckpt.get("version") or "unknown"
        LOGGER.info(f"PST: '{file}' converted from the PST authors' format (their Ultralytics {version} fork): "
                    f"rows {', '.join(map(str, rows))} are now pst_yolo.PST (same weights, noise-free top-k); "
                    f"save it to keep pst_yolo's format")


def _wrap_torch_safe_load(torch_safe_load):
    from ultralytics.nn.tasks import temporary_modules

    authors_names = {name: f"{c.__module__}.{c.__qualname__}" for name, c in AUTHORS_CLASSES.items()}

    def torch_safe_load_naming_damaged_files(weight, *args, **kwargs):
        """Ultralytics' checkpoint loader; the authors' checkpoints convert, unreadable files fail with a cause."""
        try:
            with temporary_modules(attributes=authors_names):  # names absent from stock: no stock load changes
                ckpt, file = torch_safe_load(weight, *args, **kwargs)
        except (AttributeError, TypeError) as e:
            pickled = isinstance(e, AttributeError) or isinstance(e.__cause__, pickle.UnpicklingError)
            missing = _missing_classes(weight) if pickled and os.path.isfile(weight) else []
            if missing:
                raise _unknown_classes(weight, missing) from e
            raise
        except OSError as e:
            if isinstance(e, DamagedCheckpointError) or e.errno != errno.EINVAL or not os.path.isfile(weight):
                raise
            size = os.path.getsize(weight)
            raise DamagedCheckpointError(
                f"checkpoint '{weight}' ({size:,} bytes) cannot be read: the file is truncated or corrupt (an "
                f"interrupted download or copy?); download or copy it again, or use another checkpoint (e.g. last.pt)",
            ) from e
        _convert(ckpt, file)
        return ckpt, file

    return torch_safe_load_naming_damaged_files

def _safe_classes() -> dict:
    """Allow-list entries ``{"module.Name": class}``: pst_yolo's PST classes and the authors' (as their shells)."""
    from ..nn import PSTBlock

    return {**{f"{c.__module__}.{c.__qualname__}": c for c in (PST, PSTBlock, PSTAttention)}, **AUTHORS_CLASSES}


def register() -> None:
    import ultralytics
    from ultralytics.nn import tasks

    install(tasks, "torch_safe_load", ("weight", "safe_only"), _wrap_torch_safe_load)

    safe_load = getattr(tasks, "_SafeLoad", None)
    build = vars(safe_load).get("_build") if isinstance(safe_load, type) else None
    if not (isinstance(build, classmethod) and hasattr(safe_load, "_registry") and hasattr(safe_load, "_lock")):
        raise ImportError(
            f"pst_yolo cannot add PST to the restricted-loading allow-list of ultralytics {ultralytics.__version__} "
            f"(ultralytics.nn.tasks._SafeLoad._build/_registry changed); pst_yolo is tested with {SUPPORTED}"
        )
    if not getattr(build.__func__, HOOK, False):
        original = build.__func__

        @wraps(original)
        def _build_with_pst(cls):
            """Ultralytics' allow-list plus PST's three classes."""
            return {**original(cls), **_safe_classes()}

        setattr(_build_with_pst, HOOK, True)
        safe_load._build = classmethod(_build_with_pst)
    INSTALLED["ultralytics.nn.tasks._SafeLoad._build"] = safe_load
    with safe_load._lock:
        if safe_load._registry is not None:  # a restricted load ran before pst_yolo was imported
            safe_load._registry.update(_safe_classes())
