"""``pst_topk``: the fine-attention switch in train/val/predict/export/benchmark, set_topk, clamping, determinism."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _cli import run  # tests/_cli.py
from ultralytics import YOLO

from pst_yolo import PSTAttention, get_topk, set_topk
from pst_yolo.topk import check_topk


@pytest.fixture
def logs():
    """Messages logged by Ultralytics' LOGGER (which pst_yolo logs to) during the test."""

    class Handler(logging.Handler):
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    from ultralytics.utils import LOGGER

    handler = Handler()
    LOGGER.addHandler(handler)
    yield handler.messages
    LOGGER.removeHandler(handler)


def gates(model) -> list[torch.Tensor]:
    return [t for m in model.modules() if isinstance(m, PSTAttention) for t in (m.gate.weight, m.gate.bias)]


def val_image(test_root) -> Path:
    return sorted((test_root / "datasets" / "shapes" / "images" / "val").glob("*.jpg"))[0]


# ---------------------------------------------------------------------------------------------------- set/check
@pytest.mark.parametrize("bad", [-1, 2.5, "8", True, None])
def test_bad_topk_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        check_topk(bad)
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        set_topk(PSTAttention(64), bad)


def test_set_topk_accepts_yolo_and_module():
    model = YOLO("yolo11n-pst.yaml")
    assert get_topk(model) == 0
    assert set_topk(model, 4, verbose=False) == 2  # two PST layers with one block each at scale n
    assert get_topk(model.model) == 4
    assert set_topk(model.model, np.int64(6), verbose=False) == 2  # any integer type
    assert get_topk(model) == 6 and type(get_topk(model)) is int
    with pytest.raises(TypeError, match="expected a YOLO model or torch nn.Module"):
        set_topk("yolo11n-pst.yaml", 4)


def test_bad_topk_fails_before_any_work(tmp_path):
    model = YOLO("yolo11n-pst.yaml")
    for call in (
        lambda: model.train(data="shapes", epochs=1, imgsz=64, pst_topk=-3, project=str(tmp_path)),
        lambda: model.val(data="shapes", imgsz=64, pst_topk=1.5, project=str(tmp_path)),
        lambda: model.predict(torch.zeros(1, 3, 64, 64), pst_topk="8"),
        lambda: model.export(format="torchscript", imgsz=64, pst_topk=-1),
    ):
        with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
            call()
    assert not (tmp_path / "train").exists()  # failed while checking arguments, before any run directory was made


# ----------------------------------------------------------------------------------------- clamping, determinism
def test_oversized_topk_is_clamped_and_said_once_per_model_k_and_size(logs):
    torch.manual_seed(0)
    attn = PSTAttention(64).eval()
    x, u = torch.randn(2, 64, 7, 9), torch.randn(2, 64, 4, 5)  # odd fine map, M = 20 coarse tokens
    set_topk(attn, 20, verbose=False)
    exact = attn(x, u)
    set_topk(attn, 10**9, verbose=False)  # would need terabytes if it were not clamped
    for _ in range(3):
        assert torch.equal(attn(x, u), exact)
    assert not [m for m in logs if "exceeds" in m]  # the layer does not log

    from pst_yolo.topk import warn_clamped

    net = YOLO("yolo11n-pst.yaml").model
    assert warn_clamped(net, 25, (96, 64)) == {13: 6, 16: 24}  # coarse maps 3 x 2 and 6 x 4
    assert warn_clamped(net, 25, (96, 64)) == {}  # said once per model, K and size
    assert warn_clamped(net, 20, 96) == {13: 9}  # 96 x 96: coarse maps 3 x 3 and 6 x 6
    said = [m for m in logs if "exceeds the coarse tokens" in m]
    assert len(said) == 2 and "pst_topk=25" in said[0] and "imgsz 96x64 (row 13: 6, row 16: 24)" in said[0], said
    assert "pst_topk=20" in said[1] and "imgsz 96x96 (row 13: 9)" in said[1]


def test_full_model_with_huge_topk_at_small_and_rect_sizes():
    model = YOLO("yolo11n-pst.yaml").model.eval()
    set_topk(model, 10**6, verbose=False)
    with torch.no_grad():
        for shape in ((1, 3, 32, 32), (2, 3, 64, 96), (1, 3, 96, 32)):
            y = model(torch.rand(shape))[0]
            assert torch.isfinite(y).all()


def test_fine_attention_is_deterministic_in_eval():
    """Same input, same output, bitwise, with fine attention on (the authors' code adds Gumbel noise at inference)."""
    torch.manual_seed(0)
    model = YOLO("yolo11n-pst.yaml").model.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        coarse = model(x)[0]
        set_topk(model, 8, verbose=False)
        first = model(x)[0]
        assert not torch.equal(first, coarse)
        for _ in range(3):
            assert torch.equal(model(x)[0], first)
        fused = model.fuse(verbose=False)
        assert torch.equal(fused(x)[0], fused(x)[0])


# ------------------------------------------------------------------------------------------------------- val
def test_val_topk_changes_predictions_and_repeats_exactly(shapes_model, tmp_path):
    model = YOLO(shapes_model)
    runs = {}
    for name, k in (("k0", 0), ("k8", 8), ("k8_again", 8), ("own", None)):
        extra = {} if k is None else {"pst_topk": k}
        model.val(data="shapes", imgsz=96, batch=32, save_json=True, plots=False, verbose=False,
                  project=str(tmp_path), name=name, **extra)
        runs[name] = json.loads((tmp_path / name / "predictions.json").read_text())
        args = yaml.safe_load((tmp_path / name / "args.yaml").read_text())
        assert args["pst_topk"] == (0 if k is None else k)  # omitted: the model's own value is recorded
        assert args["mode"] == "val" and args["data"] == "shapes"
    assert runs["k0"] != runs["k8"]
    assert runs["k8"] == runs["k8_again"]
    assert runs["own"] == runs["k0"]  # trained coarse-only: the model's own value is 0
    assert get_topk(model) == 0  # val runs on a copy


def test_val_cli_fresh_process_records_topk(shapes_model, cli_env, tmp_path):
    text = run(["pst-yolo", "val", f"model={shapes_model}", "data=shapes", "pst_topk=8", "imgsz=96", "batch=32",
                f"project={tmp_path}", "name=v", "plots=False"], tmp_path, cli_env)
    assert "PST: pst_topk=8 (fine attention on, 2 layers)" in text
    assert yaml.safe_load((tmp_path / "v" / "args.yaml").read_text())["pst_topk"] == 8


# --------------------------------------------------------------------------------------------------- predict
def test_predict_topk_applies_to_that_run_only(shapes_model, test_root, logs):
    model = YOLO(shapes_model)
    source = str(val_image(test_root))

    def boxes(**kw):
        return model.predict(source, imgsz=96, conf=0.001, verbose=False, **kw)[0].boxes.data

    coarse = boxes(pst_topk=0)
    fine = boxes(pst_topk=8)
    assert not any("PST:" in m for m in logs)  # verbose=False: predict stays quiet (the CLI test sees the log)
    assert len(coarse) and len(fine)
    assert not torch.equal(coarse, fine)
    assert torch.equal(boxes(pst_topk=8), fine)
    assert get_topk(model) == 0  # a run's value does not change the YOLO object's own
    assert torch.equal(boxes(), coarse)  # ... nor what its next run (same predictor) computes
    set_topk(model, 8, verbose=False)  # the object's own value reaches the predictor that already exists
    assert torch.equal(boxes(), fine)
    assert torch.equal(boxes(pst_topk=0), coarse)


def test_predict_cli_fresh_process(shapes_model, test_root, cli_env, tmp_path):
    text = run(["pst-yolo", "predict", f"model={shapes_model}", f"source={val_image(test_root)}", "imgsz=96",
                "pst_topk=4", f"project={tmp_path}", "name=p", "save=False"], tmp_path, cli_env)
    assert "PST: pst_topk=4 (fine attention on, 2 layers)" in text
    assert "image 1/1" in text


# ---------------------------------------------------------------------------------------------------- export
def _eager(weights, k, x):
    model = YOLO(weights).model.fuse(verbose=False).eval()
    set_topk(model, k, verbose=False)
    with torch.no_grad():
        return model(x)[0]


def _scripted(path, x):
    with torch.no_grad():
        y = torch.jit.load(str(path))(x)
    return y[0] if isinstance(y, (list, tuple)) else y


def test_export_topk_api_and_cli(shapes_model, cli_env, tmp_path, logs):
    weights = shutil.copy(shapes_model, tmp_path / "m.pt")
    x = torch.rand(1, 3, 96, 96)
    model = YOLO(weights)
    coarse = _scripted(model.export(format="torchscript", imgsz=96, pst_topk=0), x)
    assert get_topk(model) == 0  # export runs on a copy
    torch.testing.assert_close(coarse, _eager(weights, 0, x), rtol=1e-4, atol=1e-3)

    text = run(["pst-yolo", "export", f"model={weights}", "format=torchscript", "imgsz=96", "pst_topk=8"],
               tmp_path, cli_env)
    assert "PST: pst_topk=8 (fine attention on, 2 layers)" in text
    fine = _scripted(tmp_path / "m.torchscript", x)
    torch.testing.assert_close(fine, _eager(weights, 8, x), rtol=1e-4, atol=1e-3)
    assert (fine - coarse).abs().max() > 1e-2
    extra = {"config.txt": ""}  # Ultralytics' TorchScript metadata
    torch.jit.load(str(tmp_path / "m.torchscript"), _extra_files=extra)
    assert json.loads(extra["config.txt"])["pst_topk"] == 8

    # An exported model cannot change its fine attention: asking is a warning, not a silent no-op.
    YOLO(tmp_path / "m.torchscript", task="detect").predict(x, imgsz=96, pst_topk=4, verbose=False)
    assert any("pst_topk=4 ignored for the exported model" in m and "which runs pst_topk=8" in m for m in logs), logs


@pytest.mark.slow
def test_benchmark_cli_passes_topk_to_its_exports(shapes_model, cli_env, tmp_path):
    weights = shutil.copy(shapes_model, tmp_path / "b.pt")
    text = run(["pst-yolo", "benchmark", f"model={weights}", "data=shapes", "imgsz=64", "format=torchscript",
                "pst_topk=8"], tmp_path, cli_env)
    assert "PST: pst_topk=8 (fine attention on, 2 layers)" in text
    assert "Benchmarks complete" in text
    x = torch.rand(1, 3, 64, 64)
    exported = _scripted(tmp_path / "b.torchscript", x)
    torch.testing.assert_close(exported, _eager(weights, 8, x), rtol=1e-4, atol=1e-3)
    assert (exported - _eager(weights, 0, x)).abs().max() > 1e-2
    assert get_topk(YOLO(weights)) == 0  # the checkpoint itself is untouched


# ----------------------------------------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def fine_trained(tmp_path_factory, cli_env) -> Path:
    """best.pt of a 1-epoch `pst-yolo train ... pst_topk=8` run (64 images at imgsz 64), from a fresh process."""
    cwd = tmp_path_factory.mktemp("fine")
    text = run(["pst-yolo", "train", "model=yolo11n-pst.yaml", "data=shapes", "pst_topk=8", "epochs=1", "imgsz=64",
                "batch=16", "fraction=0.125", "workers=0", "plots=False", f"project={cwd}", "name=fine"], cwd, cli_env)
    assert "PST: pst_topk=8 (fine attention on, 2 layers)" in text
    return cwd / "fine" / "weights" / "best.pt"


def test_train_with_fine_attention_trains_the_gate(fine_trained, shapes_model):
    fine = YOLO(fine_trained)
    assert get_topk(fine) == 8  # saved with the value it was trained with
    assert yaml.safe_load((fine_trained.parents[1] / "args.yaml").read_text())["pst_topk"] == 8
    assert all(t.abs().sum() > 0 for t in gates(fine.model))  # the gate got gradients

    coarse = YOLO(shapes_model)
    assert get_topk(coarse) == 0
    assert yaml.safe_load((shapes_model.parents[1] / "args.yaml").read_text())["pst_topk"] == 0  # omitted: recorded
    assert all(torch.count_nonzero(t) == 0 for t in gates(coarse.model))  # never used in training: still zero


def test_finetuning_keeps_the_checkpoint_topk(fine_trained, tmp_path):
    """`train model=best.pt` without pst_topk keeps the checkpoint's value (the trainer rebuilds the model)."""
    YOLO(fine_trained).train(data="shapes", epochs=1, imgsz=64, batch=16, fraction=0.125, workers=0, plots=False,
                             val=False, project=str(tmp_path), name="ft")
    assert yaml.safe_load((tmp_path / "ft" / "args.yaml").read_text())["pst_topk"] == 8
    assert get_topk(YOLO(tmp_path / "ft" / "weights" / "best.pt")) == 8

