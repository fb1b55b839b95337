#!/usr/bin/env python
"""Benchmark YOLO11 vs YOLO11-PST (pst_topk 0 and 8) in one run: params, GFLOPs, latency, training step, PST module.

A thin CLI over ``pst_research/bench.py`` next to it (see its docstring for what is measured and how; the attention
FLOP count comes from ``pst_yolo.benchmark``). Prints the markdown tables and writes ``benchmark.md``,
``benchmark.csv`` and ``benchmark.png`` to ``--out``. Runs from any working directory.

Examples:
    python scripts/benchmark.py                                  # n/s/m at 640, everything (many minutes on 2 cores)
    python scripts/benchmark.py --scales n,s --skip-train --runs 30
    python scripts/benchmark.py --quick                          # smoke run: n only, imgsz 64, 2 runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from pst_research.bench import FINE_TOPK, BenchmarkSettings, profile_p3_module, run_benchmark

import pst_yolo  # noqa: F401  (registers PST with Ultralytics)


def _scales(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scales", type=_scales, default=("n", "s", "m"), help="comma-separated YOLO11 scales (default n,s,m)"
    )
    p.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of 32 (default 640)")
    p.add_argument("--runs", type=int, default=20, help="timed interleaved rounds for inference (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads for PyTorch and ONNX Runtime (default: PyTorch's)"
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: latency (default); cpu: process CPU time, needs --threads 1 (robust on a shared machine)",
    )
    p.add_argument("--skip-onnx", action="store_true", help="skip ONNX export and ONNX Runtime latency")
    p.add_argument("--skip-cuda", action="store_true", help="skip PyTorch CUDA latency even if a GPU is present")
    p.add_argument("--skip-module", action="store_true", help="skip the PST-module-at-P3 fast vs naive benchmark")
    p.add_argument("--skip-train", action="store_true", help="skip the training-step benchmark")
    p.add_argument("--train-scales", type=_scales, default=("s",), help="scales for the training step (default s)")
    p.add_argument("--train-batch", type=int, default=8, help="images per training step (default 8)")
    p.add_argument("--train-runs", type=int, default=5, help="timed training steps per model (default 5)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of benchmarking, print torch.profiler tables of the P3 PST module (fast vs naive) per scale",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --scales n --imgsz 64 --runs 2 --warmup 1, training n at batch 2 with 2 runs",
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/pst_benchmark"), help="output folder (default runs/pst_benchmark)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.scales, args.imgsz, args.runs, args.warmup = ("n",), 64, 2, 1
        args.train_scales, args.train_batch, args.train_runs = ("n",), 2, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = BenchmarkSettings(
            scales=args.scales,
            imgsz=args.imgsz,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            clock=args.clock,
            onnx=not args.skip_onnx,
            cuda=not args.skip_cuda,
            module=not args.skip_module,
            train=not args.skip_train,
            train_scales=args.train_scales,
            train_batch=args.train_batch,
            train_runs=args.train_runs,
        )
    except ValueError as e:
        print(f"benchmark.py: {e}", file=sys.stderr)
        return 2
    if args.profile:
        if args.threads:
            torch.set_num_threads(args.threads)
        for scale in settings.scales:
            for k in (0, FINE_TOPK):
                print(profile_p3_module(scale, settings.imgsz, k), flush=True)
        return 0
    result = run_benchmark(settings, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    table = result.to_markdown()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.md").write_text(table + "\n")
    result.write_csv(args.out / "benchmark.csv")
    result.plot(args.out / "benchmark.png")
    print(f"\nWrote {args.out / 'benchmark.md'}, benchmark.csv, benchmark.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
