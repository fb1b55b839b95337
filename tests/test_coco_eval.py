"""COCO evaluation with pycocotools (pst_yolo.coco, scripts/eval_coco.py): id mapping, scoring, agreement."""

import contextlib
import csv
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import load_script  # tests/_cli.py
from ultralytics.data.converter import coco80_to_coco91_class
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.utils import ROOT, YAML, ops

from pst_yolo.coco import (
    COCO_METRICS,
    MASK_METRICS,
    ValRun,
    cap_detections,
    category_ids,
    evaluate,
    find_annotations,
    format_class_table,
    format_table,
    image_ids,
    save_rows,
    score,
    to_coco_results,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_coco.py"

# The 80 categories of COCO 2017's instances json (id: name), ids 1-90 with 10 unused: the reference the mapping of
# Ultralytics' COCO classes must meet.
COCO_CATEGORIES = {int(i): n for i, n in (x.split(":") for x in (
    "1:person,2:bicycle,3:car,4:motorcycle,5:airplane,6:bus,7:train,8:truck,9:boat,10:traffic light,"
    "11:fire hydrant,13:stop sign,14:parking meter,15:bench,16:bird,17:cat,18:dog,19:horse,20:sheep,21:cow,"
    "22:elephant,23:bear,24:zebra,25:giraffe,27:backpack,28:umbrella,31:handbag,32:tie,33:suitcase,34:frisbee,"
    "35:skis,36:snowboard,37:sports ball,38:kite,39:baseball bat,40:baseball glove,41:skateboard,42:surfboard,"
    "43:tennis racket,44:bottle,46:wine glass,47:cup,48:fork,49:knife,50:spoon,51:bowl,52:banana,53:apple,"
    "54:sandwich,55:orange,56:broccoli,57:carrot,58:hot dog,59:pizza,60:donut,61:cake,62:chair,63:couch,"
    "64:potted plant,65:bed,67:dining table,70:toilet,72:tv,73:laptop,74:mouse,75:remote,76:keyboard,"
    "77:cell phone,78:microwave,79:oven,80:toaster,81:sink,82:refrigerator,84:book,85:clock,86:vase,87:scissors,"
    "88:teddy bear,89:hair drier,90:toothbrush"
).split(","))}
SHAPES = {0: "circle", 1: "square", 2: "triangle", 3: "star", 4: "cross", 5: "ring"}


@pytest.fixture(scope="module")
def shapes_json(test_root) -> Path:
    check_det_dataset("shapes")  # generates the dataset on first use
    return test_root / "datasets" / "shapes" / "annotations" / "instances_val.json"


@pytest.fixture(scope="module")
def shapes_seg_json(test_root) -> Path:
    check_det_dataset("shapes-seg")  # generates the dataset on first use
    return test_root / "datasets" / "shapes-seg" / "annotations" / "instances_val.json"


@pytest.fixture(scope="module")
def seg_model(test_root) -> Path:
    """best.pt of yolo11n-seg-pst trained for 1 epoch on 64 shapes-seg images at imgsz 64 (a few seconds): weak, but
    it finds objects with masks."""
    from ultralytics import YOLO

    project = test_root / "runs" / "fixtures"
    YOLO("yolo11n-seg-pst.yaml").train(
        data="shapes-seg", epochs=1, imgsz=64, batch=8, fraction=0.25, workers=0, mosaic=0.0, warmup_epochs=0,
        val=False, plots=False, exist_ok=True, verbose=False, project=str(project), name="seg_model")
    best = project / "seg_model" / "weights" / "best.pt"
    assert best.is_file()
    return best


def make_run(data, names=SHAPES, is_coco=False, **kw) -> ValRun:
    return ValRun(detections=[], im_files=[], names=names, class_map=[i + 1 for i in names], data=data,
                  is_coco=is_coco, save_dir=Path("."), pst_topk=0, **kw)


# ---------------------------------------------------------------------------------------------------- categories
def test_coco_classes_map_to_coco_ids_by_name():
    """Ultralytics' COCO names + class_map (80 -> 91 ids) meet the official json, in any category order."""
    names = YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"]
    class_map = coco80_to_coco91_class()
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_CATEGORIES.items()]
    random.Random(0).shuffle(cats)
    mapping = category_ids(cats, names, class_map)
    assert mapping == {class_map[i]: i_json for i, i_json in zip(range(80), COCO_CATEGORIES)}
    assert all(k == v for k, v in mapping.items())  # Ultralytics' own COCO ids are already right


def test_custom_categories_map_by_name_whatever_their_ids():
    cats = [{"id": 10 * (5 - i), "name": n.upper() if i % 2 else n} for i, n in SHAPES.items()]  # ids 50, 40, ...
    mapping = category_ids(cats, SHAPES, [i + 1 for i in SHAPES])  # Ultralytics: class c -> id c + 1
    assert mapping == {i + 1: 10 * (5 - i) for i in SHAPES}
    assert category_ids([{"id": 7, "name": "traffic_light"}], {0: "Traffic light"}, [1]) == {1: 7}


def test_unnamed_categories_use_ultralytics_ids():
    ids = [i + 1 for i in SHAPES]
    assert category_ids([{"id": i} for i in ids], SHAPES, ids) == {i: i for i in ids}
    with pytest.raises(ValueError, match=r"have no names and lack Ultralytics' category ids \[6\]"):
        category_ids([{"id": i} for i in range(0, 6)], SHAPES, [i + 1 for i in SHAPES])


def test_unmatched_or_ambiguous_names_are_clear_errors():
    cats = [{"id": i + 1, "name": n} for i, n in SHAPES.items() if n != "star"] + [{"id": 99, "name": "pentagram"}]
    with pytest.raises(ValueError, match=r"model classes \['star'\] are not categories of the annotations json"):
        category_ids(cats, SHAPES, [i + 1 for i in SHAPES])
    with pytest.raises(ValueError, match="names two categories 'Ring'"):
        category_ids([{"id": 1, "name": "ring"}, {"id": 2, "name": "Ring"}], {0: "ring"}, [1])


# -------------------------------------------------------------------------------------------------------- images
def test_images_match_by_file_name_then_numeric_stem():
    images = [{"id": 7, "file_name": "val2017/abc.jpg"}, {"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}]
    assert image_ids(images, ["/d/images/abc.jpg", "/d/images/000000000042.jpg"]) == {
        "/d/images/abc.jpg": 7, "/d/images/000000000042.jpg": 42}
    with pytest.raises(ValueError, match=r"1 of 2 validation images are not in the annotations json .*'x.jpg'"):
        image_ids(images, ["/d/abc.jpg", "/d/x.jpg"])
    with pytest.raises(ValueError, match=r"/d/abc.jpg matches 2 images .* equally well \('val2017/abc.jpg', 'train/"):
        image_ids([*images, {"id": 8, "file_name": "train/abc.jpg"}], ["/d/abc.jpg"])
    # the folder the json gives picks the entry
    assert image_ids([*images, {"id": 8, "file_name": "train/abc.jpg"}], ["/d/val2017/abc.jpg"]) == {
        "/d/val2017/abc.jpg": 7}


def test_same_file_name_in_two_folders_is_two_images_or_a_clear_error():
    files = ["/d/images/val/cam1/0001.jpg", "/d/images/val/cam2/0001.jpg"]
    by_folder = [{"id": 5, "file_name": "cam2/0001.jpg"}, {"id": 4, "file_name": "cam1/0001.jpg"}]
    assert image_ids(by_folder, files) == {files[0]: 4, files[1]: 5}
    with pytest.raises(ValueError, match=r"images /d/images/val/cam1/0001.jpg and /d/images/val/cam2/0001.jpg both "
                                         r"match image id 3 \('0001.jpg'\) .* 'cam1/0001.jpg'"):
        image_ids([{"id": 3, "file_name": "0001.jpg"}], files)  # the json cannot tell them apart: never merged
    with pytest.raises(ValueError, match="both match image id 1 "):  # Ultralytics' int(stem) fallback, twice
        image_ids([{"id": 1, "file_name": "other.jpg"}], files)
    # detections find their image by path (im_file); by file name only where that name is unique
    det = {"file_name": "0001.jpg", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    ids = {files[0]: 4, files[1]: 5}
    assert [r["image_id"] for r in to_coco_results([{**det, "im_file": f} for f in files], {1: 1}, ids)] == [4, 5]
    with pytest.raises(ValueError, match="no 'im_file'.* 2 validation images have that name"):
        to_coco_results([det], {1: 1}, ids)


# ----------------------------------------------------------------------------------------------------------- cap
def test_results_keep_the_100_best_detections_per_image_across_categories():
    rng = np.random.default_rng(0)
    scores = rng.permutation(150) / 150 + 0.25  # 150 confident, distinct scores
    dets = [{"im_file": "/d/a.jpg", "file_name": "a.jpg", "category_id": 1 + i % 6, "bbox": [i, i, 5, 5],
             "score": float(sc)} for i, sc in enumerate(scores)]
    dets += [{"im_file": "/d/b.jpg", "file_name": "b.jpg", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.01}] * 3
    results = to_coco_results(dets, {c: 10 + c for c in range(1, 7)}, {"/d/a.jpg": 1, "/d/b.jpg": 2})
    assert len(results) == 103
    first = [r for r in results if r["image_id"] == 1]
    assert len(first) == 100  # per category (25 each) pycocotools' maxDets=100 would have kept all 150
    assert sorted(r["score"] for r in first) == sorted(scores.tolist())[50:]  # the top 100 by score
    assert [r["score"] for r in first] == sorted((r["score"] for r in first), reverse=True)
    assert {r["category_id"] for r in first} == {11, 12, 13, 14, 15, 16}
    assert cap_detections(results, max_dets=2) == [first[0], first[1], *[r for r in results if r["image_id"] == 2][:2]]


def write_gt(path: Path, images, annotations, categories, polygons=False):
    """A COCO instances json (areas w*h, no crowd; with ``polygons`` each box also as its polygon) loaded as
    pycocotools' COCO."""
    from pycocotools.coco import COCO

    anns = [{"id": i, "image_id": img, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, (img, c, b) in enumerate(annotations, 1)]
    for a in anns if polygons else ():
        x0, y0, x1, y1 = a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]
        a["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_cap_lowers_ap_where_an_image_has_over_100_better_detections(tmp_path):
    """One circle, found at score 0.5, below 100 confident false squares: COCO scores 0 where pycocotools' own
    per-category maxDets would score 1."""
    from pycocotools.cocoeval import COCOeval

    gt = write_gt(tmp_path / "gt.json", [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 640}],
                  [(1, 1, [10, 10, 50, 50])], [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}])
    dets = [{"image_id": 1, "category_id": 2, "bbox": [300 + i, 300, 40, 40], "score": 0.9} for i in range(100)]
    dets.append({"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.5})
    with contextlib.redirect_stdout(io.StringIO()):
        uncapped = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        uncapped.evaluate(), uncapped.accumulate(), uncapped.summarize()
    assert uncapped.stats[0] == pytest.approx(1.0)  # what scoring without the cap reported
    metrics = score(gt, dets, [1], [1, 2])
    assert metrics["AP"] == 0 and metrics["AR100"] == 0
    assert len(dets) == 101 and "area" not in dets[0]  # the caller's list is left as it was


# ---------------------------------------------------------------------------------------------------- known AP
HAND_IMAGES = [{"id": 11, "file_name": "img/one.jpg", "width": 100, "height": 100},
               {"id": 12, "file_name": "img/two.jpg", "width": 100, "height": 100}]
HAND_GT = [(11, 7, [10, 10, 20, 20]), (11, 3, [50, 50, 20, 20]), (12, 7, [0, 0, 40, 40]), (12, 7, [50, 50, 40, 40])]
HAND_CATEGORIES = [{"id": 7, "name": "circle"}, {"id": 3, "name": "square"}]
HAND_FILES = "/data/img/one.jpg", "/data/img/two.jpg"
HAND_DETS = [  # as Ultralytics writes them: its category ids (class + 1), the image by file
    {"im_file": HAND_FILES[0], "file_name": "one.jpg", "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
    {"im_file": HAND_FILES[0], "file_name": "one.jpg", "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.95},
    {"im_file": HAND_FILES[1], "file_name": "two.jpg", "category_id": 1, "bbox": [0, 60, 10, 10], "score": 0.85},
    {"im_file": HAND_FILES[1], "file_name": "two.jpg", "category_id": 1, "bbox": [0, 0, 64, 40], "score": 0.8},
]
_circle_ap = [56 / 101] * 3 + [34 / 101] * 7  # per IoU threshold .50:.05:.95
_circle_recall = [2 / 3] * 3 + [1 / 3] * 7
HAND_EXPECTED = {
    "AP": (sum(_circle_ap) / 10 + 1) / 2,  # 0.7010
    "AP50": (56 / 101 + 1) / 2,
    "AP75": (34 / 101 + 1) / 2,
    "APs": 1.0,  # A and B: each found first
    "APm": 3 * (51 / 101) / 10,  # circle only (no medium square): C and D, C found at IoU <= .60 (recall 1/2)
    "APl": -1.0,  # no large object
    "AR1": (1 / 3 + 1) / 2,  # one detection per image and class: the false positive outranks C
    "AR10": (sum(_circle_recall) / 10 + 1) / 2,
    "AR100": (sum(_circle_recall) / 10 + 1) / 2,
    "ARs": 1.0,
    "ARm": 3 * (1 / 2) / 10,
    "ARl": -1.0,
}


def test_constructed_detections_score_the_hand_computed_metrics(tmp_path):
    """Two images, two classes (json ids 7 and 3, matched by name), four boxes; every value computed by hand.

    circle (3 boxes: A small, C and D medium): A found exactly (0.9), a small false positive (0.85), C found with IoU
    0.625 (0.8: a hit at IoU .50/.55/.60 only), D missed. square (B, small): found exactly (0.95).
    COCO's AP averages 101-point interpolated precision over recall .00:.01:1 (below: points counted by hand):
    circle at IoU <= .60: precision 1 up to recall 1/3 (34 points), 2/3 up to 2/3 (33 points): 56/101;
    at IoU >= .65: precision 1 up to recall 1/3: 34/101. square: 1 at every IoU.
    """
    gt = write_gt(tmp_path / "gt.json", HAND_IMAGES, HAND_GT, HAND_CATEGORIES)
    one, two = HAND_FILES
    cats = category_ids(gt.dataset["categories"], {0: "circle", 1: "square"}, [1, 2])
    imgs = image_ids(gt.dataset["images"], [one, two])
    assert cats == {1: 7, 2: 3} and imgs == {one: 11, two: 12}
    metrics = score(gt, to_coco_results(HAND_DETS, cats, imgs), list(imgs.values()), list(cats.values()))
    assert metrics == pytest.approx(HAND_EXPECTED, abs=1e-9)
    assert metrics["AP"] == pytest.approx(0.70099, abs=1e-5)


def test_class_agnostic_score_forgives_the_class_and_nothing_else(tmp_path):
    """The hand-computed detections with circle and square swapped: class-aware AP 0 (every box has the wrong class),
    class-agnostic the same as with the right classes, and computed by hand. The 4 objects as one class, detections
    by score: B hit, A hit, the small false positive, C (IoU 0.625). IoU <= .60: recall 1/4, 2/4, 2/4, 3/4, precision
    (interpolated) 1 up to recall 1/2 (51 of 101 points), 3/4 up to 3/4 (25 points); IoU >= .65: 1 up to 1/2."""
    gt = write_gt(tmp_path / "gt.json", HAND_IMAGES, HAND_GT, HAND_CATEGORIES)
    cats = category_ids(gt.dataset["categories"], {0: "circle", 1: "square"}, [1, 2])
    imgs = image_ids(gt.dataset["images"], list(HAND_FILES))
    right = to_coco_results(HAND_DETS, cats, imgs)
    swapped = to_coco_results([{**d, "category_id": 3 - d["category_id"]} for d in HAND_DETS], cats, imgs)
    ids, cat_list = list(imgs.values()), list(cats.values())
    assert score(gt, swapped, ids, cat_list)["AP"] == 0
    agnostic = score(gt, swapped, ids, cat_list, use_cats=False)
    assert agnostic == score(gt, right, ids, cat_list, use_cats=False)
    assert agnostic["AP50"] == pytest.approx((51 + 25 * 0.75) / 101, abs=1e-9)
    assert agnostic["AP"] == pytest.approx((3 * (51 + 25 * 0.75) + 7 * 51) / 1010, abs=1e-9)
    assert agnostic["AR100"] == pytest.approx((3 * 3 / 4 + 7 * 2 / 4) / 10, abs=1e-9)
    for cat in cat_list:  # one category scored: class-agnostic is class-aware (other objects and boxes stay out)
        assert score(gt, right, ids, [cat], use_cats=False) == score(gt, right, ids, [cat])


def test_per_class_ap_is_each_category_scored_alone(tmp_path):
    """Each category's AP is what pycocotools gives when that category alone is scored, their mean is the AP, and
    the swapped classes score 0 in each; a category without objects is -1 and left out of nothing else."""
    gt = write_gt(tmp_path / "gt.json", HAND_IMAGES, HAND_GT, HAND_CATEGORIES)
    cats = category_ids(gt.dataset["categories"], {0: "circle", 1: "square"}, [1, 2])
    imgs = image_ids(gt.dataset["images"], list(HAND_FILES))
    right = to_coco_results(HAND_DETS, cats, imgs)
    ids, cat_list = list(imgs.values()), list(cats.values())
    metrics = score(gt, right, ids, cat_list, per_class=True)
    by_cat = metrics.pop("class_AP")
    assert metrics == score(gt, right, ids, cat_list)  # the 12 metrics are unchanged
    assert set(by_cat) == set(cat_list) and len(set(by_cat.values())) == 2  # the two classes score differently
    for cat in cat_list:
        assert by_cat[cat] == pytest.approx(score(gt, right, ids, [cat])["AP"], abs=1e-12)
    assert sum(by_cat.values()) / 2 == pytest.approx(metrics["AP"], abs=1e-12)
    swapped = to_coco_results([{**d, "category_id": 3 - d["category_id"]} for d in HAND_DETS], cats, imgs)
    assert score(gt, swapped, ids, cat_list, per_class=True)["class_AP"] == dict.fromkeys(cat_list, 0.0)
    assert score(gt, right, ids, [*cat_list, 99], per_class=True)["class_AP"][99] == -1.0  # no objects
    with pytest.raises(ValueError, match="per_class needs use_cats=True"):
        score(gt, right, ids, cat_list, use_cats=False, per_class=True)


def box_mask_rle(box, h=100, w=100, form="str") -> dict:
    """The filled integer box ``[x, y, w, h]`` as a mask in COCO RLE: ``counts`` a string (as Ultralytics writes it),
    bytes (as pycocotools encodes it) or a list (uncompressed)."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((h, w), dtype=np.uint8, order="F")
    mask[box[1]:box[1] + box[3], box[0]:box[0] + box[2]] = 1
    if form == "list":  # runs of the column-major pixels, starting with background
        flat = mask.ravel(order="F")
        counts = np.diff([0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]).tolist()
        return {"size": [h, w], "counts": [0, *counts] if flat[0] else counts}
    rle = mask_utils.encode(mask)
    return {"size": [h, w], "counts": rle["counts"].decode() if form == "str" else rle["counts"]}


def coco_stats(gt, results: list[dict], iou_type: str) -> dict:
    """pycocotools run directly (no cap, no checks) on a results list: the 12 stats by COCO name."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return dict(zip(COCO_METRICS, ev.stats.tolist()))


def test_constructed_masks_score_the_hand_computed_metrics(tmp_path):
    """The hand-computed case above as masks: objects as polygons, detections as RLE masks of the same filled boxes.
    Pixel IoUs and areas equal the boxes', so segm gives the same hand-computed values, as does COCOeval(iouType=
    'segm') run directly on the results, whatever form the RLE counts come in."""
    gt = write_gt(tmp_path / "gt.json", HAND_IMAGES, HAND_GT, HAND_CATEGORIES, polygons=True)
    cats = category_ids(gt.dataset["categories"], {0: "circle", 1: "square"}, [1, 2])
    imgs = image_ids(gt.dataset["images"], list(HAND_FILES))
    dets = [{**d, "segmentation": box_mask_rle(d["bbox"])} for d in HAND_DETS]
    results = to_coco_results(dets, cats, imgs, iou_type="segm")
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score"} for r in results)  # mask areas count
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)  # a json file can hold them
    metrics = score(gt, results, list(imgs.values()), list(cats.values()), iou_type="segm")
    assert metrics == pytest.approx(HAND_EXPECTED, abs=1e-9)
    assert metrics == pytest.approx(coco_stats(gt, json.loads(json.dumps(results)), "segm"), abs=1e-12)
    for form in ("bytes", "list"):
        other = [{**d, "segmentation": box_mask_rle(d["bbox"], form=form)} for d in HAND_DETS]
        assert to_coco_results(other, cats, imgs, iou_type="segm") == results
    # the boxes of the same detections are scored as before
    assert to_coco_results(dets, cats, imgs) == to_coco_results(HAND_DETS, cats, imgs)
    assert score(gt, to_coco_results(dets, cats, imgs), [11, 12], [7, 3]) == pytest.approx(HAND_EXPECTED, abs=1e-9)


def test_masks_need_masks_on_both_sides(tmp_path):
    gt = write_gt(tmp_path / "gt.json", HAND_IMAGES, HAND_GT, HAND_CATEGORIES)  # boxes only
    imgs = dict(zip(HAND_FILES, (11, 12)))
    with pytest.raises(ValueError, match="segm results need detections with masks"):
        to_coco_results(HAND_DETS, {1: 7, 2: 3}, imgs, iou_type="segm")
    dets = [{**d, "segmentation": box_mask_rle(d["bbox"])} for d in HAND_DETS]
    results = to_coco_results(dets, {1: 7, 2: 3}, imgs, iou_type="segm")
    with pytest.raises(ValueError, match=r"4 of 4 objects .* have no mask \('segmentation'.*--ann FILE"):
        score(gt, results, [11, 12], [7, 3], iou_type="segm")


def test_ground_truth_masks_score_perfect_segm(shapes_seg_json):
    """The oracle: shapes-seg's own polygons (keyhole rings included), turned into RLE, as predictions."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shapes_seg_json))
    img_ids, cat_ids = gt.getImgIds(), gt.getCatIds()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": gt.annToRLE(a),
                "score": 0.9} for a in gt.dataset["annotations"]]
    assert len(perfect) > len(img_ids) and isinstance(perfect[0]["segmentation"]["counts"], bytes)
    metrics = score(gt, perfect, img_ids, cat_ids, iou_type="segm")
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    assert score(gt, [], img_ids, cat_ids, iou_type="segm")["AP"] == 0


# --------------------------------------------------------------------------------------------------- annotations
def test_find_annotations(tmp_path):
    (tmp_path / "annotations").mkdir()
    for name in ("instances_val.json", "instances_val2017.json", "mine.json"):
        (tmp_path / "annotations" / name).write_text("{}")
    root = {"path": tmp_path}
    ann = tmp_path / "annotations"
    assert find_annotations(make_run(root), "x.yaml", ann=ann / "mine.json") == ann / "mine.json"
    assert find_annotations(make_run({**root, "coco_json": "annotations/mine.json"}), "x.yaml") == ann / "mine.json"
    assert find_annotations(make_run(root), "shapes") == ann / "instances_val.json"  # datasets.yaml 'ann'
    assert find_annotations(make_run(root), "/some/where/shapes.yaml") == ann / "instances_val.json"
    assert find_annotations(make_run(root), "coco") == ann / "instances_val2017.json"
    assert find_annotations(make_run(root, is_coco=True), "my_coco.yaml") == ann / "instances_val2017.json"
    with pytest.raises(FileNotFoundError, match="no COCO annotations json is known for data=custom.yaml.*--ann"):
        find_annotations(make_run(root), "custom.yaml")
    with pytest.raises(FileNotFoundError, match=r"nope.json \(--ann\) not found"):
        find_annotations(make_run(root), "shapes", ann=tmp_path / "nope.json")


# -------------------------------------------------------------------------------------------------------- score
def test_score_ground_truth_is_perfect_and_nothing_is_zero(shapes_json):
    from pycocotools.coco import COCO

    gt = COCO(str(shapes_json))
    img_ids, cat_ids = gt.getImgIds(), gt.getCatIds()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt.dataset["annotations"]]
    metrics = score(gt, perfect, img_ids, cat_ids)
    assert list(metrics) == list(COCO_METRICS)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    assert all(v == 0 for k, v in score(gt, [], img_ids, cat_ids).items() if k in ("AP", "AP50", "AR100"))
    # only the evaluated images count: half of the images with all of their boxes still score 1
    half = img_ids[::2]
    assert score(gt, [d for d in perfect if d["image_id"] in half], half, cat_ids)["AP"] == pytest.approx(1.0)


def test_format_and_save(tmp_path):
    rows = [{"pst_topk": k, **{m: 0.1 * k for m in COCO_METRICS}, "ul_mAP50-95": None} for k in (0, 8)]
    table = format_table(rows).splitlines()
    assert table[0].split() == ["pst_topk", *COCO_METRICS, "ul_mAP50-95", "ms_per_image"]
    assert table[2].split()[:2] == ["8", "0.800"] and table[2].split()[-2:] == ["-", "-"]
    json_path, csv_path = save_rows(rows, tmp_path / "out" / "coco")
    assert json.loads(json_path.read_text()) == rows
    with open(csv_path) as f:
        assert [int(r["pst_topk"]) for r in csv.DictReader(f)] == [0, 8]
    rows = [{**r, "class_AP": {"circle": 0.25 * r["pst_topk"], "big square": -1.0}} for r in rows]
    classes = format_class_table(rows).splitlines()
    assert classes[0].split() == ["pst_topk", "circle", "big", "square"] and classes[2].split() == ["8", "2.000", "-"]
    json_path, csv_path = save_rows(rows, tmp_path / "out" / "coco")
    assert json.loads(json_path.read_text()) == rows  # nested in the JSON, a column per class in the CSV
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [(r["AP_circle"], r["AP_big square"]) for r in table] == [("0.0", "-1.0"), ("2.0", "-1.0")]
    assert "class_AP" not in table[0]


# ---------------------------------------------------------------------------------------------------- agreement
class OracleValidator(DetectionValidator):
    """Scores ground truth turned into detections instead of the model's: jittered boxes (``noise`` x box size),
    20% missed, 10% with a wrong class, plus a few false positives, all seeded. The same detections reach
    Ultralytics' metrics and its json (hence pycocotools), so both scores are of identical predictions."""

    noise = 0.0

    def update_metrics(self, preds, batch):
        rng = np.random.default_rng(self.batch_i)
        h, w = batch["img"].shape[2:]
        size = torch.tensor([w, h, w, h], dtype=torch.float32)
        out = []
        for si in range(len(preds)):
            idx = batch["batch_idx"] == si
            cls = batch["cls"][idx].squeeze(-1).float().cpu()
            boxes = ops.xywh2xyxy(batch["bboxes"][idx].float().cpu()) * size
            conf = torch.from_numpy(rng.uniform(0.3, 1.0, len(cls))).float()
            if self.noise:
                wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
                boxes = boxes + torch.from_numpy(rng.normal(0, self.noise, boxes.shape)).float() * wh
                flip = torch.from_numpy(rng.random(len(cls)) < 0.1)
                cls = torch.where(flip, torch.from_numpy(rng.integers(0, self.nc, len(cls))).float(), cls)
                keep = torch.from_numpy(rng.random(len(cls)) > 0.2)
                n_fp = int(rng.integers(0, 4))
                xy = torch.from_numpy(rng.uniform(0, 1, (n_fp, 2))).float() * size[:2]
                fp_wh = torch.from_numpy(rng.uniform(4, w / 2, (n_fp, 2))).float()
                boxes = torch.cat((boxes[keep], torch.cat((xy, xy + fp_wh), 1)))
                conf = torch.cat((conf[keep], torch.from_numpy(rng.uniform(0.01, 0.6, n_fp)).float()))
                cls = torch.cat((cls[keep], torch.from_numpy(rng.integers(0, self.nc, n_fp)).float()))
            boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
            order = conf.argsort(descending=True)  # NMS output is sorted by confidence; matching relies on it
            out.append({"bboxes": boxes[order].to(self.device), "conf": conf[order].to(self.device),
                        "cls": cls[order].to(self.device), "extra": torch.zeros(len(order), 0, device=self.device)})
        super().update_metrics(out, batch)


class NoisyOracleValidator(OracleValidator):
    noise = 0.08


def test_pycocotools_agrees_with_ultralytics_on_perfect_detections(shapes_model, tmp_path):
    """On shapes (rect batches of 256x256 and 256x192 images, letterboxed and scaled back): COCO 1.0, Ultralytics
    0.995 (its interpolation); noisy detections are compared through the script below."""
    (row,) = evaluate(shapes_model, "shapes", topks=(0,), validator=OracleValidator, imgsz=128, batch=32,
                      project=str(tmp_path), plots=False, verbose=False)
    assert row["images"] == 128
    assert row["AP"] == pytest.approx(1.0) and row["AR100"] == pytest.approx(1.0), row
    assert abs(row["AP"] - row["ul_mAP50-95"]) <= 0.015, row


# ------------------------------------------------------------------------------------------- same name, 2 folders
def test_images_that_share_a_name_in_two_folders_are_scored_apart(shapes_model, shapes_json, tmp_path):
    """8 different shapes images as cam1/000000000001.jpg ... and cam2/000000000001.jpg ...: Ultralytics' own
    detections give both the same image id; scored apart, ground-truth detections score AP 1 (merged: far less)."""
    import shutil

    coco = json.loads(shapes_json.read_text())
    src = shapes_json.parents[1]
    boxes = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    with_objects = [img for img in coco["images"] if img["id"] in boxes][:8]
    images, annotations = [], []
    for k, img in enumerate(with_objects):
        cam, name = f"cam{k // 4 + 1}", f"{k % 4 + 1:012d}"
        for kind, suffix in (("images", ".jpg"), ("labels", ".txt")):
            (tmp_path / kind / "val" / cam).mkdir(parents=True, exist_ok=True)
            shutil.copy(src / kind / "val" / Path(img["file_name"]).with_suffix(suffix),
                        tmp_path / kind / "val" / cam / f"{name}{suffix}")
        images.append({**img, "id": 100 + k, "file_name": f"{cam}/{name}.jpg"})
        annotations += [{**a, "image_id": 100 + k} for a in boxes[img["id"]]]
    annotations = [{**a, "id": i} for i, a in enumerate(annotations, 1)]
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    yaml_path = tmp_path / "twocams.yaml"
    yaml_path.write_text(f"path: {tmp_path}\ntrain: images/val\nval: images/val\nnames: {json.dumps(SHAPES)}\n")

    (row,) = evaluate(shapes_model, str(yaml_path), topks=(0,), ann=ann, validator=OracleValidator, imgsz=128,
                      batch=8, project=str(tmp_path / "runs"), plots=False, verbose=False)
    assert row["images"] == 8
    assert row["AP"] == pytest.approx(1.0)
    preds = json.loads((Path(row["save_dir"]) / "predictions.json").read_text())
    assert len({d["image_id"] for d in preds}) == 4 and len({d["im_file"] for d in preds}) == 8  # Ultralytics: 4 ids
    results = json.loads(Path(row["results"]).read_text())
    per_image = {i: sum(r["image_id"] == i for r in results) for i in range(100, 108)}
    assert per_image == {100 + k: len(boxes[img["id"]]) for k, img in enumerate(with_objects)}


# ------------------------------------------------------------------------------------------------------- script
def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the printed table: header first."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["pst_topk"])
    return [line.split() for line in lines[head:] if line.split()[:1] and not line.startswith("saved")]


def rescore(row: dict, use_cats: bool = True, cat_ids: list[int] | None = None) -> dict:
    """The 12 metrics of a row's results json, scored here with pycocotools directly (not through pst_yolo.coco);
    ``use_cats=False``: class-agnostic; ``cat_ids``: those categories only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = json.loads(Path(row["results"]).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(row["ann"])
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.useCats = int(use_cats)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return dict(zip(COCO_METRICS, ev.stats.tolist()))


def test_eval_coco_script_prints_one_row_per_topk(shapes_model, cli_env, tmp_path):
    """The script as a user runs it (another directory, a fresh process) on the trained fixture model: the rows are
    pycocotools' scores of the results json it writes, at most 100 detections per image. (The model is weak,
    AP ~1e-4: agreement with Ultralytics on real scores is tested in the next test.)"""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(shapes_model), "--data", "shapes", "--topk", "0", "8",
         "--imgsz", "96", "--out", str(tmp_path / "res"), f"project={tmp_path}", "plots=False"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    table = table_rows(out.stdout)
    assert table[0] == ["pst_topk", *COCO_METRICS, "ul_mAP50-95", "ms_per_image"]
    assert "faster-coco-eval" not in text  # scored by pycocotools only
    rows = json.loads((tmp_path / "res.json").read_text())
    assert [r["pst_topk"] for r in rows] == [0, 8] and [t[0] for t in table[1:]] == ["0", "8"]
    for r, cells in zip(rows, table[1:]):
        assert r["images"] == 128 and r["ms_per_image"] > 0
        assert cells[1:13] == [f"{r[m]:.3f}" for m in COCO_METRICS]
        assert {m: r[m] for m in COCO_METRICS} == pytest.approx(rescore(r), abs=1e-12)
        results = json.loads(Path(r["results"]).read_text())
        raw = json.loads((Path(r["save_dir"]) / "predictions.json").read_text())
        per_image = np.bincount([d["image_id"] for d in results])
        assert len(results) == r["detections"] and per_image.max() == 100  # the weak model: some images are capped
        assert len(raw) > len(results)  # Ultralytics kept more (max_det=300)
    assert rows[0]["AR100"] != rows[1]["AR100"]  # fine attention changes the detections
    assert (tmp_path / "res.csv").is_file()


def test_eval_coco_script_agrees_with_ultralytics_on_noisy_detections(shapes_model, monkeypatch, capsys, tmp_path):
    """The script's main(), its validations made by NoisyOracleValidator: a mid-range AP (jittered, missed,
    misclassified and false boxes) that pycocotools and Ultralytics must both report, within 1.5 points."""
    from ultralytics.models.yolo import detect

    script = load_script("eval_coco")
    monkeypatch.setattr(detect, "DetectionValidator", NoisyOracleValidator)  # what YOLO.val builds for detect
    assert script.main(["--model", str(shapes_model), "--data", "shapes", "--topk", "0", "8", "--imgsz", "128",
                        "--out", str(tmp_path / "res"), "--class-agnostic", "--per-class", f"project={tmp_path}",
                        "plots=False"]) == 0
    printed = capsys.readouterr().out
    printed, class_part = printed.split("COCO bbox AP (IoU .50:.95) per class")
    head, agnostic_part = printed.split("COCO bbox metrics, class-agnostic")
    table, agnostic_table = table_rows(head)[:3], table_rows(agnostic_part)  # header and one row per K each
    rows = json.loads((tmp_path / "res.json").read_text())
    for r, cells in zip(rows, agnostic_table[1:]):  # the oracle's misclassified boxes count as found class-agnostic
        assert r["agnostic_AP50"] > r["AP50"] + 0.01 and r["agnostic_AR100"] > r["AR100"], r
        assert cells[1:14] == [f"{r[f'agnostic_{m}']:.3f}" for m in COCO_METRICS] + ["-"]
        assert {m: r[f"agnostic_{m}"] for m in COCO_METRICS} == pytest.approx(rescore(r, use_cats=False), abs=1e-12)
    assert [r["pst_topk"] for r in rows] == [0, 8] and [t[0] for t in table[1:]] == ["0", "8"]
    for r, cells in zip(rows, table[1:]):
        assert 0.2 <= r["AP"] <= 0.9 and 0.3 <= r["AP50"] <= 0.95, r
        assert abs(r["AP"] - r["ul_mAP50-95"]) <= 0.015, r
        assert abs(r["AP50"] - r["ul_mAP50"]) <= 0.015, r
        assert cells[1] == f"{r['AP']:.3f}" and cells[13] == f"{r['ul_mAP50-95']:.3f}"
    assert {m: rows[0][m] for m in COCO_METRICS} == {m: rows[1][m] for m in COCO_METRICS}  # the oracle ignores K
    class_table = table_rows(class_part)
    assert class_table[0] == ["pst_topk", *SHAPES.values()]  # the model's classes, in its order
    for r, cells in zip(rows, class_table[1:]):  # each class scored alone by pycocotools directly gives its AP
        assert list(r["class_AP"]) == list(SHAPES.values())
        assert cells[1:] == [f"{ap:.3f}" for ap in r["class_AP"].values()]
        assert sum(r["class_AP"].values()) / len(SHAPES) == pytest.approx(r["AP"], abs=1e-12)
        for cat, ap in enumerate(r["class_AP"].values(), 1):  # shapes' json: category_id = class + 1
            assert ap == pytest.approx(rescore(r, cat_ids=[cat])["AP"], abs=1e-12)


def test_eval_coco_bad_input(shapes_model, tmp_path):
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        evaluate(shapes_model, "shapes", topks=(-1,))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate(shapes_model, "shapes", topks=(0,), ann=tmp_path / "missing.json")  # before any validation


def test_eval_coco_script_scores_boxes_and_masks_of_a_segmentation_model(seg_model, shapes_seg_json, cli_env,
                                                                         tmp_path):
    """The script on a segmentation model: a bbox table and a segm table, and rows whose mask_* metrics are
    COCOeval(iouType='segm') run directly on the run's saved mask results (the same detections as the boxes)."""
    from pycocotools.coco import COCO

    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(seg_model), "--data", "shapes-seg", "--topk", "0", "8",
         "--imgsz", "64", "--out", str(tmp_path / "res"), f"project={tmp_path}", "plots=False"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    head = "pst_topk " + " ".join(COCO_METRICS)
    lines = out.stdout.splitlines()
    tables = [i for i, line in enumerate(lines) if " ".join(line.split()).startswith(head)]
    assert len(tables) == 2 and "COCO bbox" in lines[tables[0] - 1] and "COCO segm" in lines[tables[1] - 1]
    rows = json.loads((tmp_path / "res.json").read_text())
    assert [r["pst_topk"] for r in rows] == [0, 8]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shapes_seg_json))
    for k, r in enumerate(rows):
        assert r["images"] == 64 and r["ann"] == str(shapes_seg_json.resolve())
        assert list(r)[1:25] == [*COCO_METRICS, *MASK_METRICS]
        boxes, masks = (json.loads(Path(r[key]).read_text()) for key in ("results", "mask_results"))
        assert len(boxes) == len(masks) == r["detections"] > 0
        assert [(b["image_id"], b["category_id"], b["score"]) for b in boxes] == [
            (m["image_id"], m["category_id"], m["score"]) for m in masks]
        assert {m: r[m] for m in COCO_METRICS} == pytest.approx(coco_stats(gt, boxes, "bbox"), abs=1e-12)
        direct = coco_stats(gt, masks, "segm")
        assert {m: r[f"mask_{m}"] for m in COCO_METRICS} == pytest.approx(direct, abs=1e-12)
        # masks in original image pixels (the 1-epoch model's are empty: real masks are scored in the next test)
        assert {tuple(m["segmentation"]["size"]) for m in masks} == {(160, 160)}
        assert r["ul_mask_mAP50-95"] is not None and r["ul_mAP50-95"] is not None
        bbox_cells, segm_cells = (lines[t + 1 + k].split() for t in tables)
        assert bbox_cells[1:13] == [f"{r[m]:.3f}" for m in COCO_METRICS]
        assert segm_cells[1:13] == [f"{r[m]:.3f}" for m in MASK_METRICS]
    with open(tmp_path / "res.csv") as f:
        assert [float(c["mask_AP"]) for c in csv.DictReader(f)] == [r["mask_AP"] for r in rows]


def test_segmentation_model_against_a_json_without_masks_is_a_clear_error(seg_model, shapes_seg_json, tmp_path):
    coco = json.loads(shapes_seg_json.read_text())
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps({**coco, "annotations": [
        {k: v for k, v in a.items() if k != "segmentation"} for a in coco["annotations"]]}))
    with pytest.raises(ValueError, match=r"objects of the scored images in .*boxes_only.json have no mask "
                                         r"\('segmentation'.*pass an instances json with masks"):
        evaluate(seg_model, "shapes-seg", topks=(0,), ann=boxes_only, imgsz=64, project=str(tmp_path),
                 plots=False, verbose=False)


class SegOracleValidator(SegmentationValidator):
    """Scores each image's ground-truth boxes and masks (at the validation size, as the model's would be) as its
    predictions, with seeded random scores; Ultralytics scales them back to the original images as it does the
    model's."""

    def update_metrics(self, preds, batch):
        rng = np.random.default_rng(self.batch_i)
        out = []
        for si in range(len(preds)):
            pbatch = self._prepare_batch(si, batch)
            conf = torch.from_numpy(rng.uniform(0.3, 1.0, len(pbatch["cls"]))).float()
            order = conf.argsort(descending=True)
            out.append({"bboxes": pbatch["bboxes"][order], "conf": conf[order], "cls": pbatch["cls"][order],
                        "masks": pbatch["masks"][order]})
        super().update_metrics(out, batch)


def test_ground_truth_masks_through_a_validation_run_score_high_segm(seg_model, shapes_seg_json, tmp_path):
    """Real masks through Ultralytics' own json (RLE of masks scaled back to 160 px): segm rows equal a direct
    COCOeval(iouType='segm') on the saved results, and score high (mask labels are at 1/4 resolution, so not 1)."""
    from pycocotools.coco import COCO

    (row,) = evaluate(seg_model, "shapes-seg", topks=(0,), validator=SegOracleValidator, imgsz=160, batch=16,
                      project=str(tmp_path), plots=False, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shapes_seg_json))
    masks = json.loads(Path(row["mask_results"]).read_text())
    assert len(masks) == len(gt.dataset["annotations"]) == row["detections"]
    assert {m: row[f"mask_{m}"] for m in COCO_METRICS} == pytest.approx(coco_stats(gt, masks, "segm"), abs=1e-12)
    assert row["AP50"] > 0.9 and row["mask_AP50"] > 0.5 and row["ul_mask_mAP50-95"] > 0.5, row
