"""Multi-GPU (DDP) workers import pst_yolo before they rebuild the trainer.

Hooks ``ultralytics.utils.dist.generate_ddp_file``: the worker script it writes gets ``import pst_yolo`` right after it
sets ``sys.path``, before it unpickles the trainer state. Why no official extension point serves: the workers are new
processes that import only Ultralytics; they know PST only if that state happens to reference a pst_yolo object (it
need not: a YAML model or a resumed ``last.pt`` is pickled as its name), and otherwise reject ``pst_topk`` and
``yolo11n-pst.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from ._common import SUPPORTED, install, target

__all__ = ("DDP_IMPORT", "register")

DDP_IMPORT = "import pst_yolo  # added by pst_yolo: registers PST, its configs and pst_topk in this worker\n"


def register() -> None:
    import ultralytics.utils.dist as dist

    # generate_ddp_command() looks generate_ddp_file up in its own module at call time, so wrapping it there suffices.
    target(dist, "generate_ddp_command", ("trainer",))
    install(dist, "generate_ddp_file", ("trainer",), _wrap_generate_ddp_file)


def _wrap_generate_ddp_file(generate_ddp_file):
    def generate_ddp_file_with_pst(trainer):
        """Ultralytics' DDP worker script with ``import pst_yolo`` right after it sets ``sys.path``."""
        import ultralytics

        file = generate_ddp_file(trainer)
        path = Path(file)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("sys.path = ")), None)
        if at is None:
            raise RuntimeError(
                f"pst_yolo cannot add 'import pst_yolo' to the DDP worker script {file} of ultralytics "
                f"{ultralytics.__version__} (no 'sys.path = ' line); pst_yolo is tested with {SUPPORTED}"
            )
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines.insert(at + 1, indent + DDP_IMPORT)
        path.write_text("".join(lines), encoding="utf-8")
        return file

    return generate_ddp_file_with_pst
