#!/usr/bin/env python
"""Compare an exported PST detector with its PyTorch model: raw outputs on real images, optionally mAP.

Usage:
    python scripts/export_parity.py MODEL.pt EXPORTED [--pst_topk K] [--images DIR] [--n 8]
        [--sizes 1x96x96 2x64x96 ...] [--data shapes] [--imgsz 96]

EXPORTED is an ``.onnx`` file (run in ONNX Runtime on the CPU) or an ``*_openvino_model`` folder (OpenVINO CPU, f32).
Prints the max abs difference of the box and class rows of the raw (B, 4 + nc, anchors) output at each size (default:
the export's own size), then, with ``--data``, mAP50-95 / mAP50 of both through ``YOLO(...).val`` (PyTorch with the
same ``pst_topk``; square letterbox for a static export, rectangular batches for a dynamic one, as Ultralytics does).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the comparison described in the module docstring; return 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="PyTorch checkpoint that was exported (best.pt)")
    ap.add_argument("exported", help=".onnx file or *_openvino_model folder")
    ap.add_argument("--pst_topk", type=int, default=None, help="pst_topk the export was made with (default: metadata)")
    ap.add_argument("--images", default=None, help="image folder (default: the shapes val images)")
    ap.add_argument("--n", type=int, default=8, help="images used per size (default 8)")
    ap.add_argument("--sizes", nargs="*", default=None, help="BxHxW inputs (dynamic exports); default: export size")
    ap.add_argument("--data", default=None, help="also compare mAP on this dataset (e.g. shapes)")
    ap.add_argument("--imgsz", type=int, default=None, help="val image size (default: the export's)")
    args = ap.parse_args(argv)

    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from pst_yolo.export.verify import compare_outputs

    exported = Path(args.exported)
    meta = _metadata(exported)
    k = args.pst_topk if args.pst_topk is not None else int(meta.get("pst_topk", 0))
    imgsz = ast.literal_eval(str(meta.get("imgsz", "[640, 640]")))
    folder = Path(args.images or Path(SETTINGS["datasets_dir"]) / "shapes" / "images" / "val")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})[: args.n]
    if not files:
        sys.exit(f"export_parity: no images in '{folder}'; pass --images DIR")
    batch = int(meta.get("batch", 1))
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes] if args.sizes else [(batch, *imgsz)]
    print(f"{exported.name} vs {Path(args.model).name} (pst_topk={k}) on {len(files)} images from {folder}")
    for r in compare_outputs(args.model, exported, files, sizes, pst_topk=k):
        print(f"  {r['batch']}x{r['h']}x{r['w']}: max abs diff box {r['box']:.2e} "
              f"(box values up to {r['box_max']:.0f}), cls {r['cls']:.2e}")
    if args.data:
        dynamic = str(ast.literal_eval(str(meta.get("args", "{}"))).get("dynamic", False)) == "True"
        size = args.imgsz or max(imgsz)
        m_pt = YOLO(args.model).val(data=args.data, imgsz=size, batch=32, pst_topk=k, rect=dynamic, plots=False)
        m_ex = YOLO(str(exported)).val(data=args.data, imgsz=size, batch=32, plots=False)
        print(f"  mAP50-95 PyTorch {m_pt.box.map:.5f} export {m_ex.box.map:.5f} "
              f"(diff {m_ex.box.map - m_pt.box.map:+.5f}); "
              f"mAP50 PyTorch {m_pt.box.map50:.5f} export {m_ex.box.map50:.5f}")
    return 0


def _metadata(exported: Path) -> dict:
    if exported.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(exported), load_external_data=False).metadata_props}
    import yaml

    meta = exported / "metadata.yaml" if exported.is_dir() else exported.with_name("metadata.yaml")
    return {k: str(v) for k, v in (yaml.safe_load(meta.read_text()) or {}).items()} if meta.is_file() else {}


if __name__ == "__main__":
    sys.exit(main())
