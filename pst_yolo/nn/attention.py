"""Pyramid sparse attention: coarse cross-attention with optional fine (top-k) refinement.

The op of the Pyramid Sparse Transformer (docs/method.md §1). Queries come from a fine map ``x`` (B, C, H, W); keys and
values come from the next coarser map ``u`` (B, C, Hc, Wc) with ``Hc = ceil(H / 2)`` and ``Wc = ceil(W / 2)``.

- Coarse path (always on): every fine query attends to all ``M = Hc * Wc`` coarse tokens.
- Fine path (``topk > 0``): the ``topk`` coarse tokens with the highest mean query score are selected per image and
  head; each maps to its 2x2 patch of the fine map, whose keys/values come from the *same* ``conv_kv`` applied to
  ``x``. A per-head gate mixes the two outputs.

Three implementations of the same function live side by side, named by the attribute ``form``:

- ``"fused"`` (the default): ``F.scaled_dot_product_attention`` for both paths, selection from the mean query, and
  fine keys/values projected only at the gathered positions;
- ``"plain"``: explicit attention matrices and ``conv_kv`` over the whole fine map (what the equations say
  literally);
- ``"portable"`` (set at export time for converters that lack ops, see ``pst_yolo.export.forms``): explicit
  attention matrices, and a fine path built only from ops every converter maps (matmul, reductions, clamp, pad, conv,
  reshape): top-k as ``k`` unrolled arg-max steps that produce one-hot rows, and the gather of the selected 2x2 patches
  as a product of those one-hot rows with the space-to-depth fine map. No ``TopK``/``Gather``/``Where``/comparison
  op, no integer tensor, no shape-dependent padding at run time. It needs static shapes (a traced export fixes them),
  which is what makes the constant padding and masks possible; coarse maps must stay below 4096 tokens per side.

The fine path always applies ``conv_kv`` as its inference-time affine map (BatchNorm with running statistics), also in
training: fine attention then computes the same function in training and inference, and fine-map statistics never
leak into the BatchNorm that the coarse keys/values use.

Token selection is deterministic (no noise) and exportable: top-k runs with a constant ``k`` over scores padded to
at least ``k`` entries, and the padding, as well as 2x2 patch positions outside odd-sized fine maps, is masked out of
the softmax. A ``topk`` larger than the number of coarse tokens therefore behaves like selecting all of them.
"""

from __future__ import annotations

import random
import warnings
from numbers import Integral

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

__all__ = ("FORMS", "HEAD_DIM", "PSTArgumentError", "PSTAttention", "check_form", "check_topk", "upsample2x")

HEAD_DIM = 32  # channels per attention head (docs/method.md §1)
FORMS = ("fused", "plain", "portable")  # the values of PSTAttention.form (module docstring)
# Portable arg-max: 1 + clamp(d * _SHARP**3, -1, 0) is exactly 1 for the maximum (d = 0) and 0 for any score below it
# by more than 1e-12 (in three steps, so no constant exceeds fp16's range when a runtime computes in half precision).
_SHARP = 1e4
_FAR = 4096.0  # above any coarse row/column index; integers up to 2 * _FAR are exact in fp16
_MASKED = -1e4  # additive logit of a masked fine candidate in the portable path (exp() underflows to 0, fp16-safe)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling (``align_corners=False``) of (B, C, h, w) from slices and sums only.

    The same function as ``F.interpolate(x, scale_factor=2, mode="bilinear")``: output row ``2i`` is
    ``0.75 x[i] + 0.25 x[i-1]`` and row ``2i+1`` is ``0.75 x[i] + 0.25 x[i+1]`` (edges repeated), then the same along
    columns. Its backward has no scatter, so it is deterministic on CUDA, where interpolate's backward is not (PyTorch
    lists it among the operations ``use_deterministic_algorithms`` cannot make deterministic).

    Examples:
        >>> x = torch.randn(1, 2, 3, 5)
        >>> torch.allclose(upsample2x(x), F.interpolate(x, scale_factor=2, mode="bilinear"), atol=1e-6)
        True
    """
    for dim in (2, 3):
        n = x.shape[dim]
        prev = torch.cat((x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)), dim)  # x[i-1], edge repeated
        nxt = torch.cat((x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)), dim)  # x[i+1], edge repeated
        x = torch.stack((0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt), dim + 1).flatten(dim, dim + 1)
    return x


def _distributed() -> bool:
    """Whether this process is part of an initialised torch.distributed process group (DDP training)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class PSTArgumentError(ValueError):
    """An invalid value of one of pst_yolo's own arguments (``pst_topk``); its message is the whole story.

    A ``ValueError``, so Python API users catch it as before; the ``pst-yolo`` command prints just the message.
    """


def check_topk(k) -> int:
    """Return ``k`` if it is a valid ``pst_topk`` (a non-negative integer), else raise ``PSTArgumentError``.

    Raises:
        PSTArgumentError: A ``ValueError`` whose message names the argument and the value.

    Examples:
        >>> check_topk(8)
        8
        >>> try:
        ...     check_topk(-1)
        ... except ValueError as e:
        ...     print(f"{type(e).__name__}: {e}")
        PSTArgumentError: pst_topk must be a non-negative integer (0 = coarse attention only), got -1
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
        raise PSTArgumentError(f"pst_topk must be a non-negative integer (0 = coarse attention only), got {k!r}")
    return int(k)


def check_form(form) -> str:
    """Return ``form`` if it names one of the ``FORMS`` of ``PSTAttention``, else raise ``ValueError``.

    Examples:
        >>> check_form("plain")
        'plain'
        >>> try:
        ...     check_form(True)
        ... except ValueError as e:
        ...     print(e)
        PSTAttention.form must be one of 'fused', 'plain', 'portable', got True
    """
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"PSTAttention.form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
    return form


def _deprecated(old: str, new: str) -> None:
    """Warn that the attribute ``old`` of ``PSTAttention`` was set, naming its replacement (at the caller's line)."""
    warnings.warn(f"PSTAttention.{old} is deprecated: use PSTAttention.{new}", FutureWarning, stacklevel=4)


@torch.library.custom_op("pst_yolo::stats_snapshot", mutates_args=())
def _stats_snapshot(t: torch.Tensor) -> torch.Tensor:
    """A copy of a BatchNorm running statistic, opaque to ``torch.compile`` (see ``_affine_1x1``)."""
    return t.clone()


@_stats_snapshot.register_fake
def _(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t)


def _affine_1x1(conv: Conv) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(weight (C2, C1), bias (C2,))`` of an eval-mode 1x1 ``Conv`` without activation (BN folded in).

    In training mode the running statistics are read through an opaque copy: the same forward has just updated them,
    and a compiled backward that recomputed the read from the buffer (AOT autograd's min-cut partitioner does, in
    PyTorch up to at least 2.14) would see them after the write-back, i.e. updated twice, and bend the gradients.
    """
    w = conv.conv.weight.flatten(1)  # (C2, C1)
    if hasattr(conv, "bn"):  # not fused yet: fold BN running statistics
        bn = conv.bn
        mean, var = bn.running_mean, bn.running_var
        if bn.training:
            mean, var = _stats_snapshot(mean), _stats_snapshot(var)
        scale = bn.weight / torch.sqrt(var + bn.eps)
        return w * scale[:, None], bn.bias - mean * scale
    bias = conv.conv.bias if conv.conv.bias is not None else torch.zeros_like(w[:, 0])
    return w, bias


class PSTAttention(nn.Module):
    """Coarse-to-fine sparse cross-attention between two adjacent pyramid levels.

    Args:
        dim (int): Channels of both inputs and of the output; a multiple of ``HEAD_DIM``.
        num_heads (int | None): Attention heads; defaults to ``dim // HEAD_DIM``.
        topk (int): Coarse tokens selected for fine attention per image and head; 0 disables the fine path.

    Attributes:
        form (str): The implementation that runs, one of ``FORMS`` (see module docstring): ``"fused"`` (default),
            ``"plain"`` or ``"portable"`` (for exporters, static shapes). Any other value raises ``ValueError``.
            It replaces the booleans ``fused_attn`` and ``portable``, which remain as deprecated aliases.
        conv_q (Conv): 1x1 Conv-BN producing queries from the fine map.
        conv_kv (Conv): 1x1 Conv-BN producing keys and values; shared by the coarse and fine paths. Its output
            channels are laid out per head as ``[K_h (head_dim) | V_h (head_dim)]``.
        gate (nn.Conv2d): Per-head 1x1 map from ``[O_c | O_f]`` (2 * head_dim) to head_dim gate logits.
        pe (Conv): Depthwise 7x7 Conv-BN positional encoding of the coarse values.
        proj (Conv): 1x1 Conv-BN output projection.

    Any-K training (``pst_yolo.topk.set_topk_train``, the ``pst_topk_train`` argument): while ``self.training`` and
    ``topk_train`` is set, each forward runs a K drawn from ``topk_train`` instead of ``topk``. The draw depends only on
    ``(topk_train_seed, topk_train_step)``, so every layer of a model draws the same K in a training step and a run is
    reproducible under its seed. Eval mode (validation, predict, export) always runs ``topk``. The trainer draws each
    step's K before the forward (``pst_yolo.topk.advance_topk_train`` sets ``topk_step``), so the forward holds no
    Python randomness and ``torch.compile`` traces it without a graph break; a forward without that (a loop of one's
    own) draws itself.

    Examples:
        >>> attn = PSTAttention(64, topk=4).eval()
        >>> x, u = torch.randn(2, 64, 20, 20), torch.randn(2, 64, 10, 10)
        >>> print(attn(x, u).shape)
        torch.Size([2, 64, 20, 20])
        >>> attn.form = "portable"  # the same function from converter-friendly ops
        >>> print(attn(x, u).shape)
        torch.Size([2, 64, 20, 20])
    """

    # Any-K training state; class defaults, so checkpoints saved before it existed load unchanged.
    topk_train: tuple[int, ...] = ()  # Ks drawn from in training mode; () = train with topk
    topk_train_seed: int = 0
    topk_train_step: int = 0  # training steps drawn so far
    topk_step: int | None = None  # this step's K, drawn outside the forward (the trainer's batch callback); not saved

    def __init__(self, dim: int, num_heads: int | None = None, topk: int = 0):
        super().__init__()
        num_heads = num_heads or dim // HEAD_DIM
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"PSTAttention: dim={dim} must be a positive multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.topk = topk
        self.form = "fused"
        self.conv_q = Conv(dim, dim, 1, act=False)
        self.conv_kv = Conv(dim, 2 * dim, 1, act=False)
        self.gate = nn.Conv2d(2 * dim, dim, 1, groups=num_heads)
        nn.init.zeros_(self.gate.weight)  # an untrained gate mixes 50/50 instead of with random weights
        nn.init.zeros_(self.gate.bias)
        self.pe = Conv(dim, dim, 7, g=dim, act=False)
        self.proj = Conv(dim, dim, 1, act=False)

    def __getstate__(self) -> dict:
        """Pickle without run-time state (a drawn K, cached constants)."""
        state = super().__getstate__()
        state.pop("topk_step", None)  # a run's last drawn K: a reloaded model draws again
        state.pop("_constants", None)  # the portable path's cached constants (remade on first use)
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle, also checkpoints saved before ``form`` existed.

        Those carry the booleans it replaced in their state: ``fused_attn`` (always) and ``portable`` (later ones;
        it overrode ``fused_attn``), which give the same form. The clamp-warning flag older checkpoints saved is
        dropped (a layer no longer logs; see :func:`pst_yolo.topk.warn_clamped`).
        """
        state = dict(state)
        fused, portable = state.pop("fused_attn", True), state.pop("portable", False)
        state.setdefault("_form", "portable" if portable else "fused" if fused else "plain")
        state.pop("_warned_clamp", None)
        super().__setstate__(state)
        self.form = self._form  # validated

    @property
    def topk(self) -> int:
        """Coarse tokens selected for fine attention (0 = coarse only)."""
        return self._topk

    @topk.setter
    def topk(self, k: int) -> None:
        self._topk = check_topk(k)

    @property
    def form(self) -> str:
        """The implementation that runs: ``"fused"``, ``"plain"`` or ``"portable"`` (the same function)."""
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        self._form = check_form(form)

    @property
    def fused_attn(self) -> bool:
        """Deprecated alias: ``form == "fused"``; setting True selects ``"fused"``, False ``"plain"``."""
        return self.form == "fused"

    @fused_attn.setter
    def fused_attn(self, fused: bool) -> None:
        form = "fused" if fused else "plain"
        _deprecated("fused_attn", f'form (fused_attn = {bool(fused)} is form = "{form}")')
        self.form = form

    @property
    def portable(self) -> bool:
        """Deprecated alias: ``form == "portable"``; setting True selects ``"portable"``, False ``"fused"`` from it."""
        return self.form == "portable"

    @portable.setter
    def portable(self, portable: bool) -> None:
        _deprecated("portable", 'form (portable = True is form = "portable")')
        if portable:
            self.form = "portable"
        elif self.form == "portable":
            self.form = "fused"

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Attend from the fine map ``x`` (B, C, H, W) to the coarse map ``u`` (B, C, Hc, Wc); returns (B, C, H, W)."""
        return self._forward(x, u)

    def _forward(self, x: torch.Tensor, u: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """``forward``; a ``record`` dict receives its intermediate tensors (``pst_yolo.explain`` shows them).

        Recorded: ``q`` (B, nh, N, hd) queries, ``k`` (B, nh, M, hd) coarse keys, ``output`` (B, C, H, W), and when fine
        attention runs ``scores`` (B, nh, M) selection scores, ``selected`` (B, nh, k) the selected coarse tokens, best
        first, and ``gate`` (B, nh, N, hd) the fusion gate.
        """
        B, C, H, W = x.shape
        Hc, Wc = u.shape[2:]
        nh, hd = self.num_heads, self.head_dim
        # Token-major copies (NHWC): SDPA's CPU flash kernel needs a unit stride on the head dim, else it falls back to
        # the math kernel, which materializes the N×M matrix (4x slower at P3 on a CPU). A permute, not a view, leads
        # back to the conv maps: at batch 1 a view's backward gives the gradient a non-canonical batch stride, which
        # torch 2.15's CPU BatchNorm backward gets wrong (tests/test_fast_paths.py).
        q = self.conv_q(x).permute(0, 2, 3, 1).contiguous().view(B, H * W, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
        kv = self.conv_kv(u).permute(0, 2, 3, 1).contiguous().view(B, Hc * Wc, nh, 2 * hd).transpose(1, 2)
        k, v = kv.split(hd, dim=3)  # (B, nh, M, hd) each
        out = self._attend(q, k, v)  # (B, nh, N, hd)

        topk = self._train_topk() if self.training and self.topk_train else self.topk
        if topk:
            out_fine = self._fine(x, q, k, (Hc, Wc), topk, record)  # (B, nh, N, hd)
            if self.form == "fused":  # the grouped 1x1 gate as per-head matmuls: no concat/transposes
                w = self.gate.weight.view(nh, hd, 2 * hd)  # (nh, hd out, [O_c | O_f] in)
                g = out @ w[..., :hd].transpose(1, 2) + out_fine @ w[..., hd:].transpose(1, 2)  # (B, nh, N, hd)
                g = (g + self.gate.bias.view(nh, 1, hd)).sigmoid()
            else:
                g = self.gate(torch.cat((out, out_fine), 3).transpose(2, 3).reshape(B, 2 * C, H, W)).sigmoid()
                g = g.view(B, nh, hd, H * W).transpose(2, 3)  # (B, nh, N, hd)
            out = out + g * (out_fine - out)  # g * O_f + (1 - g) * O_c
            if record is not None:
                record["gate"] = g
        elif self.training and self.topk_train and _distributed():
            # Any-K training under DDP: a K = 0 step touches the gate with a zero gradient, so every step uses the same
            # parameters, as DDP's static graph (Ultralytics' compile=True construction) requires; the default
            # construction gives unused parameters zero gradients anyway, so the function and the update are the same.
            out = out + 0.0 * (self.gate.weight.sum() + self.gate.bias.sum())

        out = out.transpose(2, 3).reshape(B, C, H, W)  # (B, C, H, W)
        v_map = v.transpose(2, 3).reshape(B, C, Hc, Wc)  # (B, C, Hc, Wc)
        pe = self.pe(v_map)
        if self.training and (H, W) == (2 * Hc, 2 * Wc):
            pe = upsample2x(pe)  # the same function; its backward is deterministic on CUDA (interpolate's is not)
        else:
            pe = F.interpolate(pe, size=(H, W), mode="bilinear", align_corners=False)
        y = self.proj(out + pe)
        if record is not None:
            record.update(q=q, k=k, output=y)
        return y

    def _train_topk(self) -> int:
        """Any-K training: this step's K, drawn by the trainer before the forward, else drawn here."""
        return self.topk_step if self.topk_step is not None else self.draw_topk()

    def draw_topk(self) -> int:
        """Any-K training: the next step's K, a function of (seed, step) only (the same in every layer of the model)."""
        step, self.topk_train_step = self.topk_train_step, self.topk_train_step + 1
        return random.Random(f"{self.topk_train_seed}:{step}").choice(self.topk_train)

    def _attend(self, q, k, v, mask=None):
        """softmax(q kᵀ / √d + mask) v for (B, nh, N, hd) queries and (B, nh, T, hd) keys/values."""
        if self.form == "fused":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if _low_precision(q):  # the product with v in fp32 too, as the fused kernels accumulate
            with torch.autocast(q.device.type, enabled=False):
                return self._attend(q.float(), k.float(), v.float(), mask).to(v.dtype)
        return self._weights(q, k, mask) @ v

    def _weights(self, q, k, mask=None):
        """The attention weights softmax(q kᵀ / √d + mask), (B, nh, N, T), of the plain form (``_attend``).

        Logits and softmax in fp32 for half-precision inputs, also under autocast: fp16 logits overflow past 65504 and a
        row of inf turns into NaN after softmax.
        """
        if _low_precision(q):
            with torch.autocast(q.device.type, enabled=False):
                return self._weights(q.float(), k.float(), mask)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, N, T)
        if mask is not None:
            attn = attn + mask
        return attn.softmax(dim=-1)

    def _select(self, q, k, topk: int):
        """Token selection of the fused and plain forms: ``(scores, indices)``.

        Scores ``s_j = mean_i(q_i · k_j) / √d`` (B, nh, M), one per image, head and coarse token, accumulated in fp32
        from the q/k the layer computed, also under autocast or in a half model, so precision changes the selection only
        where fp32's own scores are closer than the inputs' rounding. Indices (B, nh, topk) of the top ``topk``, best
        first; a ``topk`` above M (in a trace, which cannot clamp) picks padding tokens, indices >= M.
        """
        B, nh = q.shape[:2]
        with torch.autocast(q.device.type, enabled=False):
            qf, kf = q.float(), k.float()
            if self.form == "fused":
                scores = (qf.mean(2, keepdim=True) @ kf.transpose(2, 3)).squeeze(2)  # (B, nh, M)
            else:
                scores = (qf @ kf.transpose(2, 3)).mean(2)  # (B, nh, M) via the explicit N×M matrix
            scores = scores * self.scale
        # Constant-k top-k (exportable): pad to >= topk tokens; padded picks are masked out by the caller.
        padded = torch.cat((scores, scores.new_full((B, nh, topk), float("-inf"))), 2)  # (B, nh, M + topk)
        return scores, padded.topk(topk, dim=2, sorted=True).indices  # (B, nh, topk); TensorRT 10 needs sorted TopK

    def _fine(self, x, q, k, coarse_hw, topk=None, record=None):
        """Fine attention over the 2x2 fine patches of the top-k coarse tokens; returns (B, nh, N, hd).

        ``topk`` defaults to ``self.topk``; ``record`` (a dict) receives ``scores`` and ``selected`` (``_forward``).
        """
        topk = self.topk if topk is None else topk
        if self.form == "portable":
            return self._fine_portable(x, q, k, coarse_hw, topk, record)
        B, C, H, W = x.shape
        Hc, Wc = coarse_hw
        nh, hd = self.num_heads, self.head_dim
        M = Hc * Wc
        if not torch.jit.is_tracing() and topk > M:  # tracing: no tensor-to-bool
            # eager: clamp, so cost and memory do not grow with an oversized k (traced graphs pad instead). Silently:
            # the run that set k says so once at its image size (pst_yolo.topk.warn_clamped); a log call here would
            # break compiled graphs and fire on the FLOP counter's proxy images.
            topk = M

        scores, idx = self._select(q, k, topk)  # (B, nh, M), (B, nh, topk)
        if record is not None:
            record.update(scores=scores, selected=idx)

        # Map coarse token j = (r, c) to fine positions (2r + dr, 2c + dc); drop padding and out-of-map positions.
        r, c = idx.div(Wc, rounding_mode="floor"), idx.remainder(Wc)
        offsets = torch.arange(2, device=x.device)
        rows = 2 * r[..., None, None] + offsets[:, None]  # (B, nh, topk, 2, 1)
        cols = 2 * c[..., None, None] + offsets[None, :]  # (B, nh, topk, 1, 2)
        valid = (idx[..., None, None] < M) & (rows < H) & (cols < W)  # (B, nh, topk, 2, 2)
        # where, not clamp: integer clamp exports as an INT64 Clip, which TensorRT 10 cannot parse (Clip is float-only)
        pos = (torch.where(rows < H, rows, H - 1) * W + torch.where(cols < W, cols, W - 1)).reshape(B, nh, 4 * topk)
        valid = valid.reshape(B, nh, 1, 4 * topk)
        mask = torch.zeros(valid.shape, dtype=q.dtype, device=x.device).masked_fill(~valid, float("-inf"))

        # Fine keys/values: conv_kv as the affine map it is at inference (BN with running statistics), in training too,
        # so the fine path is the same function in both modes and never feeds the fine map into BN's statistics.
        w, b = _affine_1x1(self.conv_kv)  # (2C, C), (2C,)
        if self.form == "fused":  # project only the gathered 4k fine tokens, per head
            x_tokens = x.permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, N, C); a permute, as in forward
            xg = torch.gather(x_tokens, 1, pos.reshape(B, nh * 4 * topk, 1).expand(-1, -1, C))
            xg = xg.view(B, nh, 4 * topk, C)  # (B, nh, 4k, C)
            kv = xg @ w.view(nh, 2 * hd, C).transpose(1, 2) + b.view(nh, 1, 2 * hd)  # (B, nh, 4k, 2hd)
        else:  # the whole fine K/V map, then gather
            kv_map = F.conv2d(x, w[..., None, None], b).view(B, nh, 2 * hd, H * W).transpose(2, 3)  # (B, nh, N, 2hd)
            kv = torch.gather(kv_map, 2, pos[..., None].expand(-1, -1, -1, 2 * hd))  # (B, nh, 4k, 2hd)
        k_f, v_f = kv.split(hd, dim=3)  # (B, nh, 4k, hd) each
        return self._attend(q, k_f, v_f, mask)

    def _constant(self, key: tuple, like: torch.Tensor, values) -> torch.Tensor:
        """A constant tensor of the portable path, made from host data once per shape, dtype and device.

        Later calls reuse it, so no forward copies host data to the device (a copy per call, and one that CUDA-graph
        capture forbids); a traced export records it as a constant, as before.
        """
        cache = self.__dict__.setdefault("_constants", {})
        key = (*key, like.dtype, like.device)
        if key not in cache:
            cache[key] = torch.tensor(values(), dtype=like.dtype, device=like.device)
        return cache[key]

    def _select_portable(self, q, k, coarse_hw, topk: int):
        """Token selection of the portable form: ``(scores (B, nh, M), one-hot picks (B, nh, M, topk))``.

        ``topk`` (at most M) unrolled steps, each the one-hot row of the highest remaining score (exact ties: the lowest
        row, then column), which is then pushed below every score. Column t of the picks is the t-th pick's one-hot.
        """
        B = int(q.shape[0])  # static: a traced export records it as a constant
        Hc, Wc = coarse_hw
        nh, hd, M = self.num_heads, self.head_dim, Hc * Wc
        if max(Hc, Wc) >= _FAR:
            raise ValueError(f"PSTAttention: the portable fine path supports coarse maps below {_FAR:.0f} tokens per "
                             f"side, got {Hc}x{Wc}; export at a smaller imgsz or with pst_topk=0")
        # Selection scores s_j = (mean_i q_i) · k_j / √d; one-hot rows of the top-k, in descending order.
        q_mean = q.mean(2).reshape(B, nh, hd, 1)  # (B, nh, hd, 1): k @ q_mean needs no transpose (Paddle's oneDNN
        scores = ((k @ q_mean) * self.scale).reshape(B, nh, M)  # matmul fusion fails on a transposed k); (B, nh, M)
        # Row and column of each coarse token (constants): exact ties are broken by the lowest (row, column), the
        # order ONNX's TopK uses, by two exact integer minimums (no cumsum: pnnx gives ncnn a wrong cumsum axis).
        row = self._constant(("row", Hc, Wc), q, lambda: [float(j // Wc) for j in range(M)])  # (M,)
        col = self._constant(("col", Hc, Wc), q, lambda: [float(j % Wc) for j in range(M)])  # (M,)
        rows, remaining = [], scores
        for _ in range(topk):
            d = remaining - remaining.amax(2, keepdim=True)  # <= 0, exactly 0 at the maximum
            for _ in range(3):
                d = (d * _SHARP).clamp(-1.0, 0.0)
            hot = d + 1.0  # 1 at the maximum (and at exact ties), else 0
            for pos in (row, col):  # keep the tied maxima in the lowest row, then the one in the lowest column
                first = (pos + (1.0 - hot) * _FAR).amin(2, keepdim=True)  # lowest position among the maxima
                hot = hot * ((first - pos).clamp(-1.0, 0.0) + 1.0)  # integers: exactly 1 at it, 0 after it
            rows.append(hot.reshape(B, nh, M, 1))
            remaining = remaining - hot * (remaining - remaining.amin(2, keepdim=True) + 1.0)  # below everything else
        return scores, torch.cat(rows, 3)  # (B, nh, M), (B, nh, M, topk)

    def _fine_portable(self, x, q, k, coarse_hw, topk, record=None):
        """The fine path of ``_fine`` from elementary ops only (static shapes); returns (B, nh, N, hd).

        Selection: ``_select_portable``. Gather: the fine map padded to even size and folded 2x2 -> channels
        (space-to-depth), so coarse token ``j`` owns row ``j`` holding its four fine cells; one-hot rows times that
        matrix gather the selected patches.
        """
        B, C, H, W = (int(s) for s in x.shape)  # static: a traced export records these as constants
        Hc, Wc = (int(s) for s in coarse_hw)
        nh, hd, M = self.num_heads, self.head_dim, Hc * Wc
        if topk > M:  # an export clamps to its own size before tracing (pst_yolo.hooks.export); eager: as _fine
            topk = M
        scores, sel = self._select_portable(q, k, (Hc, Wc), topk)  # (B, nh, M), (B, nh, M, topk)
        if record is not None:
            record.update(scores=scores, selected=sel.argmax(2))  # one-hot columns -> (B, nh, topk) indices

        # Fine tokens of each coarse token: pad to (2Hc, 2Wc), fold each 2x2 cell into channels c*4 + 2*dr + dc.
        pad_h, pad_w = 2 * Hc - H, 2 * Wc - W
        # Space-to-depth as a stride-2 depthwise conv with one-hot 2x2 kernels (x2paddle has no pixel_unshuffle).
        fold = self._constant(("fold", C), x, lambda: [[[[float(2 * dr + dc == cell) for dc in (0, 1)]
                                                         for dr in (0, 1)]] for cell in range(4)] * C)  # (4C, 1, 2, 2)
        xs = F.conv2d(F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x, fold, stride=2, groups=C)  # (B,4C,Hc,Wc)
        # Gathered as (4C, M) @ (M, k), transposes after the product (Paddle's oneDNN reshape-transpose-matmul fusion
        # fails on a broadcast head dim); the 4k fine tokens come out cell-major, the order of the mask below.
        xg = (xs.reshape(B, 1, 4 * C, M) @ sel).reshape(B, nh, C, 4 * topk)  # (B, nh, C, 4k), tokens cell*k + t
        # Keys/values channel-major, so no transposed weight enters a product (Paddle's oneDNN fusion breaks on one).
        w, b = _affine_1x1(self.conv_kv)  # (2C, C), (2C,): conv_kv's inference-time map, as in _fine
        kv = w.view(nh, 2 * hd, C) @ xg + b.view(nh, 2 * hd, 1)  # (B, nh, 2hd, 4k)
        k_f, v_f = kv.split(hd, dim=2)  # (B, nh, hd, 4k) each

        mask = None
        if pad_h or pad_w:  # cells outside an odd-sized fine map: a constant per coarse token, gathered like x
            cells = self._constant(("cells", H, W), x, lambda: [
                [float(2 * r + dr < H and 2 * c + dc < W) for r in range(Hc) for c in range(Wc)]
                for dr in (0, 1) for dc in (0, 1)])  # (4, M): which of each token's 2x2 cells exist
            valid = (cells @ sel).reshape(B, nh, 1, 4 * topk)  # cell-major like the tokens; 1 = in the map, 0 = not
            mask = (1.0 - valid) * _MASKED
        attn = (q * self.scale) @ k_f  # (B, nh, N, 4k)
        if mask is not None:
            attn = attn + mask
        return attn.softmax(dim=-1) @ v_f.transpose(2, 3)  # (B, nh, N, hd)


def _low_precision(t: torch.Tensor) -> bool:
    """Whether ``t`` is half precision or autocast is on for its device (the plain form then works in fp32)."""
    return t.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(t.device.type)
