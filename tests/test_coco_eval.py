"""COCO evaluation with pycocotools (pst_yolo.coco, scripts/eval_coco.py): id mapping, scoring, agreement."""

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ultralytics.data.converter import coco80_to_coco91_class
from ultralytics.data.utils import check_det_dataset
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import ROOT, YAML, ops

from pst_yolo.coco import (
    COCO_METRICS,
    ValRun,
    category_ids,
    evaluate,
    find_annotations,
    format_table,
    image_ids,
    save_rows,
    score,
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
        "abc.jpg": 7, "000000000042.jpg": 42}
    with pytest.raises(ValueError, match=r"1 of 2 validation images are not in the annotations json .*'x.jpg'"):
        image_ids(images, ["/d/abc.jpg", "/d/x.jpg"])
    with pytest.raises(ValueError, match="names 2 images 'abc.jpg'"):
        image_ids([*images, {"id": 8, "file_name": "train/abc.jpg"}], ["/d/abc.jpg"])


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


@pytest.mark.parametrize("validator, low, high", [(OracleValidator, 0.99, 1.0), (NoisyOracleValidator, 0.2, 0.9)])
def test_pycocotools_agrees_with_ultralytics_on_the_same_detections(shapes_model, tmp_path, validator, low, high):
    """On shapes (rect batches of 256x256 and 256x192 images, letterboxed and scaled back), within 1.5 points."""
    (row,) = evaluate(shapes_model, "shapes", topks=(0,), validator=validator, imgsz=128, batch=32,
                      project=str(tmp_path), plots=False, verbose=False)
    assert row["images"] == 128
    assert low <= row["AP"] <= high, row
    assert abs(row["AP"] - row["ul_mAP50-95"]) <= 0.015, row


# ------------------------------------------------------------------------------------------------------- script
def test_eval_coco_script_prints_one_row_per_topk(shapes_model, cli_env, tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(shapes_model), "--data", "shapes", "--topk", "0", "8",
         "--imgsz", "96", "--out", str(tmp_path / "res"), f"project={tmp_path}", "plots=False"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["pst_topk"])
    assert lines[head].split() == ["pst_topk", *COCO_METRICS, "ul_mAP50-95", "ms_per_image"]
    assert [line.split()[0] for line in lines[head + 1:head + 3]] == ["0", "8"]
    assert "faster-coco-eval" not in text  # scored by pycocotools only
    rows = json.loads((tmp_path / "res.json").read_text())
    assert [r["pst_topk"] for r in rows] == [0, 8]
    for r in rows:
        assert r["images"] == 128 and r["detections"] > 0 and r["ms_per_image"] > 0
        assert abs(r["AP"] - r["ul_mAP50-95"]) <= 0.015
        preds = json.loads((Path(r["save_dir"]) / "predictions.json").read_text())
        assert len(preds) == r["detections"]
    assert (tmp_path / "res.csv").is_file()


def test_eval_coco_bad_input(shapes_model, tmp_path):
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        evaluate(shapes_model, "shapes", topks=(-1,))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate(shapes_model, "shapes", topks=(0,), ann=tmp_path / "missing.json")  # before any validation
