"""Checkpoint loading: restricted loading accepts PST checkpoints; a damaged file is named as such.

Hooks:

- ``ultralytics.nn.tasks._SafeLoad._build`` (the allow-list builder of Ultralytics' restricted unpickler, used with
  ``ULTRALYTICS_SAFE_LOAD=1``): PST, PSTBlock and PSTAttention are added, and nothing else, so any other unknown class
  is still refused. Why no official extension point serves: the allow-list is built from Ultralytics' own modules.
- ``ultralytics.nn.tasks.torch_safe_load`` (looked up in its module by ``load_checkpoint`` at call time): Ultralytics
  names a damaged file only for the errors a half-written zip raises; a file cut short elsewhere (a broken download)
  reaches the user as ``OSError: [Errno 22] Invalid argument`` without a file name. Such an error on an existing file
  is raised again naming the file and what to do; every other outcome is Ultralytics' own.
"""

from __future__ import annotations

import errno
import os
from functools import wraps

from ..nn import PST, PSTAttention
from ._common import HOOK, INSTALLED, SUPPORTED, install

__all__ = ("DamagedCheckpointError", "register")


class DamagedCheckpointError(OSError):
    """A checkpoint file exists but cannot be read: it is truncated or corrupt."""


def _wrap_torch_safe_load(torch_safe_load):
    def torch_safe_load_naming_damaged_files(weight, *args, **kwargs):
        """Ultralytics' checkpoint loader; an unreadable existing file fails with its name and the fix."""
        try:
            return torch_safe_load(weight, *args, **kwargs)
        except OSError as e:
            if isinstance(e, DamagedCheckpointError) or e.errno != errno.EINVAL or not os.path.isfile(weight):
                raise
            size = os.path.getsize(weight)
            raise DamagedCheckpointError(
                f"checkpoint '{weight}' ({size:,} bytes) cannot be read: the file is truncated or corrupt (an "
                f"interrupted download or copy?); download or copy it again, or use another checkpoint (e.g. last.pt)",
            ) from e

    return torch_safe_load_naming_damaged_files

def _safe_classes() -> dict:
    """Allow-list entries ``{"module.Name": class}`` for exactly the classes a PST checkpoint pickles."""
    from ..nn import PSTBlock

    return {f"{c.__module__}.{c.__qualname__}": c for c in (PST, PSTBlock, PSTAttention)}


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
