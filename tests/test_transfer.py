"""Transfer from stock checkpoints: every tensor outside the PST rows, nothing into them unless it is a PST layer.

The source is a stock yolo11n trained here for one tiny epoch (no downloads), with every tensor then overwritten by a
distinct constant, so "transferred" means exactly "equal to the source tensor" (no initial value can coincide).
"""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pst_yolo  # noqa: F401  (registers PST, the configs, data=shapes and the transfer hook)

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.nn.tasks import BaseModel  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402

from pst_yolo.hooks import HOOK  # noqa: E402

PST_ROWS = ("model.13.", "model.16.")  # yolo11-pst.yaml: the two top-down fusion rows


def stamp(model: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every tensor of ``model`` with a constant unique to its name (exact in fp16: integers <= 2048)."""
    with torch.no_grad():
        for j, v in enumerate(model.state_dict().values()):
            v.fill_(j + 2)
    return model


def transferred(dst: torch.nn.Module, src: torch.nn.Module) -> set[str]:
    """Names of ``dst`` tensors equal to the same-named (stamped) ``src`` tensor."""
    s = src.state_dict()
    return {k for k, v in dst.state_dict().items() if k in s and s[k].shape == v.shape and torch.equal(v, s[k].to(v))}


@pytest.fixture(scope="module")
def stock_pt(test_root) -> Path:
    """A stock yolo11n trained 1 tiny epoch on shapes, then stamped, saved as an Ultralytics checkpoint."""
    project = test_root / "runs" / "transfer"
    YOLO("yolo11n.yaml").train(
        data="shapes", epochs=1, imgsz=32, batch=8, fraction=0.05, workers=0, mosaic=0.0, val=False, plots=False,
        project=str(project), name="stock", exist_ok=True, verbose=False,
    )
    best = project / "stock" / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model = ckpt["ema"] or ckpt["model"]
    ckpt.update(model=stamp(model), ema=None)
    path = project / "stock_stamped.pt"
    torch.save(ckpt, path)
    return path


def expected_outside_pst(dst: torch.nn.Module, src: torch.nn.Module) -> set[str]:
    """Every same-name, same-shape tensor except those of the PST rows."""
    s = src.state_dict()
    return {k for k, v in dst.state_dict().items() if not k.startswith(PST_ROWS) and k in s and s[k].shape == v.shape}


def test_yolo_load_transfers_everything_outside_pst_rows(stock_pt):
    src = torch.load(stock_pt, map_location="cpu", weights_only=False)["model"].float()
    model = YOLO("yolo11n-pst.yaml")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    model.load(str(stock_pt))
    got = transferred(model.model, src)
    assert got == expected_outside_pst(model.model, src)
    # yolo11n's 451 tensors outside rows 13 and 16, less the 6 class-output convs (80 classes here, 6 in shapes)
    assert len(got) == 445
    for k, v in model.model.state_dict().items():  # PST rows keep their initialisation, bit for bit
        if k.startswith(PST_ROWS):
            assert torch.equal(v, before[k]), k
    # the C3k2 tensors whose names and shapes match PST tensors exist (the stock load would take them)
    s = src.state_dict()
    lookalikes = {k for k, v in model.model.state_dict().items() if k.startswith(PST_ROWS) and k in s}
    assert {"model.13.cv2.bn.running_mean", "model.16.cv2.bn.weight"} <= lookalikes


def test_trainer_pretrained_path(stock_pt):
    """``pst-yolo train model=yolo11n-pst.yaml pretrained=stock.pt`` builds its model through the same transfer."""
    trainer = DetectionTrainer(overrides=dict(model="yolo11n-pst.yaml", pretrained=str(stock_pt), data="shapes"))
    trainer.setup_model()
    src = torch.load(stock_pt, map_location="cpu", weights_only=False)["model"].float()
    got = transferred(trainer.model, src)
    assert got == expected_outside_pst(trainer.model, src)
    assert len(got) == 451  # shapes has the source's classes, so the heads transfer too: all but the PST rows


def test_log_counts_only_real_transfers(stock_pt):
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    LOGGER.addHandler(handler)
    try:
        YOLO("yolo11n-pst.yaml").load(str(stock_pt))
    finally:
        LOGGER.removeHandler(handler)
    assert "Transferred 445/563 items from pretrained weights" in records
    assert any(r.startswith("PST transfer: 445 tensors outside the PST rows, none into rows 13, 16") for r in records)


def test_stock_to_stock_unchanged(stock_pt):
    """Without PST on either side the hook calls the stock load untouched: same tensors and same log."""
    assert getattr(BaseModel.load, HOOK, False)  # the hook is installed, and yet:
    results = []
    for load in (BaseModel.load, BaseModel.load.__wrapped__):
        torch.manual_seed(0)
        model = YOLO("yolo11n.yaml").model
        records = []
        handler = logging.Handler()
        handler.emit = lambda r, records=records: records.append(r.getMessage())
        LOGGER.addHandler(handler)
        try:
            load(model, torch.load(stock_pt, map_location="cpu", weights_only=False))
        finally:
            LOGGER.removeHandler(handler)
        results.append((model.state_dict(), records))
    (a, log_a), (b, log_b) = results
    assert log_a == log_b and "Transferred 493/499 items from pretrained weights" in log_a  # 80 vs 6 classes
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pst_to_pst_transfers_all_and_pst_to_stock_none():
    src = stamp(YOLO("yolo11n-pst.yaml").model)
    dst = YOLO("yolo11n-pst.yaml").model
    dst.load(src)
    assert transferred(dst, src) == set(dst.state_dict())  # 563/563, PST rows included

    stock = YOLO("yolo11n.yaml").model
    stock.load(src)
    got = transferred(stock, src)
    assert got == expected_outside_pst(stock, src) and not any(k.startswith(PST_ROWS) for k in got)


def test_pst_layer_of_another_shape_transfers_nothing_into_its_row():
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = yaml_model_load("yolo11n-pst.yaml")
    cfg["head"][2] = [cfg["head"][2][0], cfg["head"][2][1], "PST", [512, 4, 0.5]]  # row 13 with mlp_ratio 4
    src = stamp(DetectionModel(cfg, verbose=False))
    dst = YOLO("yolo11n-pst.yaml").model
    dst.load(src)
    got = transferred(dst, src)
    assert not any(k.startswith("model.13.") for k in got)  # cv1/cvup/cv2 shapes match, the MLP does not: nothing
    assert {k for k in dst.state_dict() if k.startswith("model.16.")} <= got
    assert len(got) == 563 - sum(k.startswith("model.13.") for k in dst.state_dict())


def test_cli_train_pretrained_stock(stock_pt, cli_env, tmp_path):
    """The documented recipe runs end to end from the CLI: pst-yolo train model=yolo11n-pst.yaml pretrained=..."""
    cmd = [
        Path(sys.executable).parent / "pst-yolo", "train", "model=yolo11n-pst.yaml", f"pretrained={stock_pt}",
        "data=shapes", "epochs=1", "imgsz=32", "batch=8", "fraction=0.05", "workers=0", "val=False", "plots=False",
        f"project={tmp_path}", "name=ft",
    ]
    out = subprocess.run(cmd, env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ft = torch.load(tmp_path / "ft" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert any(type(m).__name__ == "PST" for m in (ft["ema"] or ft["model"]).modules())
