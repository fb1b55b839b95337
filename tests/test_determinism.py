"""PST's training graph avoids the operations PyTorch cannot make deterministic on CUDA (an operator census on the CPU).

Ultralytics trains with ``deterministic=True`` by default, which calls ``torch.use_deterministic_algorithms(True,
warn_only=True)``: an operation without a deterministic CUDA kernel then only warns, and two runs differ. The census
records every aten operation of a PST layer's forward and backward in training mode (any-K, at K = 0 and K = 8, with
even and odd maps) and fails on those operations.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pst_yolo import PST
from pst_yolo.nn.attention import upsample2x
from pst_yolo.topk import set_topk_train

# Backward kernels that torch.use_deterministic_algorithms documents as throwing (no deterministic CUDA version) and
# that a convolutional attention layer could reach: interpolate, padding modes, adaptive/3-D pooling.
NONDETERMINISTIC = {
    "upsample_bilinear2d_backward", "upsample_bicubic2d_backward", "upsample_nearest2d_backward",
    "_upsample_bilinear2d_aa_backward", "_upsample_nearest_exact2d_backward", "upsample_linear1d_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "replication_pad1d_backward",
    "replication_pad2d_backward", "adaptive_avg_pool2d_backward", "_adaptive_avg_pool2d_backward",
    "avg_pool3d_backward", "adaptive_max_pool2d_backward", "max_pool3d_with_indices_backward",
    "max_unpool2d", "embedding_bag", "_embedding_bag_backward", "histc", "bincount", "kthvalue", "median",
}


class Census(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("size", [(16, 12), (15, 11)])
@pytest.mark.parametrize("ks", [(0,), (8,)])
def test_training_graph_has_no_nondeterministic_op(size, ks):
    torch.manual_seed(0)
    m = PST(64, 64, 64, n=1).train()
    set_topk_train(m, ks, verbose=False)
    x = torch.randn(2, 64, *size, requires_grad=True)
    u = torch.randn(2, 64, (size[0] + 1) // 2, (size[1] + 1) // 2, requires_grad=True)
    with Census() as census:
        m([x, u]).square().mean().backward()
    assert "convolution_backward" in census.ops  # the census saw the backward
    bad = census.ops & NONDETERMINISTIC
    if size[0] % 2 == 0:  # even maps (every YOLO training size): none
        assert not bad, bad
    else:  # odd maps fall back to interpolate: the one documented exception
        assert bad <= {"upsample_bilinear2d_backward"}, bad


def test_upsample2x_is_interpolate():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    a, b = upsample2x(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(a, b, atol=1e-12)
    ga, gb = torch.autograd.grad((a * a).sum(), x)[0], torch.autograd.grad((b * b).sum(), x)[0]
    assert torch.allclose(ga, gb, atol=1e-12)


def test_training_and_eval_compute_the_same_function():
    """Train mode (upsample2x) and eval mode (interpolate) agree once BatchNorm uses running statistics in both."""
    torch.manual_seed(0)
    m = PST(64, 64, 64, n=2)
    x, u = torch.randn(2, 64, 16, 12), torch.randn(2, 64, 8, 6)
    with torch.no_grad():
        ref = m.eval()([x, u])
        m.train()
        for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
            bn.eval()  # only the attention layers are in training mode
        assert all(a.training for a in m.modules() if type(a).__name__ == "PSTAttention")
        assert torch.allclose(m([x, u]), ref, atol=1e-5)
