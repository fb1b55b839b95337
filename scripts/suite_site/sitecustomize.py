"""Loaded first by every Python process of a referee run (its directory is put on PYTHONPATH).

``scripts/ultralytics_suite.py`` runs Ultralytics' own tests twice. Every Python process started in a run (pytest
itself and each ``yolo ...`` command the tests start) imports this module before anything else:

- ``PST_SUITE_PLUGIN=1``: ``import pst_yolo`` now, so the plugin is loaded in that process;
- ``PST_SUITE_PLUGIN=0``: nothing is imported.

Either way the process appends one JSON line to ``$PST_SUITE_MARKERS`` at start and one at exit, saying whether
``pst_yolo`` was imported, so the script can check the plugin was loaded where it should be and nowhere else.
Any ``sitecustomize`` this one shadows is run afterwards.
"""

import atexit
import json
import os
import sys


def _mark(event, **extra):
    """Append one JSON line about this process to the markers file."""
    line = dict(event=event, pid=os.getpid(), argv=list(getattr(sys, "argv", None) or []),
                pst_yolo="pst_yolo" in sys.modules, **extra)
    with open(os.environ["PST_SUITE_MARKERS"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _run_shadowed():
    """Run the next ``sitecustomize`` on sys.path, if any (e.g. a distribution's), as Python would have."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec and spec.loader:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if os.environ.get("PST_SUITE_MARKERS"):
    error = None
    if os.environ.get("PST_SUITE_PLUGIN") == "1":
        try:
            import pst_yolo  # noqa: F401
        except Exception as e:  # recorded, and the script fails the run
            error = f"{type(e).__name__}: {e}"
    _mark("start", error=error)
    atexit.register(_mark, "exit")
_run_shadowed()
