"""COCO evaluation with pycocotools: validate a model at several ``pst_topk`` values and score each run.

Ultralytics' validator produces the detections (``save_json=True``: one COCO-style dict per box, after NMS, in
original image pixels; a segmentation model adds each detection's mask as COCO compressed RLE); this module matches
them to a COCO instances json and scores them with pycocotools' ``COCOeval`` (the reference implementation;
Ultralytics' own json scoring, which may use ``faster-coco-eval``, is not used). The 12 standard metrics are
:data:`COCO_METRICS`, for boxes (``iouType="bbox"``, every model). A segmentation model (task ``segment``) is also
scored on its masks (``iouType="segm"``, the same detections): :data:`MASK_METRICS`, the same 12 named ``mask_AP``,
``mask_AP50`` ...; its json must then hold each object's ``segmentation`` (polygons or RLE), as COCO's and
``shapes-seg``'s do. As in detectron2, mask results carry no box, so small/medium/large go by mask area. On request
the boxes are scored once more class-agnostically (pycocotools' ``useCats=0``): :data:`AGNOSTIC_METRICS`.

Matching is by content, not by convention:

- images by path through the json's ``images``: each validation image is keyed by its own path, and matched to the
  json entry whose ``file_name`` shares the most trailing path components with it (just the file name for COCO's flat
  folders; ``cam1/0001.jpg`` tells ``images/cam1/0001.jpg`` from ``images/cam2/0001.jpg``); Ultralytics' own image id,
  ``int(stem)``, only as a fallback for files the json does not name. Two images never share a json id: files that
  share a name in different folders that the json cannot tell apart are an error naming them, never merged. A json of
  the wrong split fails loudly;
- categories by name through the json's ``categories`` (the model's class names; case and ``_`` vs space are
  ignored), so COCO's 80-of-91 ids and any custom id scheme work; a json without category names falls back to
  Ultralytics' own ids (COCO 91-ids for COCO, ``class + 1`` otherwise), which must then exist in the json.

Scoring follows the COCO protocol: each image's 100 highest-scoring detections, across all categories, are scored
(:func:`cap_detections`). pycocotools' ``maxDets=100`` alone caps each image *and category*, which lets an image
contribute more than 100 detections and makes AP/AR slightly optimistic; Ultralytics keeps up to ``max_det=300``.

Typical use is ``scripts/eval_coco.py``; in Python::

    from pst_yolo.coco import evaluate, format_table
    rows = evaluate("best.pt", data="shapes", topks=(0, 8), imgsz=160)
    print(format_table(rows))
    rows = evaluate("best-seg.pt", data="shapes-seg", topks=(0, 8), imgsz=160)  # AP ... and mask_AP ...
    print(format_table(rows, "segm"))
    rows = evaluate("best.pt", data="shapes-context", imgsz=256, class_agnostic=True)  # also agnostic_AP ...
    print(format_table(rows, "class-agnostic"))  # the same boxes, every class as one: what wrong classes cost
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ultralytics.utils import LOGGER

from .data import dataset_yaml, load_index
from .hooks.coco import record_im_file
from .topk import check_topk

__all__ = (
    "AGNOSTIC_METRICS",
    "COCO_METRICS",
    "IOU_TYPES",
    "MASK_METRICS",
    "MAX_DETS",
    "ValRun",
    "cap_detections",
    "category_ids",
    "check_masks",
    "class_ap",
    "evaluate",
    "find_annotations",
    "format_class_table",
    "format_table",
    "image_ids",
    "run_val",
    "save_rows",
    "score",
    "to_coco_results",
)

# COCOeval.stats, in order: AP at IoU .50:.95 / .50 / .75, AP small / medium / large (maxDets 100), AR at maxDets
# 1 / 10 / 100, AR small / medium / large (maxDets 100).
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
MASK_METRICS = tuple(f"mask_{m}" for m in COCO_METRICS)  # the same, of masks (iouType segm): mask_AP, mask_AP50 ...
IOU_TYPES = {"bbox": COCO_METRICS, "segm": MASK_METRICS}  # pycocotools' iouType -> the row keys of its metrics
# the same box metrics with every class taken as one (pycocotools' useCats=0): localisation alone, class errors forgiven
AGNOSTIC_METRICS = tuple(f"agnostic_{m}" for m in COCO_METRICS)
# the tables format_table prints: the row keys of their 12 metrics and of Ultralytics' mAP50-95 of the same (None: none)
TABLES = {"bbox": (IOU_TYPES["bbox"], "ul_mAP50-95"), "segm": (IOU_TYPES["segm"], "ul_mask_mAP50-95"),
          "class-agnostic": (AGNOSTIC_METRICS, None)}
MAX_DETS = 100  # the COCO protocol: detections scored per image, across categories


@dataclass
class ValRun:
    """What one Ultralytics validation run produced, captured when it ended.

    Attributes:
        detections (list[dict]): Ultralytics' COCO-style detections: ``image_id``, ``file_name``, ``category_id``
            (Ultralytics' id), ``bbox`` (x, y, w, h in original image pixels) and ``score``, plus ``im_file``, the
            path of the image (as in ``im_files``; Ultralytics' ``file_name`` and ``image_id`` are the same for two
            files that share a name in different folders). A segmentation model's also have ``segmentation``, the
            mask as COCO compressed RLE (``size`` [h, w] of the original image, ``counts`` a string).
        im_files (list[str]): Every image of the validated split, with or without detections.
        names (dict[int, str]): The model's class names.
        class_map (list[int]): Ultralytics' category id of each class (``detections`` use these).
        data (dict): The dataset dict (``path`` is the dataset root).
        is_coco (bool): Ultralytics recognised the split as COCO val2017/test-dev2017.
        save_dir (Path): The run's directory (holds ``predictions.json`` and ``args.yaml``).
        pst_topk (int | None): The ``pst_topk`` the run used (None: the model has no PST layers).
        metrics (dict): Ultralytics' own metrics of the run (``metrics/mAP50-95(B)`` ...) and its inference time
            per image (``speed/inference(ms)``).
        task (str): The validator's task (``detect``, ``segment`` ...): ``segment`` runs are also scored on masks.
    """

    detections: list[dict]
    im_files: list[str]
    names: dict[int, str]
    class_map: list[int]
    data: dict
    is_coco: bool
    save_dir: Path
    pst_topk: int | None
    metrics: dict = field(default_factory=dict)
    task: str = "detect"


def run_val(model, data: str, pst_topk: int | None = None, **kwargs) -> ValRun:
    """Validate ``model`` with ``save_json=True`` and return the detections and everything needed to score them.

    Args:
        model (str | Path | ultralytics.YOLO): Weights or a YOLO object (its module is not modified: val runs on a
            copy).
        data (str): Dataset, as for ``YOLO.val`` (a name from ``datasets.yaml`` such as ``shapes`` or ``coco``, or a
            data YAML).
        pst_topk (int | None): Fine-attention top-k for this run; None keeps the model's own value.
        **kwargs: Further ``YOLO.val`` arguments (``imgsz``, ``batch``, ``device``, ``conf``, ``max_det`` ...).

    Returns:
        The captured :class:`ValRun`. Its ``predictions.json`` (Ultralytics' detections, each with its ``im_file``) is
        written by this function (Ultralytics' own json scoring is skipped: the detections are scored here, with
        pycocotools).
    """
    from ultralytics import YOLO

    if pst_topk is not None:
        check_topk(pst_topk)
    model = model if isinstance(model, YOLO) else YOLO(model)
    if data in load_index():
        data = str(dataset_yaml(data))  # 'coco' -> Ultralytics' coco.yaml; 'shapes' -> pst_yolo's shapes.yaml
    runs = []

    def capture(validator):
        """on_val_end: take over the detections (Ultralytics would score them itself right after this callback)."""
        runs.append(
            ValRun(
                detections=validator.jdict,
                im_files=list(validator.dataloader.dataset.im_files),
                names=dict(validator.names),
                class_map=list(validator.class_map),
                data=validator.data,
                is_coco=bool(validator.is_coco),
                save_dir=Path(validator.save_dir),
                pst_topk=getattr(validator.args, "pst_topk", None),
                task=str(validator.args.task),
            )
        )
        # An empty jdict makes Ultralytics skip its predictions.json and its own json scoring (which may try to
        # install faster-coco-eval); we write the same file below and score with pycocotools.
        validator.jdict = []

    model.add_callback("on_val_start", record_im_file)  # each detection's im_file (see pst_yolo.hooks.coco)
    model.add_callback("on_val_end", capture)
    try:
        metrics = model.val(data=data, save_json=True, pst_topk=pst_topk, **kwargs)
    finally:
        model.callbacks["on_val_start"].remove(record_im_file)
        model.callbacks["on_val_end"].remove(capture)
    if len(runs) != 1:
        raise RuntimeError(f"expected one validation run, captured {len(runs)} (distributed validation?)")
    run = runs[0]
    run.metrics = {**metrics.results_dict, "speed/inference(ms)": metrics.speed.get("inference")}
    with open(run.save_dir / "predictions.json", "w", encoding="utf-8") as f:
        json.dump(run.detections, f)
    return run


def find_annotations(run: ValRun, data: str | None = None, ann: str | Path | None = None) -> Path:
    """Locate the COCO instances json of a validation run's split.

    In order: ``ann`` if given; the data YAML's ``coco_json`` (relative to the dataset root); the ``ann`` entry of
    ``datasets.yaml`` for the named dataset ``data``; ``annotations/instances_val2017.json`` for COCO val2017.

    Args:
        run (ValRun): The validation run (gives the dataset root and whether it is COCO).
        data (str | None): The ``data`` argument of the run, e.g. ``"shapes"``.
        ann (str | Path | None): An explicit json, absolute or relative to the working directory.

    Returns:
        Path of an existing json.

    Raises:
        FileNotFoundError: If no json is known for the dataset or the known one does not exist.
    """
    root = Path(run.data.get("path", "."))
    if ann is not None:
        path, why = Path(ann), "--ann"
    elif run.data.get("coco_json"):
        path, why = root / run.data["coco_json"], "'coco_json' in the data YAML"
    else:
        index, name = load_index(), Path(str(data)).name
        entry = next((e for n, e in index.items() if name in (n, f"{n}.yaml", e.get("yaml")) and e.get("ann")), None)
        if entry is not None:
            path, why = root / entry["ann"], f"'ann' of data={data} in datasets.yaml"
        elif run.is_coco:
            path, why = root / "annotations" / "instances_val2017.json", "COCO val2017's annotations"
        else:
            raise FileNotFoundError(
                f"no COCO annotations json is known for data={data}: pass one (scripts/eval_coco.py --ann FILE, "
                f"pst_yolo.coco.evaluate(..., ann=FILE)) or add 'coco_json: path/in/dataset.json' to the data YAML"
            )
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotations json {path} ({why}) not found")
    return path


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def category_ids(categories: list[dict], names: dict[int, str], class_map: list[int]) -> dict[int, int]:
    """Map Ultralytics' category ids to the json's, through the class names.

    Args:
        categories (list[dict]): The json's ``categories`` (``id``, usually ``name``).
        names (dict[int, str]): The model's class names.
        class_map (list[int]): Ultralytics' category id of each class.

    Returns:
        ``{ultralytics_id: json_id}`` for every class.

    Raises:
        ValueError: If class names cannot be matched (named json) or Ultralytics' ids are missing (unnamed json).

    Examples:
        >>> cats = [{"id": 7, "name": "Square"}, {"id": 3, "name": "circle"}]
        >>> category_ids(cats, {0: "circle", 1: "square"}, [1, 2])
        {1: 3, 2: 7}
    """
    json_ids = {c["id"] for c in categories}
    if categories and all(c.get("name") for c in categories):
        by_name = {}
        for c in categories:
            if _norm(c["name"]) in by_name:
                raise ValueError(f"the annotations json names two categories '{c['name']}': cannot map by name")
            by_name[_norm(c["name"])] = c["id"]
        missing = [n for n in names.values() if _norm(n) not in by_name]
        if missing:
            raise ValueError(
                f"model classes {missing} are not categories of the annotations json "
                f"(its categories: {[c['name'] for c in categories]}); the model was trained on other classes or "
                f"names them differently: use the json of the model's dataset"
            )
        return {class_map[i]: by_name[_norm(n)] for i, n in names.items()}
    missing = [class_map[i] for i in names if class_map[i] not in json_ids]
    if missing:
        raise ValueError(
            f"the annotations json's categories have no names and lack Ultralytics' category ids {missing} "
            f"(it has {sorted(json_ids)}): cannot match classes to categories"
        )
    return {class_map[i]: class_map[i] for i in names}


def _parts(path) -> tuple[str, ...]:
    return PurePosixPath(str(path).replace("\\", "/")).parts


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def image_ids(images: list[dict], im_files: list[str]) -> dict[str, int]:
    """Map each validation image, by its path, to its json image id.

    An image matches the json entries with its file name; among several, the one whose ``file_name`` shares the most
    trailing path components with the image's path (``cam1/a.jpg`` for ``.../images/cam1/a.jpg``). An image the json
    does not name falls back to Ultralytics' ``int(stem)``. Two images never get the same id.

    Args:
        images (list[dict]): The json's ``images`` (``id``, ``file_name``).
        im_files (list[str]): Paths of the validated images.

    Returns:
        ``{image path, as in im_files: json image id}`` for every image in ``im_files``.

    Raises:
        ValueError: If an image is neither named by the json nor has a numeric stem that is a json image id, if it
            matches several json entries equally well, or if two images (files that share a name in different
            folders, the json naming the file once) match the same json image.

    Examples:
        >>> image_ids([{"id": 5, "file_name": "val/a.jpg"}, {"id": 9, "file_name": "x.jpg"}], ["d/a.jpg", "d/9.jpg"])
        {'d/a.jpg': 5, 'd/9.jpg': 9}
        >>> images = [{"id": 1, "file_name": "cam1/a.jpg"}, {"id": 2, "file_name": "cam2/a.jpg"}]
        >>> image_ids(images, ["d/cam2/a.jpg", "d/cam1/a.jpg"])
        {'d/cam2/a.jpg': 2, 'd/cam1/a.jpg': 1}
    """
    by_name, ids = {}, {img["id"]: img["file_name"] for img in images}
    for img in images:
        parts = _parts(img["file_name"])
        by_name.setdefault(parts[-1], []).append((parts, img["id"]))
    out, missing = {}, []
    for f in im_files:
        parts, stem = _parts(f), Path(f).stem
        found = by_name.get(parts[-1], [])
        if found:
            shared = [_shared_tail(parts, p) for p, _ in found]
            best = [(p, i) for (p, i), n in zip(found, shared) if n == max(shared)]
            if len(best) > 1:
                raise ValueError(
                    f"validation image {f} matches {len(best)} images of the annotations json equally well "
                    f"({', '.join(repr('/'.join(p)) for p, _ in best)}): cannot tell which one it is"
                )
            out[f] = best[0][1]
        elif stem.isnumeric() and int(stem) in ids:
            out[f] = int(stem)
        else:
            missing.append(Path(f).name)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(im_files)} validation images are not in the annotations json "
            f"(e.g. {missing[:3]}): it describes another split or dataset; pass the json of the validated split"
        )
    first = {}
    for f, i in out.items():
        if i in first:
            raise ValueError(
                f"validation images {first[i]} and {f} both match image id {i} ('{ids[i]}') of the annotations json: "
                f"files that share a name in different folders must be named with their folder in the json's "
                f"file_name (e.g. 'cam1/{Path(f).name}') to be scored apart"
            )
        first[i] = f
    return out


def cap_detections(results: list[dict], max_dets: int = MAX_DETS) -> list[dict]:
    """Keep each image's ``max_dets`` highest-scoring detections, across all categories (the COCO protocol).

    Args:
        results (list[dict]): Detections with ``image_id`` and ``score``.
        max_dets (int): Detections kept per image.

    Returns:
        The kept detections, grouped by image (in order of first appearance), each group by descending score; equal
        scores keep their input order.

    Examples:
        >>> dets = [{"image_id": 1, "score": s} for s in (0.2, 0.9, 0.5)] + [{"image_id": 2, "score": 0.1}]
        >>> cap_detections(dets, max_dets=2)
        [{'image_id': 1, 'score': 0.9}, {'image_id': 1, 'score': 0.5}, {'image_id': 2, 'score': 0.1}]
    """
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    return [r for dets in by_image.values() for r in sorted(dets, key=lambda r: -r["score"])[:max_dets]]


def _rle(segmentation: dict) -> dict:
    """A mask as COCO compressed RLE with string ``counts`` (what pycocotools scores and a json file can hold)."""
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        from pycocotools import mask as mask_utils

        counts = mask_utils.frPyObjects(segmentation, *segmentation["size"])["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.decode() if isinstance(counts, bytes) else counts}


def to_coco_results(
    detections: list[dict],
    cat_ids: dict[int, int],
    img_ids: dict[str, int],
    max_dets: int = MAX_DETS,
    iou_type: str = "bbox",
) -> list[dict]:
    """Rewrite Ultralytics' detections with the json's image and category ids: a COCO results list.

    Args:
        detections (list[dict]): Ultralytics' detections (:attr:`ValRun.detections`). Each image is found by its
            ``im_file``; a detection without one by its ``file_name``, which must then name one validation image.
        cat_ids (dict[int, int]): ``{ultralytics_id: json_id}`` (:func:`category_ids`).
        img_ids (dict[str, int]): ``{image path: json id}`` (:func:`image_ids`).
        max_dets (int): Detections kept per image, by score across categories (:func:`cap_detections`).
        iou_type (str): ``bbox``: results with the detections' boxes; ``segm``: with their masks (``segmentation``,
            RLE, given as ``counts`` bytes, string or list; written as compressed RLE with string ``counts``) and no
            box, so that pycocotools takes each result's area from its mask. The same detections are kept for both.

    Returns:
        ``image_id``, ``category_id``, ``bbox`` (or ``segmentation``), ``score`` dicts, at most ``max_dets`` per image.

    Raises:
        ValueError: If a detection without ``im_file`` has a file name that several validation images share, if
            ``iou_type`` is unknown, or if ``segm`` is asked of detections without masks (not a segmentation model).

    Examples:
        >>> det = {"image_id": 1, "file_name": "a.jpg", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
        >>> to_coco_results([det], {1: 3}, {"d/a.jpg": 5})
        [{'image_id': 5, 'category_id': 3, 'bbox': [1, 2, 3, 4], 'score': 0.5}]
        >>> two = {"d/a.jpg": 5, "d/b/a.jpg": 6}  # the same file name in two folders: told apart by im_file
        >>> [r["image_id"] for r in to_coco_results([{**det, "im_file": "d/b/a.jpg"}], {1: 3}, two)]
        [6]
    """
    by_name = {}
    for f, i in img_ids.items():
        by_name.setdefault(Path(f).name, []).append(i)

    def image_id(d: dict) -> int:
        if "im_file" in d:
            return img_ids[d["im_file"]]
        found = by_name.get(d["file_name"], [])
        if len(found) != 1:
            raise ValueError(
                f"a detection of '{d['file_name']}' does not say which image it is (no 'im_file') and "
                f"{len(found)} validation images have that name"
            )
        return found[0]

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {list(IOU_TYPES)}, got {iou_type!r}")
    if iou_type == "segm" and any("segmentation" not in d for d in detections):
        raise ValueError("segm results need detections with masks ('segmentation'): those of a segmentation model")
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    results = [
        {
            "image_id": image_id(d),
            "category_id": cat_ids[d["category_id"]],
            geometry: d["bbox"] if iou_type == "bbox" else _rle(d["segmentation"]),
            "score": d["score"],
        }
        for d in detections
    ]
    return cap_detections(results, max_dets)


def check_masks(coco_gt, img_ids: list[int], cat_ids: list[int], source: str = "the annotations json") -> None:
    """Check that every ground-truth object of the scored images and categories has a mask, as ``segm`` needs.

    Args:
        coco_gt (pycocotools.coco.COCO): The ground truth.
        img_ids (list[int]): Images scored.
        cat_ids (list[int]): Categories scored.
        source (str): How the json is named in the error (its path).

    Raises:
        ValueError: If objects have no (or an empty) ``segmentation``; names how many, an example and the fix.
    """
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=list(img_ids), catIds=list(cat_ids)))
    bare = [a for a in anns if not a.get("segmentation")]
    if bare:
        raise ValueError(
            f"{len(bare)} of {len(anns)} objects of the scored images in {source} have no mask ('segmentation': "
            f"polygons or RLE; e.g. annotation id {bare[0].get('id')}), so the masks of a segmentation model cannot "
            f"be scored (COCO segm): pass an instances json with masks (scripts/eval_coco.py --ann FILE, "
            f"pst_yolo.coco.evaluate(..., ann=FILE)), e.g. one with COCO segmentation polygons like shapes-seg's "
            f"annotations/instances_val.json"
        )


def score(
    coco_gt,
    results: list[dict],
    img_ids: list[int],
    cat_ids: list[int],
    iou_type: str = "bbox",
    use_cats: bool = True,
    per_class: bool = False,
) -> dict:
    """Score detections with pycocotools by the COCO protocol (bbox or segm, IoU .50:.05:.95, maxDets 1/10/100).

    Each image's :data:`MAX_DETS` highest-scoring detections across categories are scored (:func:`cap_detections`;
    pycocotools alone would keep up to 100 per image and category).

    Args:
        coco_gt (pycocotools.coco.COCO): The ground truth.
        results (list[dict]): Detections with the json's ids (:func:`to_coco_results`).
        img_ids (list[int]): Images evaluated (the validated split; images without detections count).
        cat_ids (list[int]): Categories evaluated (the model's classes).
        iou_type (str): ``bbox`` (results with ``bbox``) or ``segm`` (results with ``segmentation``, RLE; the ground
            truth must have masks: :func:`check_masks`).
        use_cats (bool): False scores class-agnostically (pycocotools' ``useCats=0``): a detection matches any object
            of the ``cat_ids`` categories whatever its class, so the gap to the class-aware score is what wrong
            classes cost.
        per_class (bool): Also return each category's AP (:func:`class_ap`) under ``class_AP`` (class-aware only).

    Returns:
        ``{metric: value}`` for :data:`COCO_METRICS` (pycocotools' -1 where a metric has no ground truth), whatever
        the ``iou_type`` (the row keys of masks, :data:`MASK_METRICS`, are made by :func:`evaluate`); with
        ``per_class``, also ``class_AP``: ``{category_id: AP}``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {list(IOU_TYPES)}, got {iou_type!r}")
    if per_class and not use_cats:
        raise ValueError("per_class needs use_cats=True: a class-agnostic score has no categories to split by")
    if iou_type == "segm":
        check_masks(coco_gt, img_ids, cat_ids)
    if not use_cats:  # useCats=0 ignores params.catIds: objects and boxes of categories not scored are left out here
        scored = set(cat_ids)
        results = [r for r in results if r["category_id"] in scored]
        if any(a["category_id"] not in scored for a in coco_gt.dataset.get("annotations", [])):
            with contextlib.redirect_stdout(io.StringIO()):
                kept = COCO()
                kept.dataset = {**coco_gt.dataset, "annotations": [a for a in coco_gt.dataset["annotations"]
                                                                    if a["category_id"] in scored]}
                kept.createIndex()
            coco_gt = kept

    with contextlib.redirect_stdout(io.StringIO()) as text:  # pycocotools prints progress and the summary
        results = [dict(r) for r in cap_detections(results)]  # loadRes adds keys to the dicts it gets
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list; nothing detected scores 0 wherever there is ground truth
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"]}
            coco_dt.dataset["annotations"] = []
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = sorted(img_ids)
        evaluator.params.catIds = sorted(cat_ids)
        evaluator.params.useCats = int(use_cats)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    LOGGER.debug(text.getvalue())
    metrics = dict(zip(COCO_METRICS, (float(x) for x in evaluator.stats)))
    if per_class:
        metrics["class_AP"] = class_ap(evaluator)
    return metrics


def class_ap(evaluator) -> dict[int, float]:
    """Each category's AP (IoU .50:.95, all areas, maxDets 100) of an accumulated pycocotools ``COCOeval``.

    The same average that gives ``stats[0]``, taken over one category's slice of ``eval["precision"]``
    (IoU thresholds x recall points x categories x areas x maxDets); -1 where the category has no ground truth.

    Returns:
        ``{category_id: AP}`` in ``params.catIds`` order.
    """
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # area "all", the largest maxDets
    out = {}
    for i, cat in enumerate(evaluator.params.catIds):
        p = precision[:, :, i]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else -1.0
    return out


def evaluate(model, data: str, topks=(0,), ann: str | Path | None = None, class_agnostic: bool = False,
             per_class: bool = False, **kwargs) -> list[dict]:
    """Validate ``model`` once per ``pst_topk`` in ``topks`` and score each run with pycocotools.

    Args:
        model (str | Path | ultralytics.YOLO): Weights or a YOLO object.
        data (str): Dataset (``shapes``, ``coco``, a data YAML ...).
        topks (Iterable[int | None]): ``pst_topk`` values; None keeps the model's own value.
        ann (str | Path | None): COCO instances json; default: found by :func:`find_annotations`.
        class_agnostic (bool): Also score the same boxes with every class taken as one (:data:`AGNOSTIC_METRICS`,
            ``agnostic_AP`` ...): where it is far above ``AP``, the boxes are found and their classes are wrong.
        per_class (bool): Also each class's box AP (pycocotools, IoU .50:.95): ``class_AP``, ``{class name: AP}``
            in the model's class order (-1 for a class without objects in the split).
        **kwargs: Further ``YOLO.val`` arguments (``imgsz``, ``batch``, ``device`` ...).

    Returns:
        One dict per value: ``pst_topk``, the 12 :data:`COCO_METRICS` (boxes), Ultralytics' own ``ul_mAP50-95`` and
        ``ul_mAP50`` (of all its detections, up to ``max_det`` per image), ``ms_per_image`` (model inference, as
        Ultralytics times it), ``images``, ``detections`` (scored: at most :data:`MAX_DETS` per image), ``ann``,
        ``save_dir`` and ``results`` (the scored detections as a COCO results json, ``coco_results.json`` in
        ``save_dir``). A segmentation model's rows also have the 12 :data:`MASK_METRICS` (``mask_AP`` ...: the same
        detections scored on their masks, after the box metrics), Ultralytics' ``ul_mask_mAP50-95`` and
        ``ul_mask_mAP50``, and ``mask_results`` (``coco_results_segm.json``). With ``class_agnostic``, also the 12
        :data:`AGNOSTIC_METRICS` (boxes). With ``per_class``, also ``class_AP``.

    Raises:
        ValueError: If the json does not match the model's classes or the validated images, or (segmentation model)
            has objects without masks.
    """
    from pycocotools.coco import COCO
    from ultralytics import YOLO

    topks = [k if k is None else check_topk(k) for k in topks]
    if ann is not None and not Path(ann).is_file():
        raise FileNotFoundError(f"COCO annotations json {ann} (--ann) not found")
    model = model if isinstance(model, YOLO) else YOLO(model)
    rows, gt = [], {}
    for k in topks:
        run = run_val(model, data, pst_topk=k, **kwargs)
        path = find_annotations(run, data, ann).resolve()
        if path not in gt:
            with contextlib.redirect_stdout(io.StringIO()):
                gt[path] = COCO(str(path))
        coco_gt = gt[path]
        cats = category_ids(coco_gt.dataset.get("categories", []), run.names, run.class_map)
        imgs = image_ids(coco_gt.dataset.get("images", []), run.im_files)
        extra = sorted({c["id"] for c in coco_gt.dataset.get("categories", [])} - set(cats.values()))
        if extra:
            LOGGER.warning(f"{len(extra)} categories of {path.name} are not model classes and are not scored: {extra}")
        segm = run.task == "segment"
        if segm:  # before scoring anything: the boxes alone would be a silent half of the answer
            check_masks(coco_gt, list(imgs.values()), list(cats.values()), source=str(path))
        results = to_coco_results(run.detections, cats, imgs)
        if len(results) < len(run.detections):
            LOGGER.info(
                f"COCO protocol: {len(run.detections) - len(results)} of {len(run.detections)} detections are beyond "
                f"the {MAX_DETS} best of their image and are not scored"
            )
        results_json = run.save_dir / "coco_results.json"
        results_json.write_text(json.dumps(results), encoding="utf-8")
        metrics = score(coco_gt, results, list(imgs.values()), list(cats.values()), per_class=per_class)
        by_cat = metrics.pop("class_AP", None)
        row = {"pst_topk": run.pst_topk, **metrics}
        if class_agnostic:
            agnostic = score(coco_gt, results, list(imgs.values()), list(cats.values()), use_cats=False)
            row.update(zip(AGNOSTIC_METRICS, agnostic.values()))
        if segm:
            mask_results = to_coco_results(run.detections, cats, imgs, iou_type="segm")  # the same detections
            mask_json = run.save_dir / "coco_results_segm.json"
            mask_json.write_text(json.dumps(mask_results), encoding="utf-8")
            mask_metrics = score(coco_gt, mask_results, list(imgs.values()), list(cats.values()), iou_type="segm")
            row.update(zip(MASK_METRICS, mask_metrics.values()))
        row["ul_mAP50-95"] = run.metrics.get("metrics/mAP50-95(B)")
        row["ul_mAP50"] = run.metrics.get("metrics/mAP50(B)")
        if segm:
            row["ul_mask_mAP50-95"] = run.metrics.get("metrics/mAP50-95(M)")
            row["ul_mask_mAP50"] = run.metrics.get("metrics/mAP50(M)")
        row["ms_per_image"] = run.metrics.get("speed/inference(ms)")
        row.update(images=len(imgs), detections=len(results), ann=str(path), save_dir=str(run.save_dir))
        row["results"] = str(results_json)
        if segm:
            row["mask_results"] = str(mask_json)
        if by_cat is not None:
            row["class_AP"] = {name: by_cat[cats[run.class_map[c]]] for c, name in run.names.items()}
        for kind in ("bbox", *(("segm",) if segm else ()), *(("class-agnostic",) if class_agnostic else ())):
            values = ", ".join(f"{m} {row[k]:.3f}" for m, k in zip(COCO_METRICS, TABLES[kind][0]))
            label = "bbox, class-agnostic" if kind == "class-agnostic" else kind
            LOGGER.info(f"pycocotools {label} pst_topk={run.pst_topk}: {values}")
        rows.append(row)
    return rows


def format_table(rows: list[dict], iou_type: str = "bbox") -> str:
    """One line per row: ``pst_topk``, the 12 COCO metrics and Ultralytics' mAP50-95 as fractions, and ms/image.

    Args:
        rows (list[dict]): Rows of :func:`evaluate`.
        iou_type (str): ``bbox``: the box metrics (``AP`` ..., ``ul_mAP50-95``); ``segm``: the mask metrics of a
            segmentation model (``mask_AP`` ..., ``ul_mask_mAP50-95``); ``class-agnostic``: the box metrics with every
            class taken as one (``agnostic_AP`` ...; Ultralytics has no such figure: ``-``); all under the same column
            names. Missing values show as ``-``.

    Returns:
        The table: a header line, then one line per row.

    Examples:
        >>> row = {"pst_topk": 8, **dict.fromkeys(COCO_METRICS, 0.5), "ul_mAP50-95": 0.49, "ms_per_image": 12.0}
        >>> print(format_table([row]).split()[-2:])
        ['0.490', '12.000']
        >>> row.update({**dict.fromkeys(MASK_METRICS, 0.25), "ul_mask_mAP50-95": 0.24})
        >>> print(format_table([row], "segm").split()[-3:])
        ['0.250', '0.240', '12.000']
        >>> print(format_table([{**row, **dict.fromkeys(AGNOSTIC_METRICS, 0.75)}], "class-agnostic").split()[-3:])
        ['0.750', '-', '12.000']
    """
    if iou_type not in TABLES:
        raise ValueError(f"iou_type must be one of {list(TABLES)}, got {iou_type!r}")
    cols = ("pst_topk", *COCO_METRICS, "ul_mAP50-95", "ms_per_image")
    keys = ("pst_topk", *TABLES[iou_type][0], TABLES[iou_type][1], cols[-1])
    lines = [" ".join(f"{c:>11}" for c in cols)]
    for r in rows:
        cells = [f"{'-' if r.get('pst_topk') is None else r['pst_topk']:>11}"]
        cells += [f"{r[k]:11.3f}" if isinstance(r.get(k), (int, float)) else f"{'-':>11}" for k in keys[1:]]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def format_class_table(rows: list[dict]) -> str:
    """One line per row of :func:`evaluate` with ``per_class``: ``pst_topk``, then each class's AP (a column per class,
    headed by its name; ``-`` for a class without objects in the split).

    Examples:
        >>> print(format_class_table([{"pst_topk": 8, "class_AP": {"circle": 0.5, "square": -1.0}}]))
           pst_topk      circle      square
                  8       0.500           -
    """
    names = list(dict.fromkeys(n for r in rows for n in r.get("class_AP", {})))
    lines = [" ".join(f"{c:>11}" for c in ("pst_topk", *names))]
    for r in rows:
        aps = r.get("class_AP", {})
        cells = [f"{'-' if r.get('pst_topk') is None else r['pst_topk']:>11}"]
        cells += [f"{aps[n]:11.3f}" if aps.get(n, -1) >= 0 else f"{'-':>11}" for n in names]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _flat(row: dict) -> dict:
    """A row for a CSV cell each: ``class_AP`` becomes one ``AP_<class>`` column per class."""
    flat = {k: v for k, v in row.items() if k != "class_AP"}
    flat.update({f"AP_{name}": ap for name, ap in row.get("class_AP", {}).items()})
    return flat


def save_rows(rows: list[dict], out: str | Path) -> tuple[Path, Path]:
    """Write ``rows`` to ``out.json`` and ``out.csv`` (``out`` without suffix; per-class APs as ``AP_<class>``
    columns); returns both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out.with_suffix(".json"), out.with_suffix(".csv")
    json_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    flat = [_flat(r) for r in rows]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        fields = list(dict.fromkeys(k for r in flat for k in r)) if flat else ["pst_topk", *COCO_METRICS]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)
    return json_path, csv_path
