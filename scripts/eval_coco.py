#!/usr/bin/env python
"""COCO mAP (pycocotools) of a PST model at several fine-attention settings, one row per ``pst_topk``.

Examples:
    python scripts/eval_coco.py --model best.pt --data shapes --topk 0 8
    python scripts/eval_coco.py --model best-seg.pt --data shapes-seg --topk 0 8  # boxes and masks
    python scripts/eval_coco.py --model yolo11n-pst.pt --data coco --topk 0 4 8 16 --imgsz 640 --batch 32 --device 0
    python scripts/eval_coco.py --model best.pt --data my.yaml --ann path/to/instances_val.json --topk 0 8 conf=0.001
    python scripts/eval_coco.py --model best.pt --data shapes-context --imgsz 256 --class-agnostic  # boxes vs classes
    python scripts/eval_coco.py --model best.pt --data shapes-context --imgsz 256 --per-class  # which classes

Extra ``key=value`` arguments go to ``YOLO.val`` unchanged (as on the ``yolo`` command line). Results are printed as
a table (COCO's 12 box metrics as fractions, plus Ultralytics' own mAP50-95 of the same detections) and written to
``--out`` as JSON and CSV. A segmentation model (task ``segment``) is scored on its masks too (COCO ``segm``): a second
table, and the columns ``mask_AP``, ``mask_AP50`` ... in the JSON and CSV; its annotations json must have masks (COCO
segmentation polygons or RLE). As the COCO protocol requires, each image's 100 highest-scoring detections across all
categories are scored; each run's folder keeps them as ``coco_results.json`` (COCO ids; masks:
``coco_results_segm.json``), next to Ultralytics' ``predictions.json`` (all of its detections). ``--class-agnostic``
scores the same boxes once more with every class taken as one (pycocotools' ``useCats=0``; a table of its own and the
columns ``agnostic_AP`` ...): where it is far above the class-aware AP, the model finds the objects and gets their
classes wrong. ``--per-class`` adds each class's AP (pycocotools, IoU .50:.95): one more table, ``class_AP`` in the
JSON and ``AP_<class>`` columns in the CSV. The library code is :mod:`pst_yolo.coco`.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="weights (.pt) of a YOLO/PST model")
    parser.add_argument("--data", default="coco", help="dataset name from datasets.yaml (coco, shapes) or data YAML")
    parser.add_argument("--topk", type=int, nargs="+", default=[0, 8], help="pst_topk values, one run each")
    parser.add_argument("--ann", default=None, help="COCO instances json (default: the dataset's, see datasets.yaml)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default=None, help="e.g. cpu, 0, 0,1 (default: Ultralytics' choice)")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="also score the boxes with every class taken as one (localisation without the class)")
    parser.add_argument("--per-class", action="store_true", help="also each class's AP (IoU .50:.95)")
    parser.add_argument("--out", default="coco_eval", help="output path without suffix (.json and .csv written)")
    from pst_yolo.utils import parse_key_values

    args, rest = parser.parse_known_args(argv)
    extra = parse_key_values(parser, rest, "extra YOLO.val arguments")
    return args, extra


def main(argv=None) -> int:
    args, extra = parse_args(argv)
    from pst_yolo.coco import AGNOSTIC_METRICS, MASK_METRICS, evaluate, format_class_table, format_table, save_rows

    if args.device is not None:
        extra["device"] = args.device
    rows = evaluate(args.model, args.data, args.topk, ann=args.ann, imgsz=args.imgsz, batch=args.batch,
                    class_agnostic=args.class_agnostic, per_class=args.per_class, **extra)
    print(f"\nCOCO bbox metrics (pycocotools) of {args.model} on {args.data}, imgsz={args.imgsz}:")
    print(format_table(rows))
    if any(MASK_METRICS[0] in r for r in rows):  # a segmentation model
        print(f"\nCOCO segm (mask) metrics (pycocotools) of {args.model} on {args.data}, imgsz={args.imgsz}:")
        print(format_table(rows, "segm"))
    if any(AGNOSTIC_METRICS[0] in r for r in rows):
        print(f"\nCOCO bbox metrics, class-agnostic (every class as one), of {args.model} on {args.data}, "
              f"imgsz={args.imgsz}:")
        print(format_table(rows, "class-agnostic"))
    if args.per_class:
        print(f"\nCOCO bbox AP (IoU .50:.95) per class of {args.model} on {args.data}, imgsz={args.imgsz}:")
        print(format_class_table(rows))
    json_path, csv_path = save_rows(rows, args.out)
    print(f"saved {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
