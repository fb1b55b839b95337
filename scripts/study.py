#!/usr/bin/env python
"""Accuracy study of PST against YOLO11/YOLO12: train a matrix of recipes x seeds, score every pst_topk, report.

Resumable and safe in the background: every finished (recipe, seed, pst_topk) is a CSV row at once and is never
redone; run the same command again after an interruption (an interrupted training resumes from its last.pt). Runners
started side by side on the same --out share the work: each (recipe, seed) is locked while it trains, and a runner
skips a cell another live runner holds. The report (markdown, plot against K, learning curves) is generated
from the CSV; --report-only regenerates it without training. The library is scripts/pst_research/study.py.

Examples:
    python scripts/study.py                                        # the full study (see docs/accuracy.md for cost)
    nohup python scripts/study.py > study.log 2>&1 &               # the same, in the background; rerun to resume
    nohup python scripts/study.py > study2.log 2>&1 &              # a second runner: takes the cells the first is not
                                                                   # on (one core each)
    python scripts/study.py --report-only                          # regenerate docs/accuracy.md from the CSV
    python scripts/study.py --seeds 0 --epochs 1 --imgsz 64 --fraction 0.03 --csv runs/smoke/accuracy.csv \\
        --report runs/smoke/accuracy.md --out runs/smoke --banner "Smoke run of the pipeline, not results"
    python scripts/study.py --recipes yolo11n pst-anyk --seeds 0 1 2 close_mosaic=5   # key=value: more train args
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOW_TO_RUN = """
## How to run the study

```bash
python scripts/study.py --recipes yolo11n --seeds 0   # pilot: the baseline's learning curve (its row is reused)
python scripts/study.py                               # the full matrix: all recipes, seeds 0 1 2
nohup python scripts/study.py > study.log 2>&1 &      # the same in the background; the same command resumes it
python scripts/study.py --report-only                 # regenerate this page and its plots from docs/accuracy.csv
```

Budget (the defaults): `--data shapes --epochs 100 --imgsz 128 --batch 16 --fraction 1.0 cache=ram` (all 512 train
images, `nbs` = batch), seeds 0 1 2, every recipe ({recipes}). PST models are validated at `pst_topk` 0, 4, 8, 16
(yolo12n-pst at 0 and 8), stock models once. Each finished (recipe, seed, pst_topk) is appended to
`docs/accuracy.csv` at once and never redone; weights and Ultralytics' run folders go to `runs/study` (`--out`); an
interrupted training resumes from its `last.pt`. `--recipes` runs part of the matrix (same budget: the rows add up),
e.g. the decisive cells first: `--recipes yolo11n pst-coarse pst-anyk`. Each row also holds the same boxes scored
class-agnostically (`agnostic_AP` ...: finding the objects, whatever their class); rows scored before the runner
recorded it have those columns empty (a CSV without them gets them, empty, when the next row is appended). Each
class's AP of a row goes to the `_classes.csv` file beside the CSV (`accuracy_classes.csv` for `accuracy.csv`); a
runner first scores per class the rows of its budget that lack them, from their weights in `--out` (where those still
give the row's AP).

Optimizer: AdamW at lr0 0.001 (momentum 0.9, bias warmup from 0) at every budget, which is what Ultralytics'
`optimizer=auto` picks for these runs (up to 10000 iterations; the 100- and 200-epoch budgets have 3200 and 6400).
Past that `optimizer=auto` would switch to MuSGD at lr0 0.01 (from 313 epochs of the 512 images at batch 16), so a
longer budget would change the optimizer too, and MuSGD took 9 s per batch on this CPU against AdamW's 0.9 s; the
runner therefore fixes auto's AdamW (`pst_research.study.study_optimizer`; the same weights as `optimizer=auto` where
auto picks AdamW, tested). An `optimizer=...` argument overrides it and becomes part of the budget.

**Plateau criterion.** The study only means something if the baseline has converged: yolo11n's val mAP50-95
(Ultralytics, EMA, every epoch) averaged over the last fifth of the epochs must exceed the average over the fifth
before it by less than 0.005 (half a point). The runner checks it for every finished run (the learning-curve table,
from the curves CSV beside the study CSV: `accuracy_curves.csv`) and plots
the curves ({curves}). How the budget was chosen: a first pilot at imgsz 160 had not converged after 80 epochs
(val mAP50-95 0.315 at epoch 40, 0.407 at 80, the last 16 epochs +0.034 over the 16 before: `accuracy_pilot_curves.png`)
and would have cost ~27 h for the matrix; imgsz 128 with 100 epochs costs ~10 s per yolo11n epoch on an idle 2-core
machine (about 17 min per training; ~25 min while shared with other jobs). **The 100-epoch budget is not converged**:
its runs gain ~0.02 over their last fifth, and the same seed trained for 200 epochs (`--epochs 200`, a budget of its
own) ends 0.078 AP higher (section "Would more epochs change the result?"). Ultralytics decays the learning rate
linearly to the last epoch of whatever budget is set, so a longer budget is a different run, not a continuation; its
curve flattens only after ~170 epochs (val mAP50-95 0.425 at epoch 150, 0.436 at 170, 0.434 at 200) and still fails
the criterion. The matrix at 100 epochs therefore measures how much each recipe learns in 100 epochs from scratch, not
where it ends. At `--epochs 200` (yolo11n and pst-anyk, seeds 0 1 2) the curves flatten but still gain ~0.018 over
their last fifth (pst-coarse too, 3 seeds). At `--epochs 400` (yolo11n and pst-anyk, seeds 0 1 2; ~11-14 s per
epoch, 75-92 min per training with two runners) val mAP50-95 is flat over the last 80 epochs (yolo11n seed 0: 0.475
at epoch 320, 0.479 at 380, 0.478 at 400) but the criterion's window means still differ by 0.010-0.015, because the
fifth before the last still climbs (0.453 at epoch 240). Because the schedule ends with each budget, the test that
decides is the **doubling check** (the report's "Would more epochs change the result?" section): a budget is converged
when the same seed trained for twice the epochs gains less than 0.01 AP. yolo11n seed 0 gains +0.078, +0.042 and
+0.048 from 100 to 200, 400 and 800 epochs (0.362, 0.440, 0.482, 0.530; seed 1 +0.072, +0.056, +0.046; seed 2
+0.062, +0.061, +0.037), so no budget up to 400 epochs is converged; the 800-epoch runs' own window gains are +0.005 /
+0.006 / +0.004 (seeds 0 / 1 / 2; seed 0: val mAP50-95 0.522 at epoch 600, 0.527 at 800), close to the
criterion (seed 2 meets it).

**Cost.** yolo11n: ~17-25 min per training at this budget; a yolo11n-pst step is ~1.25x (docs/benchmark.md), fine
attention steps more (measured per run in the CSV: `train_s`, `train_cpu_s`). Per seed the matrix is ~9.5
yolo11n-trainings, ~3 h on an idle 2-core machine, ~9 h for 3 seeds; the decisive cells (yolo11n, pst-coarse,
pst-anyk) ~1.2 h per seed. On the CPU Ultralytics trains with cpu_count - 1 torch threads (one on a 2-core machine), so
two runners side by side (start the same command twice) finish in about half the wall time.
"""


def _stop_note(entry: dict) -> str:
    """How an invocation of the log ended, for the report's table: ``" (stopped by signal 15; unfinished in its --out
    then: yolo11n seed 1: epoch 143/400)"``. It names the commit the checkout had moved to while the runner ran (the
    entry's ``commit`` is the one it started with, the code it trained with) and the trainings of its budget not
    finished when it exited (its own, or a runner's beside it, or cells outside its --recipes / --seeds); empty where
    none of these happened. The report itself reads finished runs only."""
    notes = [entry["stopped"]] if entry.get("stopped") else []
    if entry.get("commit_at_exit"):
        notes.append(f"started on {entry['commit']}, the checkout was at {entry['commit_at_exit']} when it ended")
    if entry.get("unfinished"):
        notes.append("unfinished in its --out then: " + ", ".join(entry["unfinished"]))
    return f" ({'; '.join(notes)})" if notes else ""


def _stop(signum, frame):
    """SIGTERM handler: stop like Ctrl-C (finished rows are kept; an interrupted training resumes next time)."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    from pst_research.study import RECIPES, Budget

    d = Budget()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="RECIPE",
                   help=f"recipes to run (default: all): {', '.join(RECIPES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", default=d.data, help="dataset name (datasets.yaml) or data YAML")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--imgsz", type=int, default=d.imgsz)
    p.add_argument("--batch", type=int, default=d.batch, help="batch size (nbs is set to the same)")
    p.add_argument("--fraction", type=float, default=d.fraction, help="fraction of the train split")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--topks", nargs="+", type=int, default=None, help="pst_topk values (default: each recipe's)")
    p.add_argument("--csv", default=str(ROOT / "docs" / "accuracy.csv"), help="the study CSV (appended to)")
    p.add_argument("--report", default=str(ROOT / "docs" / "accuracy.md"), help="markdown report (plots beside it)")
    p.add_argument("--out", default=str(ROOT / "runs" / "study"), help="work directory: runs, weights, val outputs")
    p.add_argument("--report-only", action="store_true", help="only regenerate the report from the CSV")
    p.add_argument("--banner", default="", help="a note at the top of the report (e.g. 'smoke run')")
    from pst_yolo.utils import parse_key_values

    args, rest = p.parse_known_args(argv)
    extra = parse_key_values(p, rest)
    return args, extra


def how_to_run(report: Path, budget_key: str | None = None) -> str:
    """The static 'how to run' section of the report (with a line saying so where the report's budget is not the
    default study's, e.g. another dataset)."""
    from pst_research.study import RECIPES, Budget

    text = HOW_TO_RUN.format(recipes=", ".join(RECIPES), curves=f"`{report.stem}_curves.png`")
    if budget_key and budget_key != Budget().key():
        head, rest = text.strip().split("\n", 1)
        text = (f"{head}\n\nThis report's budget is `{budget_key}`, not the default study's (`{Budget().key()}`): its "
                f"own commands are the invocations above; what follows is the default study, which the cost and "
                f"convergence figures below describe.\n{rest}")
    return text


def main(argv=None) -> int:
    args, extra = parse_args(argv)
    from pst_research.study import (
        DEFAULT_EXTRA,
        Budget,
        checkout_commit,
        environment,
        read_rows,
        report_budget,
        run_study,
        shareable_command,
        unfinished_runs,
        write_report,
    )

    csv_path, report = Path(args.csv), Path(args.report)
    log = csv_path.with_suffix(".log.jsonl")  # one line per invocation: command, commit, versions, wall time
    budget = Budget(args.data, args.epochs, args.imgsz, args.batch, args.fraction, args.workers,
                    {**DEFAULT_EXTRA, **extra})
    if not args.report_only:
        t0, command = time.time(), shlex.join([Path(sys.argv[0]).name if argv is None else "study.py",
                                                *(sys.argv[1:] if argv is None else argv)])
        stopped, started = "", environment()  # the code this runner trains with is the code it started with
        signal.signal(signal.SIGTERM, _stop)  # `kill` (as well as Ctrl-C) still logs this invocation
        try:
            added = run_study(args.recipes, args.seeds, budget, csv_path, args.out, tuple(args.topks or ()) or None)
        except KeyboardInterrupt as e:
            stopped, added = str(e) or "interrupted (Ctrl-C)", getattr(e, "rows_added", 0)
        left = unfinished_runs(args.out, budget)  # trainings the next invocation resumes (this runner's or another's)
        entry = {"command": f"python scripts/{shareable_command(command, ROOT)}", "budget": budget.key(),
                 "rows_added": added, "wall_s": round(time.time() - t0, 1), "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 **({"stopped": stopped} if stopped else {}), **({"unfinished": left} if left else {}), **started}
        if (at_exit := checkout_commit()) != started["commit"]:  # a commit made while it ran: not its code
            entry["commit_at_exit"] = at_exit
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        print(f"study: {added} rows added to {csv_path} in {entry['wall_s']:.0f} s{'; ' + stopped if stopped else ''}")
        if stopped and not read_rows(csv_path):
            return 130  # nothing to report yet
    commands = []
    if log.is_file():
        commands = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    runs_md = "\n".join(
        ["## Invocations", "", "| command | rows added | wall time | commit | ended |", "|---|---:|---:|---|---|"]
        + [f"| `{c['command']}`{_stop_note(c)} | {c['rows_added']} | {c['wall_s'] / 60:.1f} min | {c['commit']} | "
           f"{c['ended']} |" for c in commands if "command" in c]
    )
    # the report is about the budget of most rows (of equals, the longest); other budgets are compared in its sections
    rows = read_rows(csv_path)
    write_report(csv_path, report, out=args.out, banner=args.banner,
                 how_to_run=runs_md + "\n" + how_to_run(report, report_budget(rows) if rows else None))
    print(f"study: report {report}")
    return 130 if not args.report_only and stopped else 0


if __name__ == "__main__":
    sys.exit(main())
