"""Offline synthetic sets for the other Ultralytics tasks, drawn with the ``shapes`` generator's shapes and backgrounds.

One generator, four label formats (each exactly what Ultralytics' loaders read; see ``cfg/datasets/shapes-*.yaml``):

- ``segment`` (``shapes-seg``): ``cls x1 y1 x2 y2 ...`` with each shape's exact polygon (the polygon that is filled to
  draw it; a ring is one keyhole polygon: outer circle, a zero-width cut, the hole traced backwards), plus
  ``annotations/instances_val.json`` with the same polygons as COCO ``segmentation`` for ``segm`` scoring;
- ``pose`` (``shapes-pose``): ``cls cx cy w h`` then 5 keypoints ``x y v``: the shape's topmost, rightmost, bottommost
  and leftmost outline points and its centre; ``v`` = 2 where the point lies on the drawn shape, 1 where it is
  labelled but not drawn (the centre of a ring is in its hole). ``kpt_shape: [5, 3]``, ``flip_idx: [0, 3, 2, 1, 4]``;
- ``obb`` (``shapes-obb``): ``cls x1 y1 x2 y2 x3 y3 x4 y4``, the tightest rotated rectangle of the polygon (axis-aligned
  for circles and rings, whose rotation cannot be seen);
- ``classify`` (``shapes-cls``): an image folder ``{train,val}/<class name>/*.jpg``, one shape per image.

Unlike ``shapes`` (occlusion, clipping at the border), objects here never overlap and lie wholly inside the image, so
every label is the exact geometry that was drawn. Same parameters give byte-identical labels; the layout and the
atomic write follow :mod:`pst_yolo.data.shapes`, whose ``shapes`` set itself is not changed.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from .shapes import JPEG_QUALITY, META, NAMES, _background, _generate_atomically, _rasterize, _unit_outline

__all__ = ["TASKS", "generate_task"]

VERSION = 1  # bump whenever the drawing or a label format changes
TASKS = {"segment": "shapes-seg", "pose": "shapes-pose", "obb": "shapes-obb", "classify": "shapes-cls"}
KPT_NAMES = ("top", "right", "bottom", "left", "centre")
FLIP_IDX = (0, 3, 2, 1, 4)  # a horizontal flip swaps right and left
MIN_SIZE = 8.0  # smallest shape diameter in pixels (labels stay meaningful at small imgsz)
MAX_FRAC = 0.6  # largest shape diameter as a fraction of the shorter image side


def _polygon(cls: int, cx: float, cy: float, r: float, theta: float, rng: np.random.Generator) -> tuple:
    """The unit outline of ``cls`` placed in image coordinates (pixel edges on integers), as drawn by shapes.

    Returns:
        ``(polys, label)``: the polygons to fill (the first filled, further ones holes) and the single label polygon
        (for a ring: the keyhole polygon).
    """
    c, s = np.cos(theta), np.sin(theta)
    affine = np.array([[c, -s], [s, c]]).T * r
    unit = _unit_outline(cls, rng)
    polys = [p @ affine + (cx, cy) for p in unit]
    if len(polys) == 1:
        return unit, polys[0]
    outer, inner = polys
    keyhole = np.concatenate([outer, outer[:1], inner[:1], inner[:0:-1], inner[:1]])  # hole traced backwards
    return unit, keyhole


def _objects(img: np.ndarray, rng: np.random.Generator, n: int, sizes: tuple, cls: int | None = None,
             margin: float = 1.42) -> list[dict]:
    """Draw up to ``n`` non-overlapping shapes (class ``cls`` if given) wholly inside ``img``; return their geometry.

    Centres keep ``margin`` radii (+1 px) from the border: with the default (above sqrt(2)) any bounding rectangle of
    a shape, in any orientation, stays inside the image too (it lies in the square around the shape's unit circle).
    """
    h, w = img.shape[:2]
    taken = np.zeros((h, w), np.uint8)
    out = []
    for size in np.sort(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]), n)))[::-1]:
        c, r = int(rng.integers(len(NAMES))) if cls is None else cls, size / 2
        for _ in range(10):
            edge = margin * r + 1
            cx, cy, theta = rng.uniform(edge, w - edge), rng.uniform(edge, h - edge), rng.uniform(0, 2 * np.pi)
            unit, label = _polygon(c, cx, cy, r, theta, rng)
            mask = _rasterize(unit, cx, cy, r, theta, (h, w))
            if cv2.countNonZero(mask) and not np.any(cv2.dilate(taken, np.ones((3, 3), np.uint8)) & mask):
                break
        else:
            continue
        m = mask.view(bool)
        cand = rng.integers(0, 256, (4, 3))  # the colour most unlike what it covers, as in shapes
        img[m] = cand[np.argmax(np.linalg.norm(cand - img[m].mean(0), axis=1))]
        taken |= mask
        out.append({"cls": c, "centre": (cx, cy), "polygon": label, "mask": mask,
                    "round": NAMES[c] in ("circle", "ring")})
    return out


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = (rng.random(img.shape, dtype=np.float32) - 0.5) * float(rng.uniform(0, 40))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _obb(obj: dict) -> np.ndarray:
    """(4, 2) corners of the tightest rotated rectangle (axis-aligned for circles and rings)."""
    p = obj["polygon"].astype(np.float32)
    if obj["round"]:
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return cv2.boxPoints(cv2.minAreaRect(p)).astype(np.float64)


def _keypoints(obj: dict) -> np.ndarray:
    """(5, 3) keypoints ``x y v``: outline extremes (top, right, bottom, left) and the centre."""
    p, (cx, cy) = obj["polygon"], obj["centre"]
    pts = [p[p[:, 1].argmin()], p[p[:, 0].argmax()], p[p[:, 1].argmax()], p[p[:, 0].argmin()], np.array([cx, cy])]
    h, w = obj["mask"].shape
    v = [2.0] * 4 + [2.0 if obj["mask"][min(int(cy), h - 1), min(int(cx), w - 1)] else 1.0]
    return np.concatenate([np.array(pts), np.array(v)[:, None]], 1)


def _label(task: str, obj: dict, w: int, h: int) -> str:
    scale = np.array([w, h], np.float64)
    if task == "segment":
        xy = obj["polygon"] / scale
    elif task == "obb":
        xy = _obb(obj) / scale
    else:  # pose
        p = obj["polygon"]
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        kpt = _keypoints(obj)
        kpt[:, :2] /= scale
        values = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
        box = [f"{v:.8f}" for v in values[:4]]
        kpts = [f"{x:.8f} {y:.8f} {int(v)}" for x, y, v in kpt]
        return " ".join([str(obj["cls"]), *box, *kpts])
    return " ".join([str(obj["cls"])] + [f"{v:.8f}" for v in xy.ravel()])


def _write(out: Path, params: dict, task: str) -> None:
    seed, imgsz = params["seed"], params["imgsz"]
    coco = {"images": [], "annotations": []}
    index = 0
    for split, n in (("train", params["n_train"]), ("val", params["n_val"])):
        for _ in range(n):
            index += 1
            rng = np.random.default_rng([seed, index])
            img = _background(rng, imgsz, imgsz)
            stem = f"{index:012d}"
            if task == "classify":  # one shape, 30-90% of the image; classes in turn so every split has all of them
                objs = []
                while not objs:
                    objs = _objects(img, rng, 1, (0.3 * imgsz, 0.9 * imgsz), index % len(NAMES), 1.0)
                folder = out / split / NAMES[objs[0]["cls"]]
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{stem}.jpg"), _noise(img, rng), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                continue
            objs = _objects(img, rng, int(rng.integers(1, 9)), (MIN_SIZE, MAX_FRAC * imgsz))
            for sub in ("images", "labels"):
                (out / sub / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), _noise(img, rng),
                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            rows = "".join(_label(task, o, imgsz, imgsz) + "\n" for o in objs)
            (out / "labels" / split / f"{stem}.txt").write_bytes(rows.encode())
            if task == "segment" and split == "val":
                coco["images"].append({"id": index, "file_name": f"{stem}.jpg", "width": imgsz, "height": imgsz})
                for o in objs:
                    (x0, y0), (x1, y1) = o["polygon"].min(0), o["polygon"].max(0)
                    coco["annotations"].append({
                        "id": len(coco["annotations"]) + 1, "image_id": index, "category_id": o["cls"] + 1,
                        "segmentation": [[round(float(v), 3) for v in o["polygon"].ravel()]],
                        "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                        "area": int(cv2.countNonZero(o["mask"])), "iscrowd": 0,
                    })
    if task == "segment":
        coco.update(info={"description": f"pst_yolo synthetic shapes-seg, val split, {params}"}, licenses=[],
                    categories=[{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(NAMES)])
        (out / "annotations").mkdir()
        (out / "annotations" / "instances_val.json").write_bytes(json.dumps(coco).encode())
    (out / META).write_bytes(json.dumps(params, indent=2, sort_keys=True).encode())  # last: marks it complete


def generate_task(
    root: str | Path, task: str, seed: int = 0, n_train: int = 256, n_val: int = 64, imgsz: int = 160,
    force: bool = False,
) -> Path:
    """Generate the offline set for ``task`` at ``root`` unless it is already there (see the module docstring).

    Args:
        root: Dataset root directory; it must not exist, be empty, or hold a set made by this function.
        task: One of :data:`TASKS` (``segment``, ``pose``, ``obb``, ``classify``).
        seed: Seed of all randomness.
        n_train: Number of training images.
        n_val: Number of validation images.
        imgsz: Side of the (square) images in pixels.
        force: Replace a set at ``root`` that was generated with other parameters.

    Returns:
        The absolute dataset root.

    Raises:
        ValueError: On an unknown task or invalid parameters, or if ``root`` holds a set made with other parameters
            and ``force`` is False.
        FileExistsError: If ``root`` is a non-empty directory that is not a generated set.

    Examples:
        >>> import tempfile
        >>> root = generate_task(tempfile.mkdtemp() + "/seg", "segment", n_train=2, n_val=1, imgsz=64)
        >>> sorted(p.name for p in root.iterdir())
        ['.pst_manifest.json', '.shapes_meta.json', 'annotations', 'images', 'labels']
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; offline sets exist for: {', '.join(TASKS)}")
    root = Path(root).expanduser().resolve()
    params = {"version": VERSION, "task": task, "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
              "imgsz": int(imgsz)}
    if params["n_train"] < 1 or params["n_val"] < 1 or params["imgsz"] < 32:
        raise ValueError(f"{TASKS[task]} needs n_train >= 1, n_val >= 1 and imgsz >= 32, got {params}")
    return _generate_atomically(root, params, partial(_write, task=task), f"{TASKS[task]} set", force, made="a set")
