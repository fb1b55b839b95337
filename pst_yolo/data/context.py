"""Offline synthetic detection set ``shapes-context``: the class of an object is decided only by coarser-scale context.

Every image holds 1-3 large, non-overlapping *context shapes* of different kinds (a circle, square or triangle, the
outlines of :mod:`pst_yolo.data.shapes`, possibly clipped by the image border) on the shapes background, and 2-8 small
*marks* inside them. Each kind is scaled to the area of a circle whose diameter is 40-90% of the image side (up to
90% / sqrt(n) when n shapes share the image), so that every kind leaves about the same room for marks and the classes
come out balanced. Only the marks are labelled, and a mark's class is the kind of the shape it lies in (:data:`NAMES`:
``mark-in-circle``, ``mark-in-square``, ``mark-in-triangle``). Context shapes are not labelled.

Why the class needs context: nothing near a mark depends on its class.

- Every mark looks the same: an upright plus sign of 6-12 px (at ``imgsz`` 256; scaled with the image, at least 5 px)
  in the most contrasting of four random colours, whatever the class.
- Every context shape is filled from one distribution, whatever its kind: a random colour (the most contrasting of four
  with the background under the shape's equal-area circle, the same circle for every kind) with a faint copy of the
  shapes background as texture. Fill colour and texture never reveal the kind.
- Each mark's centre lies at least a third of its shape's (equal-area) radius inside the outline, and the square
  window of 3x the mark's size around it lies wholly in the fill of that shape and inside the image, so a local view of
  a mark (its pixels and its neighbourhood) holds the mark and fill only. No other mark reaches into that window.

Only the outline of the enclosing shape, tens of pixels away (a coarser level of a feature pyramid), decides the class:
a detector that fuses fine features with coarse context (e.g. PST) can in principle classify the marks, one that sees
only the local neighbourhood cannot tell the classes apart.

The layout is that of ``shapes`` (:mod:`pst_yolo.data.shapes`): square images, YOLO labels of each mark's tight pixel
box, ``annotations/instances_val.json`` with the val labels as COCO instances (``category_id = cls + 1``), the
metadata file written last, and the atomic write of every generated set. Same parameters give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .shapes import (
    JPEG_QUALITY,
    META,
    _background,
    _coco_boxes,
    _generate_atomically,
    _rasterize,
    _unit_outline,
    _write_coco,
    _yolo_rows,
)
from .shapes import NAMES as SHAPE_NAMES
from .tasks import _noise, _polygon

__all__ = ["KINDS", "NAMES", "generate_context"]

VERSION = 1  # bump whenever the drawing or the label format changes
KINDS = ("circle", "square", "triangle")  # context shape kinds, drawn with the shapes outlines of these names
NAMES = [f"mark-in-{kind}" for kind in KINDS]  # class i = a mark inside a context shape of kind KINDS[i]
SIZE_FRAC = (0.4, 0.9)  # diameter of a context shape's equal-area circle, as a fraction of the image side
MARK_PX = (6.0, 12.0)  # mark size range in pixels at imgsz 256 (scaled with the image side, at least MIN_MARK)
MIN_MARK = 5.0  # smallest mark size in pixels
INSET = 1 / 3  # a mark's centre lies at least this fraction of its shape's radius inside the outline
WINDOW = 3.0  # the square window of WINDOW x the mark's size around a mark lies wholly in its shape's fill
TEXTURE = 0.3  # contrast of the background-like texture inside a context shape's fill
# circumradius / radius of the circle of equal area, per kind (unit outlines: 48-gon, square, triangle), so that all
# kinds cover the same area and leave comparable room for marks
EQUAL_AREA = tuple(float(np.sqrt(np.pi / a)) for a in (24 * np.sin(2 * np.pi / 48), 2.0, 3 * 3**0.5 / 4))


def _context_shapes(img: np.ndarray, rng: np.random.Generator, n: int) -> list[dict]:
    """Draw up to ``n`` non-overlapping context shapes of different kinds onto ``img`` in place, largest first.

    Returns:
        Per shape: ``kind`` (index into :data:`KINDS`), ``r`` (radius of its equal-area circle in pixels),
        ``polygon`` ((N, 2) outline in image coordinates, pixel edges on integers), ``mask`` (uint8 (H, W) 0/1 of its
        pixels in the image) and ``colour``.
    """
    h, w = img.shape[:2]
    taken = np.zeros((h, w), np.uint8)
    disc = _unit_outline(SHAPE_NAMES.index("circle"), rng)
    out = []
    lo, hi = SIZE_FRAC[0], max(SIZE_FRAC[0], SIZE_FRAC[1] / n**0.5)  # n shapes share the image: smaller when more
    sizes = np.sort(rng.uniform(lo, hi, n) * min(h, w))[::-1]
    for kind, size in zip(rng.permutation(len(KINDS))[:n].tolist(), sizes):  # different kinds in one image
        r = size / 2 * EQUAL_AREA[kind]  # circumradius of the outline whose area is that of a circle of diameter size
        for _ in range(50):
            # centre keeps at least 60% of the radius inside the image, so a clipped outline stays recognisable
            cx, cy = rng.uniform(0.6 * r, w - 0.6 * r), rng.uniform(0.6 * r, h - 0.6 * r)
            theta = rng.uniform(0, 2 * np.pi)
            unit, polygon = _polygon(SHAPE_NAMES.index(KINDS[kind]), cx, cy, r, theta, rng)
            mask = _rasterize(unit, cx, cy, r, theta, (h, w))
            if not np.any(taken & mask):
                break
        else:
            continue
        # the fill: of four random colours the one most unlike the background under the equal-area circle (the same
        # region for every kind), plus a faint background-like texture; neither depends on the kind
        under = img[_rasterize(disc, cx, cy, size / 2, 0.0, (h, w)).view(bool)].mean(0)
        cand = rng.integers(0, 256, (4, 3))
        colour = cand[np.argmax(np.linalg.norm(cand - under, axis=1))]
        texture = _background(rng, h, w).astype(np.float32)
        m = mask.view(bool)
        img[m] = np.clip(colour + TEXTURE * (texture[m] - texture.mean((0, 1))), 0, 255).astype(np.uint8)
        taken |= cv2.dilate(mask, np.ones((5, 5), np.uint8))  # a 2 px gap keeps each outline whole
        out.append({"kind": kind, "r": size / 2, "polygon": polygon, "mask": mask, "colour": colour})
    return out


def _marks(img: np.ndarray, rng: np.random.Generator, shapes: list[dict], n: int) -> list[dict]:
    """Draw up to ``n`` marks into the context ``shapes`` of ``img`` in place (see the module docstring).

    Each mark picks its shape uniformly among those with room left, then a pixel uniformly among that shape's allowed
    centres: at least ``INSET`` radii inside the outline, far enough from the outline and the image border for its
    window, and with no window overlapping another mark's window.

    Returns:
        Per mark: ``cls`` (the kind of its shape), ``shape`` (index into ``shapes``), ``centre`` (x, y), ``size``,
        ``box`` ((x0, y0, x1, y1) integer pixel edges of its pixels, x1 and y1 exclusive), ``window`` (the same for
        its window) and ``colour``.
    """
    h, w = img.shape[:2]
    lo, hi = (max(MIN_MARK, v * min(h, w) / 256) for v in MARK_PX)
    plus = _unit_outline(SHAPE_NAMES.index("cross"), rng)
    # distance of each pixel to the nearest pixel outside its shape (the image border counts as outside)
    room = [cv2.distanceTransform(np.pad(s["mask"], 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1] for s in shapes]
    free = np.ones((h, w), bool)  # centres whose window would not overlap the window of a mark already drawn
    out = []
    for _ in range(n):
        size = rng.uniform(lo, hi)
        half = WINDOW * size / 2
        # the window, rounded outwards to whole pixels, reaches (half + 1) * sqrt(2) from the centre; +1 px for the
        # outline lying anywhere between the last pixel centre inside and the first outside
        need = (half + 1) * 2**0.5 + 1
        allowed = [np.flatnonzero((d >= max(INSET * s["r"], need)) & free) for d, s in zip(room, shapes)]
        hosts = [i for i, a in enumerate(allowed) if a.size]
        if not hosts:
            break
        i = hosts[int(rng.integers(len(hosts)))]
        y, x = divmod(int(allowed[i][int(rng.integers(allowed[i].size))]), w)
        cx, cy = x + 0.5, y + 0.5  # the pixel's centre, pixel edges on integers
        mask = _rasterize(plus, cx, cy, size / 2, 0.0, (h, w))
        bx, by, bw, bh = cv2.boundingRect(mask)
        x0, y0, x1, y1 = (int(f(v)) for f, v in zip((np.floor, np.floor, np.ceil, np.ceil),
                                                      (cx - half, cy - half, cx + half, cy + half)))
        cand = rng.integers(0, 256, (4, 3))  # the colour most unlike the fill around it
        colour = cand[np.argmax(np.linalg.norm(cand - img[y0:y1, x0:x1].mean((0, 1)), axis=1))]
        img[mask.view(bool)] = colour
        block = int(np.ceil(WINDOW * (size + hi) / 2)) + 1  # centres whose window could touch this one's
        free[max(0, y - block) : y + block + 1, max(0, x - block) : x + block + 1] = False
        out.append({"cls": shapes[i]["kind"], "shape": i, "centre": (cx, cy), "size": size,
                    "box": (bx, by, bx + bw, by + bh), "window": (x0, y0, x1, y1), "colour": colour})
    return out


def _render(seed: int, index: int, imgsz: int) -> tuple[np.ndarray, list[dict], list[dict]]:
    """Render image ``index`` from its own generator seeded by (seed, index), independent of generation order.

    Returns:
        ``(image, shapes, marks)``: the noisy uint8 BGR image and the geometry of :func:`_context_shapes` and
        :func:`_marks`.
    """
    rng = np.random.default_rng([seed, index])
    img = _background(rng, imgsz, imgsz)
    shapes = _context_shapes(img, rng, int(rng.integers(1, 4)))
    marks = _marks(img, rng, shapes, int(rng.integers(2, 9)))
    return _noise(img, rng), shapes, marks


def _write(out: Path, params: dict) -> None:
    """Write the complete set described by ``params`` into the (new) directory ``out``."""
    seed, imgsz = params["seed"], params["imgsz"]
    images, annotations = [], []
    for split, first, n in (("train", 1, params["n_train"]), ("val", params["n_train"] + 1, params["n_val"])):
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for index in range(first, first + n):
            img, _, marks = _render(seed, index, imgsz)
            boxes = [(m["cls"], *m["box"]) for m in marks]
            stem = f"{index:012d}"
            cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            (out / "labels" / split / f"{stem}.txt").write_bytes(_yolo_rows(boxes, imgsz, imgsz))
            if split == "val":
                images.append({"id": index, "file_name": f"{stem}.jpg", "width": imgsz, "height": imgsz})
                annotations += _coco_boxes(index, boxes, len(annotations))
    _write_coco(out, f"pst_yolo synthetic shapes-context, val split, {params}", images, annotations, NAMES, "mark")
    (out / META).write_bytes(json.dumps(params, indent=2, sort_keys=True).encode())  # last: marks it complete


def generate_context(
    root: str | Path, seed: int = 0, n_train: int = 512, n_val: int = 128, imgsz: int = 256, force: bool = False
) -> Path:
    """Generate the ``shapes-context`` set at ``root`` unless it is already there (see the module docstring).

    Args:
        root (str | Path): Dataset root directory; it must not exist, be empty, or hold a set made by this function.
        seed (int): Seed of all randomness.
        n_train (int): Number of training images.
        n_val (int): Number of validation images.
        imgsz (int): Side of the (square) images in pixels; below ~128 small triangles have no room for a mark.
        force (bool): Replace a set at ``root`` that was generated with other parameters.

    Returns:
        (Path): The absolute dataset root.

    Raises:
        ValueError: On invalid parameters, or if ``root`` holds a set made with other parameters and ``force`` is
            False.
        FileExistsError: If ``root`` is a non-empty directory that is not a generated set.

    Examples:
        >>> import tempfile
        >>> root = generate_context(tempfile.mkdtemp() + "/ctx", n_train=2, n_val=1, imgsz=128)
        >>> sorted(p.name for p in root.iterdir())
        ['.pst_manifest.json', '.shapes_meta.json', 'annotations', 'images', 'labels']
    """
    root = Path(root).expanduser().resolve()
    params = {"version": VERSION, "set": "shapes-context", "seed": int(seed), "n_train": int(n_train),
              "n_val": int(n_val), "imgsz": int(imgsz)}
    if params["n_train"] < 1 or params["n_val"] < 1 or params["imgsz"] < 64:
        raise ValueError(f"shapes-context needs n_train >= 1, n_val >= 1 and imgsz >= 64, got {params}")
    return _generate_atomically(root, params, _write, "shapes-context set", force, made="a set")
