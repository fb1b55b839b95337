"""The benchmark: FLOP accounting of the attention, settings validation, and a smoke run of the script.

Timings are never asserted here (performance is measured by scripts/benchmark.py, not by unit tests); the FLOP
counts are exact integers and are.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from pst_research.bench import BenchmarkSettings
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import get_flops

from pst_yolo import PSTAttention, set_topk
from pst_yolo.benchmark import attention_flops, layer_attention_flops

thop = pytest.importorskip("thop")
thop_profile = sys.modules["thop.profile"]  # the module (``thop.profile`` the attribute is the function)
ROOT = Path(__file__).resolve().parents[1]


def _functional_macs(model: nn.Module, *inputs) -> float:
    """Multiply-adds thop counts for products run outside modules (SDPA, matmul): every module rule set to zero."""
    zero = {t: thop_profile.zero_ops for t in (nn.Conv2d, nn.BatchNorm2d, nn.Upsample, nn.MaxPool2d, nn.SiLU)}
    return thop.profile(model, inputs=inputs, custom_ops=zero, verbose=False)[0]


@pytest.mark.parametrize(
    "dim, fine_hw, k",
    [(64, (16, 16), 0), (64, (16, 16), 3), (32, (15, 13), 8), (96, (6, 4), 8)],
    ids=["2heads-k0", "2heads-k3", "odd-k8", "clamped-k8"],  # clamped: topk 8 > M = 6 coarse tokens
)
def test_layer_flops_equal_thop_functional_count(dim, fine_hw, k):
    """``layer_attention_flops`` counts exactly the products thop sees outside modules in the fast eval path."""
    attn = PSTAttention(dim, topk=k).eval()
    h, w = fine_hw
    coarse_hw = ((h + 1) // 2, (w + 1) // 2)
    x, u = torch.randn(1, dim, h, w), torch.randn(1, dim, *coarse_hw)
    expected = layer_attention_flops(attn, fine_hw, coarse_hw)
    assert expected["coarse"] == 4 * h * w * coarse_hw[0] * coarse_hw[1] * dim  # 2 N M d for QKᵀ and AV, all heads
    assert (expected["fine"] > 0) == (k > 0) and (expected["gate"] > 0) == (k > 0)
    assert 2 * _functional_macs(attn, x, u) == expected["total"]


def test_model_gflops_include_pst_attention_and_extrapolate_exactly():
    """Ultralytics' GFLOPs (model.info) count PST's attention products, and its proxy extrapolation is exact for it.

    ``get_flops`` runs thop on stride-sized proxy images and extrapolates; attention cost is quadratic in image area,
    so this checks the extrapolated figure against a direct count at the target size (256 px: large enough for the
    proxies to be used), and that the products outside modules exceed YOLO11's (C2PSA) by exactly the analytic
    attention FLOPs of ``attention_flops``.
    """
    imgsz = 256
    im = torch.empty(1, 3, imgsz, imgsz)
    torch.manual_seed(0)
    base = DetectionModel("yolo11n.yaml", verbose=False)
    pst = DetectionModel("yolo11n-pst.yaml", verbose=False)
    base_functional = _functional_macs(base, im)
    for k in (0, 8):
        set_topk(pst, k, verbose=False)
        direct = thop.profile(pst, inputs=[im], verbose=False)[0] * 2 / 1e9
        assert get_flops(pst, imgsz) == pytest.approx(direct, rel=1e-12), f"k={k}: proxy extrapolation is off"
        analytic = sum(r["total"] for r in attention_flops(pst, imgsz))
        assert 2 * (_functional_macs(pst, im) - base_functional) == analytic, f"k={k}"
    layers = attention_flops(pst, imgsz, topk=0)
    assert [(r["fine_hw"], r["coarse_hw"], r["heads"]) for r in layers] == [
        ((16, 16), (8, 8), 2),
        ((32, 32), (16, 16), 1),
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scales=("x",)), "choose from n, s, m"),
        (dict(scales=()), "choose from n, s, m"),
        (dict(train_scales=("l",)), "choose from n, s, m"),
        (dict(imgsz=100), "multiple of 32"),
        (dict(runs=0), "runs must be >= 1"),
        (dict(clock="cpu", threads=2), "set threads=1"),
        (dict(clock="gpu"), "choose 'wall'"),
    ],
)
def test_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchmarkSettings(**kwargs)


def test_attention_flops_needs_pst_layers():
    with pytest.raises(ValueError, match="no PST layers"):
        attention_flops(nn.Sequential(nn.Conv2d(3, 8, 1)), 64)


def test_benchmark_script_quick(tmp_path, cli_env):
    """``scripts/benchmark.py --quick`` runs every phase (eager, ONNX Runtime, module, training), writes its outputs;
    run from another directory, and its output names no issue of the project."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in (proc.stdout, (out / "benchmark.csv").read_text()):
        assert not re.search(r"issue|#\d", text, re.IGNORECASE), "the output names a project issue"
    for section in ("### Inference", "ORT CPU ms", "### Training step", "### PST module at P3", "### Targets"):
        assert section in proc.stdout, f"{section!r} missing from the printed table"
    assert (out / "benchmark.md").read_text().strip() in proc.stdout  # the printed table is the one written
    with (out / "benchmark.csv").open() as f:
        rows = list(csv.DictReader(f))
    tables = [r["table"] for r in rows]
    assert tables.count("models") == 3 and tables.count("train") == 2 and tables.count("module") == 3
    assert tables.count("env") == 1 and tables.count("targets") >= 6
    for r in (r for r in rows if r["table"] == "models"):
        assert float(r["eager_ms"]) > 0 and float(r["ort_ms"]) > 0 and float(r["gflops"]) > 0, r
    for r in (r for r in rows if r["table"] == "module"):
        assert float(r["rel_diff"]) < 1e-4, f"fast and naive PST module disagree: {r}"
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_script_rejects_bad_scale(cli_env):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--scales", "n,x"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert proc.returncode == 2 and "choose from n, s, m" in proc.stderr, proc.stderr
