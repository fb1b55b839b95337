"""Hostile shapes, dtypes and configurations: PST is correct or fails with an error naming the problem.

- Shapes: fine maps that are not exactly twice the coarse map (odd H or W), 1x1 maps, top-k above the number of coarse
  tokens, batch sizes 1 to 32, non-square ``rect`` validation and predict, images without objects.
- Dtypes: fp16 and bf16 (CPU autocast) stay finite and close to fp32; masking never produces NaN.
- Bad configuration: every error names the YAML row (or the PST layer) and the fix.
- Property tests (hypothesis): each form of the attention (fused, plain, portable) == a naive reference written from
  docs/method.md §1.

Every test of the attention op runs each of its forms.
"""

import copy
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nn.reference import coarse_hw, inputs, pst_attention_ref, randomize_  # tests/nn: the naive reference

from pst_yolo import PST, PSTAttention, PSTBlock, get_topk, set_topk
from pst_yolo.export.forms import set_form
from pst_yolo.nn.attention import FORMS
from pst_yolo.utils import resource_path

# fp16 / bf16 against fp32 for unit-scale inputs: max |error| <= TOL * max |fp32 output| (measured: ~1e-3 / ~1e-2)
TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}


# --------------------------------------------------------------------------------------------------------- helpers
def in_form(module: nn.Module, form: str) -> nn.Module:
    """``module`` with every PSTAttention in ``form`` (``set_form``, returning the module for chaining)."""
    set_form(module, form)
    return module


def reference_attention(attn: PSTAttention, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The naive reference of tests/nn/reference.py (written from docs/method.md §1), output only."""
    return pst_attention_ref(attn, x, u)[0]


def check_attention(attn: PSTAttention, x: torch.Tensor, u: torch.Tensor) -> None:
    """Eval: every form == reference, all finite. Train: every form gives the same output from the same state."""
    attn.eval()
    with torch.no_grad():
        ref = reference_attention(attn, x, u)
        for form in FORMS:
            attn.form = form
            y = attn(x, u)
            assert y.shape == x.shape and y.isfinite().all(), form
            torch.testing.assert_close(y, ref, rtol=1e-7, atol=1e-9, msg=lambda m, form=form: f"{form}: {m}")
        if u[:, 0].numel() > 1:  # BatchNorm needs more than one value per channel in training
            attn.train()
            # a copy each: a training forward updates BN running statistics, which the fine path reads
            fused, *others = (in_form(copy.deepcopy(attn), form)(x, u) for form in FORMS)
            for form, y in zip(FORMS[1:], others):
                torch.testing.assert_close(y, fused, rtol=1e-7, atol=1e-9, msg=lambda m, form=form: f"{form}: {m}")
    attn.eval().form = "fused"


# ---------------------------------------------------------------------------------------------------------- shapes
ODD = [((17, 23), (9, 12)), ((9, 13), (5, 7)), ((1, 1), (1, 1)), ((2, 1), (1, 1)), ((7, 2), (4, 1)), ((6, 6), (3, 3))]


@pytest.mark.parametrize("fine, coarse", ODD)
@pytest.mark.parametrize("k", [1, 3, "M", "M+5"])
def test_odd_maps_match_reference(fine, coarse, k):
    assert coarse == coarse_hw(*fine)
    M = coarse[0] * coarse[1]
    k = {"M": M, "M+5": M + 5}.get(k, k)
    attn = randomize_(PSTAttention(16, num_heads=2, topk=k)).double()
    b = 1 if fine[0] * fine[1] > 300 else 2  # the reference loops over images and heads: keep the big map cheap
    check_attention(attn, *inputs(b, 16, *fine, dtype=torch.double))


@pytest.mark.parametrize("fine", [(17, 23), (9, 13), (8, 5), (1, 1)])
@pytest.mark.parametrize("form", FORMS)
def test_all_coarse_tokens_cover_each_fine_token_once(fine, form):
    """With every coarse token selected, fine attention is full attention over the fine map: the clipped 2x2 patches
    at odd borders tile the map exactly (a position counted twice or left out changes the softmax)."""
    H, W = fine
    Hc, Wc = coarse_hw(H, W)
    attn = in_form(randomize_(PSTAttention(16, num_heads=2, topk=Hc * Wc + 3)).double().eval(), form)
    x, u = inputs(2, 16, H, W, seed=1, dtype=torch.double)
    with torch.no_grad():
        q = attn.conv_q(x).view(2, 2, 8, H * W).transpose(2, 3)  # (B, nh, N, d)
        k = attn.conv_kv(u).view(2, 2, 16, Hc * Wc).transpose(2, 3)[..., :8]  # (B, nh, M, d)
        kv = attn.conv_kv(x).view(2, 2, 16, H * W).transpose(2, 3)  # (B, nh, N, 2d)
        full = F.scaled_dot_product_attention(q, kv[..., :8], kv[..., 8:])
        torch.testing.assert_close(attn._fine(x, q, k, (Hc, Wc)), full, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("fine", [(33, 47), (34, 47), (33, 48), (5, 3)])
@pytest.mark.parametrize("form", FORMS)
def test_border_coarse_token_maps_to_the_fine_cells_that_exist(fine, form):
    """Selecting only the bottom-right coarse token: its 2x2 patch is cut by odd borders to the cells inside the map."""
    H, W = fine
    Hc, Wc = coarse_hw(H, W)
    attn = in_form(randomize_(PSTAttention(8, num_heads=1, topk=1)).double().eval(), form)
    x = inputs(1, 8, H, W, seed=2, dtype=torch.double)[0]
    q = torch.ones(1, 1, H * W, 8, dtype=torch.double) * 0.01  # (B, nh, N, d): identical queries
    k = torch.zeros(1, 1, Hc * Wc, 8, dtype=torch.double)
    k[..., -1, :] = 1.0  # only the last (bottom-right) coarse token scores above 0
    with torch.no_grad():
        out = attn._fine(x, q, k, (Hc, Wc))  # (1, 1, N, d)
        kv = attn.conv_kv(x)[0, :, :, :].view(16, H, W)  # (2d, H, W)
    rows = [r for r in (2 * (Hc - 1), 2 * (Hc - 1) + 1) if r < H]
    cols = [c for c in (2 * (Wc - 1), 2 * (Wc - 1) + 1) if c < W]
    cells = kv[:, rows][:, :, cols].reshape(16, -1)  # (2d, cells inside the map)
    # identical queries give each in-map cell weight softmax(q . k_f / sqrt(d)); no cell outside the map contributes
    w = (q[0, 0, :1] @ cells[:8] / math.sqrt(8)).softmax(-1)  # (1, cells)
    expected = (w @ cells[8:].T).expand(H * W, 8)
    torch.testing.assert_close(out[0, 0], expected, rtol=1e-7, atol=1e-9)
    assert len(rows) * len(cols) == (2 - H % 2) * (2 - W % 2)


@pytest.mark.parametrize("hc, wc", [(1, 4096), (4096, 2)])
def test_portable_refuses_coarse_maps_beyond_its_limit(hc, wc):
    """The portable form's exact tie-break needs coarse maps below 4096 tokens per side (module docstring): beyond, it
    raises a ValueError naming the limit and the way out, instead of selecting wrong tokens."""
    attn = in_form(PSTAttention(32, topk=2).eval(), "portable")
    x = torch.zeros(1, 32, 2 * hc - 1, 2 * wc - 1)  # the fine map of that coarse map; only its shape is read
    q, k = torch.zeros(1, 1, 4, 32), torch.zeros(1, 1, hc * wc, 32)  # (B, nh, N, d), (B, nh, M, d)
    with pytest.raises(ValueError, match=rf"below 4096 tokens per side, got {hc}x{wc}; export at a smaller imgsz"):
        attn._fine(x, q, k, (hc, wc))


@pytest.mark.parametrize("form", FORMS)
def test_batch_sizes_1_to_32_are_independent(form):
    """A batch of 32 gives each image the output it gets alone (no mixing across the batch in gather/top-k)."""
    m = in_form(randomize_(PST(48, 40, 64, n=2, k=3)).eval(), form)
    X, U = inputs(32, 48, 9, 11, seed=3, c_up=40)
    with torch.no_grad():
        batch = m([X, U])
        singles = torch.cat([m([X[i:i + 1], U[i:i + 1]]) for i in range(32)])
    assert batch.shape == (32, 64, 9, 11)
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    b=st.integers(1, 3), heads=st.integers(1, 3), head_dim=st.sampled_from([2, 4, 8]),
    h=st.integers(1, 11), w=st.integers(1, 11), k_extra=st.integers(0, 3), k_frac=st.floats(0, 1),
)
def test_property_every_form_equals_reference(b, heads, head_dim, h, w, k_extra, k_frac):
    hc, wc = coarse_hw(h, w)
    k = 0 if k_frac < 0.15 else max(1, round(k_frac * hc * wc)) + k_extra  # 0, 1..M, up to M + 3
    attn = randomize_(PSTAttention(heads * head_dim, num_heads=heads, topk=k), seed=b + h + w).double()
    check_attention(attn, *inputs(b, heads * head_dim, h, w, seed=h * 100 + w, dtype=torch.double))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(2, 9), w=st.integers(2, 9), k=st.integers(0, 6), b=st.integers(1, 3),
       form=st.sampled_from(FORMS))
def test_property_pst_wrapper_finite_and_backward(n, h, w, k, b, form):
    """Train mode, fine path on or off: finite outputs and gradients for every parameter the path uses."""
    assume(b * math.prod(coarse_hw(h, w)) > 1)  # BatchNorm needs more than one value per channel in training
    m = in_form(PST(40, 24, 64, n=n, k=k).train(), form)
    X, U = inputs(b, 40, h, w, seed=b, c_up=24)
    y = m([X, U])
    y.square().mean().backward()
    assert y.shape == (b, 64, h, w) and y.isfinite().all()
    for name, p in m.named_parameters():
        if ".gate." in name and k == 0:
            assert p.grad is None, name  # the gate is only on the fine path
        else:
            assert p.grad is not None and p.grad.isfinite().all(), name


@pytest.mark.parametrize("form", FORMS)
def test_topk_above_coarse_tokens_is_clamped_silently(form):
    """Equal to k = M, every call, and the layer itself never logs (pst_yolo.topk.warn_clamped: the run says it)."""
    from ultralytics.utils import LOGGER

    attn = in_form(randomize_(PSTAttention(16, num_heads=2, topk=100)).double().eval(), form)
    x, u = inputs(1, 16, 5, 3, dtype=torch.double)
    same = copy.deepcopy(attn)
    same.topk = 6  # = M
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        with torch.no_grad():
            y = [attn(x, u) for _ in range(3)]
    finally:
        LOGGER.removeHandler(handler)
    with torch.no_grad():
        torch.testing.assert_close(y[0], same(x, u))
    assert not [r.getMessage() for r in records if "exceeds" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [0, 4])
def test_low_precision_close_to_fp32(dtype, form, k):
    """fp16: the module in half precision; bf16: CPU autocast. Tolerance TOL[dtype] * max |fp32 output|."""
    m = in_form(randomize_(PST(96, 64, 64, n=2, k=k)).eval(), form)
    X, U = inputs(2, 96, 13, 9, seed=4, c_up=64)
    with torch.no_grad():
        ref = m([X, U])
        if dtype == torch.float16:
            y = copy.deepcopy(m).half()([X.half(), U.half()])
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = m([X, U])
    assert y.dtype == dtype and y.isfinite().all()
    assert (y.float() - ref).abs().max() <= TOL[dtype] * ref.abs().max()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_backward_is_finite(dtype, form):
    m = in_form(randomize_(PST(64, 32, 64, n=1, k=2)).train(), form)
    X, U = inputs(2, 64, 9, 7, c_up=32)
    X.requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        y = m([X, U])
    y.float().square().mean().backward()
    assert X.grad.isfinite().all()
    assert all(p.grad.isfinite().all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fine, k", [((1, 1), 5), ((3, 1), 2), ((33, 47), 1)])
def test_masked_candidates_never_give_nan(form, dtype, fine, k):
    """All but one (1x1 map, k=5: 19 of 20 candidates masked) or most candidates masked, in half precision (masked
    by -inf, or by a large negative logit in the portable form)."""
    H, W = fine
    attn = in_form(randomize_(PSTAttention(32, topk=k)).eval(), form)
    x, u = inputs(2, 32, H, W)
    with torch.no_grad():
        ref = attn(x, u)
        y = (copy.deepcopy(attn).to(dtype))(x.to(dtype), u.to(dtype))
    assert y.isfinite().all()
    assert (y.float() - ref).abs().max() <= TOL[dtype] * ref.abs().max()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("autocast", [False, True])
def test_softmax_in_fp32_beyond_fp16_range(autocast, form):
    """Logits beyond 65504 overflow fp16; attention computes them (and the softmax) in fp32 like the fused kernel, also
    under fp16 autocast, instead of returning NaN (plain and portable: the explicit softmax of their coarse path)."""
    attn = PSTAttention(32).eval()
    attn.form = form
    torch.manual_seed(5)
    q = torch.full((1, 1, 6, 32), 200.0)  # (B, nh, N, d): q . k / sqrt(d) ~ 1e5 > 65504
    k, v = torch.rand(1, 1, 9, 32) * 200, torch.randn(1, 1, 9, 32)
    ref = F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        y = attn._attend(q.half(), k.half(), v.half())  # half as conv outputs are in a half model or under autocast
    assert y.dtype == torch.float16 and y.isfinite().all()
    torch.testing.assert_close(y.float(), ref, rtol=1e-2, atol=1e-2)


# -------------------------------------------------------------------------------------------- detector-level shapes
@pytest.fixture(scope="module")
def detector():
    from ultralytics import YOLO

    return YOLO("yolo11n-pst.yaml")


def capture_pst_inputs(model):
    """Forward pre-hooks recording (fine shape, topk) at each PST layer; returns (records, remove)."""
    records = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: records.append((tuple(args[0][0].shape),
                                                                              mod.m[0].attn.topk)))
             for m in model.modules() if isinstance(m, PST)]
    return records, lambda: [h.remove() for h in hooks]


def test_rect_val_on_non_square_batches(detector, tmp_path):
    """rect=True val (batches shaped like the 256x192 / 192x256 images) with fine attention on."""
    records, remove = capture_pst_inputs(detector.model)
    try:
        metrics = detector.val(data="shapes", imgsz=96, batch=16, rect=True, pst_topk=4, plots=False,
                               project=str(tmp_path), name="rect")
    finally:
        remove()
    assert math.isfinite(metrics.fitness)
    shapes = {s[2:] for s, _ in records}
    assert any(h != w for h, w in shapes), shapes  # non-square maps reached PST
    assert {k for _, k in records} == {4}  # on the validation copy
    assert get_topk(detector) == 0  # the model itself keeps its value


def test_predict_non_square_and_empty_images(detector):
    """Letterboxed non-square images, blank ones (nothing to detect) included, with fine attention off and on."""
    images = [np.zeros((70, 150, 3), np.uint8), np.full((200, 90, 3), 114, np.uint8),
              np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    for k in (0, 4):
        set_topk(detector, k, verbose=False)
        detector.predictor = None  # the predictor runs a deep copy made at setup: make a new one for this k
        records, remove = capture_pst_inputs(detector.model)
        try:
            results = [detector.predict(im, imgsz=96, conf=0.001, verbose=False)[0] for im in images]
        finally:
            remove()
        assert [r.orig_shape for r in results] == [im.shape[:2] for im in images]
        assert all(r.boxes.data.isfinite().all() for r in results)
        # PST inputs (P4, then P3 fine maps) of the letterboxed 64x96, 96x64 and 96x96 images (after any warmup)
        assert [s[2:] for s, _ in records[-6:]] == [(4, 6), (8, 12), (6, 4), (12, 8), (6, 6), (12, 12)]
        assert {t for _, t in records} == {k}
    set_topk(detector, 0, verbose=False)


@pytest.mark.parametrize("k", [0, 2])
def test_training_step_on_images_without_objects(k):
    """A batch with no labels at all: finite loss and gradients (Ultralytics' loss on the PST detector)."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    model = DetectionModel("yolo11n-pst.yaml", nc=6, verbose=False).train()
    model.args = DEFAULT_CFG
    set_topk(model, k, verbose=False)
    batch = {"img": torch.rand(2, 3, 64, 96), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4),
             "batch_idx": torch.zeros(0)}
    loss, items = model(batch)
    loss.sum().backward()
    assert loss.isfinite().all() and all(v.isfinite().all() for v in items.values())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_detector_low_precision_is_finite(detector, dtype):
    """The whole detector with fine attention on, in half precision (fp16) or under CPU autocast (bf16)."""
    model = copy.deepcopy(detector.model).eval()
    set_topk(model, 4, verbose=False)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        if dtype == torch.float16:
            y = model.half()(x.half())[0]
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = model(x)[0]
    assert y.shape == (2, 84, 126) and y.isfinite().all()


# ---------------------------------------------------------------------------------------------- bad configuration
YAML_ROWS = {  # yolo11-pst.yaml row -> (bad row, index, problem), beyond those in tests/test_register.py
    "coarse is the fine level": ("[[-1, 6], 2, PST, [256, 2, 0.5]]", "[[-1, 4], 2, PST, [256, 2, 0.5]]", 16,
                                 "PST row 16 (from [-1, 4]): coarse map (32, 32) is not the next pyramid level"),
    "coarse is P4 for P4": ("[[-1, 10], 2, PST, [512, 2, 0.5]]", "[[-1, 6], 2, PST, [512, 2, 0.5]]", 13,
                            "PST row 13 (from [-1, 6]): coarse map (16, 16) is not the next pyramid level"),
    "three inputs": ("[[-1, 10], 2, PST, [512, 2, 0.5]]", "[[-1, 10, 6], 2, PST, [512, 2, 0.5]]", 13,
                     "'from' must be two layer indices"),
    "c2 not an integer": ("[[-1, 10], 2, PST, [512, 2, 0.5]]", "[[-1, 10], 2, PST, [512.5, 2, 0.5]]", 13,
                          "c2 must be a positive integer"),
    "no repeats": ("[[-1, 10], 2, PST, [512, 2, 0.5]]", "[[-1, 10], 0, PST, [512, 2, 0.5]]", 13,
                   "repeats must be a positive integer"),
    "width scaling leaves c_ = 12": ("[[-1, 6], 2, PST, [256, 2, 0.5]]", "[[-1, 6], 2, PST, [96, 2, 0.5]]", 16,
                                     "int(24 * 0.5) = 12 must be a positive multiple of the head dim 32: raise c2 or "
                                     "e (scale n)"),
}


@pytest.mark.parametrize("case", YAML_ROWS)
def test_bad_yaml_row_error_names_the_row(case, tmp_path):
    from ultralytics import YOLO

    good, bad, row, problem = YAML_ROWS[case]
    text = resource_path("cfg", "models", "yolo11-pst.yaml").read_text()
    assert good in text
    (tmp_path / "yolo11n-bad.yaml").write_text(text.replace(good, bad))
    with pytest.raises(ValueError) as e:
        YOLO(tmp_path / "yolo11n-bad.yaml")
    message = str(e.value)
    assert problem in message
    assert f"row {row}" in message
    if not problem.startswith("PST row"):  # parser-time errors also name the file and show a correct row
        assert "yolo11n-bad.yaml" in message and "A PST row reads" in message


def test_direct_use_errors_name_the_problem():
    m = PST(96, 64, 64)
    X, U = torch.randn(1, 96, 8, 8), torch.randn(1, 64, 4, 4)
    with pytest.raises(ValueError, match=r"got 64 fine and 96 coarse channels, built for 96 and 64"):
        m([U, X])  # swapped inputs
    with pytest.raises(ValueError, match=r"got 100 fine and 64 coarse channels"):
        m([torch.randn(1, 100, 8, 8), U])
    with pytest.raises(ValueError, match=r"coarse map \(8, 8\) is not the next pyramid level of the fine map \(8, 8\)"):
        m([X, torch.randn(1, 64, 8, 8)])
    with pytest.raises(TypeError, match=r"expects \[x_fine, x_coarse\]"):
        m(X)
    m.i, m.f = 13, [-1, 10]  # as set by the YAML parser
    with pytest.raises(ValueError, match=r"^PST row 13 \(from \[-1, 10\]\): got 100 fine"):
        m([torch.randn(1, 100, 8, 8), U])
    with pytest.raises(ValueError, match=r"c_ = int\(c2 \* e\) = int\(40 \* 0.5\) = 20 must be a positive multiple"):
        PST(96, 64, 40)
    with pytest.raises(ValueError, match=r"dim=48 must be a positive multiple of num_heads=5"):
        PSTAttention(48, num_heads=5)
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        PSTBlock(32, topk=-1)
