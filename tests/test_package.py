"""Packaging: the wheel carries the plugin, its configs and the dataset index, and they resolve from a wheel install;
committed files hold no absolute path of a machine."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (whl,) = out.glob("pst_yolo-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("pst_yolo/cfg/models/yolo11-pst.yaml", "pst_yolo/cfg/models/yolo12-pst.yaml",
              "pst_yolo/cfg/datasets/shapes.yaml", "pst_yolo/datasets.yaml", "pst_yolo/nn/pst.py"):
        assert f in names, f
    # the plugin only: the research tools (study runners, benchmark driver, export matrix) stay in scripts/
    assert not [n for n in names if "pst_research" in n or n.rsplit("/", 1)[-1] in
                ("study.py", "task_study.py", "matrix.py", "bench.py", "export_matrix.py")]
    assert all(n.startswith(("pst_yolo/", "pst_yolo-")) for n in names), sorted(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pst-yolo = pst_yolo.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_configs_resolve_from_wheel_install(wheel, tmp_path, cli_env):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    code = (
        "import pst_yolo, pathlib; from ultralytics import YOLO; from pst_yolo.data import dataset_yaml\n"
        f"assert pathlib.Path(pst_yolo.__file__).is_relative_to({str(target)!r}), pst_yolo.__file__\n"
        "assert dataset_yaml('shapes').is_relative_to(pathlib.Path(pst_yolo.__file__).parent)\n"
        "for cfg in ('yolo11n-pst.yaml', 'yolo12s-pst.yaml'): YOLO(cfg)\n"
        "print('ok')"
    )
    env = dict(cli_env, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_supported_range_is_the_dependency_pin():
    """The range the hooks name in their errors is the one pip installs (pyproject.toml's ultralytics requirement)."""
    import tomllib

    from pst_yolo.hooks import SUPPORTED

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert SUPPORTED in [d.replace(" ", "") for d in deps if d.startswith("ultralytics")]


def test_committed_files_hold_no_absolute_paths_of_a_machine():
    """Reports, CSVs and logs are committed: paths in them are relative (to the repository or a named work folder)."""
    import re

    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the committed files cannot be listed")
    pattern = re.compile(rb"(?<![\w.~<>-])/(?:work|tmp|home|root|Users|mnt|scratch|private)/\w")
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path.suffix in (".png", ".jpg", ".pt", ".onnx"):
            continue
        for i, line in enumerate(path.read_bytes().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{i}: {line.decode(errors='replace').strip()[:120]}")
    assert not found, "absolute paths in committed files:\n" + "\n".join(found[:20])


@pytest.mark.parametrize("script", ["test.sh", "demo.sh"])
def test_fresh_machine_commands_stop_on_a_full_disk_before_installing(script, tmp_path):
    """The two README commands check the disk before they create an environment: a clear message, nothing made."""
    import os

    venv = tmp_path / "not" / "yet" / "venv"
    env = {**os.environ, "PST_VENV": str(venv), "PST_MIN_FREE_GB": str(10**9)}
    run = subprocess.run(["bash", str(REPO / "scripts" / script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0
    assert f"a new environment ({venv}) needs about {10**9} GB free" in run.stderr
    assert f"its disk ({tmp_path})" in run.stderr and "PST_VENV=" in run.stderr
    assert not (tmp_path / "not").exists()  # no venv, no folder left behind
