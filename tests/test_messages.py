"""What a newcomer reads: unknown names, bad pst_topk, the first use of shapes, a finished run, help, checks, export.

Each message is checked as the exact text ``pst-yolo`` prints, in a fresh process (tests/_cli.py).
"""

import warnings

import pytest
import torch
import torch.nn as nn
from _cli import run  # tests/_cli.py

import pst_yolo
from pst_yolo import PST
from pst_yolo.messages import finished_run
from pst_yolo.nn.attention import PSTArgumentError, check_topk

CONFIGS = (
    "PST configs (model=NAME, from any directory): r101-cls-pst.yaml, r101-pst.yaml, r18-cls-pst.yaml, r18-pst.yaml, "
    "r50-cls-pst.yaml, r50-pst.yaml, yolo11{n,s,m,l,x}-cls-pst.yaml, yolo11{n,s,m,l,x}-obb-pst.yaml, "
    "yolo11{n,s,m,l,x}-pose-pst.yaml, yolo11{n,s,m,l,x}-pst.yaml, yolo11{n,s,m,l,x}-seg-pst.yaml, "
    "yolo12{n,s,m,l,x}-pst.yaml, yolo26{n,s,m,l,x}-cls-pst.yaml, yolo26{n,s,m,l,x}-obb-pst.yaml, "
    "yolo26{n,s,m,l,x}-pose-pst.yaml, yolo26{n,s,m,l,x}-pst.yaml, yolo26{n,s,m,l,x}-seg-pst.yaml"
)
DATASETS = [
    "  coco            COCO 2017 detection, 80 classes, 118k train / 5k val images (needs internet on first use)",
    "  coco8           first 8 images of COCO train2017 split 4/4, for smoke tests (needs internet on first use)",
    "  shapes          offline synthetic shapes, 6 classes, 512 train / 128 val images generated on first use "
    "(no internet)",
    "  shapes-context  offline marks classed by the shape they lie in (context decides the class), 3 classes, 512 / "
    "128 images",
    "  shapes-seg      offline shapes with exact instance polygons (segment), 256 train / 64 val images, COCO json "
    "with polygons",
    "  shapes-pose     offline shapes with 5 keypoints each (top, right, bottom, left, centre; with visibility), 256 / "
    "64 images",
    "  shapes-obb      offline rotated shapes with tight oriented boxes (obb), 256 train / 64 val images",
    "  shapes-cls      offline classification image folder, one shape per image, 6 classes, 2400 / 600 images",
]


def lines(text: str) -> list[str]:
    return text.rstrip("\n").splitlines()


def test_unknown_model_lists_pst_configs(cli_env, tmp_path):
    """Ultralytics' own error (and traceback) for a model YAML found nowhere, continued by the PST configs."""
    stock = lines(run(["yolo", "train", "model=yolo11q-pst.yaml"], tmp_path, cli_env, ok=False))[-1]
    assert stock == "FileNotFoundError: 'yolo11q-pst.yaml' does not exist"
    out = run(["pst-yolo", "train", "model=yolo11q-pst.yaml", "data=shapes"], tmp_path, cli_env, ok=False)
    assert lines(out)[-1] == f"{stock}. {CONFIGS}; or a path to a model YAML or .pt"
    assert "Traceback" in out  # as Ultralytics does for its own arguments


@pytest.mark.parametrize("mode", ["train", "val"])
def test_unknown_data_lists_named_datasets_and_leaves_no_run_dir(mode, cli_env, tmp_path):
    runs = tmp_path / "runs"
    cmd = ["pst-yolo", mode, "model=yolo11n-pst.yaml", "data=nonexistent", f"project={runs}", "name=bad"]
    out = run(cmd, tmp_path, cli_env, ok=False)
    first = "'nonexistent' does not exist. data= takes a path to a data YAML or one of these names:"
    # the trainer wraps the error in its own RuntimeError (as it does without the plugin); the validator does not
    prefix = "RuntimeError: Dataset 'nonexistent' error ❌ " if mode == "train" else "FileNotFoundError: "
    assert lines(out)[-1 - len(DATASETS):] == [prefix + first, *DATASETS]
    assert not (runs / "bad").exists(), sorted(runs.rglob("*"))  # no empty run directory left behind


def test_near_miss_of_a_classification_set_lists_named_datasets(cli_env, tmp_path):
    """``data=shapes-cl`` (for shapes-cls): the list of names, not a download attempt of shapes-cl.zip."""
    runs = tmp_path / "runs"
    cmd = ["pst-yolo", "train", "model=yolo11n-cls-pst.yaml", "data=shapes-cl", f"project={runs}", "name=bad"]
    out = run(cmd, tmp_path, cli_env, ok=False)
    assert lines(out)[-1 - len(DATASETS):] == [
        "FileNotFoundError: 'shapes-cl' does not exist. data= takes a path to a data YAML or one of these names:",
        *DATASETS,
    ]
    assert "Download" not in out and "shapes-cl.zip" not in out
    assert not (runs / "bad").exists(), sorted(runs.rglob("*"))


@pytest.mark.parametrize("value, shown", [("-3", "-3"), ("abc", "'abc'"), ("1.5", "1.5")])
def test_bad_topk_one_line_no_traceback(value, shown, cli_env, tmp_path):
    out = run(["pst-yolo", "val", "model=yolo11n-pst.yaml", "data=shapes", f"pst_topk={value}"], tmp_path, cli_env,
              ok=False)
    assert lines(out) == [f"pst-yolo: pst_topk must be a non-negative integer (0 = coarse attention only), got {shown}"]


def test_topk_error_is_a_value_error_for_api_users():
    with pytest.raises(ValueError, match=r"^pst_topk must be a non-negative integer .* got -1$") as e:
        check_topk(-1)
    assert isinstance(e.value, PSTArgumentError)


def test_shapes_first_use_says_generated_not_downloaded(fresh_env, tmp_path):
    """A fresh datasets_dir: shapes is generated with its own two lines, and no 'not found' / 'download' lines."""
    env = fresh_env
    cmd = ["pst-yolo", "val", "model=yolo11n-pst.yaml", "data=shapes", "imgsz=32", "batch=128", "plots=False"]
    root = tmp_path / "datasets" / "shapes"
    said = [
        f"shapes: generating the offline synthetic dataset in {root} (first use; nothing is downloaded)",
        f"shapes: dataset ready in {root}",
    ]
    out = run(cmd, tmp_path, env)
    assert [line for line in lines(out) if line.startswith("shapes:")] == said
    assert "images not found" not in out and "Dataset download" not in out
    assert len(list((root / "images" / "val").glob("*.jpg"))) == 128
    again = run(cmd, tmp_path, env)
    assert not any(line.startswith("shapes:") for line in lines(again)) and "Dataset download" not in again


def test_resume_of_finished_run_says_so(shapes_model, test_root, cli_env, tmp_path):
    """`yolo` would start a new training on coco8 (and try to download it); pst-yolo says the run had finished."""
    last = shapes_model.with_name("last.pt")
    detect_runs = test_root / "runs" / "detect"
    before = sorted(detect_runs.iterdir()) if detect_runs.is_dir() else []
    out = run(["pst-yolo", "train", "resume", f"model={last}"], tmp_path, cli_env, ok=False)
    assert lines(out) == [
        f"pst-yolo: {last} is the final checkpoint of a finished training run (3 epochs), so there is nothing to "
        f"resume; to train it further, start a new run from it: pst-yolo train model={last} data=shapes epochs=N"
    ]
    assert (sorted(detect_runs.iterdir()) if detect_runs.is_dir() else []) == before  # no new run started


def test_finished_run_only_for_finished_pst_checkpoints(tmp_path):
    """Stock models and resumable checkpoints are left to Ultralytics (None); only a finished PST run is caught."""
    finished = {"epoch": -1, "optimizer": None, "train_results": {"epoch": [1, 2]}, "train_args": {"data": "my.yaml"}}
    files = {}
    for name, model, extra in [("pst", PST(64, 64, 64), {}), ("stock", nn.Conv2d(3, 8, 3), {}),
                               ("resumable", PST(64, 64, 64), {"epoch": 1, "optimizer": {"state": {}}})]:
        files[name] = tmp_path / f"{name}.pt"
        torch.save({**finished, "model": model, **extra}, files[name])
    args = ["train", "resume", f"model={files['pst']}"]
    assert finished_run(args) == (
        f"{files['pst']} is the final checkpoint of a finished training run (2 epochs), so there is nothing to resume; "
        f"to train it further, start a new run from it: pst-yolo train model={files['pst']} data=my.yaml epochs=N"
    )
    assert finished_run(["train", "resume=True", f"model={files['pst']}"]) == finished_run(args)
    assert finished_run(["train", f"model={files['pst']}"]) is None  # not resuming: a new training from it
    assert finished_run(["val", "resume", f"model={files['pst']}"]) is None
    assert finished_run(["train", "resume", f"model={files['stock']}"]) is None
    assert finished_run(["train", "resume", f"model={files['resumable']}"]) is None


def test_help_adds_plugin_lines(cli_env, tmp_path):
    out = run(["pst-yolo"], tmp_path, cli_env)
    assert "yolo TASK MODE ARGS" in out  # Ultralytics' help comes first
    n = 8 + len(DATASETS)
    assert lines(out)[-n:] == [
        f"pst_yolo {pst_yolo.__version__}: the Pyramid Sparse Transformer (PST) plugin. 'pst-yolo' takes every 'yolo' "
        "command above, plus:",
        f"    {CONFIGS}",
        "    Named datasets (data=NAME, from any directory):",
        *(f"    {line}" for line in DATASETS),
        "    pst_topk=K  fine attention, any mode: 0 = coarse only, K > 0 = on (K coarse tokens' fine patches), "
        "e.g. pst_topk=8",
        "    pst_topk_train=0,4,8,16  train only: each step runs a K drawn from the set (any-K training)",
        "    pst-yolo demo [epochs=40 imgsz=160 ...]  train yolo11n-pst on shapes (CPU, ~10 min), compare pst_topk 0 "
        "and 8",
        "    pst-yolo explain model=best.pt source=IMG pst_topk=8  pictures of what each PST layer selects and attends "
        "to",
        "    model=AUTHORS.pt  the paper's COCO weights (the authors' Model Zoo) load as they are: "
        "docs/authors_weights.md",
    ]
    for alias in ("help", "--help"):
        assert lines(run(["pst-yolo", alias], tmp_path, cli_env))[-n:] == lines(out)[-n:]


def test_checks_name_the_plugin(cli_env, tmp_path):
    import ultralytics

    out = run(["pst-yolo", "checks"], tmp_path, cli_env)
    assert lines(out)[-3:] == [
        f"pst-yolo               ✅ {pst_yolo.__version__} (tested with ultralytics>=8.4.190,<8.5; found "
        f"{ultralytics.__version__})",
        "PST configs            " + CONFIGS.split(": ", 1)[1],
        "named datasets         coco, coco8, shapes, shapes-context, shapes-seg, shapes-pose, shapes-obb, shapes-cls",
    ]


def test_onnx_export_has_no_tracer_warnings_from_pst_checks(tmp_path):
    """PST.forward's input checks are skipped while tracing (they would be trace-time constants); eager still checks."""
    m = PST(128, 64, 64, n=1).eval()
    x, u = torch.randn(1, 128, 16, 12), torch.randn(1, 64, 8, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Ultralytics hides TracerWarnings in its exporter; show everything here
        torch.onnx.export(m, ([x, u],), str(tmp_path / "pst.onnx"), dynamo=False,
                          input_names=["x", "u"], dynamic_axes={"x": {2: "h", 3: "w"}, "u": {2: "hc", 3: "wc"}})
    from_pst = [f"{w.category.__name__}: {w.message}" for w in caught if w.filename.endswith("pst_yolo/nn/pst.py")]
    assert from_pst == []
    assert (tmp_path / "pst.onnx").stat().st_size > 0
    with pytest.raises(ValueError, match=r"coarse map \(9, 6\) is not the next pyramid level of the fine map"):
        m([x, torch.randn(1, 64, 9, 6)])

