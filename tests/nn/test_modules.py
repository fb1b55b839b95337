"""Tests of the PST modules (pst_yolo/nn): shapes, gradients, the naive reference, the three forms, BN fusion.

CPU only and fast. The reference (``reference.py``) is written from docs/method.md §1; every comparison runs in eval
mode with randomized BatchNorm statistics and gate weights so that no layer is the identity. Every reference test runs
each form of ``PSTAttention`` (``FORMS``: fused, plain, portable).
"""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode
from ultralytics.nn.modules import Conv
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import fuse_conv_and_bn

from pst_yolo.export.forms import set_form
from pst_yolo.nn import PST, PSTAttention, PSTBlock
from pst_yolo.nn.attention import FORMS

from .reference import bilinear_upsample, coarse_hw, inputs, pst_attention_ref, pst_block_ref, pst_ref, randomize_

ATOL, RTOL = 1e-5, 1e-4  # fp32 module vs float64 reference


def attention(dim: int, topk: int, form: str, seed: int = 0) -> PSTAttention:
    """An eval-mode PSTAttention with random weights, BN statistics and gate, in the given form."""
    torch.manual_seed(seed)
    attn = randomize_(PSTAttention(dim, topk=topk), seed).eval()
    attn.form = form
    return attn


def in_form(model: nn.Module, form: str) -> nn.Module:
    """``model`` with every PSTAttention in ``form`` (``set_form``, returning the model for chaining)."""
    set_form(model, form)
    return model


def fuse_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv's BN into its convolution, the way Ultralytics' ``BaseModel.fuse`` does (without YOLO)."""
    for m in model.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    return model


class TopkRecorder(TorchFunctionMode):
    """Records the indices of every ``topk`` call made inside the context (the module's token selection)."""

    def __init__(self):
        super().__init__()
        self.indices = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.topk, torch.Tensor.topk):
            self.indices.append(out.indices)
        return out


@pytest.fixture
def warnings(monkeypatch):
    """Messages passed to ``ultralytics.utils.LOGGER.warning`` during the test."""
    messages = []
    monkeypatch.setattr(LOGGER, "warning", lambda msg, *a, **k: messages.append(str(msg)))
    return messages


# ----------------------------------------------------------------------------------------------------------------------
# Shapes at the real widths of YOLO11-PST
# (c1, c_up, c2, hidden c_) of the PST rows; verified by building cfg/models/yolo11-pst.yaml (see test below):
# X = concat(up(coarser), backbone level), U = the coarser map, c2 = 512 (P4) / 256 (P3) scaled by width/max_channels.
YOLO11_PST_WIDTHS = {
    ("n", "P4"): (384, 256, 128, 64),
    ("n", "P3"): (256, 128, 64, 32),
    ("s", "P4"): (768, 512, 256, 128),
    ("s", "P3"): (512, 256, 128, 64),
    ("m", "P4"): (1024, 512, 512, 256),
    ("m", "P3"): (1024, 512, 256, 128),  # backbone P3 of m is 512 wide: concat(512, 512)
}


@pytest.mark.parametrize("scale, level", list(YOLO11_PST_WIDTHS))
def test_pst_shapes_yolo11(scale, level):
    c1, c_up, c2, c_ = YOLO11_PST_WIDTHS[(scale, level)]
    m = PST(c1, c_up, c2, n=1).eval()
    assert m.c_ == c_
    assert m.m[0].attn.num_heads == c_ // 32 and m.m[0].attn.head_dim == 32
    for h, w in ((8, 8), (7, 10)):
        X, U = inputs(2, c1, h, w, c_up=c_up)
        with torch.no_grad():
            assert m([X, U]).shape == (2, c2, h, w)


def test_yolo11_pst_config_widths():
    """The hard-coded widths above are the ones the shipped YOLO11-PST config builds (parse only: no forward pass)."""
    import pathlib

    import yaml
    from ultralytics.nn import tasks

    import pst_yolo  # noqa: F401  (registers PST with the parser)

    cfg = pathlib.Path(__file__).resolve().parents[2] / "cfg" / "models" / "yolo11-pst.yaml"
    if not cfg.is_file():
        pytest.skip(f"{cfg} not found")
    for scale in "nsm":
        d = yaml.safe_load(cfg.read_text())
        d["scale"] = scale
        layers, _ = tasks.parse_model(d, ch=3, verbose=False)  # the (hooked) parser DetectionModel uses
        found = [
            (m.cv1.conv.in_channels, m.cvup.conv.in_channels, m.cv2.conv.out_channels, m.c_)
            for m in layers
            if isinstance(m, PST)
        ]
        assert found == [YOLO11_PST_WIDTHS[(scale, "P4")], YOLO11_PST_WIDTHS[(scale, "P3")]]


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("k", [0, 3])
def test_block_and_attention_shapes(n, k):
    attn, block = PSTAttention(64, topk=k), PSTBlock(64, 2.0, k)
    x, u = inputs(2, 64, 9, 13)
    assert attn(x, u).shape == x.shape
    assert block(x, u).shape == x.shape
    m = PST(96, 48, 128, n=n, k=k)
    X, U = inputs(2, 96, 9, 13, c_up=48)
    assert m([X, U]).shape == (2, 128, 9, 13)
    assert len(m.m) == n and all(b.attn.topk == k for b in m.m)


# ----------------------------------------------------------------------------------------------------------------------
# Gradients
def _backward(model, *args):
    torch.manual_seed(1)
    y = model(*args)
    (y * torch.randn_like(y)).sum().backward()  # random weights: a plain sum cancels through train-mode BN


@pytest.mark.parametrize("form", FORMS)
def test_attention_gradients(form):
    x, u = inputs(2, 64, 8, 10)
    attn = PSTAttention(64, topk=0).train()
    attn.form = form
    _backward(attn, x, u)
    for name, p in attn.named_parameters():
        if name.startswith("gate."):
            assert p.grad is None, f"{name}: the gate must not be used when topk=0"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient with topk=0"

    attn.zero_grad(set_to_none=True)
    attn.topk = 3
    _backward(attn, x, u)
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient with topk=3"


@pytest.mark.parametrize("k", [0, 2])
def test_pst_gradients(k):
    X, U = inputs(2, 96, 8, 8, c_up=48)
    m = PST(96, 48, 64, n=2, k=k).train()
    _backward(m, [X, U])
    for name, p in m.named_parameters():
        if ".attn.gate." in name and k == 0:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient (k={k})"


# ----------------------------------------------------------------------------------------------------------------------
# Module vs naive reference (eval mode)
SIZES = [(8, 8), (9, 13), (33, 47)]  # coarse 4x4, 5x7, 17x24


def run_recorded(attn: PSTAttention, x: torch.Tensor, u: torch.Tensor):
    """The forward's output, its selection ``{(b, h): set of coarse tokens}`` (padding dropped; empty when fine
    attention is off) and the indices of every ``topk`` op it ran."""
    record = {}
    with torch.no_grad(), TopkRecorder() as rec:
        y = attn._forward(x, u, record)  # forward with its intermediate tensors
    M = math.prod(u.shape[2:])
    idx = record.get("selected", torch.zeros(0, 0, 0))  # (B, heads, k)
    if attn.form != "portable" and "selected" in record:  # the selection is the one topk call's, not a second one
        assert len(rec.indices) == 1 and torch.equal(rec.indices[0], idx)
    selection = {
        (b, h): frozenset(j for j in idx[b, h].tolist() if j < M) for b in range(idx.shape[0])
        for h in range(idx.shape[1])
    }
    return y, selection, rec.indices


_REFERENCES = {}  # (batch, dim, size, k) -> the reference's output: weights and inputs depend on these, not the form


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("k", [0, 1, 3, 8])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("batch, dim", [(1, 64), (3, 128)])
def test_attention_matches_reference(batch, dim, size, k, form, warnings):
    attn = attention(dim, k, form, seed=k)
    x, u = inputs(batch, dim, *size, seed=batch + k)
    y, selection, topk_calls = run_recorded(attn, x, u)
    case = (batch, dim, size, k)  # the reference runs once per case, for the first form (the slow part of the test)
    if case not in _REFERENCES:
        _REFERENCES[case] = pst_attention_ref(attn, x, u)
    y_ref, sel_ref = _REFERENCES[case]
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
    assert selection == sel_ref  # same SET of tokens per image and head (order is irrelevant)
    if k:
        assert all(len(s) == min(k, math.prod(coarse_hw(*size))) for s in sel_ref.values())
    if form == "portable" or not k:  # portable: one-hot arg-max steps, no topk op at all
        assert not topk_calls


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch", [1, 2])
def test_attention_selection_is_per_image_and_head(batch, form):
    """Different images and heads select different tokens (selection is not shared across the batch or heads)."""
    attn = attention(128, 4, form, seed=3)
    x, u = inputs(batch, 128, 16, 16, seed=5)
    _, sel, _ = run_recorded(attn, x, u)
    assert sel == pst_attention_ref(attn, x, u)[1]
    assert len(set(sel.values())) > 1


def test_reference_is_sensitive():
    """Guard against a vacuous comparison: k, the gate and the selection change the output far beyond tolerance."""
    attn = attention(64, 3, "fused", seed=0)
    x, u = inputs(2, 64, 9, 13)
    y0, y3, y4 = (pst_attention_ref(attn, x, u, k)[0] for k in (0, 3, 4))
    assert (y3 - y0).abs().max() > 1e-2 and (y4 - y3).abs().max() > 1e-3
    with torch.no_grad():
        attn.gate.bias.add_(1.0)
    assert (pst_attention_ref(attn, x, u)[0] - y3).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (7, 7), (20, 20)], ids=str)
def test_reference_bilinear_matches_interpolate(size):
    """The reference's explicit bilinear matrices equal F.interpolate(bilinear, align_corners=False)."""
    src = torch.randn(2, 3, *coarse_hw(*size), dtype=torch.float64)
    want = nn.functional.interpolate(src, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(bilinear_upsample(src, size), want)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    k=st.integers(0, 12),
    batch=st.integers(1, 2),
    dim=st.sampled_from([32, 64]),
    form=st.sampled_from(FORMS),
    seed=st.integers(0, 2**16),
)
def test_attention_matches_reference_random_shapes(warnings, h, w, k, batch, dim, form, seed):
    # ``warnings`` only silences the k > M clamp warning (tested below); it accumulates across examples
    attn = attention(dim, k, form, seed=seed)
    x, u = inputs(batch, dim, h, w, seed=seed)
    with torch.no_grad():
        y = attn(x, u)
    torch.testing.assert_close(y, pst_attention_ref(attn, x, u)[0], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("k", [0, 3])
def test_block_and_pst_match_reference(k, form):
    torch.manual_seed(0)
    block = in_form(randomize_(PSTBlock(64, 2.0, k), 1).eval(), form)
    x, u = inputs(2, 64, 9, 13)
    with torch.no_grad():
        torch.testing.assert_close(block(x, u), pst_block_ref(block, x, u), atol=ATOL, rtol=RTOL)

    pst = in_form(randomize_(PST(96, 48, 128, n=2, k=k), 2).eval(), form)
    X, U = inputs(3, 96, 11, 8, c_up=48)
    with torch.no_grad():
        torch.testing.assert_close(pst([X, U]), pst_ref(pst, X, U), atol=ATOL, rtol=RTOL)


# ----------------------------------------------------------------------------------------------------------------------
# k larger than the number of coarse tokens
@pytest.mark.parametrize("form", FORMS)
def test_topk_clamped_to_coarse_tokens(form, warnings):
    """k above the coarse tokens equals k = M, silently: the layer does not log (the run that sets k says so once,
    see pst_yolo.topk.warn_clamped; a log call in a forward would break compiled graphs)."""
    x, u = inputs(2, 64, 5, 7)  # coarse 3x4: M = 12
    M = 12
    big = attention(64, 20, form, seed=4)
    exact = copy.deepcopy(big)
    exact.topk = M
    with torch.no_grad():
        y_big = big(x, u)
        y_big2 = big(x, u)
        y_exact = exact(x, u)
    assert warnings == []
    torch.testing.assert_close(y_big, y_exact, atol=ATOL, rtol=RTOL)
    assert torch.equal(y_big, y_big2)
    torch.testing.assert_close(y_big, pst_attention_ref(big, x, u)[0], atol=ATOL, rtol=RTOL)



# ----------------------------------------------------------------------------------------------------------------------
# Fused vs plain paths
def _outputs_and_grads(model, X, U):
    X = X.clone().requires_grad_(True)
    torch.manual_seed(7)
    y = model([X, U])
    (y * torch.randn_like(y)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return y.detach(), X.grad, grads


@pytest.mark.parametrize("k", [0, 4])
def test_forms_agree_in_training(k):
    """Train mode: every form projects fine keys/values with conv_kv's affine map, so outputs and gradients agree."""
    torch.manual_seed(0)
    fused = in_form(randomize_(PST(96, 48, 128, n=2, k=k), 3).train(), "fused")
    others = {form: in_form(copy.deepcopy(fused), form) for form in ("plain", "portable")}  # before BN moves
    X, U = inputs(2, 96, 9, 12, c_up=48)
    y_f, gx_f, g_f = _outputs_and_grads(fused, X, U)
    for form, other in others.items():
        y_p, gx_p, g_p = _outputs_and_grads(other, X, U)
        torch.testing.assert_close(y_f, y_p, atol=ATOL, rtol=RTOL, msg=lambda m, form=form: f"{form}: {m}")
        torch.testing.assert_close(gx_f, gx_p, atol=ATOL, rtol=RTOL, msg=lambda m, form=form: f"{form}: {m}")
        assert g_f.keys() == g_p.keys()
        # Parameter gradients reach ~1e2 here and some (BN biases followed by train-mode BN) are 0 up to fp noise:
        # compare each to fp32 accuracy relative to the largest gradient, not element by element.
        scale = max(g.abs().max().item() for g in g_f.values() if g is not None)
        for name in g_f:
            if g_f[name] is None:
                assert g_p[name] is None and k == 0 and ".gate." in name, name
            else:
                torch.testing.assert_close(
                    g_f[name], g_p[name], atol=ATOL * scale, rtol=RTOL, msg=lambda m, n=f"{form} {name}": f"{n}: {m}"
                )
        for (name, b_f), b_p in zip(fused.named_buffers(), other.buffers()):  # BN running statistics updated alike
            torch.testing.assert_close(b_f, b_p, atol=ATOL, rtol=RTOL, msg=lambda m, n=f"{form} {name}": f"{n}: {m}")


@pytest.mark.parametrize("form", FORMS)
def test_fine_path_same_in_training_and_leaves_bn_statistics_alone(form):
    """Fine keys/values use conv_kv with running statistics in training too: BN sees only the coarse map."""
    torch.manual_seed(0)
    fine = in_form(randomize_(PSTAttention(64, topk=4), 5).train(), form)
    coarse = copy.deepcopy(fine)
    coarse.topk = 0
    x, u = torch.randn(2, 64, 8, 8) * 3 + 5, torch.randn(2, 64, 4, 4)
    fine(x, u), coarse(x, u)
    assert fine.conv_kv.bn.num_batches_tracked.item() == 1
    torch.testing.assert_close(fine.conv_kv.bn.running_mean, coarse.conv_kv.bn.running_mean)
    torch.testing.assert_close(fine.conv_kv.bn.running_var, coarse.conv_kv.bn.running_var)
    # given the same queries and coarse keys, the fine path is the same function in train and eval mode
    qk = _qk(fine.eval(), x, u)
    out_eval = fine._fine(x, *qk)
    torch.testing.assert_close(fine.train()._fine(x, *qk), out_eval)


def _qk(attn, x, u):
    """Queries, coarse keys and the coarse map size as PSTAttention.forward computes them."""
    B, C, H, W = x.shape
    nh, hd = attn.num_heads, attn.head_dim
    q = attn.conv_q(x).view(B, nh, hd, H * W).transpose(2, 3)
    k = attn.conv_kv(u).view(B, nh, 2 * hd, -1).transpose(2, 3)[..., :hd]
    return q, k, u.shape[2:]


@pytest.mark.parametrize("k", [0, 1, 4, 30])
def test_forms_agree_in_eval(k, warnings):
    pst = randomize_(PST(96, 48, 64, n=2, k=k), 4).eval()
    X, U = inputs(2, 96, 13, 9, c_up=48)
    with torch.no_grad():
        y_f = in_form(pst, "fused")([X, U])
        y_p = in_form(pst, "plain")([X, U])
        y_portable = in_form(pst, "portable")([X, U])
    torch.testing.assert_close(y_f, y_p, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(y_portable, y_p, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_portable_breaks_exact_ties_by_lowest_index(k):
    """Identical coarse tokens tie exactly; the portable form takes tied tokens in index (row, then column) order, one
    per step, as the reference does (a stable sort) and ONNX's TopK specifies; the fused path's topk leaves it open."""
    attn = attention(64, k, "portable", seed=2)
    x, u = inputs(1, 64, 8, 8, seed=3)
    u[..., 1:, :] = u[..., :1, :1]  # rows 1-3 repeat token (0, 0): 13 tokens tie
    u[..., 0, 1:] = -u[..., 0, :1]  # the rest of row 0: 3 more tie
    with torch.no_grad():
        y = attn(x, u)
    y_ref, sel = pst_attention_ref(attn, x, u)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
    assert all(len(s) == k for s in sel.values())
    groups = ({0, *range(4, 16)}, {1, 2, 3})  # tokens with identical keys
    assert any(0 < len(s & g) < len(g) for s in sel.values() for g in groups)  # the selection split a tie


# ----------------------------------------------------------------------------------------------------------------------
# BatchNorm fusion (what Ultralytics does before inference/export)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("k", [0, 4])
def test_bn_fusion_keeps_output(k, form):
    pst = in_form(randomize_(PST(96, 48, 128, n=2, k=k), 5).eval(), form)
    X, U = inputs(2, 96, 9, 14, c_up=48)
    with torch.no_grad():
        before = pst([X, U])
        fuse_bn(pst)
        assert not any(hasattr(m, "bn") for m in pst.modules() if isinstance(m, Conv))
        after = pst([X, U])
    torch.testing.assert_close(after, before, atol=ATOL, rtol=RTOL)


# ----------------------------------------------------------------------------------------------------------------------
# Determinism
@pytest.mark.parametrize("form", FORMS)
def test_eval_is_deterministic(form):
    pst = in_form(randomize_(PST(96, 48, 128, n=2, k=8), 6).eval(), form)
    X, U = inputs(2, 96, 16, 16, c_up=48)
    with torch.no_grad():
        assert torch.equal(pst([X, U]), pst([X, U]))


# ----------------------------------------------------------------------------------------------------------------------
# The form attribute
@pytest.mark.parametrize("bad", ["fast", "Fused", "", None, True, False, 1])
def test_invalid_form(bad):
    attn = PSTAttention(64, topk=2)
    assert attn.form == "fused"  # the default
    with pytest.raises(ValueError, match=r"^PSTAttention.form must be one of 'fused', 'plain', 'portable', got ") as e:
        attn.form = bad
    assert repr(bad) in str(e.value)
    assert attn.form == "fused"  # a rejected value leaves the layer unchanged
    pst = PST(64, 64, 64, n=2)
    set_form(pst, "plain")
    with pytest.raises(ValueError, match="PSTAttention.form must be one of"):
        set_form(pst, bad)
    assert [b.attn.form for b in pst.m] == ["plain", "plain"]


@pytest.mark.parametrize("fused, form", [(True, "fused"), (False, "plain")])
def test_deprecated_booleans_set_the_form(fused, form):
    attn = PSTAttention(64, topk=2)
    with pytest.warns(FutureWarning, match="PSTAttention.fused_attn is deprecated: use PSTAttention.form"):
        attn.fused_attn = fused
    assert attn.form == form and attn.fused_attn is fused and attn.portable is False
    with pytest.warns(FutureWarning, match="PSTAttention.portable is deprecated: use PSTAttention.form"):
        attn.portable = True
    assert attn.form == "portable" and attn.portable is True and attn.fused_attn is False
    with pytest.warns(FutureWarning):
        attn.portable = False
    assert attn.form == "fused"
    assert "fused_attn" not in vars(attn) and "portable" not in vars(attn)


# The booleans of checkpoints pickled before ``form`` (absent: a checkpoint from before the attribute) and their form
OLD_STATES = [
    ({"fused_attn": True}, "fused"),
    ({"fused_attn": False}, "plain"),
    ({}, "fused"),
    ({"fused_attn": True, "portable": False}, "fused"),
    ({"fused_attn": False, "portable": False}, "plain"),
    ({"fused_attn": True, "portable": True}, "portable"),
    ({"fused_attn": False, "portable": True}, "portable"),
]


@pytest.mark.parametrize("old, form", OLD_STATES, ids=str)
def test_checkpoint_with_old_attributes_loads_in_the_same_form(old, form):
    attn = attention(64, 3, "fused", seed=1)
    old_attn = copy.deepcopy(attn)
    del old_attn.__dict__["_form"]  # the instance state as it was pickled before ``form`` existed
    old_attn.__dict__.update(old)
    loaded = pickle.loads(pickle.dumps(old_attn))
    assert loaded.form == form
    assert "fused_attn" not in vars(loaded) and "portable" not in vars(loaded)
    assert pickle.loads(pickle.dumps(loaded)).form == form  # and it saves the new attribute
    attn.form = form
    x, u = inputs(2, 64, 9, 7)
    with torch.no_grad():
        assert torch.equal(loaded(x, u), attn(x, u))


# ----------------------------------------------------------------------------------------------------------------------
# Invalid arguments
@pytest.mark.parametrize("c2, e", [(48, 0.5), (96, 0.5), (128, 0.3), (32, 0.5), (64, 0.25)])
def test_hidden_width_must_be_multiple_of_head_dim(c2, e):
    with pytest.raises(ValueError, match="32"):
        PST(64, 64, c2, e=e)


@pytest.mark.parametrize("k", [-1, -8, 1.5, 2.0, True, False, "4", None])
def test_invalid_topk(k):
    with pytest.raises(ValueError, match="pst_topk"):
        PST(64, 64, 64, k=k)
    with pytest.raises(ValueError, match="pst_topk"):
        PSTAttention(64, topk=k)
    attn = PSTAttention(64, topk=2)
    with pytest.raises(ValueError, match="pst_topk"):
        attn.topk = k
    assert attn.topk == 2  # a rejected value leaves the layer unchanged


@pytest.mark.parametrize(
    "fine, coarse",
    [((8, 8), (5, 5)), ((8, 8), (3, 4)), ((8, 8), (8, 8)), ((9, 13), (4, 6)), ((9, 13), (5, 6)), ((8, 8), (4, 5))],
    ids=str,
)
def test_wrong_coarse_size(fine, coarse):
    pst = PST(64, 32, 64)
    X, U = torch.randn(1, 64, *fine), torch.randn(1, 32, *coarse)
    with pytest.raises(ValueError):
        pst([X, U])


@pytest.mark.parametrize("fine", [(8, 8), (9, 13), (1, 1), (2, 7)], ids=str)
def test_valid_coarse_size_accepted(fine):
    pst = PST(64, 32, 64).eval()
    X, U = torch.randn(1, 64, *fine), torch.randn(1, 32, *coarse_hw(*fine))
    with torch.no_grad():
        assert pst([X, U]).shape == (1, 64, *fine)
