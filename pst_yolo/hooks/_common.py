"""What every hook module shares: the supported Ultralytics range and a checked, idempotent way to wrap a function."""

from __future__ import annotations

import inspect
from functools import wraps

__all__ = ("HOOK", "INSTALLED", "PER_RUN", "SUPPORTED", "install", "target")

SUPPORTED = "ultralytics>=8.4.190,<8.5"  # keep in sync with pyproject.toml
HOOK = "_pst_yolo_hook"  # attribute marking our wrappers (idempotence)
INSTALLED: dict[str, object] = {}  # "module.name" -> the owner (module or class) of every hooked name
PER_RUN: dict[str, object] = {}  # "module.Class.name" -> the class of every method wrapped on single objects only


def target(module, name: str, params: tuple[str, ...]):
    """Return ``module.name`` after checking it is a function whose leading parameters are ``params``."""
    import ultralytics

    fn = getattr(module, name, None)
    found = tuple(inspect.signature(fn).parameters)[: len(params)] if callable(fn) else None
    if found != params:
        raise ImportError(
            f"pst_yolo cannot hook {module.__name__}.{name}{params} in ultralytics {ultralytics.__version__} "
            f"(found {found}); pst_yolo is tested with {SUPPORTED}: install a supported version"
        )
    return fn


def qualified(owner) -> str:
    """Dotted name of a module or class (``ultralytics.engine.model.Model``)."""
    return f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__


def install(module, name: str, params: tuple[str, ...], make_wrapper) -> None:
    """Replace ``module.name`` by ``make_wrapper(original)`` unless it is already ours."""
    fn = target(module, name, params)
    INSTALLED[f"{qualified(module)}.{name}"] = module
    if not getattr(fn, HOOK, False):
        wrapper = wraps(fn)(make_wrapper(fn))
        setattr(wrapper, HOOK, True)
        setattr(module, name, wrapper)
