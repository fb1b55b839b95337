"""The fine-attention switch asserted where it acts: the K each PST layer's forward ran with, for every entry point.

Every run here happens in a fresh process whose Python start-up loads the K probe (tests/_kprobe/sitecustomize.py: a
global forward hook that records ``PSTAttention.topk`` per forward and never imports pst_yolo). Rows of a forward are
``[topk, H, W, training, profiling]``; forwards that are not a run are left out: those of Ultralytics' FLOP counter
(thop runs the model on a proxy input when a model summary is printed) and the stride probe of a model's constructor.

Entry points: the Python API in a process that never imports pst_yolo itself (the YOLO object is made before the
plugin is loaded: unpickling the checkpoint loads it) and in one that imports it first; ``pst-yolo`` and plain
``yolo`` on the command line; ``set_topk`` before and after a predictor exists. Each run with ``pst_topk`` 0 and 8,
and without it (the model's own value). Exports are also run, and their boxes compared with PyTorch at that K.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ultralytics import YOLO

from pst_yolo import set_topk

PROBE = Path(__file__).parent / "_kprobe"
IMGSZ = 96


def ran(rows: list) -> list[int]:
    """The distinct K values of the real forwards among probe ``rows`` (the FLOP counter's forwards dropped)."""
    return sorted({k for k, h, w, training, profiling in rows if not profiling})


@pytest.fixture(scope="module")
def probe_env(cli_env, tmp_path_factory) -> dict:
    """Environment whose Python processes load the K probe; each test sets its own PST_KPROBE file."""
    path = os.pathsep.join([str(PROBE), *filter(None, [cli_env.get("PYTHONPATH")])])
    return dict(cli_env, PYTHONPATH=path)


@pytest.fixture(scope="module")
def ckpts(shapes_model, tmp_path_factory) -> dict[str, Path]:
    """The shared trained model saved with its own value 0 and 8 (``own0.pt``, ``own8.pt``)."""
    d = tmp_path_factory.mktemp("ckpts")
    out = {"own0": Path(shutil.copy(shapes_model, d / "own0.pt"))}
    ckpt = torch.load(shapes_model, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        if isinstance(ckpt.get(key), torch.nn.Module):
            set_topk(ckpt[key], 8, verbose=False)
    torch.save(ckpt, d / "own8.pt")
    out["own8"] = d / "own8.pt"
    return out


def probed(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> tuple[list, subprocess.CompletedProcess]:
    """Run ``cmd`` with the K probe; return the rows its process recorded and the completed process."""
    log = cwd / f"kprobe_{len(list(cwd.glob('kprobe_*')))}.jsonl"
    proc = subprocess.run(cmd, cwd=cwd, env=dict(env, PST_KPROBE=str(log)), capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    rows = [row for line in log.read_text().splitlines() for row in json.loads(line)["seen"]] if log.exists() else []
    return rows, proc


def onnx_boxes(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def eager_boxes(weights: Path, k: int, x: np.ndarray) -> np.ndarray:
    model = YOLO(weights).model.fuse(verbose=False).eval()
    set_topk(model, k, verbose=False)
    with torch.no_grad():
        return model(torch.from_numpy(x))[0].numpy()


def assert_export_runs(path: Path, weights: Path, k: int) -> None:
    """The exported file records ``k`` and gives PyTorch's output at ``k`` (and differs from the other K)."""
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["pst_topk"] == str(k)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = onnx_boxes(path, x)
    np.testing.assert_allclose(out, eager_boxes(weights, k, x), rtol=1e-3, atol=1e-3)
    assert np.abs(out - eager_boxes(weights, 8 - k, x)).max() > 1e-3  # the two K really differ on this input


# ------------------------------------------------------------------------------------------------------ Python API
API_SCRIPT = r"""
import json, shutil, sys
import sitecustomize as probe  # the K probe (tests/_kprobe); it does not import pst_yolo

weights, image, work, import_first = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if import_first:
    import pst_yolo
from ultralytics import YOLO

model = YOLO(weights)
out = {"plugin_loaded_by_checkpoint": not import_first and "pst_yolo" in sys.modules}
from pst_yolo import set_topk  # loaded by now either way


def step(name, fn):
    probe.take()
    result = fn()
    out[name] = probe.take()
    return result


for k in (0, 8):
    step(f"predict{k}", lambda: model.predict(image, imgsz=96, conf=0.001, pst_topk=k, verbose=False))
    step(f"track{k}", lambda: model.track(image, imgsz=96, pst_topk=k, verbose=False))
    step(f"val{k}", lambda: model.val(data="shapes", imgsz=96, batch=32, pst_topk=k, plots=False, verbose=False,
                                      project=work, name=f"val{k}", exist_ok=True))
    f = step(f"export{k}", lambda: model.export(format="onnx", imgsz=96, pst_topk=k))
    shutil.move(f, f"{work}/api{k}.onnx")
step("predict_own", lambda: model.predict(image, imgsz=96, verbose=False))
step("val_own", lambda: model.val(data="shapes", imgsz=96, batch=32, plots=False, verbose=False, project=work,
                                  name="val_own", exist_ok=True))
# set_topk on the YOLO object reaches the predictor that already exists, and its module too
set_topk(model, 8, verbose=False)
step("predict_after_set8", lambda: model.predict(image, imgsz=96, verbose=False))
set_topk(model.model, 4, verbose=False)
step("predict_after_module_set4", lambda: model.predict(image, imgsz=96, verbose=False))
step("val_after_module_set4", lambda: model.val(data="shapes", imgsz=96, batch=32, plots=False, verbose=False,
                                                project=work, name="val_set4", exist_ok=True))
fresh = YOLO(weights)
set_topk(fresh, 8, verbose=False)  # before any predictor exists
step("predict_set_before_predictor", lambda: fresh.predict(image, imgsz=96, verbose=False))
step("predict_run_value0", lambda: model.predict(image, imgsz=96, pst_topk=0, verbose=False))
step("predict_own_after_run_value", lambda: model.predict(image, imgsz=96, verbose=False))  # back to 4
print("KPROBE " + json.dumps(out))
"""


@pytest.mark.parametrize("import_first", [False, True], ids=["never-imported", "imported-first"])
def test_python_api_runs_the_requested_k(import_first, ckpts, probe_env, test_root, tmp_path):
    weights = Path(shutil.copy(ckpts["own0"], tmp_path / "w.pt"))
    image = sorted((test_root / "datasets" / "shapes" / "images" / "val").glob("*.jpg"))[0]
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    _, proc = probed([sys.executable, str(script), str(weights), str(image), str(tmp_path), str(int(import_first))],
                     tmp_path, probe_env)
    seen = json.loads(proc.stdout.split("KPROBE ", 1)[1])
    assert seen.pop("plugin_loaded_by_checkpoint") == (not import_first)
    expected = {"predict_own": [0], "val_own": [0], "predict_after_set8": [8], "predict_after_module_set4": [4],
                "val_after_module_set4": [4], "predict_set_before_predictor": [8], "predict_run_value0": [0],
                "predict_own_after_run_value": [4]}
    for k in (0, 8):
        expected.update({f"{mode}{k}": [k] for mode in ("predict", "track", "val", "export")})
    assert {name: ran(rows) for name, rows in seen.items()} == expected
    for k in (0, 8):
        assert_export_runs(tmp_path / f"api{k}.onnx", weights, k)


# ---------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("mode", ["predict", "val", "export"])
@pytest.mark.parametrize("k", [0, 8])
def test_pst_yolo_cli_runs_the_requested_k(mode, k, ckpts, probe_env, test_root, tmp_path):
    weights = Path(shutil.copy(ckpts["own8" if k == 0 else "own0"], tmp_path / "w.pt"))  # K differs from the own value
    extra = {
        "predict": [f"source={test_root / 'datasets' / 'shapes' / 'images' / 'val'}", "save=False"],
        "val": ["data=shapes", "batch=32", "plots=False"],
        "export": ["format=onnx"],
    }[mode]
    rows, proc = probed(["pst-yolo", mode, f"model={weights}", f"imgsz={IMGSZ}", f"pst_topk={k}",
                         f"project={tmp_path}", "name=run", *extra], tmp_path, probe_env)
    assert ran(rows) == [k], proc.stdout + proc.stderr
    if mode == "export":
        assert_export_runs(tmp_path / "w.onnx", weights, k)


@pytest.mark.parametrize("own", ["own0", "own8"])
def test_plain_yolo_cli_runs_the_checkpoint_k(own, ckpts, probe_env, test_root, tmp_path):
    """Plain `yolo` never imports the plugin itself: a PST checkpoint loads it and runs with its own value."""
    source = test_root / "datasets" / "shapes" / "images" / "val"
    for mode, extra in (("predict", [f"source={source}", "save=False"]), ("val", ["data=shapes", "batch=32"])):
        rows, proc = probed(["yolo", mode, f"model={ckpts[own]}", f"imgsz={IMGSZ}", f"project={tmp_path}",
                             f"name={mode}", "plots=False", *extra], tmp_path, probe_env)
        assert ran(rows) == [int(own[-1])], proc.stdout + proc.stderr


def test_plain_yolo_cli_rejects_pst_topk_loudly(ckpts, probe_env, test_root, tmp_path):
    """Without the plugin loaded before its argument check, `yolo` refuses pst_topk: never a silent K=0 run."""
    rows, proc = probed(["yolo", "predict", f"model={ckpts['own0']}", f"source={test_root}", "pst_topk=8"], tmp_path,
                        probe_env, check=False)
    assert proc.returncode != 0 and rows == []
    assert "'pst_topk' is not a valid YOLO argument" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------ train and benchmark
TRAIN_ARGS = ["data=shapes", "epochs=1", f"imgsz={IMGSZ}", "batch=8", "fraction=0.03", "workers=0", "plots=False",
              "val=False", "exist_ok=True"]


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 8])
def test_train_runs_the_requested_k(k, ckpts, probe_env, tmp_path):
    """`pst-yolo train model=<checkpoint with another value> pst_topk=K`: every training step and the final
    validation run K, and the saved checkpoint carries it."""
    weights = Path(shutil.copy(ckpts["own8" if k == 0 else "own0"], tmp_path / "w.pt"))
    rows, proc = probed(["pst-yolo", "train", f"model={weights}", f"pst_topk={k}", f"project={tmp_path}", "name=t",
                         *TRAIN_ARGS], tmp_path, probe_env)
    steps = [row for row in rows if row[3] and not row[4]]  # training steps
    assert steps and ran(steps) == [k] and ran(rows) == [k], proc.stdout
    from pst_yolo import get_topk

    assert get_topk(YOLO(tmp_path / "t" / "weights" / "last.pt")) == k


@pytest.mark.slow
def test_train_omitted_keeps_the_model_value_and_benchmark_runs_k(ckpts, probe_env, tmp_path):
    """Python API in a process that never imports pst_yolo: train without pst_topk runs the checkpoint's own value
    (the trainer rebuilds the model from its YAML), and benchmark runs its PyTorch row and its export with K."""
    script = tmp_path / "tb.py"
    script.write_text(
        "import json, sys\nimport sitecustomize as probe\nfrom ultralytics import YOLO\n"
        f"m = YOLO({str(ckpts['own8'])!r})\n"
        f"m.train(data='shapes', epochs=1, imgsz={IMGSZ}, batch=8, fraction=0.03, workers=0, plots=False, val=False,"
        f" project={str(tmp_path)!r}, name='t', exist_ok=True)\n"
        "train = probe.take()\n"
        f"YOLO({str(ckpts['own0'])!r}).benchmark(data='shapes', imgsz={IMGSZ}, format='torchscript', pst_topk=8)\n"
        "print('KPROBE ' + json.dumps({'train': train, 'benchmark': probe.take()}))\n"
    )
    _, proc = probed([sys.executable, str(script)], tmp_path, probe_env)
    seen = json.loads(proc.stdout.split("KPROBE ", 1)[1])
    assert ran([r for r in seen["train"] if r[3]]) == [8] and ran(seen["train"]) == [8]
    assert ran(seen["benchmark"]) == [8]
