#!/usr/bin/env python
"""Per-scale summaries (layers, parameters, GFLOPs) of pst_yolo's configs next to their stock baselines.

Prints one line per (config, scale) as it appears in the ``scales:`` comments of ``cfg/models/*.yaml``; ``--write``
adds the lines of scales the YAML's table lacks (Ultralytics' own depth/width/max_channels of the stock family) and
leaves every other line as it is. Detect/segment/pose/obb at imgsz 640, classify at 224 (Ultralytics' model_info).

Examples:
    python scripts/config_summaries.py yolo11-pst yolo12-pst --scales l x
    python scripts/config_summaries.py --scales l x --write     # every family with a scales table
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def summary(cfg: str) -> tuple[int, int, float]:
    """(layers, parameters, GFLOPs) of a config built by name, as Ultralytics' model_info reports them."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = YOLO(cfg, verbose=False).model
    n_layers = sum(len(m._modules) == 0 for m in model.modules())  # leaf modules, as model_info counts layers
    return n_layers, get_num_params(model), get_flops(model, 224 if "-cls" in cfg else 640)


def line(family: str, scale: str, stock_scales: dict) -> str:
    name = re.sub(r"^(yolo\d+)", rf"\g<1>{scale}", family)
    layers, params, gflops = summary(f"{name}.yaml")
    base = name.replace("-pst", "")
    b_layers, b_params, b_gflops = summary(f"{base}.yaml")
    at = " at 224" if "-cls" in family else ""
    d, w, mc = stock_scales[scale]
    return (f"  {scale}: [{d:.2f}, {w:.2f}, {mc}] # summary: {layers} layers, {params:,} parameters, "
            f"{gflops:.1f} GFLOPs{at} (baseline {base}: {b_layers} layers, {b_params:,} parameters, "
            f"{b_gflops:.1f} GFLOPs{at})")


def main(argv=None) -> int:
    from ultralytics.nn.tasks import yaml_model_load

    import pst_yolo  # noqa: F401  (registers the configs)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("families", nargs="*", help="config families, e.g. yolo11-pst (default: all with a scales table)")
    p.add_argument("--scales", nargs="+", default=list("nsmlx"))
    p.add_argument("--write", action="store_true", help="add the missing scales' lines to the YAMLs")
    args = p.parse_args(argv)
    files = {f.stem: f for f in sorted((ROOT / "cfg" / "models").glob("*.yaml"))}
    families = args.families or [n for n, f in files.items() if re.search(r"^scales:", f.read_text(), re.M)]
    for family in families:
        path = files[family]
        stock = yaml_model_load(re.sub(r"^(yolo\d+)", r"\g<1>n", family.replace("-pst", "")) + ".yaml")["scales"]
        missing = [s for s in args.scales if s in stock and s not in yaml_model_load(path)["scales"]]
        if missing and not args.write:
            print(f"{family}: no scale {', '.join(missing)} in {path.name} (--write adds it)")
        if args.write and missing:  # the stock family's constants first, so that the scale builds by name
            text = path.read_text()
            last = list(re.finditer(r"^  [nsmlx]: \[.*$", text, re.M))[-1]
            rows = [f"  {s}: [{stock[s][0]:.2f}, {stock[s][1]:.2f}, {stock[s][2]}]" for s in missing]
            path.write_text(text[: last.end()] + "\n" + "\n".join(rows) + text[last.end() :])
        for s in args.scales:
            if s not in yaml_model_load(path)["scales"]:
                continue
            full = line(family, s, stock)
            print(f"{family}: {full.strip()}")
            if args.write and s in missing:
                text = path.read_text()
                path.write_text(re.sub(rf"^  {s}: \[.*$", full, text, count=1, flags=re.M))
    return 0


if __name__ == "__main__":
    sys.exit(main())
