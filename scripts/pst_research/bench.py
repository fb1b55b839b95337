"""Benchmark YOLO11 against YOLO11-PST in one run on one machine: FLOPs, latency, training cost, the PST module alone.

What is measured (``run_benchmark``), for each scale (n/s/m) at one image size:

- **params and GFLOPs** of ``yolo11X`` and ``yolo11X-pst`` (``pst_topk`` 0 and 8). GFLOPs are Ultralytics' own figure
  (``get_flops``: thop multiply-adds x 2 on the unfused eval model, the number ``model.info()`` prints). The thop
  shipped with Ultralytics counts ``F.scaled_dot_product_attention`` and matrix products run outside modules, so the PST
  attention matmuls *are* included; its stride-proxy extrapolation fits a quadratic in the number of stride cells and
  checks it against a fourth proxy, which is exact here because ``N * M`` grows with the square of the cell count
  (tests/test_benchmark.py checks both against a direct count and against ``attention_flops``). The attention matmuls
  are also counted analytically per PST layer (``attention_flops``) and reported on their own.
- **inference latency**, batch 1: PyTorch eager (CPU; CUDA too when present) on BN-fused eval models, and ONNX Runtime
  CPU on models exported by Ultralytics' own exporter (``format=onnx``, its default opset, onnxslim). Baseline and PST
  runs are interleaved round by round (ABC, BCA, CAB, ...) after a warm-up, so every variant sees the same (shared,
  drifting) machine load; latency is the median and a ratio is the ratio of medians (the CSV keeps every run).
- **one training step** (forward, Ultralytics detection loss on a synthetic batch, backward) at a fixed batch: time
  (interleaved as above) and peak tensor memory, i.e. the highest ``total_allocated`` of PyTorch's CPU allocator that
  ``torch.profiler`` (``profile_memory=True``) records during one step, minus its value when the step starts. Process
  RSS is not used: the C allocator keeps freed pages, so RSS says little about one step.
- **the PST module alone** at its P3 position (the PST layer with the largest fine map), on the inputs it receives in
  the detector: the fast path (``form="fused"``) against the naive formulation (``form="plain"``: explicit
  ``N x M`` attention matrices, selection from that matrix, ``conv_kv`` on the whole fine map), inference with
  ``pst_topk`` 0 and 8 and one training step (forward + backward), with the largest output difference.

``BenchmarkResult`` renders the tables as markdown, writes a CSV and a PNG plot, and lists the performance targets
(limits on speed, latency and memory ratios) with the measured figure next to each limit.

This is the library of ``scripts/benchmark.py`` (development tooling, not part of the installed package); the
analytic attention FLOP count it uses is :mod:`pst_yolo.benchmark`.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from ultralytics.utils import LOGGER

from pst_yolo.benchmark import attention_flops
from pst_yolo.nn import PST, PSTAttention
from pst_yolo.topk import set_topk

__all__ = (
    "FINE_TOPK",
    "SCALES",
    "BenchmarkResult",
    "BenchmarkSettings",
    "peak_memory",
    "profile_p3_module",
    "run_benchmark",
    "time_interleaved",
)

SCALES = ("n", "s", "m")
FINE_TOPK = 8  # the paper's best k; the fine-attention variant benchmarked next to pst_topk=0


def _gflops(model: nn.Module, imgsz: int) -> float:
    """Ultralytics' GFLOPs (the figure of ``model.info()``; pst_yolo's hook holds back proxy clamp warnings)."""
    from ultralytics.utils.torch_utils import get_flops

    return get_flops(model, imgsz)


# ----------------------------------------------------------------------------------------------------------- timing
def time_interleaved(
    fns: dict[str, Callable[[], object]],
    runs: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time several callables round by round, rotating their order each round (ABC, BCA, CAB, ...).

    Interleaving puts every variant under the same (shared, drifting) machine load; rotating the order removes a
    fixed position in the round as a bias (caches warmed by the previous variant).

    Args:
        fns (dict[str, Callable]): Name -> callable to time.
        runs (int): Timed rounds (each callable runs once per round).
        warmup (int): Untimed rounds first.
        sync (Callable | None): Called after each run before the clock stops (``torch.cuda.synchronize``).
        clock (Callable[[], float]): Seconds; ``time.perf_counter`` (wall) or ``time.process_time`` (CPU time of the
            process, which is the latency of a single-threaded run minus the time other processes held the core).

    Returns:
        (dict[str, list[float]]): Name -> the ``runs`` wall times in milliseconds, in round order.

    Examples:
        >>> t = time_interleaved({"a": lambda: sum(range(1000)), "b": lambda: None}, runs=3, warmup=0)
        >>> sorted(t), [len(v) for v in t.values()]
        (['a', 'b'], [3, 3])
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
        if sync:
            sync()
    times = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = clock()
            fns[name]()
            if sync:
                sync()
            times[name].append((clock() - t0) * 1e3)
    return times


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _ratio(a: list[float], b: list[float]) -> float:
    """Ratio of the medians of two interleaved series."""
    return statistics.median(a) / statistics.median(b)


def _runs(values: list[float]) -> str:
    """Every timed run (ms), for the CSV."""
    return " ".join(f"{v:.2f}" for v in values)


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak tensor memory (bytes) that ``fn`` allocates on the CPU above what is allocated when it starts.

    Read from ``torch.profiler`` with ``profile_memory=True``: every CPU allocation event carries the allocator's
    running ``total_allocated``; the peak is its maximum minus its value before the first event of the call.

    Args:
        fn (Callable): The work to measure (run once).

    Returns:
        (int): Peak bytes; 0 if ``fn`` allocates nothing.

    Examples:
        >>> peak_memory(lambda: torch.empty(1024, 1024).add_(1)) >= 4 * 1024 * 1024
        True
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size))
        stack.extend(node.children)
    if not events:
        return 0
    events.sort(key=lambda e: e[0])
    start = events[0][1] - events[0][2]
    return max(0, max(e[1] for e in events) - start)


# ------------------------------------------------------------------------------------------------------------ setup
@dataclass
class BenchmarkSettings:
    """Options of ``run_benchmark`` (the CLI flags of ``scripts/benchmark.py``).

    Args:
        scales (tuple[str, ...]): YOLO11 scales to compare (``n``, ``s``, ``m``).
        imgsz (int): Square input size for everything (a multiple of 32).
        runs (int): Timed rounds for inference latency (each variant once per round).
        warmup (int): Untimed rounds first.
        threads (int): CPU threads for PyTorch and ONNX Runtime (0 = PyTorch's current setting).
        clock (str): ``wall`` (latency) or ``cpu`` (process CPU time; needs ``threads=1``, where it is the latency
            without the time other processes held the core: use it on a shared machine).
        onnx (bool): Measure ONNX Runtime CPU latency (exports with Ultralytics' exporter).
        cuda (bool): Also time PyTorch eager on CUDA when a GPU is present.
        module (bool): Benchmark the PST module at P3 against the naive formulation.
        train (bool): Benchmark one training step.
        train_scales (tuple[str, ...]): Scales for the training step (memory-heavy; ``s`` by default).
        train_batch (int): Images per training step.
        train_runs (int): Timed training steps per model (after one warm-up step).
    """

    scales: tuple[str, ...] = SCALES
    imgsz: int = 640
    runs: int = 20
    warmup: int = 3
    threads: int = 0
    clock: str = "wall"
    onnx: bool = True
    cuda: bool = True
    module: bool = True
    train: bool = True
    train_scales: tuple[str, ...] = ("s",)
    train_batch: int = 8
    train_runs: int = 5

    def __post_init__(self):
        self.scales, self.train_scales = tuple(self.scales), tuple(self.train_scales)
        for label, scales in (("scales", self.scales), ("train_scales", self.train_scales)):
            bad = [s for s in scales if s not in SCALES]
            if bad or (label == "scales" and not scales):
                raise ValueError(f"{label}={scales!r}: choose from {', '.join(SCALES)} (e.g. --scales n,s)")
        if self.imgsz < 64 or self.imgsz % 32:
            raise ValueError(f"imgsz={self.imgsz} must be a multiple of 32 and >= 64 (the P5 map needs 2x2 cells)")
        for label in ("runs", "train_batch", "train_runs"):
            if getattr(self, label) < 1:
                raise ValueError(f"{label} must be >= 1, got {getattr(self, label)}")
        if self.warmup < 0 or self.threads < 0:
            raise ValueError("warmup and threads must be >= 0 (threads 0 = keep PyTorch's setting)")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock={self.clock!r}: choose 'wall' (latency) or 'cpu' (process CPU time)")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("clock='cpu' adds up the CPU time of all threads (latency only with one): set threads=1")

    def timer(self) -> Callable[[], float]:
        """The clock function of ``clock``."""
        return time.process_time if self.clock == "cpu" else time.perf_counter


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Ultralytics' INFO logging (model summaries, exporter chatter) while the benchmark builds things."""
    level = LOGGER.level
    LOGGER.setLevel("WARNING")
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def _build(cfg: str) -> nn.Module:
    """A randomly initialized ``DetectionModel`` from a YAML name (same seed for every model: same init stream)."""
    from ultralytics.nn import DetectionModel

    torch.manual_seed(0)
    with _quiet():
        return DetectionModel(cfg, verbose=False)


def _inference_copy(model: nn.Module, topk: int | None) -> nn.Module:
    """A BN-fused eval copy, as Ultralytics runs models for prediction/validation."""
    m = copy.deepcopy(model).eval()
    if topk is not None:
        set_topk(m, topk, verbose=False)
    with _quiet():
        return m.fuse(verbose=False)


def _variants(scale: str) -> dict[str, tuple[nn.Module, int | None]]:
    """``{label: (unfused model, topk)}``: YOLO11 baseline, then YOLO11-PST coarse only and with fine attention."""
    base = _build(f"yolo11{scale}.yaml")
    pst = _build(f"yolo11{scale}-pst.yaml")
    return {
        f"yolo11{scale}": (base, None),
        f"yolo11{scale}-pst k=0": (pst, 0),
        f"yolo11{scale}-pst k={FINE_TOPK}": (pst, FINE_TOPK),
    }


def _export_onnx(model: nn.Module, topk: int | None, imgsz: int, folder: Path, stem: str) -> str:
    """Export with Ultralytics' own exporter (what ``pst-yolo export format=onnx pst_topk=K`` does)."""
    from ultralytics.engine.exporter import Exporter

    m = copy.deepcopy(model)
    m.pt_path = str(folder / f"{stem}.pt")  # the exporter writes next to pt_path
    m.task = "detect"  # set by the YOLO wrapper, which a bare DetectionModel lacks
    overrides = dict(format="onnx", imgsz=imgsz, batch=1, device="cpu", verbose=False, mode="export")
    if topk is not None:
        overrides["pst_topk"] = topk
    with _quiet():
        return Exporter(overrides=overrides)(model=m)


def _machine() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def _load() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


# -------------------------------------------------------------------------------------------------------- the result
@dataclass
class BenchmarkResult:
    """Tables produced by ``run_benchmark``; every row is a flat dict (the CSV columns).

    Attributes:
        env (dict): Machine, date, library versions, threads, load averages at start and end, settings.
        models (list[dict]): Per scale and variant: params, GFLOPs, latencies and ratios to the baseline.
        train (list[dict]): Per training scale and model: step time, peak memory, ratios.
        module (list[dict]): Per scale and mode: the P3 PST module, fast vs naive.
        targets (list[dict]): The performance targets: measured figure, limit, met.
    """

    env: dict = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)
    train: list[dict] = field(default_factory=list)
    module: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        """All tables as markdown, with a header naming the machine, date, threads and load."""
        e = self.env
        lines = [
            f"Machine: {e['machine']}; {e['threads']} thread(s); load average (1/5/15 min) {e['load_start']} at start, "
            f"{e['load_end']} at end. Date: {e['date']}.",
            f"torch {e['torch']}, onnxruntime {e['onnxruntime']}, ultralytics {e['ultralytics']}; imgsz {e['imgsz']}, "
            f"batch 1, {e['runs']} interleaved runs after {e['warmup']} warm-up rounds, {e['clock']} (median; ratio = "
            f"ratio of medians). CUDA: {e['cuda']}.",
            "",
        ]
        if self.models:
            cols = [
                ("model", "model"),
                ("params_M", "params (M)"),
                ("gflops", "GFLOPs"),
                ("attn_gflops", "attn GFLOPs"),
            ]
            cols += [("flops_ratio", "FLOP ratio")]
            for key, label in (("eager", "PyTorch CPU"), ("cuda", "PyTorch CUDA"), ("ort", "ORT CPU")):
                if any(r.get(f"{key}_ms") is not None for r in self.models):
                    cols += [(f"{key}_ms", f"{label} ms"), (f"{key}_ratio", f"{label} ratio")]
            lines += ["### Inference (batch 1)", "", *_md_table(self.models, cols), ""]
        if self.train:
            cols = [("model", "model"), ("batch", "batch"), ("gflops", "GFLOPs"), ("flops_ratio", "FLOP ratio")]
            cols += [("step_ms", "step ms"), ("time_ratio", "time ratio"), ("peak_mb", "peak MB")]
            cols += [("mem_ratio", "memory ratio")]
            lines += ["### Training step (forward + loss + backward)", "", *_md_table(self.train, cols), ""]
        if self.module:
            cols = [("scale", "scale"), ("mode", "mode"), ("shape", "X / U"), ("fast_ms", "fast ms")]
            cols += [("naive_ms", "naive ms"), ("speedup", "speedup"), ("fast_mb", "fast peak MB")]
            cols += [("naive_mb", "naive peak MB"), ("rel_diff", "max |fast - naive| / max |naive|")]
            lines += ["### PST module at P3: fast path vs naive formulation", "", *_md_table(self.module, cols), ""]
        if self.targets:
            cols = [("target", "target"), ("measured", "measured"), ("limit", "limit"), ("met", "met")]
            lines += ["### Targets", "", *_md_table(self.targets, cols), ""]
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """Write every row of every table (column ``table`` names it) plus the environment to one CSV."""
        path = Path(path)
        rows = [dict(table="env", **{k: str(v) for k, v in self.env.items()})]
        for name in ("models", "train", "module", "targets"):
            rows += [dict(table=name, **row) for row in getattr(self, name)]
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self, path: str | Path) -> Path:
        """PNG: latency ratios next to FLOP ratios (PST / YOLO11), and the P3 module speedup over the naive form."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        ax = axes[0]
        pst_rows = [r for r in self.models if r["topk"] is not None]
        labels = [f"{r['scale']} k={r['topk']}" for r in pst_rows]
        series = [("flops_ratio", "GFLOPs"), ("eager_ratio", "PyTorch CPU"), ("cuda_ratio", "PyTorch CUDA")]
        series += [("ort_ratio", "ONNX Runtime CPU")]
        series = [(k, lab) for k, lab in series if any(r.get(k) is not None for r in pst_rows)]
        width = 0.8 / max(len(series), 1)
        for i, (key, label) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(pst_rows))]
            ax.bar(xs, [r.get(key) or 0 for r in pst_rows], width, label=label)
        limits = [r["flops_ratio"] + 0.05 for r in pst_rows]
        ax.scatter(range(len(pst_rows)), limits, marker="_", s=900, color="k", zorder=3, label="GFLOPs ratio + 0.05")
        top = max([r.get(k) or 0 for r in pst_rows for k, _ in series] + limits, default=1.0)
        ax.set_ylim(0.8, top + 0.08)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(pst_rows)), labels)
        ax.set_ylabel("YOLO11-PST / YOLO11")
        ax.set_title(f"Inference cost ratio, imgsz {self.env.get('imgsz')}, batch 1")
        ax.legend(fontsize=8)
        ax = axes[1]
        if self.module:
            labels = [f"{r['scale']} {r['mode']}" for r in self.module]
            ax.bar(range(len(self.module)), [r["speedup"] for r in self.module], color="tab:green")
            ax.axhline(3.0, color="r", ls="--", lw=1, label="3x target")
            ax.set_xticks(range(len(self.module)), labels, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("naive time / fast time")
            ax.set_title("PST module at P3: fast path speedup")
            ax.legend(fontsize=8)
        else:
            ax.set_axis_off()
        fig.suptitle(
            f"{self.env.get('machine', '')} - {self.env.get('threads')} thread(s) - {self.env.get('date')}", fontsize=9
        )
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _md_table(rows: list[dict], cols: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(label for _, label in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(key)) for key, _ in cols) + " |" for r in rows]
    return out


# ---------------------------------------------------------------------------------------------------------- phases
def _synthetic_batch(batch: int, imgsz: int, boxes: int = 4) -> dict[str, torch.Tensor]:
    """A detection training batch: random images and ``boxes`` random normalized xywh boxes per image."""
    gen = torch.Generator().manual_seed(0)
    n = batch * boxes
    xy = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=gen)
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=gen),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes).float(),
        "cls": torch.randint(0, 80, (n, 1), generator=gen).float(),
        "bboxes": torch.cat((xy, wh), 1),
    }


def _train_step(model: nn.Module, batch: dict) -> Callable[[], None]:
    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(batch)
        loss.sum().backward()

    return step


def _bench_models(s: BenchmarkSettings, scale: str, result: BenchmarkResult, tmp: Path) -> None:
    variants = _variants(scale)
    x = torch.rand(1, 3, s.imgsz, s.imgsz, generator=torch.Generator().manual_seed(0))
    base_name = f"yolo11{scale}"
    rows = {}
    for name, (model, k) in variants.items():
        if k is not None:
            set_topk(model, k, verbose=False)
        attn = sum(r["total"] for r in attention_flops(model, s.imgsz)) / 1e9 if k is not None else 0.0
        rows[name] = dict(
            scale=scale,
            model=name,
            topk=k,
            params_M=sum(p.numel() for p in model.parameters()) / 1e6,
            gflops=_gflops(model, s.imgsz),
            attn_gflops=attn,
        )
    for row in rows.values():
        row["flops_ratio"] = row["gflops"] / rows[base_name]["gflops"]

    def ratios(times: dict[str, list[float]], key: str) -> None:
        for name, row in rows.items():
            row[f"{key}_ms"] = _median(times[name])
            row[f"{key}_ratio"] = _ratio(times[name], times[base_name])
            row[f"{key}_runs_ms"] = _runs(times[name])

    eager = {name: _inference_copy(model, k) for name, (model, k) in variants.items()}
    with torch.inference_mode():
        fns = {name: (lambda m=m: m(x)) for name, m in eager.items()}
        ratios(time_interleaved(fns, s.runs, s.warmup, clock=s.timer()), "eager")
        if s.cuda and torch.cuda.is_available():
            xc = x.cuda()
            cuda = {name: copy.deepcopy(m).cuda() for name, m in eager.items()}
            fns = {name: (lambda m=m: m(xc)) for name, m in cuda.items()}
            ratios(time_interleaved(fns, s.runs, s.warmup, sync=torch.cuda.synchronize), "cuda")
            del cuda
    del eager

    if s.onnx:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        sessions = {}
        for name, (model, k) in variants.items():
            f = _export_onnx(model, k, s.imgsz, tmp, name.replace(" ", "_").replace("=", ""))
            sessions[name] = ort.InferenceSession(f, opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        fns = {
            name: (lambda sess=sess: sess.run(None, {sess.get_inputs()[0].name: xn})) for name, sess in sessions.items()
        }
        ratios(time_interleaved(fns, s.runs, s.warmup, clock=s.timer()), "ort")
    result.models += list(rows.values())


def _capture_p3(model: nn.Module, imgsz: int) -> tuple[str, list[torch.Tensor]]:
    """Name and inputs ``[X, U]`` of the PST layer with the largest fine map (P3), from one eval forward pass."""
    seen = {}

    def record(name):
        def hook(module, args):  # returns None: the call's arguments are left as they are
            seen.setdefault(name, [t.clone() for t in args[0]])

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if isinstance(m, PST)]
    try:
        with torch.inference_mode():
            model.eval()(torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
    name = max(seen, key=lambda n: seen[n][0].shape[2] * seen[n][0].shape[3])
    return name, seen[name]


def _naive(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    for attn in m.modules():
        if isinstance(attn, PSTAttention):
            attn.form = "plain"
    return m


def profile_p3_module(scale: str = "n", imgsz: int = 640, topk: int = 0, runs: int = 5, rows: int = 12) -> str:
    """``torch.profiler`` tables (self CPU time by op and input shape) of the P3 PST module, fast path vs naive.

    The evidence behind the module figures: where the fast path spends its time (fused attention vs convolutions)
    and what the naive formulation adds (``N x M`` matrix products and softmax).

    Args:
        scale (str): YOLO11 scale whose P3 PST layer is profiled.
        imgsz (int): Input size of the detector the layer's inputs are captured from.
        topk (int): Fine-attention top-k.
        runs (int): Profiled calls (after one warm-up call).
        rows (int): Rows per table.

    Returns:
        (str): Two tables, fast path then naive formulation, under headings.
    """
    from torch.profiler import ProfilerActivity, profile

    fused = _inference_copy(_build(f"yolo11{scale}-pst.yaml"), topk)
    name, (X, U) = _capture_p3(fused, imgsz)
    fast = dict(fused.named_modules())[name]
    out = []
    for label, module in (("fast path", fast), ("naive formulation", _naive(fast))):
        with torch.inference_mode():
            module([X, U])
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(runs):
                    module([X, U])
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=45, max_shapes_column_width=70
        )
        shape = f"X {tuple(X.shape)}, U {tuple(U.shape)}"
        out.append(f"#### yolo11{scale}-pst P3 PST layer ({shape}), pst_topk={topk}, {label}, {runs} calls\n\n{table}")
    return "\n".join(out)


def _bench_module(s: BenchmarkSettings, scale: str, result: BenchmarkResult) -> None:
    model = _build(f"yolo11{scale}-pst.yaml")
    fused = _inference_copy(model, 0)
    name, (X, U) = _capture_p3(fused, s.imgsz)
    shape = f"{tuple(X.shape[1:])} / {tuple(U.shape[1:])}"
    layer = dict(fused.named_modules())[name]
    for k in (0, FINE_TOPK):
        fast = copy.deepcopy(layer)
        set_topk(fast, k, verbose=False)
        naive = _naive(fast)
        with torch.inference_mode():
            fns = {"fast": lambda m=fast: m([X, U]), "naive": lambda m=naive: m([X, U])}
            times = time_interleaved(fns, s.runs, s.warmup, clock=s.timer())
            ref = naive([X, U])
            diff = ((fast([X, U]) - ref).abs().max() / ref.abs().max()).item()
            mem = {key: peak_memory(lambda m=m: m([X, U])) for key, m in (("fast", fast), ("naive", naive))}
        result.module.append(_module_row(scale, f"eval k={k}", shape, times, mem, diff))

    # Training: the unfused layer (BatchNorm in train mode), forward + backward of the summed output.
    fast = dict(model.named_modules())[name].train()
    naive = _naive(fast)
    Xg, Ug = X.clone().requires_grad_(True), U.clone()

    def step(m):
        m.zero_grad(set_to_none=True)
        Xg.grad = None
        m([Xg, Ug]).sum().backward()

    times = time_interleaved(
        {"fast": lambda: step(fast), "naive": lambda: step(naive)}, s.train_runs, 1, clock=s.timer()
    )
    mem = {"fast": peak_memory(lambda: step(fast)), "naive": peak_memory(lambda: step(naive))}
    step(fast)
    grad_fast = Xg.grad.clone()
    step(naive)
    diff = ((grad_fast - Xg.grad).abs().max() / Xg.grad.abs().max()).item()  # dL/dX, the gradient passed down
    result.module.append(_module_row(scale, "train k=0", shape, times, mem, diff))


def _module_row(scale, mode, shape, times, mem, diff) -> dict:
    return dict(
        scale=scale,
        mode=mode,
        shape=shape,
        fast_ms=_median(times["fast"]),
        naive_ms=_median(times["naive"]),
        speedup=_ratio(times["naive"], times["fast"]),
        fast_mb=mem["fast"] / 2**20,
        naive_mb=mem["naive"] / 2**20,
        rel_diff=diff,
    )


def _bench_train(s: BenchmarkSettings, scale: str, result: BenchmarkResult) -> None:
    from ultralytics.cfg import get_cfg

    batch = _synthetic_batch(s.train_batch, s.imgsz)
    models = {
        f"yolo11{scale}": _build(f"yolo11{scale}.yaml"),
        f"yolo11{scale}-pst k=0": _build(f"yolo11{scale}-pst.yaml"),
    }
    rows = {}
    for name, model in models.items():
        model.args = get_cfg()  # loss gains (box, cls, dfl) as a trainer would set them
        set_topk(model, 0, verbose=False)  # fine attention is an inference-time option
        model.train()
        rows[name] = dict(scale=scale, model=name, batch=s.train_batch, gflops=_gflops(model, s.imgsz))
    steps = {name: _train_step(model, batch) for name, model in models.items()}
    times = time_interleaved(steps, s.train_runs, 1, clock=s.timer())
    base = f"yolo11{scale}"
    for name, row in rows.items():
        row["peak_mb"] = peak_memory(steps[name]) / 2**20
    for name, row in rows.items():
        row.update(
            flops_ratio=row["gflops"] / rows[base]["gflops"],
            step_ms=_median(times[name]),
            time_ratio=_ratio(times[name], times[base]),
            step_runs_ms=_runs(times[name]),
            mem_ratio=row["peak_mb"] / rows[base]["peak_mb"],
        )
    result.train += list(rows.values())


def _targets(result: BenchmarkResult) -> list[dict]:
    """The performance targets, each with its measured figure and limit."""
    out = []

    def add(target, measured, limit, met):
        out.append(dict(target=target, measured=round(measured, 3), limit=round(limit, 3), met=bool(met)))

    for r in result.module:
        if r["mode"].startswith("eval"):
            add(
                f"PST module at P3 ({r['scale']}, {r['mode']}): speedup over naive",
                r["speedup"],
                3.0,
                r["speedup"] >= 3,
            )
    rows = {(r["scale"], r["topk"]): r for r in result.models}
    for (scale, k), r in rows.items():
        if k != FINE_TOPK:
            continue
        for key, label in (("ort", "ONNX Runtime CPU"), ("eager", "PyTorch CPU"), ("cuda", "PyTorch CUDA")):
            if r.get(f"{key}_ratio") is None:
                continue
            limit = r["flops_ratio"] + 0.05
            add(
                f"yolo11{scale}-pst k={k} / yolo11{scale} latency, {label} (<= FLOP ratio + 0.05)",
                r[f"{key}_ratio"],
                limit,
                r[f"{key}_ratio"] <= limit,
            )
            coarse = rows[(scale, 0)]
            fine_over = r[f"{key}_ms"] / coarse[f"{key}_ms"]
            add(
                f"yolo11{scale}-pst k={k} / k=0 latency, {label} (fine attention <= +5%)",
                fine_over,
                1.05,
                fine_over <= 1.05,
            )
    for r in result.train:
        if "pst" in r["model"]:
            add(
                f"train step {r['model']} / yolo11{r['scale']}, batch {r['batch']}: peak memory",
                r["mem_ratio"],
                1.15,
                r["mem_ratio"] <= 1.15,
            )
            limit = r["flops_ratio"] + 0.10
            add(
                f"train step {r['model']} / yolo11{r['scale']}, batch {r['batch']}: time (<= FLOP ratio + 0.10)",
                r["time_ratio"],
                limit,
                r["time_ratio"] <= limit,
            )
    return out


def run_benchmark(settings: BenchmarkSettings | None = None, log: Callable[[str], None] = print) -> BenchmarkResult:
    """Run every enabled measurement of ``settings`` on this machine (see the module docstring).

    Args:
        settings (BenchmarkSettings | None): What to measure; defaults to the full benchmark (n/s/m at 640).
        log (Callable[[str], None]): Progress messages.

    Returns:
        (BenchmarkResult): The tables, with the performance targets evaluated.
    """
    import onnxruntime
    import ultralytics

    s = settings or BenchmarkSettings()
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    result = BenchmarkResult()
    result.env = dict(
        machine=_machine(),
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        threads=torch.get_num_threads(),
        load_start=_load(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        ultralytics=ultralytics.__version__,
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available (no GPU on this machine)",
        clock="wall-clock time" if s.clock == "wall" else "process CPU time (1 thread)",
        imgsz=s.imgsz,
        runs=s.runs,
        warmup=s.warmup,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="pst_benchmark_") as tmp:
            for scale in s.scales:
                log(f"[benchmark] yolo11{scale} vs yolo11{scale}-pst: FLOPs, eager{', ONNX Runtime' * s.onnx} ...")
                _bench_models(s, scale, result, Path(tmp))
                if s.module:
                    log(f"[benchmark] PST module at P3 ({scale}): fast vs naive ...")
                    _bench_module(s, scale, result)
        if s.train:
            for scale in s.train_scales:
                log(f"[benchmark] training step yolo11{scale} vs yolo11{scale}-pst, batch {s.train_batch} ...")
                _bench_train(s, scale, result)
    finally:
        torch.set_num_threads(threads)
    result.env["load_end"] = _load()
    result.targets = _targets(result)
    return result
