"""Registration hooks: PST rows in YAML, configs by bare name, loud failure on an unsupported Ultralytics."""

import logging
import subprocess
import sys
import types

import pytest
import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import pst_yolo
from pst_yolo import PST
from pst_yolo.hooks import _common, models
from pst_yolo.utils import resource_path

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn import tasks  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402
from ultralytics.utils.torch_utils import get_flops  # noqa: E402

CONFIGS = [f"yolo{v}{s}-pst.yaml" for v in (11, 12) for s in "nsmlx"]  # every scale of stock YOLO11/YOLO12


def conv_params(c1, c2, k=1, g=1):
    """Parameters of an Ultralytics Conv (conv without bias + BatchNorm affine)."""
    return c1 // g * c2 * k * k + 2 * c2


def pst_params(c1, c_up, c2, n, mlp_ratio=2.0, e=0.5):
    """PST parameter count from docs/method.md §1, independent of the module code."""
    c, hidden = int(c2 * e), int(int(c2 * e) * mlp_ratio)
    block = (
        conv_params(c, c)  # q
        + conv_params(c, 2 * c)  # kv
        + (2 * 32 * c + c)  # gate: per head 1x1 from 2d to d, with bias
        + conv_params(c, c, 7, g=c)  # positional encoding (depthwise 7x7)
        + conv_params(c, c)  # proj
        + conv_params(c, hidden)
        + conv_params(hidden, c)  # MLP
    )
    return conv_params(c1, c) + conv_params(c_up, c) + n * block + conv_params((n + 1) * c, c2)


def test_supported_ultralytics_and_hooks_installed():
    """Fails loudly when Ultralytics moves out of the tested range or a hook is missing."""
    assert Version(ultralytics.__version__) in SpecifierSet(_common.SUPPORTED.removeprefix("ultralytics"))
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    from ultralytics.engine.validator import BaseValidator

    for fn in (tasks.parse_model, checks.check_file, data_utils.check_file, BaseValidator.get_model):
        assert getattr(fn, _common.HOOK, False), fn


def test_register_is_idempotent():
    before = (tasks.parse_model, ultralytics.utils.checks.check_file)
    from ultralytics.utils.callbacks.base import default_callbacks

    n_callbacks = {k: len(v) for k, v in default_callbacks.items()}
    pst_yolo.register()
    pst_yolo.register()
    assert (tasks.parse_model, ultralytics.utils.checks.check_file) == before
    assert {k: len(v) for k, v in default_callbacks.items()} == n_callbacks


def test_hook_target_mismatch_is_a_loud_error():
    fake = types.ModuleType("ultralytics.nn.fake_tasks")
    fake.parse_model = lambda cfg, channels: None  # renamed parameters, as a future release might do
    with pytest.raises(ImportError, match="tested with ultralytics"):
        _common.install(fake, "parse_model", ("d", "ch", "verbose"), models._wrap_parse_model)
    with pytest.raises(ImportError, match="install a supported version"):
        _common.target(types.ModuleType("empty"), "parse_model", ("d",))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_builds_with_two_pst_layers(cfg):
    model = YOLO(cfg).model
    stock = YOLO(cfg.replace("-pst", "")).model
    pst_rows = [m for m in model.model if isinstance(m, PST)]
    assert [m.i for m in pst_rows] == ([13, 16] if cfg.startswith("yolo11") else [11, 14])
    assert [m.f for m in pst_rows] == ([[-1, 10], [-1, 6]] if cfg.startswith("yolo11") else [[-1, 8], [-1, 6]])
    assert len(model.model) == len(stock.model)
    for m, s in zip(model.model, stock.model):  # every other row is the stock row
        n = sum(p.numel() for p in m.parameters())
        if isinstance(m, PST):
            c1, c_up = m.cv1.conv.in_channels, m.cvup.conv.in_channels
            c2, blocks = m.cv2.conv.out_channels, len(m.m)
            assert c2 == s.cv2.conv.out_channels  # same c2 as the stock block it replaces
            assert c_up == model.model[m.f[1]].cv2.conv.out_channels  # channels inferred from the coarse layer
            assert blocks == (2 if cfg[6] in "lx" else 1)  # 2 repeats x depth 0.5 for n/s/m, x 1.0 for l/x
            assert n == pst_params(c1, c_up, c2, blocks)
        else:
            assert n == sum(p.numel() for p in s.parameters()), m.i
    assert model.eval()(torch.zeros(1, 3, 64, 64))[0].shape[:2] == (1, 84)


def test_scaling_follows_width_and_max_channels():
    c2 = {s: [m.cv2.conv.out_channels for m in YOLO(f"yolo11{s}-pst.yaml").model.model if isinstance(m, PST)]
          for s in "nsmlx"}
    # min(512/256, max_channels) x width (Ultralytics' own constants for l and x: max_channels 512, width 1.0/1.5)
    assert c2 == {"n": [128, 64], "s": [256, 128], "m": [512, 256], "l": [512, 256], "x": [768, 384]}


def test_summary_rows_and_gflops(caplog):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        model = YOLO("yolo11n-pst.yaml", verbose=True)
    finally:
        LOGGER.removeHandler(handler)
    text = [r.getMessage() for r in records]
    rows = [t for t in text if "pst_yolo.nn.pst.PST" in t]
    assert len(rows) == 2 and rows[0].split()[:2] == ["13", "[-1,"]
    assert not any(t.split()[:1] == ["24"] for t in text)  # probe rows never printed
    assert "[384, 256, 128, 1, 2, 0.5, 0]" in rows[0]
    pst_gflops, stock_gflops = get_flops(model.model, 640), get_flops(YOLO("yolo11n.yaml").model, 640)
    assert pst_gflops > stock_gflops > 0  # PST convs are counted (it replaces two cheaper C3k2 blocks)


BAD_ROWS = {
    "[[-1], 2, PST, [512]]": "'from' must be two layer indices",
    "[-1, 2, PST, [512]]": "'from' must be two layer indices",
    "[[-1, 30], 2, PST, [512]]": "must name earlier layers",
    "[[-1, 10], 2, PST, [512, 2, 0.5, -1]]": "non-negative integer",
    "[[-1, 10], 2, PST, [512, 0, 0.5]]": "mlp_ratio must be a positive number",
    "[[-1, 10], 2, PST, []]": "args must be",
    "[[-1, 10], 2, PST, [512, 2, 0.1]]": "multiple of the head dim 32",
}


@pytest.mark.parametrize("row, problem", BAD_ROWS.items())
def test_bad_pst_row_names_the_row(tmp_path, row, problem):
    text = resource_path("cfg", "models", "yolo11-pst.yaml").read_text()
    bad = text.replace("[[-1, 10], 2, PST, [512, 2, 0.5]]", row)
    assert bad != text
    (tmp_path / "yolo11n-bad.yaml").write_text(bad)
    with pytest.raises(ValueError, match=r"row 13 .*") as e:
        YOLO(tmp_path / "yolo11n-bad.yaml")
    assert problem in str(e.value) and "yolo11n-bad.yaml" in str(e.value)


def test_configs_resolve_by_bare_name_from_any_directory(tmp_path, cli_env):
    code = "import pst_yolo; from ultralytics import YOLO; print("
    code += "sum(p.numel() for p in YOLO('yolo12m-pst.yaml').model.parameters()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == sum(p.numel() for p in YOLO("yolo12m-pst.yaml").model.parameters())
