"""torch.compile with PST: no graph break inside PST layers (train and eval, K 0 and 8), and a compile=True any-K
training through Ultralytics' trainer.

Inductor's code generation takes ~7 minutes for yolo11n-pst on 2 CPU cores, so the training test compiles with the
``aot_eager`` backend (the same Dynamo capture and AOT autograd graphs, run eagerly): what it checks, the graphs and
their breaks, is decided before code generation.
"""

import sys

import pytest
import torch
import torch._dynamo as dynamo
from _cli import run  # tests/_cli.py

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
import functools, sys, torch
from torch._dynamo.utils import counters
import pst_yolo
from ultralytics import YOLO

torch.compile = functools.partial(torch.compile, backend="aot_eager")  # Dynamo + AOT autograd, no inductor codegen
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
