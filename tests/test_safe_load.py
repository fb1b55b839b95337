"""Checkpoint loading: restricted mode (ULTRALYTICS_SAFE_LOAD=1) and damaged files.

Restricted mode unpickles with ``weights_only=True`` against Ultralytics' allow-list; pst_yolo adds exactly PST,
PSTBlock and PSTAttention to it, and the PST authors' three class paths (tests/test_authors.py). Unpickling cannot
import pst_yolo there: ``import pst_yolo`` (or ``pst-yolo``) first.
"""

import os
import subprocess
import sys

import pytest
import torch

from pst_yolo import PST, PSTAttention, PSTBlock
from pst_yolo.authors import AUTHORS_CLASSES
from pst_yolo.hooks.models import _Capture

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn import tasks  # noqa: E402

PST_CLASSES = {"pst_yolo.nn.pst.PST": PST, "pst_yolo.nn.block.PSTBlock": PSTBlock,
               "pst_yolo.nn.attention.PSTAttention": PSTAttention}


class RunsCode:
    """Unpickling this calls ``os.system``: what restricted loading exists to refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A PST checkpoint as ``YOLO.save`` writes it, the same with a non-layer class attached, and a code-running one."""
    d = tmp_path_factory.mktemp("ckpts")
    model = YOLO("yolo11n-pst.yaml")
    model.save(d / "pst.pt")
    model.model.extra = _Capture()  # a pst_yolo class, but not one a checkpoint needs: stays refused
    model.save(d / "pst_extra.pt")
    torch.save({"model": RunsCode(d / "marker")}, d / "runs_code.pt")
    data = (d / "pst.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "not_a_checkpoint.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return d


def run_safe(code, cwd, env):
    """Run ``code`` in a fresh interpreter with restricted loading on; return its output (asserting exit 0)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**env, "ULTRALYTICS_SAFE_LOAD": "1"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_allow_list_gains_exactly_the_pst_classes():
    stock = tasks._SafeLoad._build.__func__.__wrapped__(tasks._SafeLoad)  # Ultralytics' own _build
    ours = tasks._SafeLoad._build()
    assert {k: v for k, v in ours.items() if k not in stock} == {**PST_CLASSES, **AUTHORS_CLASSES}
    assert all(v.__module__ == "pst_yolo.authors" for v in AUTHORS_CLASSES.values())  # shells, converted on load
    assert stock.keys() <= ours.keys()


REFUSE = """
def refused(path):
    try:
        YOLO(path)
    except TypeError as e:
        assert str(path) in str(e), e  # the message names the file
        return str(e)
    raise AssertionError(f"{path} loaded under ULTRALYTICS_SAFE_LOAD=1")
"""


def test_restricted_load_without_then_with_the_plugin(ckpts, cli_env):
    """Refused (naming the file) before ``import pst_yolo``; loads and runs after, the allow-list being built first."""
    code = REFUSE + f"""
import sys
import numpy as np
from ultralytics import YOLO
from ultralytics.utils import SAFE_LOAD
assert SAFE_LOAD
print("WITHOUT", refused({str(ckpts / 'pst.pt')!r}))
assert "pst_yolo" not in sys.modules  # restricted unpickling imports nothing
import pst_yolo
model = YOLO({str(ckpts / 'pst.pt')!r})
assert sum(isinstance(m, pst_yolo.PST) for m in model.model.modules()) == 2
pst_yolo.set_topk(model, 4)
print("BOXES", len(model.predict(np.zeros((64, 96, 3), np.uint8), imgsz=64, verbose=False)[0].boxes))
"""
    text = run_safe(code, ckpts, cli_env)
    assert "references types outside the supported Ultralytics checkpoint format" in text
    assert "BOXES" in text


def test_restricted_load_refuses_anything_else(ckpts, cli_env):
    """With the plugin imported first: PST loads; another class, code execution and damaged files are refused."""
    code = REFUSE + f"""
import pst_yolo
from ultralytics import YOLO
YOLO({str(ckpts / 'pst.pt')!r})
for name in ("pst_extra.pt", "runs_code.pt", "truncated.pt", "empty.pt", "not_a_checkpoint.pt"):
    print("REFUSED", name, refused({str(ckpts)!r} + "/" + name).splitlines()[0])
"""
    text = run_safe(code, ckpts, cli_env)
    lines = [line for line in text.splitlines() if line.startswith("REFUSED")]
    assert len(lines) == 5
    assert all("references types outside" in line for line in lines[:2])
    assert all("is not a loadable checkpoint" in line for line in lines[2:4])  # truncated, empty
    # bytes that are not a pickle at all: refused too (Ultralytics reports them as unsupported types here)
    assert "references types outside" in lines[4]
    assert not (ckpts / "marker").exists()  # os.system never ran


def test_pst_yolo_cli_loads_under_restricted_mode(ckpts, cli_env, tmp_path):
    out = subprocess.run(["pst-yolo", "predict", f"model={ckpts / 'pst.pt'}", f"source={ckpts / 'missing.jpg'}"],
                         cwd=tmp_path, env={**cli_env, "ULTRALYTICS_SAFE_LOAD": "1"}, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert "references types outside" not in text  # the checkpoint loaded ...
    assert "missing.jpg" in text  # ... and the run got as far as the (missing) source


@pytest.mark.parametrize("name, problem", [("truncated.pt", "truncated"), ("empty.pt", "empty"),
                                           ("not_a_checkpoint.pt", "corrupted")])
def test_damaged_checkpoint_error_names_the_file(ckpts, name, problem):
    """Default (unrestricted) loading: Ultralytics' own message names the file and says what is wrong."""
    with pytest.raises(TypeError) as e:
        YOLO(ckpts / name)
    message = str(e.value)
    assert str(ckpts / name) in message and "is not a loadable checkpoint" in message and problem in message


@pytest.mark.parametrize("ckpt", [{"model": {"a": torch.zeros(1)}}, {"ema": {"a": torch.zeros(1)}, "model": None}])
def test_state_dict_checkpoints_get_ultralytics_own_error(ckpt, tmp_path):
    """A state dict where a model belongs is Ultralytics' to refuse (its TypeError), not a crash in the plugin."""
    from ultralytics.nn.tasks import load_checkpoint

    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(TypeError, match="supported Ultralytics checkpoint format"):
        load_checkpoint(tmp_path / "bad.pt")
