"""Restricted loading (``ULTRALYTICS_SAFE_LOAD=1``): checkpoints with PST layers load, nothing else new does.

Hooks ``ultralytics.nn.tasks._SafeLoad._build`` (the allow-list builder of Ultralytics' restricted unpickler): PST,
PSTBlock and PSTAttention are added, and nothing else, so any other unknown class is still refused. Why no official
extension point serves: the allow-list is built from Ultralytics' own modules only.
"""

from __future__ import annotations

from functools import wraps

from ..nn import PST, PSTAttention
from ._common import HOOK, SUPPORTED

__all__ = ("register",)

def _safe_classes() -> dict:
    """Allow-list entries ``{"module.Name": class}`` for exactly the classes a PST checkpoint pickles."""
    from ..nn import PSTBlock

    return {f"{c.__module__}.{c.__qualname__}": c for c in (PST, PSTBlock, PSTAttention)}


def register() -> None:
    import ultralytics
    from ultralytics.nn import tasks

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
    with safe_load._lock:
        if safe_load._registry is not None:  # a restricted load ran before pst_yolo was imported
            safe_load._registry.update(_safe_classes())
