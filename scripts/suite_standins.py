#!/usr/bin/env python
"""Local stand-ins for the weights and datasets that Ultralytics' own tests download, built offline.

Usage: ``python scripts/suite_standins.py OUT`` writes ``OUT/weights`` and ``OUT/datasets``;
``scripts/ultralytics_suite.py`` runs it once, in a stock process (pst_yolo not loaded), and copies both folders into
the weights and datasets directories of each of its two runs before pytest starts, so both runs see the same files.

- Weights: untrained checkpoints of Ultralytics' own model YAMLs, under the file names the tests ask for
  (``yolo26n.pt``, ``yolo26n-seg.pt``, ..., ``yolo11n.pt``, ``yolo11n-grayscale.pt``, the ``yolo26s*.pt`` teachers
  of the distillation tests, ``rtdetr-l.pt``), in the checkpoint format of
  Ultralytics' trainer (``model``, ``train_args``, ``date``, ``version``, ...), with the class names and class count of
  the dataset the real model was trained on. They are written in the weights directory and in its
  ``path with spaces`` folder, where the tests' ``MODEL`` lives. Seeded: every build gives the same parameters.
- Datasets: tiny versions of ``coco8``, ``coco8-grayscale``, ``coco8-seg``, ``coco8-pose``, ``dota8``,
  ``cityscapes8``, ``depth8-png`` and ``imagenet10`` in the layout their YAMLs expect, made of the two images shipped
  in ``ultralytics/assets`` (and their mirror images), with hand-placed labels, masks and depth maps; and
  ``solution_assets/boats.jpg`` (a copy of ``bus.jpg``), the one image a kept test fetches.

Untrained weights predict nothing useful: tests that assert detections or accuracy fail, the same way in both runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# file name -> (model YAML, task, dataset YAML whose names the real weights carry, input channels)
WEIGHTS = {
    "yolo26n.pt": ("yolo26n.yaml", "detect", "coco8.yaml", 3),
    "yolo26n-seg.pt": ("yolo26n-seg.yaml", "segment", "coco8-seg.yaml", 3),
    "yolo26n-sem.pt": ("yolo26n-sem.yaml", "semantic", "cityscapes8.yaml", 3),
    "yolo26n-depth.pt": ("yolo26n-depth.yaml", "depth", "depth8.yaml", 3),
    "yolo26n-cls.pt": ("yolo26n-cls.yaml", "classify", "ImageNet.yaml", 3),
    "yolo26n-pose.pt": ("yolo26n-pose.yaml", "pose", "coco8-pose.yaml", 3),
    "yolo26n-obb.pt": ("yolo26n-obb.yaml", "obb", "dota8.yaml", 3),
    "yolo11n.pt": ("yolo11n.yaml", "detect", "coco8.yaml", 3),
    "yolo11n-grayscale.pt": ("yolo11n.yaml", "detect", "coco8-grayscale.yaml", 1),
    # teachers of the distillation tests, and RT-DETR
    "yolo26s.pt": ("yolo26s.yaml", "detect", "coco8.yaml", 3),
    "yolo26s-seg.pt": ("yolo26s-seg.yaml", "segment", "coco8-seg.yaml", 3),
    "yolo26s-pose.pt": ("yolo26s-pose.yaml", "pose", "coco8-pose.yaml", 3),
    "yolo26s-obb.pt": ("yolo26s-obb.yaml", "obb", "dota8.yaml", 3),
    "rtdetr-l.pt": ("rtdetr-l.yaml", "detect", "coco8.yaml", 3),
}
TASK_MODELS = [f for f in WEIGHTS if f.startswith("yolo26n")]  # also in "path with spaces", as the tests expect
MODEL_CLASSES = {"detect": "DetectionModel", "segment": "SegmentationModel", "semantic": "SemanticSegmentationModel",
                 "depth": "DepthModel", "classify": "ClassificationModel", "pose": "PoseModel", "obb": "OBBModel"}
SPACES = "path with spaces"  # tests/__init__.py: MODEL = WEIGHTS_DIR / "path with spaces" / "yolo26n.pt"

# Boxes (class, cx, cy, w, h; normalized) of the two asset images: COCO 0 person, 5 bus, 27 tie
BOXES = {
    "bus.jpg": [(5, 0.50, 0.47, 0.98, 0.50), (0, 0.21, 0.66, 0.25, 0.50), (0, 0.33, 0.64, 0.16, 0.46),
                (0, 0.89, 0.67, 0.20, 0.50)],
    "zidane.jpg": [(0, 0.74, 0.55, 0.42, 0.88), (0, 0.30, 0.71, 0.45, 0.58), (27, 0.58, 0.60, 0.04, 0.22)],
}
IMAGE_SIZE = 160  # longest side of the stand-in images


def dataset_yaml(name: str) -> dict:
    """Ultralytics' own dataset YAML ``name``, as a dict."""
    from ultralytics.utils import ROOT, YAML

    return YAML.load(ROOT / "cfg" / "datasets" / name)


def build_weight(file: Path, yaml_name: str, task: str, data: str, channels: int) -> None:
    """Write an untrained checkpoint of ``yaml_name`` to ``file``, as Ultralytics' trainer saves a final one."""
    from datetime import datetime

    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn import tasks

    names = dataset_yaml(data)["names"]
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    cfg = tasks.yaml_model_load(yaml_name)  # takes the scale from the file name, as YOLO(yaml_name) does
    cfg["nc"] = len(names)
    if task == "pose":
        cfg["kpt_shape"] = dataset_yaml(data)["kpt_shape"]
    torch.manual_seed(0)
    model_class = "RTDETRDetectionModel" if yaml_name.startswith("rtdetr") else MODEL_CLASSES[task]
    model = getattr(tasks, model_class)(cfg, ch=channels, nc=len(names), verbose=False)
    model.names = names
    imgsz = 224 if task == "classify" else 640
    train_args = {**DEFAULT_CFG_DICT, "task": task, "mode": "train", "model": yaml_name, "data": data,
                  "imgsz": imgsz, "epochs": 0}
    model.args = train_args
    ckpt = {"date": datetime(2000, 1, 1).isoformat(), "version": __version__,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
            "epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
            "optimizer": None, "train_args": train_args, "train_metrics": None, "train_results": None}
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, file)


def _images() -> list[tuple[str, Image.Image, list[tuple[int, float, float, float, float]]]]:
    """The asset images (small) and their mirror images, each with its boxes."""
    from ultralytics.utils import ASSETS

    out = []
    for name, boxes in BOXES.items():
        im = Image.open(ASSETS / name).convert("RGB")
        im.thumbnail((IMAGE_SIZE, IMAGE_SIZE))
        stem = Path(name).stem
        out.append((stem, im, boxes))
        out.append((f"{stem}_flip", ImageOps.mirror(im), [(c, 1 - x, y, w, h) for c, x, y, w, h in boxes]))
    return out


def _corners(x: float, y: float, w: float, h: float) -> list[float]:
    """The four corners of a box, clockwise from top-left, as x1 y1 ... x4 y4."""
    return [x - w / 2, y - h / 2, x + w / 2, y - h / 2, x + w / 2, y + h / 2, x - w / 2, y + h / 2]


def _label_line(kind: str, c: int, x: float, y: float, w: float, h: float) -> str:
    """One YOLO label line of a box for a dataset ``kind``."""
    if kind == "segment":  # polygon: the box outline
        values = [c, *_corners(x, y, w, h)]
    elif kind == "pose":  # person boxes only; 17 visible keypoints spread over the box
        values = [0, x, y, w, h]
        for i in range(17):
            values += [x + w * (0.35 * np.cos(i)), y + h * (0.45 * np.sin(i)), 2]
    elif kind == "obb":  # DOTA classes: 0 plane ... 14; corners of the (unrotated) box
        values = [c % 15, *_corners(x, y, w, h)]
    else:
        values = [c, x, y, w, h]
    return " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values)


def build_datasets(root: Path) -> None:
    """Write the stand-in datasets under ``root`` (a datasets directory)."""
    images = _images()
    for name, kind, mode in (("coco8", "detect", "RGB"), ("coco8-grayscale", "detect", "L"),
                             ("coco8-seg", "segment", "RGB"), ("coco8-pose", "pose", "RGB"),
                             ("dota8", "obb", "RGB")):
        for split in ("train", "val"):
            (root / name / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / name / "labels" / split).mkdir(parents=True, exist_ok=True)
            for stem, im, boxes in images:
                im.convert(mode).save(root / name / "images" / split / f"{stem}.jpg", quality=90)
                lines = [_label_line(kind, *b) for b in boxes if kind != "pose" or b[0] == 0]
                (root / name / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    # cityscapes8: PNG masks of raw Cityscapes ids (7 road, 8 sidewalk, 11 building; label_mapping makes them 0 1 2)
    # depth8-png: uint16 PNG depth maps, millimetres (depth_scale 1000); depth grows towards the top of the image
    for stem, im, _ in images:
        w, h = im.size
        rows = np.arange(h)[:, None].repeat(w, 1)
        mask = np.where(rows < h // 2, 11, np.where(np.arange(w)[None, :] < w // 3, 8, 7)).astype(np.uint8)
        depth = (1000 + 9000 * (1 - rows / h)).astype(np.uint16)
        for split in ("train", "val"):
            for name, sub, array in (("cityscapes8", "masks", mask), ("depth8-png", "depth", depth)):
                for folder in ("images", sub):
                    (root / name / folder / split).mkdir(parents=True, exist_ok=True)
                im.save(root / name / "images" / split / f"{stem}.jpg", quality=90)
                Image.fromarray(array).save(root / name / sub / split / f"{stem}.png")
    # imagenet10: train/<wnid>/*.jpg and val/<wnid>/*.jpg, the first ten ImageNet classes
    wnids = list(dataset_yaml("ImageNet.yaml")["map"])[:10]
    for i, wnid in enumerate(wnids):
        for split in ("train", "val"):
            folder = root / "imagenet10" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            stem, im, _ = images[i % len(images)]
            im.rotate(9 * i).resize((64, 64)).save(folder / f"{wnid}_{stem}.jpg", quality=90)


def build(out: Path) -> None:
    """Write ``out/weights`` (with its ``path with spaces`` copies) and ``out/datasets``."""
    import shutil

    weights = out / "weights"
    for file, spec in WEIGHTS.items():
        build_weight(weights / file, *spec)
        if file in TASK_MODELS:  # as Ultralytics' tests/cache_test_assets.py copies them
            (weights / SPACES).mkdir(parents=True, exist_ok=True)
            shutil.copy2(weights / file, weights / SPACES / file)
    build_datasets(out / "datasets")
    # the image the OBB results test fetches (through its solution_assets fixture): a copy of bus.jpg
    from ultralytics.utils import ASSETS

    (weights / "solution_assets").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ASSETS / "bus.jpg", weights / "solution_assets" / "boats.jpg")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    build(Path(sys.argv[1]))
