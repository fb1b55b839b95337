"""The offline synthetic shapes dataset: determinism, label formats, COCO json, safety and Ultralytics integration."""

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pst_yolo.data import dataset_yaml, load_index, shapes
from pst_yolo.data.shapes import NAMES, generate
from pst_yolo.utils import resource_path

SMALL = dict(n_train=8, n_val=6, imgsz=96, empty_frac=0.25, rect_frac=0.5)


def per_split(frac: float) -> int:
    """How many images of SMALL a per-split fraction selects."""
    return round(frac * SMALL["n_train"]) + round(frac * SMALL["n_val"])


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    """One small dataset shared by the read-only tests."""
    return generate(tmp_path_factory.mktemp("ds") / "shapes", seed=3, **SMALL)


def read_labels(root: Path, split: str) -> dict:
    """``{stem: (N, 5) float array}`` of a split's YOLO labels."""
    files = sorted((root / "labels" / split).glob("*.txt"))
    return {f.stem: np.array([r.split() for r in f.read_text().splitlines()], float).reshape(-1, 5) for f in files}


def label_bytes(root: Path) -> dict:
    """Relative path -> bytes of every label file and the COCO json."""
    files = [*(root / "labels").rglob("*.txt"), root / "annotations" / "instances_val.json"]
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in files}


def test_determinism(tmp_path):
    a = generate(tmp_path / "a", seed=1, **SMALL)
    b = generate(tmp_path / "b", seed=1, **SMALL)
    c = generate(tmp_path / "c", seed=2, **SMALL)
    assert label_bytes(a) == label_bytes(b)
    assert label_bytes(a) != label_bytes(c)
    assert len(label_bytes(a)) == SMALL["n_train"] + SMALL["n_val"] + 1


def test_layout_and_yolo_labels(ds):
    stems = []
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        images = sorted((ds / "images" / split).glob("*.jpg"))
        assert len(images) == n
        labels = read_labels(ds, split)
        assert sorted(labels) == [f.stem for f in images]  # every image has a label file, and nothing else
        for lb in labels.values():
            assert np.all(lb[:, 0] == lb[:, 0].astype(int))
            assert np.all((lb[:, 0] >= 0) & (lb[:, 0] < len(NAMES)))
            assert np.all((lb[:, 1:] >= 0) & (lb[:, 1:] <= 1))
            assert np.all(lb[:, 1:3] - lb[:, 3:5] / 2 >= -1e-7) and np.all(lb[:, 1:3] + lb[:, 3:5] / 2 <= 1 + 1e-7)
        stems += [f.stem for f in images]
    # 12-digit numeric stems numbered 1.. across both splits, hence globally unique image ids
    assert stems == [f"{i:012d}" for i in range(1, SMALL["n_train"] + SMALL["n_val"] + 1)]


def test_empty_and_non_square_images(ds):
    counts = [len(lb) for split in ("train", "val") for lb in read_labels(ds, split).values()]
    n = SMALL["n_train"] + SMALL["n_val"]
    assert counts.count(0) == per_split(SMALL["empty_frac"])
    assert max(counts) <= 12 and sum(counts) > n  # the others hold 1-12 shapes
    sizes = [cv2.imread(str(f)).shape[:2] for f in sorted((ds / "images").rglob("*.jpg"))]
    short = round(SMALL["imgsz"] * shapes.RECT_RATIO)
    assert set(sizes) <= {(96, 96), (short, 96), (96, short)}
    assert sizes.count((96, 96)) == n - per_split(SMALL["rect_frac"])


def test_coco_json_matches_yolo_labels(ds):
    coco = json.loads((ds / "annotations" / "instances_val.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(NAMES) + 1))
    assert [c["name"] for c in coco["categories"]] == NAMES
    labels = read_labels(ds, "val")
    assert [im["id"] for im in coco["images"]] == [int(s) for s in labels]
    anns = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    assert len(coco["annotations"]) == sum(len(lb) for lb in labels.values())
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for im in coco["images"]:
        stem = Path(im["file_name"]).stem
        assert im["id"] == int(stem)
        h, w = cv2.imread(str(ds / "images" / "val" / im["file_name"])).shape[:2]
        assert (im["width"], im["height"]) == (w, h)
        lb = labels[stem]
        ours = np.array([[a["category_id"] - 1, *a["bbox"]] for a in anns[im["id"]]]).reshape(-1, 5)
        yolo = np.c_[lb[:, 0], (lb[:, 1] - lb[:, 3] / 2) * w, (lb[:, 2] - lb[:, 4] / 2) * h, lb[:, 3] * w, lb[:, 4] * h]
        assert np.array_equal(ours[:, 0], yolo[:, 0])
        assert np.allclose(ours[:, 1:], yolo[:, 1:], rtol=0, atol=1e-3)
        for a in anns[im["id"]]:
            assert a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0
            assert min(a["bbox"][2:]) >= 2 and a["bbox"][0] + a["bbox"][2] <= w and a["bbox"][1] + a["bbox"][3] <= h


def test_pycocotools_loads(ds):
    from pycocotools.coco import COCO

    api = COCO(str(ds / "annotations" / "instances_val.json"))
    assert sorted(api.getCatIds()) == list(range(1, len(NAMES) + 1))
    assert len(api.getImgIds()) == SMALL["n_val"]


def test_boxes_are_tight():
    """A lone shape on a black canvas: its box is exactly the bounding rectangle of the drawn pixels."""
    seen = set()
    for i in range(60):
        img = np.zeros((64, 80, 3), np.uint8)
        boxes = shapes._draw_objects(img, np.random.default_rng(i), 1)
        assert len(boxes) == 1
        cls, x0, y0, x1, y1 = boxes[0]
        x, y, w, h = cv2.boundingRect(img.any(2).astype(np.uint8))
        assert (x0, y0, x1, y1) == (x, y, x + w, y + h)
        assert w >= 2 and h >= 2
        seen.add(cls)
    assert seen == set(range(len(NAMES)))


def test_idempotent(tmp_path):
    root = generate(tmp_path / "shapes", **SMALL)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert generate(tmp_path / "shapes", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]  # no temporary siblings left behind


def test_mismatch_and_force(tmp_path):
    root = generate(tmp_path / "shapes", seed=0, **SMALL)
    with pytest.raises(ValueError, match="force=True"):
        generate(root, seed=1, **SMALL)
    old = label_bytes(root)
    assert generate(root, seed=1, force=True, **SMALL) == root
    assert label_bytes(root) != old
    assert json.loads((root / shapes.META).read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_refuses_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(FileExistsError):
            generate(foreign, force=force, **SMALL)
    assert (foreign / "keep.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()  # an empty directory is fine to fill
    assert (generate(tmp_path / "empty", **SMALL) / shapes.META).is_file()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_render", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "shapes", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_dataset_index():
    index = load_index()
    assert {"coco", "coco8", "shapes"} <= set(index)
    assert index["shapes"]["ann"] == "annotations/instances_val.json"
    assert dataset_yaml("shapes") == resource_path("cfg", "datasets", "shapes.yaml")
    assert dataset_yaml("coco8") == "coco8.yaml"
    with pytest.raises(KeyError, match="shapes"):
        dataset_yaml("nope")
    with pytest.raises(FileNotFoundError):
        resource_path("cfg", "no_such_file.yaml")


def test_check_det_dataset_generates_offline(tmp_path, monkeypatch):
    """Ultralytics' own check_det_dataset gets the dataset generated offline (by pst_yolo's data= resolution)."""
    import ultralytics.data.utils as du

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setattr(du, "DATASETS_DIR", tmp_path)
    monkeypatch.setattr(du, "check_font", lambda *a, **k: None)  # would try to download Arial.ttf
    monkeypatch.setattr(shapes, "generate", functools.partial(generate, n_train=4, n_val=4, imgsz=64))  # keep it fast
    file = dataset_yaml("shapes")
    data = du.check_det_dataset(str(file))
    root = tmp_path / "shapes"
    assert Path(data["path"]) == root
    assert data["nc"] == len(NAMES) and list(data["names"].values()) == NAMES
    assert Path(data["train"]) == root / "images" / "train" and Path(data["val"]) == root / "images" / "val"
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 4
    assert (root / yaml.safe_load(file.read_text())["coco_json"]).is_file()
    assert du.check_det_dataset(str(file))["path"] == data["path"]  # second call: dataset found, nothing to do
