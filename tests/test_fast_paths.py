"""Fast paths of ``PSTAttention`` (issue #5), beyond the fused/plain agreement of tests/nn:

- the fused path never creates an ``N x M`` tensor, in inference or in training (forward and backward), at any op:
  this catches SDPA silently falling back to its math kernel (which materializes the matrix, e.g. for non-contiguous
  queries) as well as an explicit score matrix written back into the code;
- eval mode, where fine keys/values are projected only at the gathered positions (BN folded on the fly): fast and
  plain paths agree with a float64 run of the plain path (the literal formulation), in the output *and* in the
  gradients w.r.t. inputs and every parameter, at P3 shapes of the detectors (80x80 queries, 40x40 keys).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from nn.reference import randomize_  # tests/nn: the tests' randomizer of modules
from torch.utils._python_dispatch import TorchDispatchMode

from pst_yolo import PSTAttention


class _LargestOutputs(TorchDispatchMode):
    """Record, for every ATen op run inside the mode, its name and the element count of its largest tensor output."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[int, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, (tuple, list)) else (out,)
        sizes = [t.numel() for t in flat if isinstance(t, torch.Tensor)]
        if sizes:
            self.ops.append((max(sizes), str(func)))
        return out


@pytest.mark.parametrize("k", [0, 8])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fused_path_materializes_no_score_matrix(train, k):
    """No op of the fused path outputs a tensor as large as one head's N x M scores; the plain path does."""
    torch.manual_seed(0)
    dim, (h, w) = 64, (48, 40)  # 2 heads; N = 1920, M = 480
    n_by_m = h * w * (h // 2) * (w // 2)  # 921,600 scores per head, vs <= 2 * dim * N = 245,760 for any feature map
    x, u = torch.randn(2, dim, h, w), torch.randn(2, dim, h // 2, w // 2)
    for form in ("fused", "plain"):
        attn = PSTAttention(dim, topk=k).train(train)
        attn.form = form
        xg = x.clone().requires_grad_(train)
        with _LargestOutputs() as rec:
            y = attn(xg, u)
            if train:
                y.square().sum().backward()
        assert rec.ops, "the dispatch mode saw no ops"
        largest, op = max(rec.ops)
        if form == "fused":
            assert largest < n_by_m, f"fused path: {op} output {largest} elements, an N x M matrix has {n_by_m}"
        else:  # the detector works: the literal formulation does build the matrix
            assert largest >= n_by_m, f"plain path: largest op output {largest} < {n_by_m}; the check is blind"


def _run(attn: nn.Module, x: torch.Tensor, u: torch.Tensor):
    """Output, input gradients and parameter gradients of ``sum(y * r)`` with a fixed random cotangent ``r``."""
    attn.zero_grad(set_to_none=True)
    x, u = x.clone().requires_grad_(True), u.clone().requires_grad_(True)
    y = attn(x, u)
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y.dtype)
    (y * r).sum().backward()
    grads = {"x": x.grad, "u": u.grad} | {n: p.grad for n, p in attn.named_parameters() if p.grad is not None}
    return y.detach(), grads


@pytest.mark.parametrize(
    "dim, batch, size, k",
    [(32, 1, (80, 80), 8), (64, 2, (80, 80), 8), (64, 1, (80, 80), 0), (128, 1, (40, 40), 8)],
    ids=["n-P3-k8", "s-P3-k8", "s-P3-k0", "4heads-k8"],
)
def test_eval_fast_and_plain_match_fp64_reference_with_gradients(dim, batch, size, k):
    """Eval mode (fine K/V projected at gathered positions only): outputs and all gradients match float64 to fp32."""
    torch.manual_seed(0)
    attn = randomize_(PSTAttention(dim, topk=k)).eval()
    h, w = size
    x, u = torch.randn(batch, dim, h, w), torch.randn(batch, dim, h // 2, w // 2)

    ref = copy.deepcopy(attn).double()
    ref.form = "plain"
    y_ref, g_ref = _run(ref, x.double(), u.double())
    for form in ("fused", "plain"):
        attn.form = form
        y, g = _run(attn, x, u)
        label = "fast" if form == "fused" else "plain"
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5 * y_ref.abs().max().item(), msg=label)
        assert g.keys() == g_ref.keys(), f"{label}: gradients reach {sorted(g)} instead of {sorted(g_ref)}"
        for name, gr in g_ref.items():
            # fp32 accuracy relative to the tensor's largest gradient (some entries are ~0 up to rounding)
            scale = gr.abs().max().item()
            assert scale > 0, f"{name}: zero reference gradient, the comparison would be empty"
            err = (g[name].double() - gr).abs().max().item()
            assert err <= 2e-4 * scale, f"{label}: d/d{name} differs by {err:.3g} (max |grad| {scale:.3g})"
    if k:
        assert "gate.weight" in g_ref, "fine attention on, yet the gate got no gradient"


@pytest.mark.parametrize("form", ["fused", "plain"], ids=["fast", "plain"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dim, k", [(32, 0), (32, 4), (64, 4)], ids=["1head-k0", "1head-k4", "2heads-k4"])
def test_batch1_gradients_match_finite_differences(dim, k, train, form):
    """At batch 1 (a last partial batch, a saliency map) input gradients equal central finite differences (float64).

    Guards the layout fix in ``PSTAttention.forward``: torch 2.15's CPU BatchNorm backward is wrong for a batch-1
    gradient whose (size-1) batch stride a view's backward left non-canonical, which one-head layers (yolo11n-pst's P3)
    used to hand to ``conv_q``/``conv_kv`` in both paths, in training and in eval mode.
    """
    torch.manual_seed(0)
    attn = randomize_(PSTAttention(dim, topk=k)).double().train(train)
    attn.form = form
    for m in attn.modules():  # training-mode BN must not move its running statistics between the evaluations of f
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0
    x, u = torch.randn(1, dim, 16, 14, dtype=torch.float64), torch.randn(1, dim, 8, 7, dtype=torch.float64)
    r = torch.randn(1, dim, 16, 14, dtype=torch.float64)

    def f(x, u):
        return (attn(x, u) * r).sum()

    xg, ug = x.clone().requires_grad_(True), u.clone().requires_grad_(True)
    f(xg, ug).backward()
    eps = 1e-6
    with torch.no_grad():
        for name, grad, d in (("x", xg.grad, torch.randn_like(x)), ("u", ug.grad, torch.randn_like(u))):
            dx, du = (d, 0) if name == "x" else (0, d)
            fd = (f(x + eps * dx, u + eps * du) - f(x - eps * dx, u - eps * du)).item() / (2 * eps)
            ad = (grad * d).sum().item()
            assert abs(ad - fd) <= 1e-6 * max(abs(fd), 1.0), (
                f"d/d{name}: autograd {ad:.9g}, finite differences {fd:.9g}"
            )
