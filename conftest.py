"""Test-wide settings (loaded before anything imports Ultralytics).

Tests run offline, on at most 2 CPU threads, with Ultralytics' settings (datasets_dir, runs_dir, weights_dir) in a
fresh temporary config dir, so the shapes dataset and all runs land there and never in the user's directories.
Subprocesses inherit the same environment.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(tempfile.mkdtemp(prefix="pst_yolo_tests_"))
os.environ.update(YOLO_OFFLINE="1", OMP_NUM_THREADS="2", YOLO_CONFIG_DIR=str(ROOT / "config"))
subprocess.run(  # let Ultralytics write its own settings file, then point its dirs into ROOT
    [sys.executable, "-c", "import sys; from ultralytics.utils import SETTINGS; SETTINGS.update("
     "datasets_dir=sys.argv[1] + '/datasets', runs_dir=sys.argv[1] + '/runs', weights_dir=sys.argv[1] + '/weights',"
     " sync=False)", str(ROOT)],
    check=True, capture_output=True,
)


@pytest.fixture(scope="session")
def test_root() -> Path:
    """Session directory holding Ultralytics' settings, the datasets and all runs."""
    return ROOT


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """Environment for subprocesses: this interpreter's scripts (pst-yolo, yolo) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
