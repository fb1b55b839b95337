"""PST beyond YOLO11 detection: YOLO26, segment / pose / obb / classify configs, ResNet + PST, their offline sets.

Each config trains 1 epoch at tiny size on its offline set, then a fresh process (the ``pst-yolo`` CLI) validates the
checkpoint and exports it to ONNX with ``pst_topk=8``; the export must match PyTorch (same weights, ``pst_topk=8``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import pst_yolo
from pst_yolo.data import NAMES, generate_task
from pst_yolo.utils import resource_path

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.tasks import guess_model_scale, guess_model_task, yaml_model_load  # noqa: E402

FAMILIES = {  # config family -> (task, scales)
    "yolo26-pst": ("detect", "nsmlx"),
    "yolo11-seg-pst": ("segment", "nsmlx"),
    "yolo11-pose-pst": ("pose", "nsmlx"),
    "yolo11-obb-pst": ("obb", "nsmlx"),
    "yolo26-seg-pst": ("segment", "nsmlx"),
    "yolo26-pose-pst": ("pose", "nsmlx"),
    "yolo26-obb-pst": ("obb", "nsmlx"),
    "yolo11-cls-pst": ("classify", "nsmlx"),
    "yolo26-cls-pst": ("classify", "nsmlx"),
    "r18-cls-pst": ("classify", ""),
    "r50-cls-pst": ("classify", ""),
    "r101-cls-pst": ("classify", ""),
    "r18-pst": ("detect", ""),
    "r50-pst": ("detect", ""),
    "r101-pst": ("detect", ""),
}
DATA = {"detect": "shapes", "segment": "shapes-seg", "pose": "shapes-pose", "obb": "shapes-obb",
        "classify": "shapes-cls"}


def tensors(y) -> list:
    """Every tensor in a (nested) model output."""
    return [y] if isinstance(y, torch.Tensor) else [t for v in (y.values() if isinstance(y, dict) else y)
                                                      for t in tensors(v)]


def first_tensor(y) -> torch.Tensor:
    """The model's first output (what an export's first output holds), from a (nested) tuple."""
    while not isinstance(y, torch.Tensor):
        y = y[0]
    return y


def config_names():
    for family, (task, scales) in FAMILIES.items():
        for s in scales or [""]:
            yield re.sub(r"^(yolo\d+)", rf"\g<1>{s}", family) + ".yaml", task, s


@pytest.mark.parametrize("name,task,scale", list(config_names()))
def test_name_gives_task_and_scale(name, task, scale):
    """Ultralytics infers task and scale from the file name alone (yolo11n-seg-pst.yaml -> segment, n)."""
    assert guess_model_task(name) == task
    assert guess_model_scale(name) == scale
    d = yaml_model_load(name)  # bare name from any directory; the scale letter is dropped to find the file
    assert Path(d["yaml_file"]).name == name
    assert sum(row[2] == "PST" for row in d["backbone"] + d["head"]) in (1, 2)
    assert (scale in d.get("scales", {})) if scale else "scales" not in d  # no "no model scale passed" warning


BIG = ("r50", "r101")  # 40-60 M parameters: ~15 s each to build on 2 busy cores


@pytest.mark.parametrize(
    "name,task,scale",
    [pytest.param(*c, marks=[pytest.mark.slow] if c[0].startswith(BIG) else []) for c in config_names() if c[2] in "n"],
)
def test_every_config_builds_and_runs(name, task, scale):
    """Each config builds (smallest scale), runs a forward pass in train and eval mode, and has its PST layers."""
    model = YOLO(name, verbose=False)
    assert model.task == task
    net = model.model
    pst = [m for m in net.modules() if isinstance(m, pst_yolo.PST)]
    assert len(pst) == (1 if task == "classify" else 2)
    x = torch.rand(1, 3, 64, 64)
    net.eval()
    with torch.inference_mode():
        y = net(x)
    out = first_tensor(y)
    assert all(torch.isfinite(t).all() for t in tensors(y))
    if task == "classify":
        assert out.shape == (1, 1000)


@pytest.mark.parametrize("name,task,scale", [c for c in config_names() if c[2] in ("s", "m", "l", "x")])
def test_every_scale_builds_with_stock_widths(name, task, scale):
    """Every scale builds with Ultralytics' own constants: each PST row has the width of the stock row it replaces
    (the smallest scale also runs in every mode above)."""
    net = YOLO(name, verbose=False).model
    stock = YOLO(name.replace("-pst", ""), verbose=False).model
    pst = [m for m in net.model if isinstance(m, pst_yolo.PST)]
    repeats = 2 if scale in "lx" else 1  # 2 repeats x depth 1.0 (l, x) or 0.5 (n, s, m)
    if task == "classify":  # PST added after the stock backbone: c2 min(512, max_channels) x width, 1 repeat
        width = {"s": 256, "m": 512, "l": 512, "x": 768}[scale]
        assert [(m.cv2.conv.out_channels, len(m.m)) for m in pst] == [(width, 1)]
    else:  # PST in place of a stock fusion row: its width
        assert pst and all(m.cv2.conv.out_channels == stock.model[m.i].cv2.conv.out_channels for m in pst)
        assert all(len(m.m) == repeats for m in pst)
    with torch.inference_mode():
        assert all(torch.isfinite(t).all() for t in tensors(net.eval()(torch.rand(1, 3, 64, 64))))


# ------------------------------------------------------------------------------------------------------ offline data
@pytest.fixture(scope="module")
def small_sets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("task_sets")
    return {t: generate_task(root / t, t, n_train=6, n_val=3, imgsz=96) for t in ("segment", "pose", "obb", "classify")}


def _rows(label: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in label.read_text().splitlines()]


def test_task_sets_are_deterministic(small_sets, tmp_path):
    for task, root in small_sets.items():
        again = generate_task(tmp_path / task, task, n_train=6, n_val=3, imgsz=96)
        files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix != ".jpg")
        assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.suffix != ".jpg")
        assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_task_sets_refuse_foreign_or_other_sets_unless_forced(small_sets, tmp_path):
    root = small_sets["pose"]
    with pytest.raises(ValueError, match=r"holds a set made with .*'n_val': 3.* not .*'n_val': 2.*pass force=True"):
        generate_task(root.parent / "pose", "pose", n_train=6, n_val=2, imgsz=96)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"mine exists and is not a generated shapes-obb set \(no "):
        generate_task(tmp_path / "mine", "obb", n_train=2, n_val=1, imgsz=64)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    again = generate_task(tmp_path / "pose", "pose", n_train=2, n_val=1, imgsz=64)
    assert generate_task(again, "pose", n_train=3, n_val=1, imgsz=64, force=True) == again
    assert len(list((again / "images" / "train").iterdir())) == 3


def test_segment_polygons_are_the_drawn_shapes(small_sets):
    """Filling each label polygon gives a mask that covers exactly the pixels of one object colour in the image."""
    root = small_sets["segment"]
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    assert {c["name"] for c in coco["categories"]} == set(NAMES)
    n_val = 0
    for label in sorted((root / "labels").rglob("*.txt")):
        img = cv2.imread(str(root / "images" / label.parent.name / f"{label.stem}.jpg"))
        rows = _rows(label)
        assert rows, label
        for row in rows:
            assert len(row) % 2 == 1 and len(row) >= 7 and 0 <= row[0] < len(NAMES)
            xy = np.array(row[1:]).reshape(-1, 2)
            assert (xy >= 0).all() and (xy <= 1).all()
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round((xy * img.shape[1::-1] - 0.5) * 16).astype(np.int32)], 1, shift=4)
            core = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)  # JPEG blurs the 1-px rim
            if core.sum() >= 4:
                assert img[core].astype(float).std(0).max() < 25  # one solid colour (noise aside): the drawn shape
        if label.parent.name == "val":
            n_val += len(rows)
    assert len(coco["annotations"]) == n_val and all(len(a["segmentation"][0]) >= 6 for a in coco["annotations"])


def test_pose_and_obb_labels(small_sets):
    for label in sorted((small_sets["pose"] / "labels").rglob("*.txt")):
        for row in _rows(label):
            assert len(row) == 1 + 4 + 5 * 3
            kpt = np.array(row[5:]).reshape(5, 3)
            cx, cy, w, h = row[1:5]
            assert set(kpt[:, 2]) <= {1.0, 2.0} and (kpt[:4, 2] == 2).all()
            assert kpt[0, 1] == pytest.approx(cy - h / 2, abs=1e-6) and kpt[1, 0] == pytest.approx(cx + w / 2, abs=1e-6)
            assert abs(kpt[4, 0] - cx) < w / 2 and abs(kpt[4, 1] - cy) < h / 2  # the centre lies inside the box
            assert (kpt[4, 2] == 1) == (row[0] == NAMES.index("ring"))  # the ring's centre is in its hole
    for label in sorted((small_sets["obb"] / "labels").rglob("*.txt")):
        for row in _rows(label):
            assert len(row) == 9
            corners = np.array(row[1:]).reshape(4, 2)
            edges = np.roll(corners, -1, 0) - corners
            assert abs(float(edges[0] @ edges[1])) < 1e-4  # a rectangle (square image: normalised angles hold)
    cls_root = small_sets["classify"]
    assert sorted(p.name for p in (cls_root / "train").iterdir()) == sorted(NAMES)
    assert sorted(p.name for p in (cls_root / "val").iterdir()) == sorted(NAMES[i % 6] for i in (7, 8, 9))  # in turn


def test_data_names_resolve(test_root):
    from ultralytics.data.utils import check_det_dataset

    for name, kind in (("shapes-seg", "segment"), ("shapes-pose", "pose"), ("shapes-obb", "obb")):
        assert Path(resource_path("cfg", "datasets", f"{name}.yaml")).is_file()
        assert kind in pst_yolo.data.TASKS
    data = check_det_dataset("shapes-pose")
    assert data["kpt_shape"] == [5, 3] and data["flip_idx"] == [0, 3, 2, 1, 4] and data["nc"] == len(NAMES)


def test_cls_set_by_name(test_root, tmp_path):
    """data=shapes-cls: Ultralytics' classify validator gets the image folder, generated on first use."""
    from ultralytics import YOLO

    metrics = YOLO("yolo11n-cls-pst.yaml").val(data="shapes-cls", imgsz=32, batch=32, plots=False, verbose=False,
                                                project=str(tmp_path), name="v")
    root = test_root / "datasets" / "shapes-cls"
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(NAMES)
    assert metrics.speed["inference"] > 0 and 0 <= metrics.top1 <= 1


def test_cls_set_made_with_other_parameters_is_regenerated(tmp_path, monkeypatch):
    """A shapes-cls left by an older pst_yolo (other size) is replaced by the one datasets.yaml describes, with a log
    line saying why; a folder pst_yolo did not generate is refused, not overwritten."""
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import LOGGER

    from pst_yolo.data import load_index
    from pst_yolo.hooks.names import _image_folder

    monkeypatch.setattr(data_utils, "DATASETS_DIR", tmp_path)
    old = generate_task(tmp_path / "shapes-cls", "classify", n_train=6, n_val=3, imgsz=32)
    messages = []
    monkeypatch.setattr(LOGGER, "info", lambda msg, *a, **k: messages.append(str(msg)))
    root = Path(_image_folder("shapes-cls"))
    spec = load_index()["shapes-cls"]["generate"]
    assert root == old
    assert len(list((root / "train").glob("*/*.jpg"))) == spec["n_train"]
    assert len(list((root / "val").glob("*/*.jpg"))) == spec["n_val"]
    assert cv2.imread(str(next((root / "val").glob("*/*.jpg")))).shape[:2] == (spec["imgsz"],) * 2
    assert any("made with other parameters" in m and "'n_train': 6" in m for m in messages), messages
    messages.clear()
    assert _image_folder("shapes-cls") == str(root) and not messages  # up to date: left as is, nothing logged

    foreign = tmp_path / "elsewhere"
    (foreign / "shapes-cls").mkdir(parents=True)
    (foreign / "shapes-cls" / "mine.txt").write_text("keep")
    monkeypatch.setattr(data_utils, "DATASETS_DIR", foreign)
    with pytest.raises(FileExistsError, match="not a generated"):
        _image_folder("shapes-cls")
    assert (foreign / "shapes-cls" / "mine.txt").read_text() == "keep"


# ------------------------------------------------------------------------------- train -> fresh process -> val/export
TRAIN = dict(epochs=1, batch=8, workers=0, mosaic=0.0, val=False, plots=False, exist_ok=True, verbose=False)
CASES = [  # (config, imgsz); 1 epoch on 16 images, validation on 8
    ("yolo26n-pst.yaml", 64),
    ("yolo11n-seg-pst.yaml", 64),
    ("yolo11n-pose-pst.yaml", 64),
    ("yolo11n-obb-pst.yaml", 64),
    ("yolo11n-cls-pst.yaml", 32),
    ("yolo26n-cls-pst.yaml", 32),
    pytest.param("yolo26n-seg-pst.yaml", 64, marks=pytest.mark.slow),
    pytest.param("yolo26n-pose-pst.yaml", 64, marks=pytest.mark.slow),
    pytest.param("yolo26n-obb-pst.yaml", 64, marks=pytest.mark.slow),
    pytest.param("r18-cls-pst.yaml", 32, marks=pytest.mark.slow),
    pytest.param("r18-pst.yaml", 64, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict:
    """task -> data argument: 16 train / 8 val images of each offline set (YAMLs with image lists; a folder for cls)."""
    import yaml

    from pst_yolo.data import dataset_yaml

    root = tmp_path_factory.mktemp("tiny_data")
    out = {"classify": str(generate_task(root / "cls", "classify", n_train=12, n_val=6, imgsz=32))}
    for task in ("detect", "segment", "pose", "obb"):
        if task == "detect":
            from pst_yolo.data import generate

            base = generate(root / "det", n_train=16, n_val=8, imgsz=96)
        else:
            base = generate_task(root / task, task, n_train=16, n_val=8, imgsz=64)
        cfg = yaml.safe_load(Path(dataset_yaml(DATA[task])).read_text())
        cfg.pop("download", None)
        cfg.update(path=str(base), train="images/train", val="images/val")
        (root / f"{task}.yaml").write_text(yaml.safe_dump(cfg))
        out[task] = str(root / f"{task}.yaml")
    return out

FRESH = r"""
import json, sys
from ultralytics import YOLO  # no 'import pst_yolo': unpickling PST registers it
best, data, imgsz, out = sys.argv[1:]
m = YOLO(best)
metrics = m.val(data=data, imgsz=int(imgsz), batch=8, workers=0, plots=False, pst_topk=8, project=out, name="val")
onnx = m.export(format="onnx", imgsz=int(imgsz), pst_topk=8, nms=False)
print("RESULT", json.dumps({"task": m.task, "fitness": float(metrics.fitness), "onnx": str(onnx)}))
"""


@pytest.mark.parametrize("name,imgsz", CASES)
def test_train_reload_val_export(name, imgsz, tiny_data, test_root, cli_env, tmp_path):
    task = FAMILIES[re.sub(r"^(yolo\d+)[nsm]", r"\1", name.removesuffix(".yaml"))][0]
    data = tiny_data[task]
    project = test_root / "runs" / "tasks"
    YOLO(name).train(data=data, imgsz=imgsz, project=str(project), name=name, **TRAIN)
    best = project / name / "weights" / "best.pt"
    assert best.is_file()

    out = subprocess.run([sys.executable, "-c", FRESH, str(best), data, str(imgsz), str(tmp_path)], env=cli_env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["task"] == task and np.isfinite(result["fitness"])

    from pst_yolo.export.verify import onnx_outputs

    images = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    net = YOLO(best).model.float().eval()
    pst_yolo.set_topk(net, 8, verbose=False)
    if net.yaml.get("end2end"):  # YOLO26: the export holds the one-to-one head's NMS-free (B, max_det, 6 + extra)
        net.end2end = True
    with torch.inference_mode():
        ref = first_tensor(net(torch.from_numpy(images))).numpy()
    got = onnx_outputs(result["onnx"], images)
    assert got.shape == ref.shape
    tol = 1e-3 * max(1.0, np.abs(ref).max())
    if getattr(net, "end2end", False):  # rows come sorted by score; an untrained model's near-equal scores may swap
        # rows or, for one anchor, which class wins: match rows on all but the class index (column 5); all anchors kept
        keep = [c for c in range(got.shape[-1]) if c != 5]
        d = np.abs(got[0][:, None, keep] - ref[0][None, :, keep]).max(-1)  # (rows, rows)
        assert d.min(1).max() <= tol and d.min(0).max() <= tol
    else:
        assert np.abs(got - ref).max() <= tol


# ------------------------------------------------------------- YOLO26 NMS-free: PyTorch vs ONNX, box for box at predict
YOLO26_SHAPES = dict(  # ~25 s on 2 CPU cores (96 steps); nbs=batch: every step updates the weights
    data="shapes", epochs=3, imgsz=64, batch=8, nbs=8, fraction=0.5, workers=0, mosaic=0.0, warmup_epochs=0,
    optimizer="AdamW", lr0=0.01, val=False, plots=False, exist_ok=True, verbose=False,
)
THRESHOLD = 0.003  # boxes compared: score above this (or above the last of a full list, whichever is higher)
SCORE_TOL = 1e-4  # |score diff| allowed (measured: ~1e-7)
BOX_TOL = 1e-3  # |xyxy diff| allowed, as a fraction of the image size (measured: ~1e-6)

PREDICT = r"""
import json, sys
from ultralytics import YOLO
onnx, best, imgsz, *images = sys.argv[1:]
kw = dict(imgsz=int(imgsz), conf=0.001, nms=False, verbose=False)
out = {"onnx": [r.boxes.data.tolist() for r in YOLO(onnx, task="detect").predict(images, **kw)]}
out["plugin_for_onnx"] = "pst_yolo" in sys.modules  # the .onnx needs no plugin; the .pt below imports it by unpickling
for name, k in (("pt", 8), ("pt_coarse", 0)):
    out[name] = [r.boxes.data.tolist() for r in YOLO(best).predict(images, pst_topk=k, **kw)]
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def yolo26_shapes(test_root) -> Path:
    """best.pt of yolo26n-pst trained 3 epochs on 256 shapes images at imgsz 64.

    Far from converged (scores mostly 0.003-0.2), but its boxes and scores depend on the image and on pst_topk.
    """
    project = test_root / "runs" / "fixtures"
    YOLO("yolo26n-pst.yaml").train(project=str(project), name="yolo26_shapes", **YOLO26_SHAPES)
    best = project / "yolo26_shapes" / "weights" / "best.pt"
    assert best.is_file()
    return best


def floor(a: np.ndarray, b: np.ndarray) -> float:
    """Score above which two lists of rows must agree: THRESHOLD, or the last score of a list cut at its top-k."""
    return max(THRESHOLD, a[:, 4].min(), b[:, 4].min())


def unmatched(rows: np.ndarray, other: np.ndarray, low: float, size: float) -> list:
    """Rows (x1, y1, x2, y2, score, class) scoring above ``low + SCORE_TOL`` that have no partner in ``other``: same
    class, score within SCORE_TOL, every coordinate within BOX_TOL * size; each partner is used once."""
    free = np.ones(len(other), bool)
    missing = []
    for row in rows[rows[:, 4] > low + SCORE_TOL]:
        ok = free & (other[:, 5] == row[5]) & (np.abs(other[:, 4] - row[4]) <= SCORE_TOL)
        ok &= np.abs(other[:, :4] - row[:4]).max(1) <= BOX_TOL * size
        if ok.any():
            free[np.flatnonzero(ok)[0]] = False
        else:
            missing.append(row.round(4).tolist())
    return missing


@pytest.mark.slow
def test_yolo26_pst_nms_free_predict_pytorch_vs_onnx(yolo26_shapes, cli_env, tmp_path):
    """YOLO26-PST's NMS-free path gives the same boxes from PyTorch and from its ONNX export, at predict level.

    Ultralytics' paths for an end-to-end (YOLO26) head, export and predict alike:

    - ``nms=False``: the one-to-one head, no NMS anywhere. The export holds the head's post-processing (top-k over
      anchors and classes, rows of xyxy, score, class: here (1, 84, 6), min(max_det, anchors) rows at imgsz 64);
      ``predict(nms=False)`` on the .pt runs the same head, and predict on the .onnx only drops rows below ``conf``.
    - ``nms=True`` export: not the NMS-free path. The one-to-many head with NMS embedded in the graph (ONNX
      ``NonMaxSuppression``), (1, 300, 6). Default ``nms=None``: the one-to-many head's raw (1, 4 + nc, anchors), and
      NMS runs in Ultralytics' predictor (also the .pt's default at predict).

    The model is exported here with ``nms=False, pst_topk=8`` (at imgsz 64 the P5 map has 4 coarse tokens, so top-8
    selects in the P3 layer and takes all 4 in the P4 layer); a fresh process predicts square shapes val images
    (letterboxed to 64x64 alike: the .pt would pad a non-square one to a stride multiple, the static .onnx to 64x64)
    with the .onnx without importing pst_yolo, then with the .pt at pst_topk=8, both with conf=0.001 and nms=False.
    Every box above the threshold has a partner of the same class with the same score and corners. Rows near the
    threshold, or near the score of the last row of a full list (the top-k cut), may be in one list only.
    """
    import onnx
    from ultralytics.data.utils import check_det_dataset

    def ops(file) -> set:
        return {node.op_type for node in onnx.load(file).graph.node}

    model = YOLO(yolo26_shapes)
    assert model.model.yaml["end2end"]
    assert "NonMaxSuppression" in ops(model.export(format="onnx", imgsz=64, nms=True, verbose=False))  # other path
    nms_free = model.export(format="onnx", imgsz=64, nms=False, pst_topk=8, verbose=False)  # replaces that file
    assert "NonMaxSuppression" not in ops(nms_free)

    val = sorted(Path(check_det_dataset("shapes")["val"]).glob("*.jpg"))
    images = [str(p) for p in val if cv2.imread(str(p)).shape[:2] == (256, 256)][:16]
    assert len(images) == 16
    out = subprocess.run([sys.executable, "-c", PREDICT, nms_free, str(yolo26_shapes), "64", *images], env=cli_env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert not result["plugin_for_onnx"]
    onnx_rows, pt_rows, coarse_rows = ([np.array(r, np.float64).reshape(-1, 6) for r in result[k]]
                                       for k in ("onnx", "pt", "pt_coarse"))

    compared = 0
    for a, b in zip(pt_rows, onnx_rows):
        assert 0 < len(a) <= 84 and 0 < len(b) <= 84  # the top-k rows above conf=0.001 (k = 84 anchors)
        low = floor(a, b)
        above_a, near_a, above_b, near_b = ((x[:, 4] > low + s * SCORE_TOL).sum() for x in (a, b) for s in (1, -1))
        assert above_a <= near_b and above_b <= near_a  # the same count, up to rows at the floor
        assert unmatched(a, b, low, 256) == [] and unmatched(b, a, low, 256) == []
        compared += above_a
    assert compared >= 5 * len(images), compared  # the comparison is not empty
    # the same comparison sees the fine path: PyTorch coarse-only (pst_topk=0) does not match the pst_topk=8 export
    assert any(unmatched(a, b, floor(a, b), 256) for a, b in zip(coarse_rows, onnx_rows))
