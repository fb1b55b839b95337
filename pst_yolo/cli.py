"""``pst-yolo``: the ``yolo`` command with the PST plugin loaded (same syntax, modes, help), plus demo and explain."""

from __future__ import annotations

import sys

__all__ = ("main",)


def main() -> None:
    """Run ``pst-yolo ARGS``: ``demo [key=value ...]``, ``explain [key=value ...]`` or any ``yolo`` command line."""
    import pst_yolo  # noqa: F401  (registers PST with Ultralytics)

    if sys.argv[1:2] == ["demo"]:
        from .demo import demo_cli

        demo_cli(sys.argv[2:])
        return
    if sys.argv[1:2] == ["explain"]:
        from .explain import explain_cli

        explain_cli(sys.argv[2:])
        return
    from ultralytics.cfg import entrypoint

    from .export import ExportBackendError

    try:
        entrypoint()  # reads sys.argv like `yolo`
    except ExportBackendError as e:  # a missing export backend: its one-sentence fix, not a traceback
        sys.exit(f"pst-yolo: {e}")


if __name__ == "__main__":
    main()
