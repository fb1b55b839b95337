"""torch.compile with PST: no graph break inside PST layers (train and eval, K 0 and 8), a compile=True any-K
training through Ultralytics' trainer, and inductor's generated code equal to eager on a PST layer.

Inductor's code generation takes ~8 minutes for yolo11n-pst on 2 CPU cores (with an empty cache), so the training test
compiles with the ``aot_eager`` backend (the same Dynamo capture and AOT autograd graphs, run eagerly): what it checks,
the graphs and their breaks, is decided before code generation. Inductor itself runs on one PST layer.
"""

import sys

import pytest
import torch
import torch._dynamo as dynamo
from _cli import run  # tests/_cli.py
from _gpu_check_sections import compare_compiled  # scripts/ (pytest's pythonpath)

from pst_yolo import PST, set_topk
from pst_yolo.nn.attention import FORMS
from pst_yolo.topk import advance_topk_train, set_topk_train


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("k", [0, 8, 64])  # 64: above the 48 coarse tokens, clamped (its warning must not break)
def test_no_graph_break_inside_pst(mode, k):
    torch.manual_seed(0)
    m = PST(64, 64, 64, n=2)
    x, u = torch.randn(2, 64, 16, 12), torch.randn(2, 64, 8, 6)
    if mode == "train":
        set_topk_train(m.train(), (k,), verbose=False)
        advance_topk_train(m)  # what the trainer does before each step
    else:
        set_topk(m.eval(), k, verbose=False)
    dynamo.reset()
    explained = dynamo.explain(m)([x, u])
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_anyk_draws_outside_the_forward():
    m = PST(64, 64, 64, n=2).train()
    set_topk_train(m, "0,8", verbose=False)
    ks = [advance_topk_train(m) for _ in range(4)]
    assert ks == [0, 0, 8, 8] and {a.topk_step for a in (b.attn for b in m.m)} == {8}
    steps = [a.topk_train_step for a in (b.attn for b in m.m)]
    m([torch.randn(1, 64, 8, 8), torch.randn(1, 64, 4, 4)])  # the forward runs the drawn K, draws nothing itself
    assert [a.topk_train_step for a in (b.attn for b in m.m)] == steps == [4, 4]
    set_topk_train(m, "0,8", verbose=False)  # a new run starts over
    assert all(b.attn.topk_step is None for b in m.m)


TRAIN = """
import sys, torch
from torch._dynamo.utils import counters
import pst_yolo
from ultralytics import YOLO

# Dynamo + AOT autograd, no inductor codegen. Ultralytics passes backend="inductor" itself, so the backend is replaced
# in the call (a functools.partial default would be overridden by it).
compile_ = torch.compile
torch.compile = lambda model, **kwargs: compile_(model, **{**kwargs, "backend": "aot_eager"})
ks = []
model = YOLO("yolo11n-pst.yaml")
model.add_callback("on_train_batch_end", lambda t: ks.append(t.model.model[13].m[0].attn.topk_step))
model.train(data="shapes", epochs=1, imgsz=64, fraction=0.05, batch=8, compile=True, pst_topk_train="0,8",
            workers=0, val=False, plots=False, project=sys.argv[1], name="c", verbose=False)
weights = torch.cat([p.detach().flatten() for p in model.trainer.model.parameters()])
print("KS", ks, "BREAKS", sum(counters["graph_break"].values()), "GRAPHS", counters["stats"]["unique_graphs"],
      "FINITE", bool(weights.isfinite().all()))
"""


def test_compile_true_anyk_training(cli_env, tmp_path):
    out = run([sys.executable, "-c", TRAIN, str(tmp_path)], tmp_path, cli_env)
    line = next(line for line in out.splitlines() if line.startswith("KS"))
    assert "compile complete" in out
    assert line == "KS [0, 0, 8] BREAKS 0 GRAPHS 2 FINITE True", line  # one graph per K, both K ran
    assert "inductor" not in out.lower()  # the backend replacement held (inductor would take minutes)


class TwoInputs(torch.nn.Module):
    """A PST layer called with its two maps as separate arguments (``compare_compiled`` takes gradients of each)."""

    def __init__(self, pst):
        super().__init__()
        self.pst = pst

    def forward(self, x, u):
        return self.pst([x, u])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_inductor_matches_eager(mode, tmp_path, monkeypatch):
    """Inductor's CPU code for a PST layer (the CPU stand-in for the GPU's generated kernels) against eager at K = 0
    and K = 8, forward and backward (the GPU check's measurement, ``compare_compiled``): outputs, every gradient and,
    in training, BatchNorm's running statistics. In training at K > 0 the fine path folds running statistics the same
    forward has just updated; without the opaque copy in ``_affine_1x1`` inductor's backward reads them updated twice
    and conv_kv's weight and BatchNorm-scale gradients are off by ~0.1-1%."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # generated here, not read from an earlier run
    torch.manual_seed(0)
    m = TwoInputs(PST(64, 64, 64, n=1)).train(mode == "train")
    x, u = torch.randn(2, 64, 16, 12), torch.randn(2, 64, 8, 6)
    for k in (0, 8):
        if mode == "train":
            set_topk_train(m, (k,), verbose=False)
            advance_topk_train(m)
        else:
            set_topk(m, k, verbose=False)
        dynamo.reset()
        r = compare_compiled(m, (x, u), backend="inductor")
        assert r["out_diff"] <= 1e-5 * r["out_scale"], (k, r["out_diff"])
        unused = {n for n, _ in m.named_parameters() if ".attn.gate." in n and not k}  # K 0: the gate does not run
        assert set(r["grads"]) == {"input 0", "input 1"} | {n for n, _ in m.named_parameters()} - unused
        top = max(scale for _, scale in r["grads"].values())  # floor for gradients that are ~0 (a bias before BN)
        for name, (diff, scale) in r["grads"].items():
            assert diff <= 1e-4 * scale + 1e-6 * top, (k, name, diff, scale)
        assert all(d <= 1e-5 * max(s, 1) for d, s in r["buffers"].values()), (k, r["buffers"])


def test_no_forward_copies_host_data_after_the_first_call(monkeypatch):
    """Every attention form: a second forward of the same shape builds no tensor from Python data (``torch.tensor``),
    i.e. no host-to-device copy per call (CUDA-graph capture forbids one)."""
    from pst_yolo.export.forms import set_form

    made = []
    real = torch.tensor

    def counting_tensor(*args, **kwargs):
        made.append(args[0] if args else None)
        return real(*args, **kwargs)

    for form in FORMS:
        m = PST(64, 64, 64, n=1).eval()
        set_topk(m, 8, verbose=False)
        set_form(m, form)
        x, u = torch.randn(1, 64, 15, 11), torch.randn(1, 64, 8, 6)  # odd map: the portable path's cell mask too
        with torch.no_grad():
            m([x, u])
            monkeypatch.setattr(torch, "tensor", counting_tensor)
            m([x, u])
            monkeypatch.setattr(torch, "tensor", real)
        assert not made, (form, len(made))
