"""Export bounds ``pst_topk`` as validation does: per layer, by its coarse tokens at the export's image size.

Uses the authors' fixture checkpoint (tests/data/authors, 2 PST layers with 9 and 36 coarse tokens at imgsz 96): no
training needed. The CLI runs in fresh processes, as a user would.
"""

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch.nn as nn
from _cli import run  # tests/_cli.py
from onnx import numpy_helper

from pst_yolo import PST, set_topk
from pst_yolo.topk import clamp_topk, coarse_tokens

CKPT = Path(__file__).parent / "data" / "authors" / "authors_yolo11n_pst_8.3.105.pt"
IMGSZ = 96


@pytest.fixture
def ckpt(tmp_path) -> Path:
    path = tmp_path / "model.pt"  # exports are written beside the checkpoint
    path.write_bytes(CKPT.read_bytes())
    return path


def topk_ks(path: Path) -> list[int]:
    """The constant K of every TopK node of an ONNX file."""
    graph = onnx.load(str(path)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    return sorted(int(np.asarray(consts[n.input[1]]).reshape(-1)[0]) for n in graph.node if n.op_type == "TopK")


class OnePST(nn.Module):
    """An image-in model holding one PST: fine map = the input, coarse map = the input at half size."""

    def __init__(self):
        super().__init__()
        self.fine, self.coarse, self.pst = nn.Conv2d(3, 64, 1), nn.Conv2d(3, 64, 2, 2), PST(64, 64, 64)

    def forward(self, x):
        return self.pst([self.fine(x), self.coarse(x)])


def test_coarse_tokens_and_clamp():
    net = OnePST()
    assert coarse_tokens(net, (20, 12)) == [60]  # a 10 x 6 coarse map
    set_topk(net, 100, verbose=False)
    assert clamp_topk(net, (20, 12)) == {0: (100, 60)} and net.pst.m[0].attn.topk == 60
    assert clamp_topk(net, (20, 12)) == {}  # nothing left to clamp
    assert net.training  # the blank forward left the mode as it was


def test_oversized_k_is_clamped_at_export_and_matches_pytorch(ckpt, tmp_path, cli_env):
    from pst_yolo.export.verify import onnx_outputs, torch_outputs

    text = run(["pst-yolo", "export", f"model={ckpt}", "format=onnx", f"imgsz={IMGSZ}", "pst_topk=100000"], tmp_path,
               cli_env)
    warning = [line for line in text.splitlines() if "exceeds the coarse tokens" in line]
    assert len(warning) == 1 and "K = 9, 36" in warning[0] and "96x96" in warning[0], text
    big = ckpt.with_suffix(".onnx")
    assert topk_ks(big) == [9, 36]  # the graph did not grow with K
    meta = {p.key: p.value for p in onnx.load(str(big)).metadata_props}
    assert meta["pst_topk"] == "100000"
    x = np.random.default_rng(0).random((2, 3, IMGSZ, IMGSZ), dtype=np.float32)
    assert np.abs(onnx_outputs(big, x) - torch_outputs(str(CKPT), x, pst_topk=100000)).max() <= 1e-3
    # a K within every layer's tokens is exported as it is, without a warning
    text = run(["pst-yolo", "export", f"model={ckpt}", "format=onnx", f"imgsz={IMGSZ}", "pst_topk=8"], tmp_path,
               cli_env)
    assert "exceeds the coarse tokens" not in text and topk_ks(big) == [8, 8]


def test_tensorrt_refuses_a_k_it_cannot_run(ckpt, tmp_path, cli_env):
    """At imgsz 1024 the P3 fusion has 64 x 64 coarse tokens: K = 5000 stays 4096 there, above TensorRT's TopK."""
    out = subprocess.run(["pst-yolo", "export", f"model={ckpt}", "format=engine", "imgsz=1024", "pst_topk=5000"],
                         cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("pst-yolo: TensorRT's TopK takes K below 3840") and "K = 4096" in last, text
    assert not ckpt.with_suffix(".onnx").exists()  # refused before anything was written
