"""Naive reference of the PST modules, written from the equations of docs/method.md §1 (not from the module's code).

Slow on purpose: per image and per head, explicit N x M score matrices, an explicit softmax, an explicit top-k over the
selection scores, an explicit 2x2 patch walk and explicit bilinear interpolation matrices. The weights are read out of
eval-mode ``PSTAttention`` / ``PSTBlock`` / ``PST`` instances (BatchNorm uses its running statistics) and everything
is computed in float64, so the reference is the "truth" an fp32 module is compared with.

Channel conventions shared with the module (documented in ``PSTAttention``):

- ``conv_q``: head ``h`` owns output channels ``[h*d, (h+1)*d)``;
- ``conv_kv``: per head ``[K_h | V_h]``: K at ``[2hd, 2hd + d)``, V at ``[2hd + d, 2(h+1)d)``;
- ``gate`` (``nn.Conv2d(2C, C, 1, groups=heads)``): group ``h`` reads ``[O_c,h | O_f,h]`` and writes head ``h``'s ``d``
  gate logits;
- the coarse value map fed to ``pe`` has head ``h``'s values at channels ``[h*d, (h+1)*d)``.

The tests' random data comes from here too: ``randomize_`` (weights, BatchNorm statistics, gates) and ``inputs`` (fine
and coarse maps), so every test file makes modules and inputs the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = (
    "bilinear_matrix",
    "bilinear_upsample",
    "coarse_hw",
    "conv_bn",
    "inputs",
    "pst_attention_ref",
    "pst_block_ref",
    "pst_ref",
    "randomize_",
)

REF_DTYPE = torch.float64


def conv_bn(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An Ultralytics ``Conv`` (conv -> eval BatchNorm) *without* its activation, evaluated from its weights.

    BN is written out: ``(y - running_mean) / sqrt(running_var + eps) * weight + bias``. A ``Conv`` whose BN was
    already folded (no ``bn`` attribute) is just its convolution with bias.
    """
    c = conv.conv
    bias = None if c.bias is None else c.bias.to(x.dtype)
    y = F.conv2d(x, c.weight.to(x.dtype), bias, c.stride, c.padding, c.dilation, c.groups)
    if hasattr(conv, "bn"):
        bn = conv.bn
        mean, var = bn.running_mean.to(x.dtype), bn.running_var.to(x.dtype)
        gamma, beta = bn.weight.to(x.dtype), bn.bias.to(x.dtype)
        y = (y - mean[:, None, None]) / torch.sqrt(var + bn.eps)[:, None, None] * gamma[:, None, None]
        y = y + beta[:, None, None]
    return y


def bilinear_matrix(n_out: int, n_in: int, dtype: torch.dtype = REF_DTYPE) -> torch.Tensor:
    """(n_out, n_in) 1-D linear interpolation weights, ``align_corners=False`` (half-pixel centres, edge clamped)."""
    mat = torch.zeros(n_out, n_in, dtype=dtype)
    scale = n_in / n_out
    for o in range(n_out):
        src = max((o + 0.5) * scale - 0.5, 0.0)  # source coordinate of output pixel o's centre
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        mat[o, i0] += 1.0 - lam
        mat[o, i1] += lam
    return mat


def bilinear_upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, H, W) as ``Ry @ x @ Rxᵀ`` with explicit interpolation matrices."""
    ry = bilinear_matrix(size[0], x.shape[2], x.dtype)  # (H, h)
    rx = bilinear_matrix(size[1], x.shape[3], x.dtype)  # (W, w)
    return ry @ x @ rx.T


def _softmax_rows(s: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax written out: exp(s - max) / sum."""
    e = torch.exp(s - s.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


@torch.no_grad()
def pst_attention_ref(attn: nn.Module, x: torch.Tensor, u: torch.Tensor, topk: int | None = None):
    """Naive PST attention (docs/method.md §1) with the weights of an eval-mode ``PSTAttention``.

    Args:
        attn (PSTAttention): The module whose weights are used (must be in eval mode).
        x (torch.Tensor): Fine map (B, C, H, W).
        u (torch.Tensor): Coarse map (B, C, ceil(H/2), ceil(W/2)).
        topk (int | None): Coarse tokens selected for fine attention; defaults to ``attn.topk``; clamped to M.

    Returns:
        (tuple[torch.Tensor, dict]): The output (B, C, H, W) in ``x``'s dtype, and ``{(b, h): frozenset of selected
            coarse token indices}`` (empty when ``topk == 0``).
    """
    assert not attn.training, "the reference uses BatchNorm running statistics: put the module in eval mode"
    out_dtype = x.dtype
    x, u = x.to(REF_DTYPE), u.to(REF_DTYPE)
    topk = attn.topk if topk is None else topk
    B, C, H, W = x.shape
    Hc, Wc = u.shape[2:]
    nh, d = attn.num_heads, attn.head_dim  # d = 32 unless a test builds other heads on purpose (docs/method.md §1)
    assert nh * d == C
    N, M = H * W, Hc * Wc
    k_eff = min(topk, M)

    q_map = conv_bn(attn.conv_q, x).reshape(B, C, N)  # queries from the fine map
    kv_coarse = conv_bn(attn.conv_kv, u).reshape(B, 2 * C, M)  # coarse keys/values
    kv_fine = conv_bn(attn.conv_kv, x).reshape(B, 2 * C, N)  # fine keys/values: the SAME conv_kv on x
    gate_w = attn.gate.weight.to(REF_DTYPE)[:, :, 0, 0]  # (C, 2d): row block h = head h, columns [O_c | O_f]
    gate_b = attn.gate.bias.to(REF_DTYPE)  # (C,)

    out = torch.zeros(B, C, N, dtype=REF_DTYPE)
    v_map = torch.zeros(B, C, M, dtype=REF_DTYPE)
    selected = {}
    for b in range(B):
        for h in range(nh):
            q = q_map[b, h * d : (h + 1) * d].T  # (N, d)
            k = kv_coarse[b, 2 * h * d : 2 * h * d + d].T  # (M, d)
            v = kv_coarse[b, 2 * h * d + d : 2 * (h + 1) * d].T  # (M, d)
            v_map[b, h * d : (h + 1) * d] = v.T

            # 1. coarse attention: O_c = softmax(Q Kᵀ / √d) V over all M coarse tokens
            scores = q @ k.T / math.sqrt(d)  # (N, M) explicit
            o_c = _softmax_rows(scores) @ v  # (N, d)
            o = o_c

            if k_eff:
                # 2. fine attention: s_j = mean_i(q_i · k_j) / √d, top-k coarse tokens
                s = scores.mean(dim=0)  # (M,)
                chosen = sorted(range(M), key=lambda j: -s[j].item())[:k_eff]
                selected[(b, h)] = frozenset(chosen)
                positions = []  # fine token indices of the 2x2 patches inside the fine map
                for j in chosen:
                    r, c = divmod(j, Wc)
                    for dr in (0, 1):
                        for dc in (0, 1):
                            y, xx = 2 * r + dr, 2 * c + dc
                            if y < H and xx < W:
                                positions.append(y * W + xx)
                k_all = kv_fine[b, 2 * h * d : 2 * h * d + d].T  # (N, d)
                v_all = kv_fine[b, 2 * h * d + d : 2 * (h + 1) * d].T  # (N, d)
                k_f, v_f = k_all[positions], v_all[positions]  # (T, d), T <= 4k
                o_f = _softmax_rows(q @ k_f.T / math.sqrt(d)) @ v_f  # (N, d)

                # gated fusion: g = sigmoid(W_g [O_c ‖ O_f] + b_g), O = g O_f + (1 - g) O_c
                w_h, b_h = gate_w[h * d : (h + 1) * d], gate_b[h * d : (h + 1) * d]  # (d, 2d), (d,)
                g = torch.sigmoid(torch.cat((o_c, o_f), dim=1) @ w_h.T + b_h)  # (N, d)
                o = g * o_f + (1 - g) * o_c
            out[b, h * d : (h + 1) * d] = o.T

    # 3. positional encoding: depthwise 7x7 Conv-BN of the coarse V map, bilinear to (H, W), added before proj
    pe = conv_bn(attn.pe, v_map.reshape(B, C, Hc, Wc))  # (B, C, Hc, Wc)
    pe = bilinear_upsample(pe, (H, W))  # (B, C, H, W)
    y = conv_bn(attn.proj, out.reshape(B, C, H, W) + pe)
    return y.to(out_dtype), selected


@torch.no_grad()
def pst_block_ref(block: nn.Module, x: torch.Tensor, u: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Naive PST block: ``x = x + Attn(x, u)``; ``x = x + Conv-BN(SiLU(Conv-BN(x)))``."""
    out_dtype = x.dtype
    x = x.to(REF_DTYPE) + pst_attention_ref(block.attn, x, u, topk)[0].to(REF_DTYPE)
    hidden = F.silu(conv_bn(block.mlp[0], x))
    return (x + conv_bn(block.mlp[1], hidden)).to(out_dtype)


@torch.no_grad()
def pst_ref(pst: nn.Module, X: torch.Tensor, U: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Naive PST wrapper: ``x = SiLU(cv1 X)``, ``u = SiLU(cvup U)``, n blocks, concat, ``SiLU(cv2 ·)``."""
    assert not pst.training
    out_dtype = X.dtype
    x = F.silu(conv_bn(pst.cv1, X.to(REF_DTYPE)))
    u = F.silu(conv_bn(pst.cvup, U.to(REF_DTYPE)))
    ys = [x]
    for block in pst.m:
        ys.append(pst_block_ref(block, ys[-1], u, topk))
    return F.silu(conv_bn(pst.cv2, torch.cat(ys, 1))).to(out_dtype)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Draw every weight of ``module`` from ``seed``: convolutions as initialised, random BatchNorm running statistics
    and affine parameters, random gate weights. The tests' one randomizer of modules.

    Fresh BN layers are the identity in eval mode and a fresh gate is constant (zero init), which would let wrong
    channel layouts or a wrong gate wiring pass a comparison; this makes every parameter matter. The convolutions are
    drawn again from ``seed`` (their default initialisation; the global RNG is left as it was), so a module is the same
    whatever ran before it in the process.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
    gen = torch.Generator().manual_seed(seed)
    for name, m in module.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            var = 10 ** (-3 * torch.rand(n, generator=gen))  # 1e-3 .. 1: small enough for eps to matter
            m.running_mean.copy_(0.3 * torch.randn(n, generator=gen) * var.sqrt())
            m.running_var.copy_(var)
            m.weight.copy_((0.5 + torch.rand(n, generator=gen)) * var.sqrt())  # keeps activations O(1)
            m.bias.copy_(0.3 * torch.randn(n, generator=gen))
        elif name.split(".")[-1] == "gate" and isinstance(m, nn.Conv2d):
            m.weight.copy_(0.3 * torch.randn(m.weight.shape, generator=gen))
            m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=gen))
    return module


def coarse_hw(h: int, w: int) -> tuple[int, int]:
    """The next pyramid level of an (h, w) map: ceil(h/2) x ceil(w/2)."""
    return (h + 1) // 2, (w + 1) // 2


def inputs(b: int, c: int, h: int, w: int, seed: int = 0, c_up: int | None = None, dtype: torch.dtype = torch.float32):
    """Random fine map (b, c, h, w) and coarse map (b, c_up, ceil(h/2), ceil(w/2)), standard normal, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    hc, wc = coarse_hw(h, w)
    return (torch.randn(b, c, h, w, generator=gen, dtype=dtype),
            torch.randn(b, c_up or c, hc, wc, generator=gen, dtype=dtype))
