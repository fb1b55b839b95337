"""Export matrix: every Ultralytics format x {stock YOLO11n, PST pst_topk=0, PST pst_topk=8}, compared with PyTorch.

Thin CLI over ``pst_research.export_matrix``. Trains yolo11n-pst and yolo11n on the offline ``shapes`` set first unless
``--pst-model``/``--stock-model`` are given (or already trained in ``--out``), runs one process per cell (resumable:
``--out/results.jsonl``), prints the markdown table and, with ``--docs``, writes it into docs/export.md between its
``export-matrix`` markers.

    python scripts/export_matrix.py                                   # all formats, ~1 h on 2 CPU cores
    python scripts/export_matrix.py --formats onnx ncnn paddle --int8 openvino onnx
    python scripts/export_matrix.py --python coreml=/path/venv/bin/python   # a converter needing other numpy
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL = ("torchscript", "onnx", "openvino", "engine", "coreml", "coreai", "saved_model", "pb", "edgetpu", "litert",
       "paddle", "mnn", "ncnn", "imx", "rknn", "executorch", "axelera", "deepx", "qnn", "hailo", "ascend", "xilinx")
TRAIN = ["data=shapes", "epochs=10", "imgsz=128", "batch=16", "nbs=16", "warmup_epochs=0", "optimizer=AdamW",
         "lr0=0.002", "workers=0", "plots=False", "val=False", "exist_ok=True"]


def train(cfg: str, out: Path) -> Path:
    best = out / "train" / cfg / "weights" / "best.pt"
    if not best.is_file():
        subprocess.run([sys.executable, "-m", "pst_yolo.cli", "train", f"model={cfg}.yaml",
                        f"project={out / 'train'}", f"name={cfg}", *TRAIN], check=True)
    return best


def main() -> None:
    from pst_research.export_matrix import export_matrix, format_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formats", nargs="*", default=list(ALL))
    p.add_argument("--int8", nargs="*", default=[], help="formats also exported with quantize=8 (calibrated on data)")
    p.add_argument("--pst-model"), p.add_argument("--stock-model")
    p.add_argument("--topk", type=int, default=8), p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--data", default="shapes"), p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", default="runs/export_matrix")
    p.add_argument("--python", nargs="*", default=[], help="FORMAT=INTERPRETER for converters needing other packages")
    p.add_argument("--docs", nargs="?", const=str(ROOT / "docs" / "export.md"), default=None, metavar="MD",
                   help="write the table between the export-matrix markers of this file (default docs/export.md)")
    a = p.parse_args()
    out = Path(a.out).resolve()
    pst = Path(a.pst_model) if a.pst_model else train("yolo11n-pst", out)
    stock = Path(a.stock_model) if a.stock_model else train("yolo11n", out)
    rows = export_matrix(pst, stock, a.formats, out, a.topk, a.imgsz, a.data, a.int8,
                         dict(x.split("=", 1) for x in a.python), a.timeout)
    table = format_table(rows, a.topk)
    print(table)
    if a.docs:
        page = Path(a.docs)
        text = page.read_text()
        start, end = "<!-- export-matrix:start -->", "<!-- export-matrix:end -->"
        if start not in text:
            sys.exit(f"{page} has no '{start}' marker: add the markers where the table belongs first")
        stamp = f"Measured {datetime.date.today()} with `python scripts/export_matrix.py` ({a.imgsz} px, shapes):\n\n"
        text = text[: text.index(start) + len(start)] + "\n" + stamp + table + "\n" + text[text.index(end):]
        page.write_text(text)


if __name__ == "__main__":
    main()
