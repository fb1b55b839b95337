"""`pst-yolo demo` in a fresh process, at a tiny size: any-K training, validation with fine attention off and on."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _cli import run  # tests/_cli.py

TINY = ["epochs=1", "imgsz=64", "batch=8", "fraction=0.1", "workers=0", "plots=False", "name=demo_test"]


def test_demo_trains_any_k_and_validates_both_ways(cli_env, tmp_path):
    pst_yolo_cli = str(Path(sys.executable).parent / "pst-yolo")
    out = run([pst_yolo_cli, "demo", *TINY, f"project={tmp_path}"], tmp_path, cli_env)
    assert "trained 1 epochs on shapes at imgsz 64" in out and "any-K training: pst_topk_train=0,4,8,16" in out, out
    row = r"^\|\s+(\d+) \| coarse[^|]*\|\s*[\d.]+ \|\s+([\d.]+) \|$"  # | pst_topk | attention | mAP50 | mAP50-95 |
    rows = {int(k): float(v) for k, v in re.findall(row, out, re.M)}
    assert sorted(rows) == [0, 8], out[-2000:]

    best = Path(re.search(r"^weights: (.+)$", out, re.M).group(1))  # where the demo says it saved them
    run_dir = best.parents[1]
    assert run_dir.name == "demo_test" and best.is_file()
    args = yaml.safe_load((run_dir / "args.yaml").read_text())
    assert args["pst_topk_train"] == [0, 4, 8, 16]
    # What any-K training did: the gate (zero at initialisation, no gradient in coarse-only training) was trained.
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    gates = [m.gate.weight for m in ckpt["model"].modules() if type(m).__name__ == "PSTAttention"]
    assert len(gates) == 2 and all(g.abs().sum() > 0 for g in gates)
    for k in (0, 8):
        assert (run_dir / f"val_pst_topk{k}").is_dir()
    assert re.search(r"^run: +(.+)$", out, re.M).group(1) == str(run_dir)

    # A second demo of the same name goes to a new folder; the first run's files stay as they were.
    first = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = run([pst_yolo_cli, "demo", *TINY, f"project={tmp_path}", "exist_ok=False"], tmp_path, cli_env)
    second = Path(re.search(r"^run: +(.+)$", out, re.M).group(1))
    assert second != run_dir and second.parent == run_dir.parent and (second / "weights" / "best.pt").is_file()
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == first


@pytest.mark.parametrize("arg, says", [
    ("topk=-1", "topk (the demo validates with pst_topk=0 and pst_topk=topk) must be a positive integer"),
    ("pst_topk=abc", "pst_topk must be a non-negative integer"),
    ("pst_topk_train=0,-4", "pst_topk_train must be a non-negative integer or a list of them"),
    ("epochz=3", "'epochz' is not a valid YOLO argument"),
    ("epochs=abc", "'epochs' must be an int"),
])
def test_demo_checks_arguments_before_training(cli_env, tmp_path, arg, says):
    out = subprocess.run(["pst-yolo", "demo", arg, f"project={tmp_path / 'runs'}"], cwd=tmp_path, env=cli_env,
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text and "Starting training" not in text, text
    assert text.strip().splitlines()[-1].startswith("pst-yolo demo: ") and says in text, text
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written
