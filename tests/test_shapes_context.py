"""The offline ``shapes-context`` set: marks that look alike, classed by the kind of the large shape they lie in.

What is checked is what the set is for: labels sit on the drawn marks, each class is the kind of the enclosing shape,
and nothing in a mark's neighbourhood tells the classes apart (only the far-away outline does).
"""

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pst_yolo.data import CONTEXT_NAMES, dataset_yaml, generate_context, load_index
from pst_yolo.data.context import INSET, KINDS, WINDOW, _render
from pst_yolo.utils import resource_path

SMALL = dict(n_train=6, n_val=4, imgsz=128)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    """One small set shared by the read-only tests."""
    return generate_context(tmp_path_factory.mktemp("ctx") / "shapes-context", seed=5, **SMALL)


def all_bytes(root: Path) -> dict:
    """Relative path -> bytes of every file of a generated set."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pixel_boxes(label_file: Path, size: int) -> list[tuple]:
    """``(cls, x0, y0, x1, y1)`` integer pixel edges of the rows of a YOLO label file of a square image."""
    rows = np.array([r.split() for r in label_file.read_text().splitlines()], float).reshape(-1, 5)
    out = []
    for c, cx, cy, w, h in rows:
        x0, y0, x1, y1 = np.round(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * size).astype(int)
        out.append((int(c), int(x0), int(y0), int(x1), int(y1)))
    return out


def near_mark(pixels: np.ndarray, mark: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Which BGR ``pixels`` are nearer to the ``mark`` colour than to the ``fill`` colour."""
    return np.linalg.norm(pixels - mark, axis=-1) < np.linalg.norm(pixels - fill, axis=-1)


def scenes(root: Path, seed: int = 5):
    """Per image: (saved image, its label boxes, the generator's own shapes and marks for it)."""
    imgsz = SMALL["imgsz"]
    for split in ("train", "val"):
        for f in sorted((root / "images" / split).glob("*.jpg")):
            _, shapes, marks = _render(seed, int(f.stem), imgsz)
            yield cv2.imread(str(f)), pixel_boxes(root / "labels" / split / f"{f.stem}.txt", imgsz), shapes, marks


def test_determinism(ds, tmp_path):
    again = generate_context(tmp_path / "again", seed=5, **SMALL)
    assert all_bytes(again) == all_bytes(ds)  # images, labels, COCO json and metadata, byte for byte
    other = generate_context(tmp_path / "other", seed=6, **SMALL)
    assert all_bytes(other)["labels/train/000000000001.txt"] != all_bytes(ds)["labels/train/000000000001.txt"]


def test_layout_classes_and_counts(ds):
    assert [p.name for p in sorted((ds / "images" / "train").iterdir())] == [f"{i:012d}.jpg" for i in range(1, 7)]
    assert [p.name for p in sorted((ds / "images" / "val").iterdir())] == [f"{i:012d}.jpg" for i in range(7, 11)]
    assert CONTEXT_NAMES == ["mark-in-circle", "mark-in-square", "mark-in-triangle"]
    file = resource_path("cfg", "datasets", "shapes-context.yaml")
    assert yaml.safe_load(file.read_text())["names"] == dict(enumerate(CONTEXT_NAMES))
    for img, boxes, shapes, _ in scenes(ds):
        assert img.shape == (128, 128, 3)
        assert 1 <= len(shapes) <= 3 and len({s["kind"] for s in shapes}) == len(shapes)  # different kinds
        assert 1 <= len(boxes) <= 8


def test_labels_sit_on_the_drawn_marks(ds):
    """Each label is the generator's mark box, and the saved pixels show the mark's colour there, not around it."""
    n = 0
    for img, boxes, _, marks in scenes(ds):
        assert boxes == [(m["cls"], *m["box"]) for m in marks]
        for m in marks:
            x0, y0, x1, y1 = m["box"]
            wx0, wy0, wx1, wy1 = m["window"]
            window = img[wy0:wy1, wx0:wx1].astype(float)
            ring = np.ones(window.shape[:2], bool)
            ring[y0 - wy0 - 1 : y1 - wy0 + 1, x0 - wx0 - 1 : x1 - wx0 + 1] = False  # window minus the box (+1 px)
            crop = img[y0:y1, x0:x1].astype(float)
            fill = np.median(window[ring], 0)
            assert near_mark(crop, m["colour"], fill).mean() > 0.5  # a plus sign fills ~84% of its box
            assert near_mark(window[ring], m["colour"], fill).mean() < 0.05  # around the mark: fill only
            n += 1
    assert n >= 20


def test_class_is_the_kind_of_the_enclosing_shape(ds):
    """Point in polygon, re-derived from the outlines: each label's centre lies deep inside exactly one context shape,
    whose kind is the label's class."""
    seen = set()
    for _, boxes, shapes, _ in scenes(ds):
        for c, x0, y0, x1, y1 in boxes:
            centre = ((x0 + x1) / 2, (y0 + y1) / 2)
            depth = [cv2.pointPolygonTest(s["polygon"].astype(np.float32), centre, True) for s in shapes]
            inside = [i for i, d in enumerate(depth) if d > 0]
            assert len(inside) == 1, depth
            host = shapes[inside[0]]
            assert c == host["kind"] and CONTEXT_NAMES[c] == f"mark-in-{KINDS[host['kind']]}"
            assert depth[inside[0]] >= INSET * host["r"] - 1  # at least a third of the radius inwards
            seen.add(c)
    assert seen == {0, 1, 2}


def test_local_window_shows_no_context_boundary(ds):
    """The window of 3x the mark size around each mark lies inside the image and inside its shape's fill: it holds no
    pixel of any outline, of another shape, of the background or of another mark, whatever the class."""
    for _, _, shapes, marks in scenes(ds):
        for m in marks:
            x0, y0, x1, y1 = m["window"]
            assert x1 - x0 >= WINDOW * m["size"] and y1 - y0 >= WINDOW * m["size"]
            assert 0 <= x0 and 0 <= y0 and x1 <= 128 and y1 <= 128
            host = shapes[m["shape"]]
            assert host["mask"][y0:y1, x0:x1].all()  # every window pixel is drawn by the host's fill
            # the shapes are convex: the window's corners inside the outline mean the whole window is inside
            for corner in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
                assert cv2.pointPolygonTest(host["polygon"].astype(np.float32), corner, True) >= 0
            for other in marks:
                if other is not m:
                    ox0, oy0, ox1, oy1 = other["box"]
                    assert ox1 <= x0 or x1 <= ox0 or oy1 <= y0 or y1 <= oy0  # no other mark in the window


def test_local_statistics_do_not_reveal_the_class():
    """A nearest-class-mean classifier on a mark's window (mean and spread of the fill, the mark's colour and size),
    left-one-out over ~500 marks, does no better than chance, while the classes are balanced."""
    feats, classes = [], []
    for index in range(1, 121):
        img, _, marks = _render(0, index, SMALL["imgsz"])
        for m in marks:
            x0, y0, x1, y1 = m["window"]
            bx0, by0, bx1, by1 = m["box"]
            window = img[y0:y1, x0:x1].reshape(-1, 3).astype(float)
            mark = img[by0:by1, bx0:bx1].reshape(-1, 3).astype(float)
            feats.append([*window.mean(0), *window.std(0), *mark.mean(0), bx1 - bx0, by1 - by0])
            classes.append(m["cls"])
    x, y = np.array(feats), np.array(classes)
    x = (x - x.mean(0)) / x.std(0)
    counts = np.bincount(y, minlength=3)
    assert len(y) > 400 and counts.min() / counts.max() > 0.8, counts  # balanced classes
    sums = np.stack([x[y == c].sum(0) for c in range(3)])
    correct = 0
    for xi, yi in zip(x, y):
        means = (sums - np.eye(3)[yi][:, None] * xi) / (counts - np.eye(3)[yi])[:, None]  # leave this mark out
        correct += int(np.argmin(np.linalg.norm(means - xi, axis=1)) == yi)
    assert correct / len(y) < 0.4, correct / len(y)  # chance is 1/3


def test_coco_json_matches_yolo_labels(ds):
    coco = json.loads((ds / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in coco["categories"]] == CONTEXT_NAMES
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [i["file_name"] for i in coco["images"]] == [f"{i:012d}.jpg" for i in range(7, 11)]
    assert all(i["width"] == i["height"] == 128 and i["id"] == int(i["file_name"][:-4]) for i in coco["images"])
    from_json = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["area"] == w * h and a["iscrowd"] == 0
        from_json.setdefault(a["image_id"], []).append((a["category_id"] - 1, x, y, x + w, y + h))
    from_labels = {int(f.stem): pixel_boxes(f, 128) for f in sorted((ds / "labels" / "val").glob("*.txt"))}
    assert from_json == {k: v for k, v in from_labels.items() if v}
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))


def test_named_and_refuses_other_sets(ds, tmp_path):
    entry = load_index()["shapes-context"]
    assert entry["ann"] == "annotations/instances_val.json" and "context" in entry["description"]
    assert dataset_yaml("shapes-context") == resource_path("cfg", "datasets", "shapes-context.yaml")
    assert generate_context(ds, seed=5, **SMALL) == ds  # already there: nothing written
    with pytest.raises(ValueError, match="pass force=True"):
        generate_context(ds, seed=6, **SMALL)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is not a generated shapes-context set"):
        generate_context(tmp_path / "mine", **SMALL)


def test_first_use_is_generated_not_downloaded(tmp_path, monkeypatch, caplog):
    """Ultralytics' check_det_dataset gets the set generated by pst_yolo's data= resolution, with its own two lines."""
    import logging

    import ultralytics.data.utils as du

    from pst_yolo.data import context

    monkeypatch.setattr(du, "DATASETS_DIR", tmp_path)
    monkeypatch.setattr(du, "check_font", lambda *a, **k: None)  # would try to download Arial.ttf
    monkeypatch.setattr(context, "generate_context", functools.partial(generate_context, **SMALL))  # keep it fast
    with caplog.at_level(logging.INFO):
        data = du.check_det_dataset("shapes-context")
    root = tmp_path / "shapes-context"
    assert [r.getMessage() for r in caplog.records if "shapes-context" in r.getMessage()] == [
        f"shapes-context: generating the offline synthetic dataset in {root} (first use; nothing is downloaded)",
        f"shapes-context: dataset ready in {root}",
    ]
    assert "Dataset download" not in caplog.text and "images not found" not in caplog.text
    assert Path(data["path"]) == root and data["names"] == dict(enumerate(CONTEXT_NAMES))
    assert len(list((root / "images" / "val").glob("*.jpg"))) == SMALL["n_val"]


def test_trains_by_bare_name(test_root, tmp_path):
    """data=shapes-context: generated on first use into datasets_dir (512 / 128 images), then trained 1 epoch."""
    from ultralytics import YOLO

    import pst_yolo  # noqa: F401  (registers data=shapes-context)

    model = YOLO("yolo11n.yaml")
    model.train(data="shapes-context", imgsz=64, epochs=1, batch=16, fraction=0.0625, workers=0, plots=False,
                project=str(tmp_path), name="t", verbose=False)
    root = test_root / "datasets" / "shapes-context"
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 512
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 128
    assert (root / "annotations" / "instances_val.json").is_file()
    assert model.names == dict(enumerate(CONTEXT_NAMES))
    assert (tmp_path / "t" / "weights" / "last.pt").is_file()
