"""`pst-yolo demo` in a fresh process, at a tiny size: any-K training, validation with fine attention off and on."""

import re
import sys
from pathlib import Path

import torch
import yaml
from _cli import run  # tests/_cli.py


def test_demo_trains_any_k_and_validates_both_ways(cli_env, tmp_path):
    pst_yolo_cli = str(Path(sys.executable).parent / "pst-yolo")
    out = run([pst_yolo_cli, "demo", "epochs=1", "imgsz=64", "batch=8", "fraction=0.1", "workers=0", "plots=False",
               "name=demo_test"], tmp_path, cli_env)
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
