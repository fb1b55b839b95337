"""End to end on the CPU: train -> best.pt -> reload in a new process -> val/predict; fine-tune; resume; CLI."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import run  # tests/_cli.py

IMG = ["imgsz=64", "batch=16", "workers=0", "exist_ok=True", "plots=False"]



@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli_env) -> Path:
    """A 1-epoch yolo11n-pst run on shapes at imgsz 64, launched by the CLI from an unrelated directory."""
    cwd = tmp_path_factory.mktemp("anywhere")
    run(["pst-yolo", "train", "model=yolo11n-pst.yaml", "data=shapes", "epochs=1", f"project={cwd}", "name=run", *IMG],
        cwd, cli_env)
    best = cwd / "run" / "weights" / "best.pt"
    assert best.is_file()
    return best


def test_best_pt_validates_in_plain_yolo_process(trained, cli_env, tmp_path):
    """`yolo val model=best.pt` never imports pst_yolo explicitly: unpickling PST imports and registers it."""
    text = run(["yolo", "val", f"model={trained}", "data=shapes", "imgsz=64", "batch=32", f"project={tmp_path}"],
               tmp_path, cli_env)
    assert re.search(r"\ball\s+128\s+\d+", text), text[-2000:]  # the metrics row over all 128 val images


def test_best_pt_reloads_with_and_without_import(trained, cli_env, tmp_path):
    code = f"""
import sys
from ultralytics import YOLO
model = YOLO({str(trained)!r})
assert "pst_yolo" in sys.modules  # imported by unpickling PST
from pst_yolo import PST, get_topk
assert sum(isinstance(m, PST) for m in model.model.modules()) == 2
assert get_topk(model) == 0  # coarse-only training
for k in (0, 8):
    m = model.val(data="shapes", imgsz=64, batch=32, pst_topk=k, project={str(tmp_path)!r}, name=f"k{{k}}", plots=False)
    print("MAP", k, m.box.map50, m.box.map)
assert get_topk(model) == 0  # val ran on a copy: the model keeps its value
"""
    text = run([sys.executable, "-c", code], tmp_path, cli_env)
    assert text.count("MAP ") == 2


def test_predict_cli(trained, cli_env, tmp_path, test_root):
    source = test_root / "datasets" / "shapes" / "images" / "val"
    text = run(["pst-yolo", "predict", f"model={trained}", f"source={source}", "imgsz=64", "pst_topk=4",
                f"project={tmp_path}", "name=pred", "save=False"], tmp_path, cli_env)
    assert "pst_topk=4" in text
    assert "image 128/128" in text


def test_finetune_from_checkpoint(trained, cli_env, tmp_path):
    run(["pst-yolo", "train", f"model={trained}", "data=shapes", "epochs=1", f"project={tmp_path}", "name=ft", *IMG],
        tmp_path, cli_env)
    assert (tmp_path / "ft" / "weights" / "best.pt").is_file()


def test_interrupted_training_resumes_without_lost_epochs(cli_env, tmp_path):
    """Kill a 2-epoch run right after epoch 1 is saved, then `resume=True` runs exactly epoch 2."""
    code = f"""
import os
import pst_yolo
from ultralytics import YOLO
model = YOLO("yolo11n-pst.yaml")
model.add_callback("on_model_save", lambda trainer: os._exit(3) if trainer.epoch == 0 else None)
model.train(data="shapes", epochs=2, imgsz=64, batch=16, workers=0, plots=False, project={str(tmp_path)!r}, name="r")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-2000:]
    last = tmp_path / "r" / "weights" / "last.pt"
    assert last.is_file()
    run(["pst-yolo", "train", "resume", f"model={last}"], tmp_path, cli_env)
    with open(tmp_path / "r" / "results.csv") as f:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(f)]
    assert epochs == [1, 2]


def test_cli_help_and_bad_topk(cli_env, tmp_path):
    assert "yolo TASK MODE ARGS" in run(["pst-yolo", "help"], tmp_path, cli_env)
    text = run(["pst-yolo", "val", "model=yolo11n-pst.yaml", "data=shapes", "imgsz=64", "pst_topk=-1"],
               tmp_path, cli_env, ok=False)
    assert "pst_topk must be a non-negative integer" in text
