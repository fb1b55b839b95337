"""Test-wide settings (loaded before anything imports Ultralytics).

Tests run offline, on at most 2 CPU threads, with Ultralytics' settings (datasets_dir, runs_dir, weights_dir) in a
fresh temporary config dir, so the shapes dataset and all runs land there and never in the user's directories.
Subprocesses inherit the same environment.
"""

import os
import shutil
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


def pytest_sessionfinish(session, exitstatus):
    """Remove the session directory (datasets, runs) unless PST_KEEP_TEST_DIR=1 asks to keep it for inspection."""
    if os.environ.get("PST_KEEP_TEST_DIR") != "1":
        shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def test_root() -> Path:
    """Session directory holding Ultralytics' settings, the datasets and all runs."""
    return ROOT


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """Environment for subprocesses: this interpreter's scripts (pst-yolo, yolo) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def fresh_env(cli_env, tmp_path) -> dict:
    """cli_env with Ultralytics' own settings in ``tmp_path``: datasets, runs and weights under it, nothing shared."""
    env = dict(cli_env, YOLO_CONFIG_DIR=str(tmp_path / "config"))
    subprocess.run(
        [sys.executable, "-c", "import sys; from ultralytics.utils import SETTINGS; SETTINGS.update(datasets_dir="
         "sys.argv[1] + '/datasets', runs_dir=sys.argv[1] + '/runs', weights_dir=sys.argv[1] + '/weights', sync=False)",
         str(tmp_path)],
        env=env, check=True, capture_output=True,
    )
    return env


# Fixture: a small PST model actually trained on shapes (shared by tests/test_topk.py and tests/test_coco_eval.py)
SHAPES_MODEL_ARGS = dict(  # ~30-45 s on 2 CPU cores (192 steps); coarse-only (pst_topk omitted)
    data="shapes", epochs=3, imgsz=96, batch=4, fraction=0.5, workers=0, mosaic=0.0, warmup_epochs=0,
    optimizer="AdamW", lr0=0.002, val=False, plots=False, exist_ok=True, verbose=False,
)


@pytest.fixture(scope="session")
def shapes_model(test_root) -> Path:
    """best.pt of yolo11n-pst trained coarse-only for 3 epochs on 256 shapes images at imgsz 96.

    Its predictions depend on the input and on pst_topk, but it is far from converged (mAP50-95 ~0.0001): shapes needs
    ~30 epochs at imgsz 128 for a mAP50-95 of a few points, beyond a unit-test budget.
    """
    from ultralytics import YOLO

    import pst_yolo  # noqa: F401  (registers yolo11n-pst.yaml and data=shapes)

    project = test_root / "runs" / "fixtures"
    YOLO("yolo11n-pst.yaml").train(project=str(project), name="shapes_model", **SHAPES_MODEL_ARGS)
    best = project / "shapes_model" / "weights" / "best.pt"
    assert best.is_file()
    return best
