"""PST against its stock baseline on every task's offline set, one seed (``scripts/task_study.py``).

Each :data:`PAIRS` entry is a stock config and its PST counterpart for one task, trained under one shared
:class:`pst_research.study.Budget` on that task's offline set (``shapes`` for detection,
``shapes-seg``/``-pose``/``-obb`` for segmentation, pose and oriented boxes, ``shapes-cls`` for classification). Each
finished model is validated on its final weights (``last.pt``) with Ultralytics' own metrics for its task and written
as one CSV row at once; a finished row is never redone, so the run can be interrupted and resumed with the same
command. :func:`write_task_report` writes the markdown table (PST vs stock, the difference, params/GFLOPs and training
time) from the CSV alone.

This is the short per-task comparison (one seed, a small budget); the multi-seed detection study with its plateau
check is :mod:`pst_research.study`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ultralytics.utils import LOGGER

from .study import Budget, StudyLock, append_csv_row, environment, read_csv_rows, train_or_resume

__all__ = ("METRICS", "PAIRS", "read_task_rows", "run_task_study", "write_task_report")

# name: (task, dataset, stock config, PST config)
PAIRS = {
    "yolo11-seg": ("segment", "shapes-seg", "yolo11n-seg.yaml", "yolo11n-seg-pst.yaml"),
    "yolo11-pose": ("pose", "shapes-pose", "yolo11n-pose.yaml", "yolo11n-pose-pst.yaml"),
    "yolo11-obb": ("obb", "shapes-obb", "yolo11n-obb.yaml", "yolo11n-obb-pst.yaml"),
    "yolo11-cls": ("classify", "shapes-cls", "yolo11n-cls.yaml", "yolo11n-cls-pst.yaml"),
    "yolo26": ("detect", "shapes", "yolo26n.yaml", "yolo26n-pst.yaml"),
    "yolo26-seg": ("segment", "shapes-seg", "yolo26n-seg.yaml", "yolo26n-seg-pst.yaml"),
    "yolo26-pose": ("pose", "shapes-pose", "yolo26n-pose.yaml", "yolo26n-pose-pst.yaml"),
    "yolo26-obb": ("obb", "shapes-obb", "yolo26n-obb.yaml", "yolo26n-obb-pst.yaml"),
    "yolo26-cls": ("classify", "shapes-cls", "yolo26n-cls.yaml", "yolo26n-cls-pst.yaml"),
}

# Ultralytics' results_dict keys reported per task: (column label, key); the first is the headline metric
METRICS = {
    "detect": (("box mAP50-95", "metrics/mAP50-95(B)"), ("box mAP50", "metrics/mAP50(B)")),
    "segment": (("mask mAP50-95", "metrics/mAP50-95(M)"), ("box mAP50-95", "metrics/mAP50-95(B)")),
    "pose": (("pose mAP50-95", "metrics/mAP50-95(P)"), ("box mAP50-95", "metrics/mAP50-95(B)")),
    "obb": (("obb mAP50-95", "metrics/mAP50-95(B)"), ("obb mAP50", "metrics/mAP50(B)")),
    "classify": (("top-1", "metrics/accuracy_top1"), ("top-5", "metrics/accuracy_top5")),
}
COLUMNS = ("budget", "pair", "task", "data", "model", "pst", "seed", "metric1", "metric2", "params", "gflops",
           "train_s", "train_cpu_s", "epochs", "commit", "torch", "ultralytics", "machine", "finished")


def read_task_rows(path: str | Path) -> list[dict]:
    """The rows of a task-study CSV (empty if it does not exist), numbers as floats."""
    return read_csv_rows(path, ("metric1", "metric2", "params", "gflops", "train_s", "train_cpu_s"))


def _train_and_score(task: str, data: str, cfg: str, seed: int, budget: Budget, out: Path) -> dict:
    """Train ``cfg`` (or resume, or reuse a finished run), validate its last.pt, return the row's measurements.

    ``train_s`` / ``train_cpu_s`` add up every session of a resumed training; where one session was not timed (see
    :func:`train_or_resume`) ``train_s`` is a lower bound and ``train_cpu_s`` is nan."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import torch_safe_load
    from ultralytics.utils.torch_utils import get_flops

    run = out / budget.key().replace(" ", "_") / Path(cfg).stem / f"seed{seed}"
    last, facts = train_or_resume(run, cfg, {**budget.train_args(), "data": data, "seed": seed}, task=task)
    model = YOLO(last)
    metrics = model.val(data=data, imgsz=budget.imgsz, batch=32, workers=budget.workers, plots=False, verbose=False,
                        project=str(out / "val"), name=f"{Path(cfg).stem}_seed{seed}", exist_ok=True)
    values = [float(metrics.results_dict[key]) for _, key in METRICS[task]]
    module = model.model
    return dict(metric1=values[0], metric2=values[1], params=sum(p.numel() for p in module.parameters()),
                gflops=get_flops(module, budget.imgsz), epochs=torch_safe_load(str(last))[0].get("train_args", {})
                .get("epochs", budget.epochs), **facts)


def run_task_study(pairs: list[str], seed: int, budget: Budget, csv_path: str | Path, out: str | Path) -> int:
    """Train and score the stock and PST model of every pair not yet in the CSV; one row per model, appended at once.

    Args:
        pairs (list[str]): Names from :data:`PAIRS`.
        seed (int): Training seed (the same for every model).
        budget (Budget): The shared budget (its ``data`` is replaced by each pair's dataset).
        csv_path (str | Path): The CSV (created, or appended to).
        out (str | Path): Work directory for runs and weights.

    Returns:
        The number of rows added.
    """
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        raise ValueError(f"unknown pair(s) {unknown}; valid: {', '.join(PAIRS)}")
    csv_path, out = Path(csv_path), Path(out).resolve()  # relative: against the working directory
    env, added = environment(), 0
    with StudyLock(out):
        for name in pairs:
            task, data, stock, pst = PAIRS[name]
            for cfg in (stock, pst):
                key = (budget.key(), name, cfg, str(seed))
                if any((r["budget"], r["pair"], r["model"], r["seed"]) == key for r in read_task_rows(csv_path)):
                    continue
                LOGGER.info(f"task study: {cfg} on {data} ({budget.key()})")
                row = _train_and_score(task, data, cfg, seed, budget, out)
                row.update(env, budget=budget.key(), pair=name, task=task, data=data, model=cfg, pst=int(cfg == pst),
                           seed=seed, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
                append_csv_row(csv_path, row, COLUMNS)
                added += 1
    return added


def _command(budget: str, pairs: list[str]) -> str:
    """The scripts/task_study.py command line that trains ``pairs`` under the budget named ``budget`` (its key).

    Examples:
        >>> _command("tasks e30 i128 b16 f1.0", ["yolo11-seg"])
        'python scripts/task_study.py --pairs yolo11-seg --epochs 30 --imgsz 128 --batch 16'
        >>> _command("tasks e100 i64 b16 f0.5 lr0=0.01", ["yolo11-cls"])
        'python scripts/task_study.py --pairs yolo11-cls --epochs 100 --imgsz 64 --batch 16 --fraction 0.5 lr0=0.01'
    """
    _, e, i, b, f, *extra = budget.split(" ")
    cmd = f"python scripts/task_study.py --pairs {' '.join(pairs)} --epochs {e[1:]} --imgsz {i[1:]} --batch {b[1:]}"
    if float(f[1:]) != 1.0:
        cmd += f" --fraction {f[1:]}"
    return " ".join([cmd, *extra])


def write_task_report(csv_path: str | Path, md_path: str | Path, preamble: str = "") -> Path:
    """Write the per-task table (PST vs stock and their difference) of every budget in the CSV to ``md_path``."""
    rows = read_task_rows(csv_path)
    lines = ["# PST vs stock on every task (offline sets, one seed)", "", preamble, ""] if preamble else [
        "# PST vs stock on every task (offline sets, one seed)", ""]
    for budget in dict.fromkeys(r["budget"] for r in rows):
        names = [n for n in PAIRS if any(r["budget"] == budget and r["pair"] == n for r in rows)]
        lines += [f"## Budget `{budget}`", "", f"Reproduce: `{_command(budget, names)}`", "",
                  "| task | data | stock | PST | metric | stock | PST | PST - stock | second metric | stock | PST "
                  "| params stock / PST | GFLOPs stock / PST | train min stock / PST |",
                  "|---|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for name, (task, data, stock, pst) in PAIRS.items():
            got = {int(r["pst"]): r for r in rows if r["budget"] == budget and r["pair"] == name}
            if not got:
                continue
            s, p = got.get(0), got.get(1)
            (m1, _), (m2, _) = METRICS[task]

            def v(r, c, fmt="{:.3f}"):
                return fmt.format(r[c]) if r is not None and not math.isnan(r[c]) else "–"

            def minutes(r):
                return "–" if r is None or math.isnan(r["train_s"]) else f"{r['train_s'] / 60:.1f}"

            diff = f"{p['metric1'] - s['metric1']:+.3f}" if s and p else "–"
            lines.append(
                f"| {task} | {data} | `{stock}` | `{pst}` | {m1} | {v(s, 'metric1')} | {v(p, 'metric1')} | {diff} "
                f"| {m2} | {v(s, 'metric2')} | {v(p, 'metric2')} "
                f"| {v(s, 'params', '{:,.0f}')} / {v(p, 'params', '{:,.0f}')} "
                f"| {v(s, 'gflops', '{:.2f}')} / {v(p, 'gflops', '{:.2f}')} "
                f"| {minutes(s)} / {minutes(p)} |"
            )
        env = [r for r in rows if r["budget"] == budget][-1]
        lines += ["", f"Machine: {env['machine']}; torch {env['torch']}, ultralytics {env['ultralytics']}, "
                      f"commit {env['commit']}.", ""]
    md_path = Path(md_path)
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md_path
