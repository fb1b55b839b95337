"""``pst-yolo``: the ``yolo`` command with the PST plugin loaded (same syntax, modes, help), plus demo and explain."""

from __future__ import annotations

import sys

__all__ = ("main",)


def main() -> None:
    """Run ``pst-yolo ARGS``: ``demo [key=value ...]``, ``explain [key=value ...]`` or any ``yolo`` command line."""
    import pst_yolo  # noqa: F401  (registers PST with Ultralytics)

    if sys.argv[1:2] == ["demo"]:
        from .demo import demo_cli
        from .nn.attention import PSTArgumentError

        try:
            demo_cli(sys.argv[2:])
        except (PSTArgumentError, SyntaxError, TypeError) as e:  # a bad argument, found before anything trains
            sys.exit(f"pst-yolo demo: {e}")
        return
    if sys.argv[1:2] == ["explain"]:
        from .explain import explain_cli

        explain_cli(sys.argv[2:])
        return
    from ultralytics.cfg import entrypoint

    from . import messages
    from .export import ExportBackendError
    from .nn.attention import PSTArgumentError

    args = sys.argv[1:]
    if finished := messages.finished_run(args):  # `yolo` would start a new training on coco8 instead
        sys.exit(f"pst-yolo: {finished}")
    try:
        entrypoint()  # reads sys.argv like `yolo`
    except (ExportBackendError, PSTArgumentError) as e:  # the plugin's own checks: one sentence, not a traceback
        sys.exit(f"pst-yolo: {e}")
    special = args[0].lstrip("-") if len(args) == 1 else ""
    if not args or special in {"help", "h"}:  # Ultralytics printed its help: add the plugin's names and arguments
        print(messages.help_text())
    elif special in {"checks", "check"}:
        print(messages.checks_text())


if __name__ == "__main__":
    main()
