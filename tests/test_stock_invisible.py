"""With pst_yolo loaded, a stock model (no PST layer) runs exactly as without it: same args.yaml, same files.

Ultralytics' own tests (``scripts/ultralytics_suite.py``) check outcomes, not what a run leaves behind; this checks
that: a stock ``yolo11n.yaml`` trained for one tiny epoch by ``yolo`` (plugin never imported) and by ``pst-yolo``
(plugin imported first), then validated standalone by each.
"""

import sys

import pytest
import yaml
from _cli import run  # tests/_cli.py

from pst_yolo.data import NAMES, generate

# What legitimately differs between the two runs: where each one writes.
RUN_PATHS = {"project", "name", "save_dir"}
COMMON = ["imgsz=32", "batch=4", "workers=0", "seed=0", "deterministic=True", "exist_ok=True"]


def files(run_dir):
    """Relative paths of all files under ``run_dir``."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A data YAML of 8 train / 4 val shapes images at 32 px, readable by stock Ultralytics (absolute path, no
    ``download`` code): ``data=shapes`` would resolve only with the plugin, so both runs get this same file."""
    root = generate(tmp_path_factory.mktemp("data") / "shapes", seed=0, n_train=8, n_val=4, imgsz=32)
    data = root.parent / "tiny_shapes.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": dict(enumerate(NAMES))}))
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_env, tiny_data):
    """Train yolo11n.yaml for one epoch with `yolo` (stock) and with `pst-yolo` (plugin); return both run dirs."""
    project = tmp_path_factory.mktemp("runs")
    dirs = {}
    for cli in ("yolo", "pst-yolo"):
        run([cli, "train", "model=yolo11n.yaml", f"data={tiny_data}", "epochs=1", f"project={project}",
             f"name={cli}", *COMMON], project, cli_env)
        dirs[cli] = project / cli
    return dirs


@pytest.mark.slow
def test_train_args_yaml_and_files_identical(runs):
    """Same args.yaml (but for where each run writes) and the same files; no pst_topk key anywhere."""
    stock, plugin = (yaml.safe_load((runs[c] / "args.yaml").read_text()) for c in ("yolo", "pst-yolo"))
    assert "pst_topk" not in plugin
    assert list(plugin) == list(stock)  # same keys in the same order
    differ = {k: (stock[k], plugin[k]) for k in stock if stock[k] != plugin[k]}
    assert set(differ) <= RUN_PATHS, differ
    assert files(runs["pst-yolo"]) == files(runs["yolo"])


@pytest.mark.slow
def test_train_metrics_identical(runs):
    """Seeded, deterministic CPU training gives the same losses and metrics with the plugin loaded (time aside)."""

    def rows(run_dir):
        lines = (run_dir / "results.csv").read_text().splitlines()
        header = [h.strip() for h in lines[0].split(",")]
        keep = [i for i, h in enumerate(header) if h != "time"]
        return [[line.split(",")[i].strip() for i in keep] for line in lines]

    assert rows(runs["pst-yolo"]) == rows(runs["yolo"])


@pytest.mark.slow
def test_standalone_val_writes_nothing_extra(runs, cli_env, tiny_data, tmp_path):
    """A standalone val of a stock checkpoint writes no args.yaml and the same files with or without the plugin."""
    best = runs["yolo"] / "weights" / "best.pt"
    out = {}
    for cli in ("yolo", "pst-yolo"):
        text = run([cli, "val", f"model={best}", f"data={tiny_data}", f"project={tmp_path}", f"name={cli}",
                    *COMMON], tmp_path, cli_env)
        out[cli] = [line.split()[1:] for line in text.splitlines() if line.split()[:1] == ["all"]]  # metrics row
    stock, plugin = tmp_path / "yolo", tmp_path / "pst-yolo"
    assert not (plugin / "args.yaml").exists() and not (stock / "args.yaml").exists()
    assert (files(plugin) if plugin.exists() else []) == (files(stock) if stock.exists() else [])
    assert out["pst-yolo"] == out["yolo"] and out["yolo"], out


def test_stock_cli_does_not_import_plugin(cli_env, tmp_path):
    """The `yolo` command used as the stock side above never imports pst_yolo (else the comparison is void)."""
    code = "import sys; from ultralytics.cfg import entrypoint; print('pst_yolo' in sys.modules)"
    assert run([sys.executable, "-c", code], tmp_path, cli_env).strip().endswith("False")
