"""The per-task PST-vs-stock table (scripts/task_study.py): real training and validation, resumable rows, report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _cli import run  # tests/_cli.py
from pst_research.task_study import METRICS, PAIRS, read_task_rows, run_task_study

ROOT = Path(__file__).resolve().parents[1]


def test_pairs_name_existing_configs_of_their_task():
    """Every pair is a stock config and its PST counterpart for the same task, on that task's offline set."""
    from ultralytics.nn.tasks import guess_model_task

    from pst_yolo.data import dataset_yaml, load_index

    for name, (task, data, stock, pst) in PAIRS.items():
        assert pst == stock.replace(".yaml", "-pst.yaml"), name
        assert guess_model_task(stock) == guess_model_task(pst) == task, name
        assert task in METRICS and data in load_index(), name
        if task != "classify":
            assert dataset_yaml(data).is_file(), name


def test_script_trains_scores_resumes_and_reports(tmp_path, cli_env):
    """Two real trainings (stock and PST classifier, 1 epoch), one row each with the metric Ultralytics' val gives for
    the saved weights; a second run adds nothing; the report holds both models and their difference."""
    csv_path, md = tmp_path / "t.csv", tmp_path / "t.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "task_study.py"), "--pairs", "yolo11-cls", "--epochs", "1",
           "--imgsz", "32", "--fraction", "0.02", "--workers", "0", "--csv", str(csv_path), "--report", str(md),
           "--out", str(tmp_path / "out")]
    out = run(cmd, tmp_path, cli_env)
    assert "2 rows added" in out
    rows = read_task_rows(csv_path)
    assert [(r["model"], r["pst"]) for r in rows] == [("yolo11n-cls.yaml", "0"), ("yolo11n-cls-pst.yaml", "1")]
    assert rows[1]["params"] > rows[0]["params"]  # the PST classifier adds a block

    from ultralytics import YOLO

    import pst_yolo  # noqa: F401

    for r in rows:  # the row is what the trained weights score, not a number from elsewhere
        last = next((tmp_path / "out").rglob(f"{Path(r['model']).stem}/seed0/weights/last.pt"))
        m = YOLO(last).val(data="shapes-cls", imgsz=32, batch=32, workers=0, plots=False, verbose=False,
                           project=str(tmp_path / "v"), name="v", exist_ok=True)
        assert r["metric1"] == pytest.approx(m.results_dict["metrics/accuracy_top1"], abs=1e-6)
    assert "0 rows added" in run(cmd, tmp_path, cli_env)  # resumed: nothing redone
    assert len(read_task_rows(csv_path)) == 2
    text = md.read_text()
    diff = rows[1]["metric1"] - rows[0]["metric1"]
    assert "`yolo11n-cls.yaml` | `yolo11n-cls-pst.yaml` | top-1" in text and f"{diff:+.3f}" in text


def test_unknown_pair_lists_the_valid_ones(tmp_path):
    from pst_research.study import Budget

    with pytest.raises(ValueError, match="valid: yolo11-seg, yolo11-pose"):
        run_task_study(["nope"], 0, Budget("tasks", 1, 32), tmp_path / "t.csv", tmp_path)
