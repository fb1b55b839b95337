"""Research tools of pst_yolo, outside the installed package: the accuracy study (``study``), the per-task study
(``task_study``), the export matrix (``export_matrix``) and the YOLO11 vs YOLO11-PST benchmark (``bench``).

Each has a command line in ``scripts/`` (``study.py``, ``task_study.py``, ``export_matrix.py``, ``benchmark.py``),
which Python runs with ``scripts/`` first on its path, so ``import pst_research`` works there without any path edit.
The tests import it through pytest's ``pythonpath`` setting (``pyproject.toml``). They use ``pst_yolo`` only through
its public modules, like any user code.
"""
