"""See what PST attends to: token selection, coarse attention of chosen queries and the fusion gate, on real images.

``explain(model, source)`` runs Ultralytics' own predictor (same letterbox, same ``pst_topk`` handling, same boxes as
``predict``) once, with forward hooks on the PST attention layers that keep each layer's inputs ``(x, u)`` for the
current batch. The hooks are removed when the run ends, so a normal run computes and keeps nothing extra. From the
captured inputs each layer runs its own forward once more, per image, keeping the intermediate tensors of its steps
(``PSTAttention._forward``; the equations are in docs/method.md §1):

- ``scores`` / ``selected``: the selection score ``s_j = mean_i(q_i · k_j) / √d`` of every coarse token and the top-k
  tokens that fine attention uses, per head; each coarse token ``(r, c)`` stands for its 2x2 fine patch;
- ``attention``: the coarse softmax weights of a few chosen queries (one row each, never the N×M matrix);
- ``gate``: the fusion gate ``g`` averaged over each head's channels per position (1 = fine only, 0 = coarse only).

The recomputed layer output is compared with the output the layer produced in the batch (``max_error``), so the
pictures show the function that ran. Geometry is Ultralytics': token boxes are mapped to image pixels with
``ops.scale_boxes`` and maps with ``ops.scale_masks``, which undo the predictor's letterbox.

``pst-yolo explain model=best.pt source=img.jpg pst_topk=8`` saves one PNG per image or video frame into a
predict-style run directory (``runs/detect/explain``, ``explain-2``, ...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from ultralytics.utils import LOGGER, ops

from .nn import PST, PSTAttention

__all__ = ("Explanation", "LayerExplanation", "draw_selection", "explain", "explain_cli", "explain_layer")

HEAD_COLORS = (  # RGB, one per head (cycled): matplotlib's tab10
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
MAX_ERROR = 1e-3  # recomputed vs produced layer output (relative to its largest value) above which explain warns


# ------------------------------------------------------------------------------------------------ per-layer tensors
@torch.no_grad()
def explain_layer(attn: PSTAttention, x: torch.Tensor, u: torch.Tensor, queries: torch.Tensor | None = None) -> dict:
    """Recompute one ``PSTAttention`` call on one image with the layer's own forward, and what its steps computed.

    The selection, the gate and the output are the ones the layer's forward computes (in its ``form``); the query
    attention rows are its plain form's softmax weights for the chosen queries.

    Args:
        attn (PSTAttention): The layer, in eval mode (BatchNorm with running statistics, as in predict).
        x (torch.Tensor): Its fine input (1, C, H, W).
        u (torch.Tensor): Its coarse input (1, C, Hc, Wc), ``Hc = ceil(H / 2)``, ``Wc = ceil(W / 2)``.
        queries (torch.Tensor | None): (nq,) flat fine-map indices ``row * W + col`` of the queries whose coarse
            attention weights are returned; None for none.

    Returns:
        (dict): Tensors on ``x``'s device: ``scores`` (nh, Hc, Wc) selection scores; ``selected`` (nh, k) flat coarse
            indices, best first (k = ``attn.topk`` clamped to Hc * Wc; 0 columns when fine attention is off);
            ``attention`` (nh, nq, Hc, Wc) coarse softmax weights of the queries; ``gate`` (nh, H, W) mean gate per
            head and position, or None when fine attention is off; ``output`` (1, C, H, W) the recomputed layer output.

    Examples:
        >>> attn = PSTAttention(64, topk=2).eval()
        >>> out = explain_layer(attn, torch.randn(1, 64, 6, 5), torch.randn(1, 64, 3, 3), torch.tensor([0, 7]))
        >>> print(out["selected"].shape, out["attention"].shape, out["gate"].shape, out["output"].shape)
        torch.Size([2, 2]) torch.Size([2, 2, 3, 3]) torch.Size([2, 6, 5]) torch.Size([1, 64, 6, 5])
    """
    if x.shape[0] != 1:
        raise ValueError(f"explain_layer takes one image, got a batch of {x.shape[0]}")
    H, W = x.shape[2:]
    Hc, Wc = u.shape[2:]
    nh = attn.num_heads
    record = {}
    output = attn._forward(x, u, record)  # the layer's own forward, keeping its intermediate tensors
    q, k = record["q"], record["k"]  # (1, nh, N, hd), (1, nh, M, hd)
    if "selected" not in record:  # fine attention off: the scores it would rank, selecting nothing
        record["scores"], record["selected"] = attn._select(q, k, 0)
    gate = record.get("gate")  # (1, nh, N, hd)

    queries = torch.zeros(0, dtype=torch.long, device=x.device) if queries is None else queries.to(x.device)
    attention = attn._weights(q[:, :, queries], k).float()  # (1, nh, nq, M): the plain form's softmax rows
    return {
        "scores": record["scores"].view(nh, Hc, Wc),
        "selected": record["selected"][0],
        "attention": attention.view(nh, len(queries), Hc, Wc),
        "gate": None if gate is None else gate[0].mean(2).view(nh, H, W),
        "output": output,
    }


# ------------------------------------------------------------------------------------------------ results
@dataclass
class LayerExplanation:
    """What one PST attention layer did on one image (arrays on the CPU, coordinates in original image pixels).

    Attributes:
        name (str): Module path, e.g. ``model.13.m.0.attn``.
        label (str): Where it sits, e.g. ``P4 fusion (row 13, block 1/1)``.
        stride (tuple[int, int]): (y, x) input pixels per fine token; a coarse token spans twice that.
        fine_hw (tuple[int, int]): Fine map size (H, W); its coarse map is (ceil(H/2), ceil(W/2)).
        topk (int): Coarse tokens fine attention used per head (``pst_topk`` clamped to the coarse token count);
            0 = coarse attention only.
        scores (np.ndarray): (nh, Hc, Wc) selection scores.
        selected (np.ndarray): (nh, k, 2) (row, col) of the selected coarse tokens per head, best first.
        selected_boxes (np.ndarray): (nh, k, 4) xyxy image pixels each selected token covers (its 2x2 fine patch),
            after undoing the letterbox (clipped to the image).
        fine_patches (np.ndarray): (nh, k, 4, 2) (row, col) of each selected token's 2x2 fine positions; -1 where a
            position falls outside an odd-sized fine map.
        queries (np.ndarray): (nq, 2) (row, col) fine tokens of the chosen queries.
        attention (np.ndarray): (nh, nq, Hc, Wc) coarse attention weights of the queries (each map sums to 1).
        gate (np.ndarray | None): (nh, H, W) mean fusion gate per head and position, None when ``topk == 0``.
        max_error (float): Largest |recomputed - produced| layer output, relative to the largest |produced| value.
    """

    name: str
    label: str
    stride: tuple[int, int]
    fine_hw: tuple[int, int]
    topk: int
    scores: np.ndarray
    selected: np.ndarray
    selected_boxes: np.ndarray
    fine_patches: np.ndarray
    queries: np.ndarray
    attention: np.ndarray
    gate: np.ndarray | None
    max_error: float


@dataclass
class Explanation:
    """One image (or video frame): the predict result, the chosen query points and every PST layer's explanation.

    Attributes:
        path (str): The source path (or a name for in-memory images), as in ``Results.path``.
        image (np.ndarray): (H0, W0, 3) BGR original image.
        input_shape (tuple[int, int]): (h, w) of the letterboxed network input.
        result (ultralytics.engine.results.Results): What ``predict`` returns for this image.
        points (np.ndarray): (nq, 2) xy image pixels of the queries whose attention is shown.
        layers (list[LayerExplanation]): One per PST attention layer, in forward order.
        save_path (Path | None): The PNG written for it, if saved.
    """

    path: str
    image: np.ndarray
    input_shape: tuple[int, int]
    result: object
    points: np.ndarray
    layers: list[LayerExplanation] = field(default_factory=list)
    save_path: Path | None = None

    def to_image(self, token_map: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
        """Place a token map onto the original image: (..., h, w) map at ``stride`` -> (..., H0, W0) float32.

        Each token covers ``stride`` input pixels (nearest, no smoothing); the letterbox is undone with Ultralytics'
        ``ops.scale_masks`` (the same crop and resize predict uses for masks).
        """
        lead, (h, w) = token_map.shape[:-2], token_map.shape[-2:]
        H, W = self.input_shape
        rows = np.minimum(np.arange(H) // stride[0], h - 1)
        cols = np.minimum(np.arange(W) // stride[1], w - 1)
        canvas = torch.from_numpy(np.ascontiguousarray(token_map.reshape(-1, h, w)[:, rows][:, :, cols]))
        out = ops.scale_masks(canvas[None].float(), self.image.shape[:2], mode="nearest")[0]
        return out.numpy().reshape(*lead, *self.image.shape[:2])

    def plot(self) -> np.ndarray:
        """Render the picture: detections and queries, then per layer selection, gate and query attention (RGB)."""
        return _render(self)

    def save(self, path: str | Path) -> Path:
        """Write the picture as a PNG; returns its path."""
        import cv2

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), self.plot()[..., ::-1])
        self.save_path = path
        return path


# ------------------------------------------------------------------------------------------------ the run
def explain(
    model,
    source=None,
    pst_topk: int | None = None,
    points=None,
    max_queries: int = 4,
    save: bool = False,
    stream: bool = False,
    **kwargs,
):
    """Run ``predict`` once and explain what every PST layer did on each image.

    Args:
        model (str | Path | ultralytics.YOLO): A PyTorch checkpoint or YAML with PST layers, or a YOLO object (which
            is left as it was: no hooks remain, ``pst_topk`` is restored).
        source: Anything ``predict`` accepts (image, folder, video, glob, array, list ...).
        pst_topk (int | None): Fine attention top-k for this run (0 = coarse only); None keeps the model's value.
        points (list | None): [[x, y], ...] image pixels whose queries' coarse attention is shown (every image);
            None = the centre of each detected box (the ``max_queries`` most confident), or the image centre if none.
        max_queries (int): At most this many default queries (box centres) per image.
        save (bool): Write one PNG per image into the run directory (``runs/<task>/explain``, ``project``/``name``
            and ``exist_ok`` as in predict).
        stream (bool): Return a generator instead of a list (for videos and large folders).
        **kwargs: Further predict arguments (imgsz, conf, iou, batch, device, half, classes, vid_stride, ...).

    Returns:
        (list[Explanation] | Generator[Explanation]): One per image or video frame.

    Examples:
        >>> import pst_yolo
        >>> exps = pst_yolo.explain("best.pt", "bus.jpg", pst_topk=8, imgsz=320, verbose=False)  # doctest: +SKIP
        >>> [layer.label for layer in exps[0].layers]  # doctest: +SKIP
        ['P4 fusion (row 13, block 1/1)', 'P3 fusion (row 16, block 1/1)']
    """
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 0:
        raise ValueError(f"max_queries must be a non-negative integer, got {max_queries!r}")
    points = _check_points(points)
    gen = _explain_stream(model, source, pst_topk, points, max_queries, save, kwargs)
    return gen if stream else list(gen)


def _check_points(points) -> np.ndarray | None:
    """Validate ``points`` ([[x, y], ...] or one [x, y]) into an (n, 2) float array."""
    if points is None:
        return None
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.shape == (2,):
        arr = arr[None]
    if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise ValueError(f"points must be image pixels [[x, y], ...], e.g. points=[[320,240]], got {points!r}")
    return arr


def _load(model):
    """The YOLO object for ``model`` and its PST attention layers; clear errors for models that cannot be explained."""
    from ultralytics import YOLO
    from ultralytics.engine.model import Model

    yolo = model if isinstance(model, Model) else YOLO(model)
    net = yolo.model
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"explain needs a PyTorch model (.pt checkpoint or .yaml), got the exported model {model}: explain the .pt "
            f"it was exported from"
        )
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, PSTAttention)]
    if not layers:
        raise ValueError(f"explain needs a model with PST layers; {model} has none (train a *-pst.yaml model)")
    return yolo, net, layers


def _labels(net: nn.Module) -> dict[int, tuple[int | None, int, int]]:
    """``id(attention) -> (PST row, block index, blocks)`` for every PST attention layer of ``net``."""
    labels = {}
    for pst in (m for m in net.modules() if isinstance(m, PST)):
        for j, block in enumerate(pst.m):
            labels[id(block.attn)] = (getattr(pst, "i", None), j + 1, len(pst.m))
    return labels


def _explain_stream(model, source, pst_topk, points, max_queries, save, kwargs):
    """Generator behind ``explain``: hooks in place only while the predict stream runs."""
    yolo, _, _ = _load(model)
    captured, shapes, run = {}, [], {"layers": [], "labels": {}, "handles": []}

    def keep_inputs(module, args, output):  # the latest call per layer (a warmup forward is overwritten)
        captured[module] = (args[0].detach(), args[1].detach(), output.detach(), module.topk)

    def keep_input_shape(module, args):
        shapes[:] = [tuple(args[0].shape[2:])]

    def hook_run_model(predictor):
        """on_predict_start: hook the module the predictor runs (its backend may hold a copy of ``yolo.model``)."""
        net = getattr(predictor.model, "model", None)
        if not isinstance(net, nn.Module):
            raise ValueError(f"explain needs a PyTorch model, the predictor runs {type(predictor.model).__name__}")
        run["layers"] = [(name, m) for name, m in net.named_modules() if isinstance(m, PSTAttention)]
        run["labels"] = _labels(net)
        run["handles"] = [net.register_forward_pre_hook(keep_input_shape)]
        run["handles"] += [m.register_forward_hook(keep_inputs) for _, m in run["layers"]]

    kwargs = {"name": "explain", **kwargs, "save": False, "stream": True}
    if pst_topk is not None:
        kwargs["pst_topk"] = pst_topk
    previous = yolo.predictor  # a predictor of the caller's own predict runs is put back afterwards, untouched
    yolo.predictor = None  # a fresh one: its run directory follows name/project (default runs/<task>/explain)
    yolo.add_callback("on_predict_start", hook_run_model)
    bases, saved, warned = set(), 0, False
    try:
        for result in yolo.predict(source, **kwargs):
            predictor = yolo.predictor
            i = next(j for j, r in enumerate(predictor.results) if r is result)  # index in the batch
            exp = Explanation(
                path=result.path, image=result.orig_img, input_shape=shapes[0], result=result, points=np.zeros((0, 2))
            )
            exp.points = _default_points(result, max_queries) if points is None else _inside(points, exp.image.shape)
            for name, attn in run["layers"]:
                if attn not in captured:
                    continue
                layer = _explain_one(exp, name, attn, run["labels"].get(id(attn)), *captured[attn], i)
                exp.layers.append(layer)
                if layer.max_error > MAX_ERROR and not warned:
                    warned = True
                    LOGGER.warning(
                        f"PST explain: recomputing {name} differs from its output by {layer.max_error:.1e} (relative): "
                        f"the pictures may not match what the layer computed"
                    )
            if save:
                base = _frame_name(Path(result.path), predictor, i)
                stem, k = base, 1
                while stem in bases:
                    k += 1
                    stem = f"{base}-{k}"
                bases.add(stem)
                exp.save(Path(predictor.save_dir) / f"{stem}.png")
                saved += 1
            yield exp
    finally:
        for h in run["handles"]:
            h.remove()
        captured.clear()
        callbacks = yolo.callbacks["on_predict_start"]
        callbacks[:] = [cb for cb in callbacks if cb is not hook_run_model]
        save_dir = getattr(yolo.predictor, "save_dir", None)
        yolo.predictor = previous
    if save and saved:
        LOGGER.info(f"PST explain: {saved} picture{'s' * (saved > 1)} saved to {save_dir}")


def _frame_name(path: Path, predictor, i: int) -> str:
    """``stem`` for images, ``stem_FRAME`` for video frames (the frame number predict prints)."""
    if getattr(predictor.dataset, "mode", "image") == "video":
        match = re.search(r"frame (\d+)/", predictor.batch[2][i])
        if match:
            return f"{path.stem}_{match[1]}"
    return path.stem


def _default_points(result, max_queries: int) -> np.ndarray:
    """Centres of the ``max_queries`` most confident detections, or the image centre when there are none."""
    boxes = getattr(result, "boxes", None)
    if boxes is None and getattr(result, "obb", None) is not None:
        boxes = result.obb
    if boxes is not None and len(boxes) and max_queries:
        order = boxes.conf.argsort(descending=True)[:max_queries]
        return boxes.xywh[order, :2].cpu().numpy().astype(float)
    h, w = result.orig_img.shape[:2]
    return np.array([[w / 2, h / 2]]) if max_queries else np.zeros((0, 2))


def _inside(points: np.ndarray, shape) -> np.ndarray:
    h, w = shape[:2]
    bad = [p.tolist() for p in points if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
    if bad:
        raise ValueError(f"points {bad} lie outside the {w}x{h} image (x in [0, {w}], y in [0, {h}])")
    return points


def _token_boxes(exp: Explanation, rc: np.ndarray, stride: tuple[float, float]) -> np.ndarray:
    """(..., 2) (row, col) tokens of ``stride`` (y, x) input pixels -> (..., 4) xyxy image pixels (letterbox undone)."""
    rc = rc.astype(np.float64)
    sy, sx = stride
    boxes = np.stack((rc[..., 1] * sx, rc[..., 0] * sy, (rc[..., 1] + 1) * sx, (rc[..., 0] + 1) * sy), -1)
    return ops.scale_boxes(exp.input_shape, boxes.reshape(-1, 4), exp.image.shape[:2]).reshape(boxes.shape)


def _query_tokens(exp: Explanation, fine_hw: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(nq, 2) (row, col) fine tokens whose image area (mapped like any token) contains each query point."""
    H, W = fine_hw
    grid = np.stack(np.meshgrid(np.arange(H), np.arange(W), indexing="ij"), -1).reshape(-1, 2)  # (N, 2)
    boxes = _token_boxes(exp, grid, stride)  # (N, 4) clipped to the image
    h0, w0 = exp.image.shape[:2]
    out = []
    for x, y in exp.points:
        x, y = min(x, w0 - 1e-3), min(y, h0 - 1e-3)  # a point on the right/bottom edge belongs to the last pixel
        inside = (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])
        out.append(grid[np.flatnonzero(inside)[0]] if inside.any() else grid[0])
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _explain_one(exp, name, attn, label, x, u, y, topk_ran, i) -> LayerExplanation:
    """Recompute layer ``attn`` on image ``i`` of its captured batch and map everything to image pixels."""
    H, W = x.shape[2:]
    Hc, Wc = u.shape[2:]
    stride = (exp.input_shape[0] // H, exp.input_shape[1] // W)
    queries = _query_tokens(exp, (H, W), stride)
    topk_saved = attn.topk
    attn.topk = topk_ran  # the value that ran for this batch (predict restores its own afterwards)
    try:
        with torch.inference_mode():
            out = explain_layer(attn, x[i : i + 1], u[i : i + 1], torch.as_tensor(queries[:, 0] * W + queries[:, 1]))
    finally:
        attn.topk = topk_saved
    produced = y[i : i + 1].float()
    max_error = float((out["output"].float() - produced).abs().max() / produced.abs().max().clamp(min=1e-12))

    sel = out["selected"].cpu().numpy()  # (nh, k)
    selected = np.stack((sel // Wc, sel % Wc), -1)  # (nh, k, 2)
    patches = 2 * selected[..., None, :] + np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # (nh, k, 4, 2)
    patches[(patches[..., 0] >= H) | (patches[..., 1] >= W)] = -1
    row, block, blocks = label or (None, 1, 1)
    level = f"P{round(math.log2(stride[0]))} fusion" if stride[0] > 0 and stride[0] & (stride[0] - 1) == 0 else name
    where = f"row {row}, " if row is not None else ""
    return LayerExplanation(
        name=name,
        label=f"{level} ({where}block {block}/{blocks})",
        stride=stride,
        fine_hw=(H, W),
        topk=sel.shape[1],
        scores=out["scores"].float().cpu().numpy(),
        selected=selected,
        selected_boxes=_token_boxes(exp, selected, (2 * stride[0], 2 * stride[1])),
        fine_patches=patches,
        queries=queries,
        attention=out["attention"].float().cpu().numpy(),
        gate=None if out["gate"] is None else out["gate"].float().cpu().numpy(),
        max_error=max_error,
    )


# ------------------------------------------------------------------------------------------------ drawing
def draw_selection(image: np.ndarray, boxes: np.ndarray, alpha: float = 0.35, width: int = 1) -> np.ndarray:
    """Tint the pixels of each head's selected tokens with the head's colour and outline them.

    Args:
        image (np.ndarray): (H0, W0, 3) RGB uint8 image.
        boxes (np.ndarray): (nh, k, 4) xyxy image pixels per head (``LayerExplanation.selected_boxes``); a box
            covers the pixels whose centres lie inside it.
        alpha (float): Tint strength.
        width (int): Outline width in pixels, drawn inside each box.

    Returns:
        (np.ndarray): A new (H0, W0, 3) RGB uint8 image; pixels outside every box are unchanged.

    Examples:
        >>> img = np.zeros((8, 10, 3), np.uint8)
        >>> out = draw_selection(img, np.array([[[2.0, 1.0, 6.0, 5.0]]]))
        >>> print(np.argwhere(out.any(2)).min(0), np.argwhere(out.any(2)).max(0))
        [1 2] [4 5]
    """
    out = image.astype(np.float32)
    for h, head_boxes in enumerate(boxes):
        color = np.array(HEAD_COLORS[h % len(HEAD_COLORS)], np.float32)
        for x1, y1, x2, y2 in np.rint(head_boxes).astype(int):
            if x2 <= x1 or y2 <= y1:
                continue
            region = out[y1:y2, x1:x2]
            region += alpha * (color - region)
            t = max(1, min(width, (x2 - x1) // 2, (y2 - y1) // 2))
            for edge in (out[y1 : y1 + t, x1:x2], out[y2 - t : y2, x1:x2], out[y1:y2, x1 : x1 + t]):
                edge[:] = color
            out[y1:y2, x2 - t : x2] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _render(exp: Explanation) -> np.ndarray:
    """The picture as an RGB array (matplotlib, bundled DejaVu font, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    rgb = np.ascontiguousarray(exp.image[..., ::-1])
    h0, w0 = rgb.shape[:2]
    nq = len(exp.points)
    ncols, nrows = max(2 + nq, 3), 1 + len(exp.layers)
    panel = 3.2
    fig = Figure(figsize=(panel * ncols, (panel * h0 / w0 + 0.45) * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.01, top=1 - 0.4 / fig.get_figheight(), wspace=0.25, hspace=0.3)
    for ax in axes.flat:
        ax.set_axis_off()

    def show(ax, title):
        ax.imshow(rgb)
        ax.set_title(title, fontsize=8)

    def mark_points(ax, idx=None):
        for j, (x, y) in enumerate(exp.points):
            if idx is None or j == idx:
                ax.plot(x, y, marker="o", ms=7, mfc="white", mec="black", mew=1.2)
                ax.annotate(str(j + 1), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color="white",
                            bbox=dict(boxstyle="round,pad=0.1", fc="black", ec="none", alpha=0.7))  # fmt: skip

    # row 0: detections + query points, and the legend
    ax = axes[0, 0]
    show(ax, f"detections ({Path(exp.path).name})")
    boxes = getattr(exp.result, "boxes", None)
    names = getattr(exp.result, "names", {}) or {}
    if boxes is not None:
        for (x1, y1, x2, y2), cls, conf in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist()):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="lime", lw=1.2))
            ax.text(x1, y1, f"{names.get(int(cls), int(cls))} {conf:.2f}", fontsize=6, color="black", va="bottom",
                    bbox=dict(boxstyle="square,pad=0.05", fc="lime", ec="none"))  # fmt: skip
    mark_points(ax)
    topks = sorted({layer.topk for layer in exp.layers})
    legend = [
        f"PST layers of this model, input {exp.input_shape[1]}x{exp.input_shape[0]} (letterboxed), "
        f"pst_topk {'/'.join(map(str, topks))} (0 = fine attention off).",
        "selected: the top-k coarse tokens per head (colour = head) that fine attention",
        "    looks into; each box is one coarse token = its 2x2 fine patch.",
        "gate: mean fusion gate g per position (1 = output from fine attention only,",
        "    0 = coarse only), averaged over heads.",
        "query n: coarse attention weights of the query at point n (white marker),",
        "    averaged over heads; brighter = more weight (each map sums to 1).",
    ]
    x0 = axes[0, 1].get_position().x0
    fig.text(x0, axes[0, 1].get_position().y1, "\n".join(legend), fontsize=9, va="top", ha="left")

    for row, layer in enumerate(exp.layers, start=1):
        ax = axes[row, 0]
        if layer.topk:
            ax.imshow(draw_selection(rgb, layer.selected_boxes, width=max(1, round(max(h0, w0) / 250))))
            nh = len(layer.selected)
            handles = [Patch(color=np.array(HEAD_COLORS[h % len(HEAD_COLORS)]) / 255, label=f"head {h + 1}")
                       for h in range(nh)]  # fmt: skip
            ax.legend(handles=handles, fontsize=6, loc="lower right", framealpha=0.7, handlelength=1)
            ax.set_title(f"{layer.label}\nselected top-{layer.topk} of {layer.scores[0].size} coarse", fontsize=8)
        else:
            show(ax, f"{layer.label}\nfine attention off (pst_topk=0)")
        ax = axes[row, 1]
        if layer.gate is not None:
            gate = exp.to_image(layer.gate.mean(0), layer.stride)
            show(ax, f"gate (mean {gate.mean():.2f}; 1 = fine)")
            im = ax.imshow(gate, cmap="coolwarm", vmin=0, vmax=1, alpha=0.6)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        else:
            show(ax, "gate: none (coarse only)")
        coarse_stride = (2 * layer.stride[0], 2 * layer.stride[1])
        for j in range(nq):
            ax = axes[row, 2 + j]
            heat = exp.to_image(layer.attention[:, j].mean(0), coarse_stride)
            show(ax, f"query {j + 1}: coarse attention (max {heat.max():.3f})")
            im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=max(float(heat.max()), 1e-12), alpha=0.65)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            mark_points(ax, j)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# ------------------------------------------------------------------------------------------------ command line
USAGE = (
    "usage: pst-yolo explain model=best.pt source=img.jpg [pst_topk=8] [points=[[x,y],...]] [max_queries=4] "
    "[imgsz=640 conf=0.25 project=... name=explain ...]"
)


def explain_cli(args: list[str]) -> None:
    """``pst-yolo explain key=value ...``: save one picture per image into a predict-style run directory."""
    import sys

    from ultralytics.cfg import smart_value

    cfg = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            sys.exit(f"pst-yolo explain: expected key=value arguments, got '{arg}'\n{USAGE}")
        cfg[key] = smart_value(value)
    if "model" not in cfg:
        sys.exit(f"pst-yolo explain: model= is required (a .pt checkpoint or .yaml with PST layers)\n{USAGE}")
    for key in ("save", "stream", "mode"):  # explain always saves its pictures and streams
        cfg.pop(key, None)
    model, source = cfg.pop("model"), cfg.pop("source", None)
    if source is None:
        from ultralytics.utils import ASSETS

        source = ASSETS
        LOGGER.warning(f"source is missing: using source={source}")
    n = 0
    try:
        for _ in explain(str(model), source, save=True, stream=True, **cfg):
            n += 1
    except (ValueError, SyntaxError, FileNotFoundError) as e:  # bad arguments: one clear line, no traceback
        sys.exit(f"pst-yolo explain: {e}")
    if not n:  # predict skips unreadable images with a warning each: nothing was explained, nothing saved
        sys.exit(f"pst-yolo explain: no image of source={source} could be read (unreadable or not an image), so "
                 f"nothing was explained; pass images or a folder of them")
