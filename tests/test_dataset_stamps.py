"""Generated offline sets are checked against their stamp and manifest each time ``data=`` resolves them.

Each test gets its own Ultralytics settings (a fresh ``datasets_dir``) and runs the CLI in fresh processes, as a user
would: a set with files missing or from another generator version is generated again with one log line, a folder
pst_yolo did not make is refused with its name, dead generators' temporary folders go, and two processes resolving
the same set at once end with one complete set.
"""

import json
import os
import subprocess
import sys

import pytest
from _cli import run  # tests/_cli.py

from pst_yolo.data.shapes import META, manifest_problem

VAL = ["pst-yolo", "val", "model=yolo11n-pst.yaml", "imgsz=32", "batch=128", "plots=False"]


@pytest.fixture
def env(fresh_env) -> dict:
    """Ultralytics' settings of this test only (datasets in tmp_path/datasets): conftest's ``fresh_env``."""
    return fresh_env


def said(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{name}: ")]


def scored_images(out: str) -> int:
    """The image count of the validator's 'all' row."""
    return int(next(line.split()[1] for line in out.splitlines() if line.split()[:1] == ["all"]))


def test_damaged_or_outdated_shapes_is_regenerated(env, tmp_path):
    root = tmp_path / "datasets" / "shapes"
    run([*VAL, "data=shapes"], tmp_path, env)
    assert manifest_problem(root) is None
    val = sorted((root / "images" / "val").glob("*.jpg"))
    for p in val[::2]:  # half of the val images gone
        p.unlink()
    out = run([*VAL, "data=shapes"], tmp_path, env)
    lines = said(out, "shapes")
    assert len(lines) == 1 and "regenerated" in lines[0] and "incomplete or damaged: images/val: 64 files" in lines[0]
    assert scored_images(out) == 128 and manifest_problem(root) is None

    meta = json.loads((root / META).read_text())
    (root / META).write_text(json.dumps({**meta, "version": 0, "n_val": 16}))  # an older pst_yolo's set
    out = run([*VAL, "data=shapes"], tmp_path, env)
    lines = said(out, "shapes")
    assert len(lines) == 1 and "made with other parameters or by another pst_yolo version" in lines[0], out
    assert json.loads((root / META).read_text()) == meta and scored_images(out) == 128

    out = run([*VAL, "data=shapes"], tmp_path, env)  # complete and current: used as it is, silently
    assert said(out, "shapes") == [] and scored_images(out) == 128


def test_task_set_with_a_truncated_label_is_regenerated(env, tmp_path):
    root = tmp_path / "datasets" / "shapes-seg"
    cmd = ["pst-yolo", "val", "model=yolo11n-seg-pst.yaml", "data=shapes-seg", "imgsz=32", "batch=64", "plots=False"]
    run(cmd, tmp_path, env)
    label = sorted((root / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text()[:10])
    out = run(cmd, tmp_path, env)
    assert "shapes-seg: regenerated" in out and "labels/val: 64 files" in out
    assert manifest_problem(root) is None


def test_a_folder_pst_yolo_did_not_make_is_refused(env, tmp_path):
    root = tmp_path / "datasets" / "shapes"
    (root / "images").mkdir(parents=True)
    (root / "images" / "mine.jpg").write_bytes(b"precious")
    out = run([*VAL, "data=shapes"], tmp_path, env, ok=False)
    assert f"{root} exists and is not a generated shapes dataset" in out
    assert (root / "images" / "mine.jpg").read_bytes() == b"precious" and len(list(root.rglob("*"))) == 2


def test_dead_generators_temporary_folders_are_removed(env, tmp_path):
    datasets = tmp_path / "datasets"
    dead = datasets / ".shapes.tmp-99999999-0123abcd"  # a PID that does not exist: a generator killed mid-way
    (dead / "images").mkdir(parents=True)
    live = datasets / f".shapes.tmp-{os.getpid()}-0123abcd"  # this (live) process: left alone
    live.mkdir()
    run([*VAL, "data=shapes"], tmp_path, env)
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in datasets.iterdir()) == [live.name, "shapes"]


def test_two_processes_resolving_at_once_end_with_one_complete_set(env, tmp_path):
    code = ("import pst_yolo; from ultralytics.data.utils import check_det_dataset; "
            "print(check_det_dataset('shapes-context')['val'])")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    root = tmp_path / "datasets" / "shapes-context"
    assert manifest_problem(root) is None
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["shapes-context"]  # no temporary siblings left
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 128


def test_named_classification_set_is_checked_too(env, tmp_path):
    root = tmp_path / "datasets" / "shapes-cls"
    code = ("import pst_yolo, sys; from pst_yolo.hooks.names import _image_folder; "
            "from ultralytics.utils import LOGGER; print(_image_folder('shapes-cls'))")
    run([sys.executable, "-c", code], tmp_path, env)
    victim = next((root / "val").rglob("*.jpg"))
    victim.unlink()
    out = run([sys.executable, "-c", code], tmp_path, env)
    assert "shapes-cls: regenerated the offline synthetic dataset" in out and manifest_problem(root) is None
    assert victim.is_file()
