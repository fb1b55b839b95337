"""The sections of ``gpu_check.py``, and the measurement functions they are built from.

Each section is ``fn(ctx) -> markdown`` on a :class:`Context`; it raises to fail (the runner reports the one-line
message and goes on) or raises :class:`SectionSkipped` when it cannot apply on this machine. The measurement functions
(:func:`compare_sdpa_backends`, :func:`state_dict_diff`, :func:`interleaved_medians`, :func:`match_detections`,
:func:`nondeterministic_ops`) take any device, so the tests run them on the CPU.

Run as a script it is the worker of the determinism section: ``python _gpu_check_sections.py train-worker JSON``
trains once in a fresh process and saves the final weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

KS_TRAIN = "0,4,8,16"  # any-K training set of every training here
SDPA_BACKENDS = ("MATH", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "FLASH_ATTENTION")
BACKEND_NAMES = {"MATH": "math", "EFFICIENT_ATTENTION": "memory-efficient", "CUDNN_ATTENTION": "cuDNN",
                 "FLASH_ATTENTION": "flash"}
_UNAVAILABLE = ("No available kernel", "No viable backend")  # what SDPA raises when the chosen backends cannot run


class SectionSkipped(Exception):
    """A section that cannot apply on this machine (its message says why); reported as skipped, not failed."""

    section_skipped = True


@dataclass
class Context:
    """What every section gets: device, work folder, worker environment, sizes; ``state`` carries results on.

    Args:
        device (str): ``cuda:0`` (or ``cpu`` as a stand-in in tests).
        work (Path): Temporary folder for runs, engines and worker outputs.
        env (dict): Environment for worker processes (PYTHONPATH, Ultralytics' settings folder).
        epochs, imgsz, batch (int): Any-K AMP training and validation.
        runs, warmup (int): Latency rounds.
    """

    device: str
    work: Path
    env: dict = field(default_factory=dict)
    epochs: int = 3
    imgsz: int = 256
    batch: int = 32
    runs: int = 100
    warmup: int = 20
    workers: int = 4
    latency_imgsz: int = 640
    det_epochs: int = 1  # the two deterministic trainings: short, and no dataloader workers
    det_imgsz: int = 128
    det_batch: int = 16
    det_fraction: float = 0.5
    state: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def device_arg(self) -> str:
        """The device as Ultralytics' ``device=`` argument (``0`` for ``cuda:0``)."""
        return self.device.split(":")[1] if self.cuda and ":" in self.device else self.device

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ measurement parts
def flatten_tensors(obj) -> list[torch.Tensor]:
    """All tensors in a nested output (tensor, list, tuple, dict), in order.

    Examples:
        >>> [t.shape[0] for t in flatten_tensors({"a": torch.zeros(2), "b": [torch.zeros(3), (torch.zeros(4),)]})]
        [2, 3, 4]
    """
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in flatten_tensors(o)]
    return []


def _max_diff(a: list[torch.Tensor] | dict, b: list[torch.Tensor] | dict) -> tuple[float, str]:
    """Largest absolute difference over paired tensors, and the key (or index) where it is."""
    items = a.items() if isinstance(a, dict) else enumerate(a)
    other = b if isinstance(b, dict) else dict(enumerate(b))
    worst, where = 0.0, ""
    for key, t in items:
        u = other.get(key)
        d = math.inf if u is None or u.shape != t.shape else float((t.double() - u.double()).abs().max()) if t.numel() \
            else 0.0
        if d > worst or (d != d):  # NaN counts as worst
            worst, where = d, str(key)
    return worst, where


def _scale(ts) -> float:
    values = ts.values() if isinstance(ts, dict) else ts
    return max((float(t.abs().max()) for t in values if t.numel()), default=0.0)


def _forward_backward(module, inputs, backend, autocast_dtype, state, call=None):
    """One forward and backward from the same state; returns (outputs, gradients) in fp32.

    ``backend``: the one SDPA backend allowed (None: PyTorch's choice); ``call``: what runs the forward (``module``
    itself by default; a compiled wrapper of it).
    """
    from torch.nn.attention import sdpa_kernel

    module.load_state_dict(state)
    module.zero_grad(set_to_none=True)
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    kind = xs[0].device.type
    with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
        with torch.autocast(kind, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = flatten_tensors((module if call is None else call)(*xs))
        gen = torch.Generator().manual_seed(0)  # the same fixed projection of the outputs for every backend
        loss = sum((t.float() * torch.randn(t.shape, generator=gen).to(t.device)).sum() for t in out)
        loss.backward()
    grads = {f"input {i}": x.grad for i, x in enumerate(xs)}
    grads.update((n, p.grad) for n, p in module.named_parameters())
    return ([t.detach().float() for t in out],
            {k: g.detach().float().clone() for k, g in grads.items() if g is not None})


def compare_sdpa_backends(module: torch.nn.Module, inputs, backends=SDPA_BACKENDS, autocast_dtype=None) -> list[dict]:
    """Forward and backward of ``module(*inputs)`` with each SDPA backend alone, against the math backend.

    Every run starts from the same module state (buffers such as BatchNorm statistics are restored), so the only
    difference between runs is the attention kernel. The math backend runs first as the reference; its row
    (``math (again)``) is a second math run and shows what repeating the same computation changes.

    Args:
        module (torch.nn.Module): Whatever calls ``F.scaled_dot_product_attention`` (a PST layer, a detector).
        inputs (torch.Tensor | tuple[torch.Tensor, ...]): Its inputs (gradients are taken with respect to them too).
        backends (Iterable[str]): ``SDPBackend`` member names.
        autocast_dtype (torch.dtype | None): Run the forward under autocast to this type (None: as the inputs are).

    Returns:
        (list[dict]): Per backend: ``backend``, ``status`` (``ok``, ``unavailable`` or ``error``), ``note`` (why),
        ``out_diff`` / ``grad_diff`` (max abs difference of the outputs / of all gradients against the reference),
        ``grad_at`` (where the gradient difference is largest), ``out_scale`` / ``grad_scale`` (max abs of the
        reference's outputs / gradients).
    """
    from torch.nn.attention import SDPBackend

    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    rows = []
    try:
        ref_out, ref_grads = _forward_backward(module, inputs, SDPBackend.MATH, autocast_dtype, state)
        for name in backends:
            row = {"backend": BACKEND_NAMES.get(name, name) + (" (again)" if name == "MATH" else ""), "status": "ok",
                   "note": ""}
            rows.append(row)
            backend = getattr(SDPBackend, name, None)
            if backend is None:
                row.update(status="unavailable", note=f"this torch has no SDPBackend.{name}")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    out, grads = _forward_backward(module, inputs, backend, autocast_dtype, state)
                except RuntimeError as e:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    reasons = list(dict.fromkeys(str(w.message).strip() for w in caught
                                                 if not str(w.message).rstrip().endswith(":")))
                    if any(p in msg for p in _UNAVAILABLE):
                        row.update(status="unavailable", note="; ".join(reasons[:2]) or msg)
                    else:
                        row.update(status="error", note=msg[:200])
                    continue
            out_diff, _ = _max_diff(out, ref_out)
            grad_diff, grad_at = _max_diff(grads, ref_grads)
            row.update(out_diff=out_diff, grad_diff=grad_diff, grad_at=grad_at, out_scale=_scale(ref_out),
                       grad_scale=_scale(ref_grads))
    finally:
        module.load_state_dict(state)
        module.zero_grad(set_to_none=True)
    return rows


def compare_compiled(module: torch.nn.Module, inputs, backend: str = "inductor", autocast_dtype=None) -> dict:
    """Forward and backward of ``torch.compile(module, backend=backend)`` against eager, from the same state.

    In training mode the forward also updates BatchNorm statistics; those are compared too (each run starts from the
    same state, restored afterwards). The compiled wrapper shares the module's parameters, so its gradients are
    read from the same tensors.

    Args:
        module (torch.nn.Module): A PST layer, a detector; its mode (train/eval) is the one compared.
        inputs (torch.Tensor | tuple[torch.Tensor, ...]): Its inputs (gradients are taken with respect to them too).
        backend (str): ``torch.compile`` backend.
        autocast_dtype (torch.dtype | None): Run the forward under autocast to this type (None: as the inputs are).

    Returns:
        (dict): ``out_diff``, ``out_scale`` (max abs difference / max abs of eager's outputs); ``grads`` and
        ``buffers``: name -> ``(max abs difference, max abs of eager's tensor)``, gradients of every input and
        parameter, buffers after the forward.
    """
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    compiled = torch.compile(module, backend=backend)

    def run(call):
        out, grads = _forward_backward(module, inputs, None, autocast_dtype, state, call)
        return out, grads, {n: b.detach().float().clone() for n, b in module.named_buffers() if b.is_floating_point()}

    def diffs(a: dict, b: dict) -> dict:
        return {k: (_max_diff([a[k]], [b[k]])[0] if k in a else math.inf, _scale([b[k]])) for k in b}

    try:
        ref_out, ref_grads, ref_bufs = run(module)
        out, grads, bufs = run(compiled)
    finally:
        module.load_state_dict(state)
        module.zero_grad(set_to_none=True)
    return {"out_diff": _max_diff(out, ref_out)[0], "out_scale": _scale(ref_out), "grads": diffs(grads, ref_grads),
            "buffers": diffs(bufs, ref_bufs)}


def state_dict_diff(a: dict, b: dict) -> dict:
    """Compare two state dicts tensor by tensor, in ``a``'s order.

    Returns:
        (dict): ``max_abs`` (largest absolute difference over all tensors; inf where a key or shape differs),
        ``first`` (first differing tensor's name, None if identical), ``worst`` (where ``max_abs`` is),
        ``differing`` and ``total`` (tensor counts).

    Examples:
        >>> a = {"w": torch.zeros(2), "b": torch.ones(1)}
        >>> state_dict_diff(a, {"w": torch.zeros(2), "b": torch.full((1,), 1.5)})["first"]
        'b'
    """
    keys = list(a) + [k for k in b if k not in a]
    first, worst, max_abs, differing = None, None, 0.0, 0
    for k in keys:
        t, u = a.get(k), b.get(k)
        if t is None or u is None or t.shape != u.shape:
            d = math.inf
        elif torch.equal(t, u):
            continue
        else:
            d = float((t.double() - u.double()).abs().max())
        differing += 1
        first = first or k
        if d > max_abs or worst is None:
            max_abs, worst = d, k
    return {"max_abs": max_abs, "first": first, "worst": worst, "differing": differing, "total": len(keys)}


def interleaved_medians(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 0,
                        timer: Callable[[], float] = time.perf_counter,
                        sync: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """Time each function ``runs`` times, interleaved (round r starts at function r mod n), after ``warmup`` rounds.

    Each call is timed alone between two ``sync()`` calls (``torch.cuda.synchronize`` on a GPU, so the time covers
    the kernels and not just their launch).

    Returns:
        (dict[str, dict]): Per name: ``median`` and ``min`` in seconds, and ``n``.

    Examples:
        >>> clock = iter(range(100)).__next__  # a fake timer: every call takes one tick
        >>> interleaved_medians({"a": lambda: None, "b": lambda: None}, runs=3, timer=clock)["a"]["median"]
        1
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync()
    times = {n: [] for n in names}
    for r in range(runs):
        for n in names[r % len(names):] + names[: r % len(names)]:
            sync()
            t0 = timer()
            fns[n]()
            sync()
            times[n].append(timer() - t0)
    return {n: {"median": statistics.median(v), "min": min(v), "n": len(v)} for n, v in times.items()}


def match_detections(a: torch.Tensor, b: torch.Tensor, iou: float = 0.5) -> dict:
    """Pair detections of two models on one image (same class, IoU >= ``iou``, greedy by ``a``'s order).

    Args:
        a, b (torch.Tensor): (n, 6) rows ``x1, y1, x2, y2, score, class`` (NMS output).

    Returns:
        (dict): ``a``, ``b`` (counts), ``matched``, ``box`` (largest coordinate difference of a matched pair) and
        ``score`` (largest score difference of a matched pair).

    Examples:
        >>> d = torch.tensor([[0., 0., 10., 10., 0.9, 1.]])
        >>> match_detections(d, d + torch.tensor([[0., 0., 1., 0., 0., 0.]]))["box"]
        1.0
    """
    from torchvision.ops import box_iou

    out = {"a": len(a), "b": len(b), "matched": 0, "box": 0.0, "score": 0.0}
    if not len(a) or not len(b):
        return out
    ious = box_iou(a[:, :4].float(), b[:, :4].float())
    ious[a[:, 5][:, None] != b[:, 5][None, :]] = 0
    used = set()
    for i in range(len(a)):
        order = [j for j in ious[i].argsort(descending=True).tolist() if j not in used and ious[i, j] >= iou]
        if order:
            j = order[0]
            used.add(j)
            out["matched"] += 1
            out["box"] = max(out["box"], float((a[i, :4] - b[j, :4]).abs().max()))
            out["score"] = max(out["score"], float((a[i, 4] - b[j, 4]).abs()))
    return out


def nondeterministic_ops(text: str) -> list[str]:
    """Operations PyTorch warned about under ``use_deterministic_algorithms(True, warn_only=True)``, from a log.

    Examples:
        >>> nondeterministic_ops("UserWarning: upsample_bilinear2d_backward_out_cuda does not have a deterministic "
        ...                      "implementation, but you set 'torch.use_deterministic_algorithms(True, ...)'")
        ['upsample_bilinear2d_backward_out_cuda']
    """
    return sorted(set(re.findall(r"(\w+) does not have a deterministic implementation", text)))


def _e(x: float) -> str:
    return "inf" if x == math.inf else f"{x:.1e}"


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


# ------------------------------------------------------------------------------------------------------------ sections
def _yolo(source):
    from ultralytics import YOLO

    import pst_yolo  # noqa: F401  (registers yolo11n-pst.yaml, data=shapes, pst_topk, pst_topk_train)

    return YOLO(str(source))


def _half_dtype(ctx: Context) -> torch.dtype:
    return torch.float16 if ctx.cuda else torch.bfloat16  # the CPU stand-in autocasts to bf16


def train_amp(ctx: Context) -> str:
    """Any-K AMP training of yolo11n-pst from scratch on shapes; leaves the weights in ``ctx.state['weights']``."""
    from pst_yolo.topk import attention_layers, get_topk

    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = _yolo("yolo11n-pst.yaml")
    model.train(data="shapes", epochs=ctx.epochs, imgsz=ctx.imgsz, batch=ctx.batch, workers=ctx.workers, amp=True,
                pst_topk_train=KS_TRAIN, seed=0, device=ctx.device_arg, plots=False, project=str(ctx.work / "runs"),
                name="amp", exist_ok=True, verbose=False)
    seconds = time.perf_counter() - t0
    tr = model.trainer
    items = tr.tloss.items() if isinstance(tr.tloss, dict) else zip(tr.loss_names, tr.tloss)  # a dict since 8.4
    losses = {str(n).replace("_loss", ""): float(v) for n, v in items}
    weights = Path(tr.best) if Path(tr.best).is_file() else Path(tr.last)
    ctx.state["weights"] = weights
    layers = attention_layers(tr.model)
    steps = getattr(layers[0], "topk_train_step", None) if layers else None
    scale = tr.scaler.get_scale() if tr.scaler is not None and tr.scaler.is_enabled() else None
    m, nan = tr.metrics or {}, float("nan")
    rows = [
        ["run", f"yolo11n-pst from scratch, shapes (512 train / 128 val images), {ctx.epochs} "
                f"epoch{'s' * (ctx.epochs > 1)} at imgsz "
                f"{ctx.imgsz}, batch {ctx.batch}, `pst_topk_train={KS_TRAIN}`, `amp=True`, seed 0"],
        ["AMP", ("on" if tr.amp else "**off** (Ultralytics' AMP check disabled it)")
                + (f"; GradScaler scale at the end {scale:g}" if scale is not None else "")],
        ["any-K draws", f"{steps} training steps, one K each" if steps is not None else "unknown"],
        ["last-epoch mean losses", ", ".join(f"{k} {v:.3f}" for k, v in losses.items())],
        [f"validation after the last epoch (pst_topk={get_topk(tr.model)}, the trainer's precision)",
         f"mAP50-95 {m.get('metrics/mAP50-95(B)', nan):.5f}, mAP50 {m.get('metrics/mAP50(B)', nan):.5f}"],
        ["time", f"{seconds:.0f} s (dataset generation included on a first run)"
                 + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if ctx.cuda else "")],
    ]
    if not all(math.isfinite(v) for v in losses.values()):
        raise FloatingPointError(f"non-finite training loss under AMP: {losses}")
    return _md_table(["", ""], rows)


def val_precision(ctx: Context) -> str:
    """mAP50-95 of the trained weights at pst_topk 0 and 8, half and fp32."""
    weights = ctx.state.get("weights")
    if weights is None:
        raise RuntimeError("no trained weights: the training section did not run or did not finish")
    rows, maps = [], {}
    for k in (0, 8):
        for half in (True, False):
            r = _yolo(weights).val(data="shapes", imgsz=ctx.imgsz, batch=ctx.batch, half=half, pst_topk=k,
                                   device=ctx.device_arg, workers=ctx.workers, plots=False, verbose=False)
            maps[k, half] = r.box.map
            rows.append([k, "fp16 (`half=True`)" if half else "fp32", f"{r.box.map:.5f}", f"{r.box.map50:.5f}"])
    deltas = ", ".join(f"K {k}: {maps[k, True] - maps[k, False]:+.5f}" for k in (0, 8))
    return (f"The any-K weights of section 1 on shapes val at imgsz {ctx.imgsz} (`YOLO(...).val`, `pst_topk=K`).\n\n"
            + _md_table(["pst_topk", "precision", "mAP50-95", "mAP50"], rows)
            + f"\n\nmAP50-95 half minus fp32: {deltas}.")


def _training_detector(ctx: Context) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """The detector of the comparisons: ``(model, input, what it is)``, fp32 on the device in training mode, running
    ``pst_topk`` (no drawn K), every parameter requiring a gradient; a fixed batch of 2 at ``latency_imgsz``."""
    from pst_yolo.topk import set_topk_train

    weights = ctx.state.get("weights")
    torch.manual_seed(0)
    net = _yolo(weights or "yolo11n-pst.yaml").model.float().to(ctx.device).train()
    set_topk_train(net, (), verbose=False)  # train mode runs pst_topk, not a drawn K
    for p in net.parameters():
        p.requires_grad_(True)
    x = torch.rand(2, 3, ctx.latency_imgsz, ctx.latency_imgsz, generator=torch.Generator().manual_seed(0))
    what = "the any-K weights of section 1" if weights else "untrained yolo11n-pst (no trained weights)"
    return net, x.to(ctx.device), what


def sdpa_backends(ctx: Context) -> str:
    """SDPA backends against the math backend, forward and backward, on the whole detector at K 8 and 16."""
    from pst_yolo import set_topk

    net, x, what = _training_detector(ctx)
    half = _half_dtype(ctx)
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # only attention may differ
    rows = []
    try:
        for k in (8, 16):
            set_topk(net, k, verbose=False)
            for label, dtype in (("fp32", None), (f"{str(half).split('.')[1]} autocast", half)):
                for r in compare_sdpa_backends(net, x, autocast_dtype=dtype):
                    if r["status"] == "ok":
                        rows.append([k, label, r["backend"], "ok", f"{_e(r['out_diff'])} (of {r['out_scale']:.1f})",
                                     f"{_e(r['grad_diff'])} (of {r['grad_scale']:.1e})",
                                     f"`{r['grad_at']}`" if r["grad_at"] else "-"])
                    else:
                        rows.append([k, label, r["backend"], f"{r['status']}: {r['note']}", "", "", ""])
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    return (f"Whole detector ({what}) in training mode, batch 2 at {ctx.latency_imgsz}, one forward and backward per "
            "backend (`torch.nn.attention.sdpa_kernel([backend])`, nothing else allowed), against the math backend "
            "from the same state; cuDNN convolutions deterministic. Gradients: of the input and of every parameter; "
            "the loss is a fixed random projection of the outputs. `math (again)` is the math backend run a second "
            "time.\n\n"
            + _md_table(["K", "precision", "backend", "status", "max abs diff outputs", "max abs diff gradients",
                         "largest gradient diff at"], rows))


def compiled(ctx: Context) -> str:
    """``compile=True`` any-K training through the trainer (inductor), then inductor against eager on the detector."""
    from torch._dynamo.utils import counters

    from pst_yolo import set_topk
    from pst_yolo.topk import attention_layers

    counters.clear()
    ks = []
    model = _yolo("yolo11n-pst.yaml")
    model.add_callback("on_train_batch_end", lambda t: ks.append(attention_layers(t.model)[0].topk_step))
    t0 = time.perf_counter()
    model.train(data="shapes", epochs=1, imgsz=ctx.det_imgsz, batch=ctx.det_batch, fraction=ctx.det_fraction,
                compile=True, pst_topk_train=KS_TRAIN, seed=0, workers=0, device=ctx.device_arg, val=False, plots=False,
                project=str(ctx.work / "runs"), name="compiled", exist_ok=True, verbose=False)
    seconds = time.perf_counter() - t0
    finite = all(bool(p.detach().isfinite().all()) for p in model.trainer.model.parameters())
    breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
    train_rows = [["run", f"yolo11n-pst from scratch, shapes, 1 epoch at imgsz {ctx.det_imgsz}, batch {ctx.det_batch}, "
                          f"fraction {ctx.det_fraction}, `compile=True`, `pst_topk_train={KS_TRAIN}`, seed 0"],
                  ["steps, K drawn", f"{len(ks)}; K {sorted(set(ks))}"],
                  ["graphs, graph breaks", f"{graphs}, {breaks}"],
                  ["weights finite after training", "yes" if finite else "**no**"],
                  ["time", f"{seconds:.0f} s (compilation included)"]]
    if not finite:
        raise FloatingPointError("non-finite weights after compile=True training")
    if not graphs:
        raise RuntimeError("compile=True trained uncompiled: Ultralytics found no usable inductor backend (its warning "
                           "in the log says why)")

    net, x, what = _training_detector(ctx)
    rows = []
    for k in (0, 8):
        set_topk(net, k, verbose=False)
        torch._dynamo.reset()
        r = compare_compiled(net, x)
        rel = {n: d / s if s else d for n, (d, s) in r["grads"].items()}
        worst = max(rel, key=rel.get)
        over = sorted(n for n, v in rel.items() if v > 1e-3)
        bufs = max((d for d, _ in r["buffers"].values()), default=0.0)
        rows.append([k, f"{_e(r['out_diff'])} (of {r['out_scale']:.1f})", f"{rel[worst]:.1e} (`{worst}`)",
                     ", ".join(f"`{n}`" for n in over[:6]) + (f" and {len(over) - 6} more" if len(over) > 6 else "")
                     or "none", _e(bufs)])
    return (_md_table(["", ""], train_rows)
            + f"\n\nThe detector ({what}) in training mode, batch 2 at {ctx.latency_imgsz}, fp32: one forward and "
            "backward of `torch.compile(model)` (inductor) against eager from the same state. Gradient differences "
            "relative to the largest entry of the same gradient; BatchNorm statistics after the forward.\n\n"
            + _md_table(["K", "max abs diff outputs", "largest relative gradient diff", "gradients off by > 0.1%",
                         "max abs diff BatchNorm statistics"], rows))


def _det_config(ctx: Context, i: int) -> dict:
    return {"model": "yolo11n-pst.yaml", "out": str(ctx.work / f"det{i}.pt"),
            "train": dict(data="shapes", epochs=ctx.det_epochs, imgsz=ctx.det_imgsz, batch=ctx.det_batch,
                          fraction=ctx.det_fraction, workers=0, deterministic=True, seed=0, pst_topk_train=KS_TRAIN,
                          device=ctx.device_arg, val=False, plots=False, project=str(ctx.work / "runs"),
                          name=f"det{i}", exist_ok=True, verbose=False)}


def determinism(ctx: Context) -> str:
    """Two ``deterministic=True`` trainings with seed 0, each in a fresh process; compare every state-dict tensor."""
    logs, saved = [], []
    for i in (1, 2):
        cfg = _det_config(ctx, i)
        out = subprocess.run([sys.executable, __file__, "train-worker", json.dumps(cfg)], env=ctx.env or None,
                             capture_output=True, text=True, timeout=900)
        if out.returncode:
            tail = [s for s in (out.stderr or out.stdout).strip().splitlines() if s.strip()] or ["(no output)"]
            raise RuntimeError(f"training {i} exited {out.returncode}: {tail[-1][:200]}")
        logs.append(out.stdout + out.stderr)
        saved.append(torch.load(cfg["out"], weights_only=True))
    rows = []
    for part in ("model", "ema"):
        d = state_dict_diff(saved[0][part], saved[1][part])
        same = d["differing"] == 0
        rows.append([f"`{part}`", "**yes**" if same else "**no**", _e(d["max_abs"]) if not same else "0",
                     f"{d['differing']} of {d['total']}", f"`{d['first']}`" if d["first"] else "",
                     f"`{d['worst']}`" if d["worst"] else ""])
    ops = nondeterministic_ops("\n".join(logs))
    t = _det_config(ctx, 0)["train"]
    return (f"yolo11n-pst from scratch on shapes, twice, each in a fresh process: {t['epochs']} epoch at imgsz "
            f"{t['imgsz']}, batch {t['batch']}, fraction {t['fraction']}, `workers=0`, `deterministic=True`, `seed=0`, "
            f"`pst_topk_train={KS_TRAIN}`, AMP as Ultralytics chooses. Compared: the final training weights (`model`, "
            "fp32, buffers included) and their EMA.\n\n"
            + _md_table(["state dict", "identical", "max abs diff", "differing tensors", "first differing tensor",
                         "largest diff at"], rows)
            + "\n\nOperations that warned under `torch.use_deterministic_algorithms(True, warn_only=True)`: "
            + (", ".join(f"`{o}`" for o in ops) if ops else "none") + ".")


def train_worker(cfg: dict) -> None:
    """Train once as ``cfg`` says and save the final weights and their EMA (fp32, on the CPU) to ``cfg['out']``."""
    model = _yolo(cfg["model"])
    model.train(**cfg["train"])
    tr = model.trainer

    def cpu(module):
        return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
                for k, v in module.state_dict().items()}

    torch.save({"model": cpu(tr.model), "ema": cpu(tr.ema.ema) if tr.ema else {}}, cfg["out"])


def _detectors(ctx: Context, k_values=(0, 8)) -> dict[str, torch.nn.Module]:
    """yolo11n and yolo11n-pst at each K, untrained (seeded), fused and in eval mode, as predict runs them."""
    from copy import deepcopy

    from pst_yolo import set_topk

    torch.manual_seed(0)
    base = _yolo("yolo11n.yaml").model.fuse(verbose=False).eval()
    torch.manual_seed(0)
    pst = _yolo("yolo11n-pst.yaml").model.fuse(verbose=False).eval()
    nets = {"yolo11n": base}
    for k in k_values:
        nets[f"yolo11n-pst K {k}"] = deepcopy(pst)
        set_topk(nets[f"yolo11n-pst K {k}"], k, verbose=False)
    return nets


def latency(ctx: Context) -> str:
    """CUDA eager latency at 640, batch 1: yolo11n-pst at K 0 and 8 against yolo11n, interleaved, medians."""
    nets = _detectors(ctx)
    rows = []
    for prec in ("fp32", "fp16"):
        dtype = torch.float16 if prec == "fp16" else torch.float32
        x = torch.rand(1, 3, ctx.latency_imgsz, ctx.latency_imgsz, generator=torch.Generator().manual_seed(0))
        x = x.to(ctx.device, dtype)
        models = {n: m.to(ctx.device, dtype) for n, m in nets.items()}
        with torch.inference_mode():
            res = interleaved_medians({n: (lambda m=m, x=x: m(x)) for n, m in models.items()}, ctx.runs, ctx.warmup,
                                      sync=ctx.sync)
        base = res["yolo11n"]["median"]
        rows += [[prec, n, f"{r['median'] * 1e3:.2f}", f"{r['min'] * 1e3:.2f}", f"{r['median'] / base:.2f}"]
                 for n, r in res.items()]
    return (f"Untrained models (latency does not depend on the weights), fused as `predict` runs them, batch 1 at "
            f"{ctx.latency_imgsz}x{ctx.latency_imgsz}, eager PyTorch; {ctx.warmup} warm-up rounds, then {ctx.runs} "
            "rounds interleaved (each round starts at the next model), every call timed alone between two "
            "`torch.cuda.synchronize()`.\n\n"
            + _md_table(["precision", "model", "median ms", "min ms", "median / yolo11n"], rows))


def tensorrt(ctx: Context) -> str:
    """fp16 TensorRT engines at pst_topk 0 and 8 and of yolo11n: boxes against PyTorch, latency against yolo11n's."""
    if importlib.util.find_spec("tensorrt") is None:
        raise SectionSkipped("TensorRT is not importable on this machine (no `tensorrt` module), so no engine was "
                             "built; the other sections ran without it.")
    import numpy as np
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.utils.nms import non_max_suppression

    from pst_yolo.export.verify import letterbox_images, torch_outputs

    folder = ctx.work / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    weights = ctx.state.get("weights")
    if weights is None:
        _yolo("yolo11n-pst.yaml").save(folder / "pst.pt")
        weights = folder / "pst.pt"
    _yolo("yolo11n.yaml").save(folder / "yolo11n.pt")
    sources = {"yolo11n": (folder / "yolo11n.pt", None)}
    for k in (0, 8):
        shutil.copy(weights, folder / f"pst_k{k}.pt")
        sources[f"yolo11n-pst K {k}"] = (folder / f"pst_k{k}.pt", k)
    engines = {}
    for name, (pt, k) in sources.items():
        extra = {} if k is None else {"pst_topk": k}
        engines[name] = Path(_yolo(pt).export(format="engine", half=True, imgsz=ctx.latency_imgsz,
                                              device=ctx.device_arg, verbose=False, **extra))
    dev = torch.device(ctx.device)
    backends = {n: AutoBackend(str(e), device=dev, fp16=True, verbose=False) for n, e in engines.items()}

    val_dir = Path(check_det_dataset("shapes")["val"])
    files = sorted(p for p in val_dir.rglob("*") if p.suffix.lower() in {".jpg", ".png"})[:8]
    images = letterbox_images(files, ctx.latency_imgsz)
    box_rows = []
    for name, (pt, k) in sources.items():
        if k is None:
            continue
        ref = torch.from_numpy(torch_outputs(str(pt), images, pst_topk=k))
        got = []
        for i in range(len(images)):
            y = backends[name](torch.from_numpy(images[i : i + 1]).to(dev).half())
            got.append((y[0] if isinstance(y, (list, tuple)) else y).float().cpu())
        got = torch.cat(got)
        d = (got - ref).abs()
        pairs = [match_detections(a, b) for a, b in zip(non_max_suppression(ref.clone()), non_max_suppression(got))]
        box_rows.append([name, len(images), f"{float(d[:, :4].max()):.2f} (of {float(ref[:, :4].abs().max()):.0f})",
                         f"{float(d[:, 4:].max()):.3f}", sum(p["a"] for p in pairs), sum(p["b"] for p in pairs),
                         sum(p["matched"] for p in pairs), f"{max((p['box'] for p in pairs), default=0):.2f}"])
    x = torch.from_numpy(np.ascontiguousarray(images[:1])).to(dev).half()
    res = interleaved_medians({n: (lambda b=b: b(x)) for n, b in backends.items()}, ctx.runs, ctx.warmup,
                              sync=ctx.sync)
    base = res["yolo11n"]["median"]
    lat_rows = [[n, f"{r['median'] * 1e3:.3f}", f"{r['min'] * 1e3:.3f}", f"{r['median'] / base:.2f}"]
                for n, r in res.items()]
    import tensorrt as trt

    what = "the any-K weights of section 1" if ctx.state.get("weights") else "untrained yolo11n-pst"
    return (f"TensorRT {trt.__version__}; `format=engine half=True imgsz={ctx.latency_imgsz}` of {what} at "
            "`pst_topk=0` and `8` and of untrained yolo11n. Boxes: raw outputs (B, 4 + nc, anchors) of the engine "
            f"against PyTorch fp32 at the same K on {len(images)} shapes val images letterboxed to "
            f"{ctx.latency_imgsz}, then detections after NMS (conf 0.25, IoU 0.45) paired by class and IoU >= 0.5.\n\n"
            + _md_table(["engine", "images", "max abs diff boxes (px)", "max abs diff classes", "detections PyTorch",
                         "detections engine", "paired", "largest paired box diff (px)"], box_rows)
            + f"\n\nLatency, batch 1 fp16, interleaved medians of {ctx.runs} calls after {ctx.warmup} warm-up "
            "rounds:\n\n" + _md_table(["engine", "median ms", "min ms", "median / yolo11n engine"], lat_rows))


SECTION_FUNCTIONS = {"train": train_amp, "val": val_precision, "sdpa": sdpa_backends, "compile": compiled,
                     "determinism": determinism, "latency": latency, "tensorrt": tensorrt}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "train-worker":
        sys.exit("usage: _gpu_check_sections.py train-worker JSON")
    train_worker(json.loads(sys.argv[2]))
