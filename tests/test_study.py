"""The accuracy-study library: resumable CSV, paired statistics, plateau check, report; the authors' init option."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from _cli import load_script  # tests/_cli.py
from pst_research import study

from pst_yolo import PST, PSTAttention
from pst_yolo.coco import COCO_METRICS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def research_env(cli_env) -> dict:
    """cli_env for a ``python -c`` that imports pst_research, which is not installed (the scripts themselves find it
    beside them)."""
    return dict(cli_env, PYTHONPATH=str(ROOT / "scripts"))


def fake_row(recipe, seed, k, ap, aps=0.1, budget="shapes e1 i64 b8 f0.1"):
    return {"budget": budget, "recipe": recipe, "seed": seed, "pst_topk": "" if k is None else k, "model": "m.yaml",
            **dict.fromkeys(COCO_METRICS, 0.2), "AP": ap, "APs": aps, "train_s": 10.0, "train_cpu_s": 20.0,
            "eval_s": 1.0, "commit": "abc", "torch": "t", "ultralytics": "u", "machine": "here"}


def test_rows_append_and_read_back(tmp_path):
    path = tmp_path / "s.csv"
    study._append_row(path, fake_row("pst-anyk", 0, 8, 0.5))
    study._append_row(path, fake_row("yolo11n", 0, None, 0.4))
    rows = study.read_rows(path)
    assert [study._key(r) for r in rows] == [("shapes e1 i64 b8 f0.1", "pst-anyk", "0", "8"),
                                            ("shapes e1 i64 b8 f0.1", "yolo11n", "0", "")]
    assert rows[0]["AP"] == 0.5 and math.isnan(rows[1]["ms_per_image"])
    assert path.read_text().count("budget,recipe") == 1  # one header


def test_a_csv_without_the_newer_columns_is_migrated_keeping_every_row(tmp_path):
    """A study CSV written before the class-agnostic columns existed gets them (empty) in place, every old value kept
    as written; a row an older runner appends afterwards (without them) still lines up; a header with columns this
    version does not know is refused, the file untouched."""
    import csv
    import threading

    from pst_yolo.coco import AGNOSTIC_METRICS

    old_columns = study.COLUMNS[: study.COLUMNS.index(AGNOSTIC_METRICS[0])]  # the newer columns come last
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore")
        w.writeheader()
        w.writerows([fake_row("yolo11n", 0, None, 0.4), fake_row("pst-anyk", 0, 8, 0.375)])
    before = path.read_text().splitlines()
    study._append_row(path, {**fake_row("pst-anyk", 1, 8, 0.5), **dict.fromkeys(AGNOSTIC_METRICS, 0.6)})
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(study.COLUMNS) and len(lines) == 4
    assert lines[1:3] == [line + "," * (len(study.COLUMNS) - len(old_columns)) for line in before[1:]]  # as written
    rows = study.read_rows(path)
    assert [r["AP"] for r in rows] == [0.4, 0.375, 0.5]
    assert math.isnan(rows[0]["agnostic_AP"]) and rows[2]["agnostic_AP"] == 0.6
    with open(path, "a", newline="") as f:  # an older runner, still alive, appends without the new columns
        csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore").writerow(fake_row("yolo11n", 1, None, 0.45))
    rows = study.read_rows(path)
    assert rows[3]["AP"] == 0.45 and rows[3]["machine"] == "here" and math.isnan(rows[3]["agnostic_AP"])

    # a runner that opened the file before another one migrated it, and waited for the lock, appends to the new file
    path2 = tmp_path / "race.csv"
    path2.write_text(",".join(old_columns) + "\n")
    with open(path2, "a+", newline="") as held:
        study._try_lock(held.fileno(), block=True)
        waiter = threading.Thread(target=study._append_row, args=(path2, fake_row("yolo11n", 2, None, 0.47)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()  # blocked on the lock of the file it opened
        study._migrate_csv(path2, held, study.COLUMNS)
    waiter.join(10)
    assert [r["AP"] for r in study.read_rows(path2)] == [0.47]

    newer = tmp_path / "newer.csv"  # a newer version's file (one more column at the end): the row, that column empty
    newer.write_text(",".join((*study.COLUMNS, "future")) + "\n")
    study._append_row(newer, fake_row("yolo11n", 0, None, 0.4))
    assert newer.read_text().splitlines()[0] == ",".join((*study.COLUMNS, "future"))
    (got,) = study.read_rows(newer)
    assert got["AP"] == 0.4 and got["machine"] == "here" and got["future"] == ""

    bad = tmp_path / "bad.csv"
    bad.write_text("budget,recipe,surprise\nx,y,z\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['surprise'\].*another version"):
        study._append_row(bad, fake_row("yolo11n", 0, None, 0.4))
    assert bad.read_text() == "budget,recipe,surprise\nx,y,z\n"


def test_report_of_class_agnostic_ap_pairs_it_with_the_baseline(tmp_path):
    """Rows scored class-agnostically get a section (mean, its gap to the AP, paired Δ to the baseline); a CSV without
    them has none."""
    csv_path = tmp_path / "acc.csv"
    for seed in (0, 1):
        study._append_row(csv_path, {**fake_row("yolo11n", seed, None, 0.40), "agnostic_AP": 0.50 + 0.01 * seed})
        study._append_row(csv_path, {**fake_row("pst-coarse", seed, 0, 0.35), "agnostic_AP": 0.49 + 0.03 * seed})
    study._append_row(csv_path, fake_row("pst-coarse", 2, 0, 0.30))  # scored before the column existed
    text = study.write_report(csv_path, tmp_path / "acc.md").read_text()
    assert "Rows with it: 4 of 5" in text
    assert "| yolo11n | – | 2 | 0.505 ± 0.007 | +0.1050 ± 0.0071 | – | – |" in text
    assert "| pst-coarse | 0 | 2 | 0.505 ± 0.021 | +0.1550 ± 0.0212 | +0.0000 ± 0.0141 | 2 (1) |" in text
    study._append_row(plain := tmp_path / "plain.csv", fake_row("yolo11n", 0, None, 0.4))
    assert "Class-agnostic" not in study.write_report(plain, tmp_path / "plain.md").read_text()


def test_report_says_which_runs_learned_the_context(tmp_path):
    """A shapes-context study's report has a table of every run of every budget (PST at K = 0): its per-class APs and
    how many classes it tells apart where they were recorded, else what its AP alone shows, and the epoch from which
    its curve stays above 1/2; then how often each recipe learned it; and first in the report, the verdict of each PST
    recipe against its baseline. A study on other data has neither."""
    short, long = "shapes-context e2 i64 b8 f0.1", "shapes-context e4 i64 b8 f0.1"
    csv_path = tmp_path / "ctx.csv"
    rows = [("yolo11n", 0, None, 0.62, long), ("yolo11n", 1, None, 0.30, long), ("pst-anyk", 0, 0, 0.84, long),
            ("pst-anyk", 0, 8, 0.10, long), ("pst-anyk", 1, 0, 0.45, long), ("yolo11n", 0, None, 0.55, short)]
    for recipe, seed, k, ap, budget in rows:
        study._append_row(csv_path, {**fake_row(recipe, seed, k, ap, budget=budget), "agnostic_AP": 0.9})
    for recipe, seed, k, aps in [("yolo11n", 0, None, (0.86, 0.84, 0.16)), ("pst-anyk", 0, 0, (0.85, 0.84, 0.83)),
                                 ("pst-anyk", 0, 8, (0.1, 0.1, 0.1))]:
        study._append_class_rows(csv_path, fake_row(recipe, seed, k, 0, budget=long),
                                 dict(zip(("mark-in-circle", "mark-in-square", "mark-in-triangle"), aps)))
    curves = study.curves_csv(csv_path)
    curves.write_text("budget,recipe,seed,epoch,mAP50-95,mAP50\n" + "".join(
        f"{long},{r},{s},{e},{m},0\n" for r, s, ms in [("yolo11n", 0, (0.3, 0.6, 0.4, 0.62)), ("pst-anyk", 0,
                                                        (0.3, 0.51, 0.7, 0.84))] for e, m in enumerate(ms, 1)))
    text = study.write_report(csv_path, tmp_path / "ctx.md").read_text()
    section = text.split("## Did each run learn the context?")[1].split("\n## ")[0]
    assert "| 2 | yolo11n | 0 | 0.550 | 0.900 | – / – / – | ≥ 1 of 3 | – |" in section  # AP alone; no curve
    assert "| 4 | yolo11n | 0 | 0.620 | 0.900 | 0.860 / 0.840 / 0.160 | 2 of 3 | 4 |" in section
    assert "| 4 | yolo11n | 1 | 0.300 | 0.900 | – / – / – | AP at chance | – |" in section
    assert "| 4 | pst-anyk | 0 | 0.840 | 0.900 | 0.850 / 0.840 / 0.830 | 3 of 3 | 2 |" in section
    assert "| 4 | pst-anyk | 1 | 0.450 | 0.900 | – / – / – | ? | – |" in section
    assert "AP per class (mark-in-circle / mark-in-square / mark-in-triangle)" in section
    assert "| 8 |" not in section  # K = 8 rows are not runs of their own
    assert ("- 4 epochs, yolo11n: at least one class told apart in 1 of 2 runs (AP 0.620; from epoch 4); every class "
            "in 0 of 1 runs with per-class APs") in section
    assert ("- 4 epochs, pst-anyk: at least one class told apart in 1 of 2 runs (AP 0.840; from epoch 2); every "
            "class in 1 of 1 runs with per-class APs") in section
    assert "- 2 epochs, yolo11n: at least one class told apart in 1 of 1 runs (AP 0.550)" in section
    assert ("Fine attention on the same weights (Δ AP against K = 0, mean ± std over runs): 4 epochs, pst-anyk "
            "K = 8: -0.7400 (1 run).") in section
    # The verdict, first in the report: PST against its baseline at each budget where both ran (not the short one)
    verdict = text.split("## Verdict: does PST learn the context, and how well?")[1].split("\n## ")[0]
    assert text.index("## Verdict") < text.index("## Headline")
    assert ("- **4 epochs** (seeds 0, 1): pst-anyk learned the context as often as yolo11n (1 of 2 runs against 1 of "
            "2); once learned, better (AP 0.840 against 0.620; paired Δ +0.2200, higher in 1 of 1 seed), "
            "class-agnostic AP paired Δ +0.0000 (level at finding the marks); from epoch 2 against 4 (sooner); fine "
            "attention (K > 0 against K = 0) moves its mean AP by at most 0.7400.") in verdict
    assert "2 epochs" not in verdict
    study._append_row(plain := tmp_path / "plain.csv", fake_row("yolo11n", 0, None, 0.4))
    assert "learn the context" not in study.write_report(plain, tmp_path / "plain.md").read_text()


def test_run_study_never_redoes_a_finished_row(tmp_path, monkeypatch):
    """Rows already in the CSV are skipped; only missing (recipe, seed, K) cells train and validate."""
    budget = study.Budget("shapes", 1, 64, 8, 0.1)
    csv_path = tmp_path / "s.csv"
    for k in (0, 4):
        study._append_row(csv_path, fake_row("pst-coarse", 0, k, 0.3, budget=budget.key()))
    trained, scored = [], []
    monkeypatch.setattr(study, "_train", lambda r, s, b, out: (trained.append((r.name, s)) or "w.pt", {}))

    def cell_rows(recipe, seed, budget, out, missing, env, facts, weights):
        scored.append((recipe.name, seed, missing))
        return [fake_row(recipe.name, seed, k, 0.3, budget=budget.key()) for k in missing]

    monkeypatch.setattr(study, "_cell_rows", cell_rows)
    assert study.run_study(["pst-coarse", "yolo11n"], [0], budget, csv_path, tmp_path / "out") == 3
    assert scored == [("pst-coarse", 0, [8, 16]), ("yolo11n", 0, [None])]
    trained.clear()
    assert study.run_study(["pst-coarse", "yolo11n"], [0], budget, csv_path, tmp_path / "out") == 0  # all done
    assert trained == []
    with pytest.raises(ValueError, match="unknown recipe"):
        study.run_study(["nope"], [0], budget, csv_path, tmp_path / "out")


def _runner(barrier, budget, csv_path, out, log):
    """A study runner process whose training takes 1 s and is logged (cell, pid)."""
    import os
    import time

    def train(recipe, seed, budget, out):
        with open(log, "a") as f:
            f.write(f"{recipe.name} {seed} {os.getpid()}\n")
        time.sleep(1.0)  # long enough that both runners are inside the loop before the first cell ends
        return "w.pt", {}

    study._train = train
    study._cell_rows = lambda recipe, seed, b, o, missing, env, facts, w: [
        fake_row(recipe.name, seed, k, 0.3, budget=b.key()) for k in missing]
    barrier.wait(timeout=30)
    study.run_study(["yolo11n", "pst-coarse", "pst-anyk", "yolo12n"], [0], budget, csv_path, out)


def test_two_runners_share_the_work_without_training_a_cell_twice(tmp_path):
    """Two runners started together on the same study (one core each) split the cells: per-cell locks, one CSV."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    budget, csv_path, log = study.Budget("shapes", 1, 64, 8, 0.1), tmp_path / "s.csv", tmp_path / "trained.log"
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_runner, args=(barrier, budget, csv_path, tmp_path / "out", log), daemon=True)
             for _ in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            p.terminate()
    trained = [line.split() for line in log.read_text().splitlines()]
    assert sorted(r for r, _, _ in trained) == sorted(["yolo11n", "pst-coarse", "pst-anyk", "yolo12n"])  # once each
    assert len({pid for *_, pid in trained}) == 2  # both runners trained
    keys = [study._key(r) for r in study.read_rows(csv_path)]
    assert len(keys) == len(set(keys)) == 1 + 4 + 4 + 1
    for lock in (tmp_path / "out" / "locks").rglob("*.lock"):  # all released: each can be taken again
        with study.StudyLock(tmp_path / "out", "/".join(lock.relative_to(tmp_path / "out" / "locks").with_suffix("")
                                                          .parts)):
            pass
    assert len(list((tmp_path / "out" / "locks").rglob("*.lock"))) == 4


def test_lock_refuses_a_second_live_runner_and_dies_with_its_holder(tmp_path, research_env):
    import os
    import signal
    import subprocess
    import sys

    with study.StudyLock(tmp_path):
        with pytest.raises(RuntimeError, match=f"another study runner \\(pid {os.getpid()}\\) works in"):
            study.StudyLock(tmp_path).__enter__()
    with study.StudyLock(tmp_path, "b/yolo11n/seed0"):  # released on exit: taken again
        with pytest.raises(RuntimeError, match="trains b/yolo11n/seed0"):
            study.StudyLock(tmp_path, "b/yolo11n/seed0").__enter__()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from pst_research."
                               "study import StudyLock; lock = StudyLock(Path(sys.argv[1])).__enter__(); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, env=research_env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            study.StudyLock(tmp_path).__enter__()
        holder.send_signal(signal.SIGKILL)  # killed: no clean-up runs, the kernel drops its lock
        holder.wait(10)
        with study.StudyLock(tmp_path):
            assert (tmp_path / "study.lock").read_text().strip() == str(os.getpid())
    finally:
        holder.kill()


def test_paired_statistics_and_report(tmp_path):
    rows = []
    for seed, base in enumerate((0.40, 0.42, 0.44)):
        rows.append(fake_row("yolo11n", seed, None, base))
        for k, gain in ((0, 0.01), (8, 0.03)):
            rows.append(fake_row("pst-anyk", seed, k, base + gain + 0.001 * seed))
            rows.append(fake_row("pst-coarse", seed, k, base))
    mean, std, n = study.summarize(rows)[("pst-anyk", 8)]
    assert n == 3 and mean == pytest.approx(0.451) and std == pytest.approx(0.021)
    d = study.paired_differences(rows, ("pst-anyk", 8), ("yolo11n", None))
    assert d[0] == pytest.approx(0.031) and d[1] == pytest.approx(0.001) and d[2:] == (3, 3)
    csv_path = tmp_path / "acc.csv"
    longer = [fake_row("yolo11n", 0, None, 0.43, budget="shapes e2 i64 b8 f0.1"),  # twice the epochs, same seed
              fake_row("yolo11n", 1, None, 0.90, budget="shapes e2 i128 b8 f0.1"),  # another imgsz: not comparable
              fake_row("pst-anyk", 0, 8, 0.42, budget="shapes e2 i64 b8 f0.1"),
              fake_row("yolo11n", 2, None, 0.47, budget="shapes e2 i64 b8 f0.1"),  # a second seed: a summary row
              fake_row("pst-anyk", 2, 8, 0.48, budget="shapes e2 i64 b8 f0.1")]
    for r in rows + longer:
        study._append_row(csv_path, r)
    md = study.write_report(csv_path, tmp_path / "acc.md", banner="test", how_to_run="## Run\nthis")
    text = md.read_text()
    assert "| yolo11n | – | 2 | 0 | 0.430 | 0.400 | +0.030 | – |" in text
    assert "| yolo11n | – | 0 | 0.400 | 0.430 (+0.030) |" in text  # the doubling check
    assert "| pst-anyk | 0 |" not in text.split("**Doubling check**")[1].split("Over seeds")[0]  # K = 8 only, at e2
    assert "yolo11n is not converged at any budget measured: its longest doubling, 1 → 2 epochs, still gains " \
           "+0.030, +0.030 (2 seed(s))." in text
    assert "| pst-anyk | 8 | 2 | 0 | 0.420 | 0.430 | -0.010 | -0.010 |" in text  # paired with yolo11n at 2 epochs
    assert "0.900" not in text and "Would more epochs change the result?" in text
    # over seeds at 2 epochs: yolo11n 0.43, 0.47 (+0.03, +0.03 over 1 epoch); pst-anyk 0.42, 0.48 (-0.010, +0.008
    # over 1 epoch), paired with yolo11n at 2 epochs: -0.01, +0.01
    assert "| yolo11n | – | 2 | 2 | 0.450 ± 0.028 | +0.0300 ± 0.0000 | – | – |" in text
    assert "| pst-anyk | 8 | 2 | 2 | 0.450 ± 0.042 | -0.0010 ± 0.0127 | +0.0000 ± 0.0141 | 2 (1) |" in text
    assert "| pst-anyk | 8 | 3 | 0.451 ± 0.021 |" in text
    assert "| pst-anyk | 8 | yolo11n | +0.0310 ± 0.0010 |" in text  # paired per seed, not difference of means
    assert "Best K of pst-anyk: 8" in text and "| 8 | 0.451 ± 0.021 | yes |" in text
    assert (tmp_path / "acc.png").stat().st_size > 10_000
    only = tmp_path / "only.csv"
    for r in rows:
        study._append_row(only, r)
    text = study.write_report(only, tmp_path / "only.md").read_text()
    assert "No yolo11n row of a longer budget than 1 epochs" in text and "--epochs 2`" in text


@pytest.mark.parametrize("sessions, times, expected", [
    # (from_epoch, to_epoch, wall_s, cpu_s) per ledger line; results.csv's time column; (train_s, cpu_s, resumed, timed)
    ([(0, 3, 100, 90), (3, 5, 80, 70)], [10, 20, 30, 10, 20], (180, 160, 1, 2)),  # joined: the ledger's sums
    ([(0, 3, 100, 90), (2, 5, 90, 80)], [10, 20, 30, 10, 20, 30], (190, 170, 1, 2)),  # epoch 3 trained again: joined
    ([(0, 0, 5, 4), (0, 2, 50, 45)], [10, 20], (55, 49, 1, 2)),  # first session stopped before any epoch: joined
    ([(3, 5, 80, 70)], [10, 20, 30, 10, 20], (80, math.nan, 1, None)),  # sessions before the ledger: lower bound
    ([(3, 5, 10, 9)], [40, 60, 90, 10, 20], (110, math.nan, 1, None)),  # ... the larger: results.csv's loop times
    ([(0, 2, 40, 35), (4, 6, 40, 35)], [20, 40, 10, 20, 10, 20], (80, math.nan, 2, None)),  # a session killed outright
    ([(0, 2, 40, 35), "{\"from_epoch\": 2, \"to"], [20, 40, 10], (50, math.nan, 1, None)),  # a line cut short
])
def test_training_time_adds_up_sessions_and_says_where_it_cannot(tmp_path, sessions, times, expected):
    """The time of a training over its sessions (the ledger sessions.jsonl, checked against the epochs it went from
    and to): exact where the sessions join up from epoch 0, else a lower bound of the wall time and no CPU time."""
    lines = [s if isinstance(s, str) else json.dumps(dict(zip(("from_epoch", "to_epoch", "wall_s", "cpu_s"), s)))
             for s in sessions]
    (tmp_path / "sessions.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "results.csv").write_text("epoch,time\n" + "".join(f"{i},{t}\n" for i, t in enumerate(times, 1)))
    got = study._training_time(tmp_path)
    assert (got["train_s"], got["resumed"], got["timed_sessions"]) == (expected[0], expected[2], expected[3])
    assert got["train_cpu_s"] == expected[1] or math.isnan(got["train_cpu_s"]) and math.isnan(expected[1])


def test_report_time_says_which_trainings_it_cannot_add_up(tmp_path):
    """The report's time line adds up train_s over trainings, says "at least" where a resumed training has a session
    its time leaves out (no timed_sessions) or a training has no time, and counts the trainings whose CPU time is not
    recorded."""
    csv_path = tmp_path / "acc.csv"
    rows = [{**fake_row("yolo11n", 0, None, 0.4), "train_s": 3600.0, "train_cpu_s": 1800.0, "resumed": 0,
             "timed_sessions": 1},
            {**fake_row("yolo11n", 1, None, 0.4), "train_s": 3600.0, "train_cpu_s": 1800.0, "resumed": 1},
            {**fake_row("yolo11n", 2, None, 0.4), "train_s": 7200.0, "train_cpu_s": math.nan, "resumed": 2,
             "timed_sessions": 3}]
    for r in rows:
        study._append_row(csv_path, r)
    text = study.write_report(csv_path, tmp_path / "acc.md").read_text()
    assert ("Time: at least 4.00 h of training wall time (1.00 h CPU time of the training process; not recorded for 1 "
            "of 3 trainings), 0.00 h of validation. Resumed with a session left untimed (their times are lower "
            "bounds): 1 of the 3 trainings.\n") in text
    study._append_row(tmp_path / "untimed.csv", rows[0])
    study._append_row(tmp_path / "untimed.csv", {**rows[0], "seed": 1, "train_s": math.nan, "train_cpu_s": math.nan})
    text = study.write_report(tmp_path / "untimed.csv", tmp_path / "untimed.md").read_text()
    assert ("Time: at least 1.00 h of training wall time (0.50 h CPU time of the training process; not recorded for 1 "
            "of 2 trainings), 0.00 h of validation. Not timed: 1 of the 2 trainings.\n") in text
    study._append_row(tmp_path / "fresh.csv", rows[0])
    text = study.write_report(tmp_path / "fresh.csv", tmp_path / "fresh.md").read_text()
    assert "Time: 1.00 h of training wall time (0.50 h CPU time of the training process), 0.00 h of validation.\n" \
        in text


def test_doubling_check_names_the_first_budget_whose_doubling_gains_under_a_point():
    """Converged = the fewest epochs whose doubling gains < 0.01 on every seed trained at both; a seed that gains more
    keeps the budget unconverged; PST cells trained at several budgets get their own rows."""
    def rows(gains_at_4):
        out = []
        for seed, gain in enumerate(gains_at_4):
            for e, ap in ((1, 0.30), (2, 0.40), (4, 0.40 + gain)):
                out.append(fake_row("yolo11n", seed, None, ap, budget=f"shapes e{e} i64 b8 f0.1"))
        out.append(fake_row("pst-anyk", 0, 0, 0.35, budget="shapes e1 i64 b8 f0.1"))
        out.append(fake_row("pst-anyk", 0, 0, 0.41, budget="shapes e2 i64 b8 f0.1"))
        return out

    text = "\n".join(study._doubling_section(rows([0.005, -0.002]), "shapes e1 i64 b8 f0.1"))
    assert "| yolo11n | – | 0 | 0.300 | 0.400 (+0.100) | 0.405 (+0.005) |" in text
    assert "| pst-anyk | 0 | 0 | 0.350 | 0.410 (+0.060) | – |" in text
    assert "yolo11n converged at 2 epochs: doubling to 4 gains +0.005, -0.002 (2 seed(s))." in text
    text = "\n".join(study._doubling_section(rows([0.005, 0.02]), "shapes e1 i64 b8 f0.1"))
    assert "its longest doubling, 2 → 4 epochs, still gains +0.005, +0.020 (2 seed(s))." in text
    assert study._doubling_section(rows([0.0])[:1], "shapes e1 i64 b8 f0.1") == []  # one budget: nothing to say


def test_report_keeps_the_curves_section_it_cannot_recompute(tmp_path):
    """A report regenerated without the curves of its budget (neither runs nor curves CSV: a report written before
    the runner kept curves) keeps the learning-curve section it has."""
    csv_path, md, out = tmp_path / "acc.csv", tmp_path / "acc.md", tmp_path / "out"
    for seed in (0, 1):
        study._append_row(csv_path, fake_row("yolo11n", seed, None, 0.4))
    write_run(out, "shapes e1 i64 b8 f0.1", 0, [0.125, 0.25, 0.375])
    first = study.write_report(csv_path, md, out=out).read_text()
    assert "| yolo11n | 0 | 3 | 0.375 |" in first and study.CARRIED_NOTE not in first
    shutil.rmtree(out)
    study.curves_csv(csv_path).unlink()
    for _ in range(2):  # carried once, not noted twice
        text = study.write_report(csv_path, md, out=out).read_text()
        assert "| yolo11n | 0 | 3 | 0.375 |" in text and text.count(study.CARRIED_NOTE) == 1
        assert text.count(study.CURVES_HEADING) == 1 and "(acc_curves.png)" in text
    study._append_row(csv_path, fake_row("yolo11n", 0, None, 0.4, budget="shapes e9 i64 b8 f0.1"))
    for seed in (1, 2):
        study._append_row(csv_path, fake_row("yolo11n", seed, None, 0.4, budget="shapes e9 i64 b8 f0.1"))
    other = study.write_report(csv_path, md, out=out).read_text()  # now about another budget: nothing to carry
    assert "Budget: `shapes e9 i64 b8 f0.1`" in other and study.CURVES_HEADING not in other


def write_run(out: Path, budget: str, seed: int, curve: list[float], done: bool = True, recipe: str = "yolo11n"):
    """A run folder in the runner's layout under ``out``: Ultralytics' results.csv with ``curve`` as val mAP50-95 per
    epoch, and the runner's done.json where ``done``."""
    folder = out / "runs" / budget.replace(" ", "_") / recipe / f"seed{seed}"
    folder.mkdir(parents=True)
    rows = "".join(f"{e},{v},{v + 0.1}\n" for e, v in enumerate(curve, 1))
    (folder / "results.csv").write_text("epoch,metrics/mAP50-95(B),metrics/mAP50(B)\n" + rows)
    if done:
        (folder / "done.json").write_text("{}")


def test_finished_curves_are_kept_in_a_csv_that_outlives_the_runs(tmp_path):
    """Each finished run's per-epoch curve is copied once into the committed curves CSV; the report recomputes its
    curve sections from it when the runs are gone, and a longer budget gets its own plateau table."""
    csv_path, md, out = tmp_path / "acc.csv", tmp_path / "acc.md", tmp_path / "out"
    short, long = "shapes e3 i64 b8 f0.1", "shapes e6 i64 b8 f0.1"
    for seed in (0, 1, 2):
        study._append_row(csv_path, fake_row("yolo11n", seed, None, 0.4, budget=short))
    study._append_row(csv_path, fake_row("yolo11n", 0, None, 0.5, budget=long))
    study._append_row(csv_path, fake_row("pst-anyk", 0, 0, 0.45, budget=long))

    write_run(out, short, 0, [0.125, 0.25, 0.375])
    write_run(out, short, 1, [0.1], done=False)  # still training: not frozen into the CSV
    write_run(out, long, 0, [0.5] * 6)
    curves = study.curves_csv(csv_path)
    assert curves.name == "acc_curves.csv"
    assert study.record_curves(curves, out, [short, long]) == 2
    assert study.record_curves(curves, out, [short, long]) == 0  # once per run
    kept = study.read_csv_rows(curves, ("mAP50-95",))
    assert [(r["budget"], r["seed"], r["epoch"], r["mAP50-95"]) for r in kept[:3]] == [
        (short, "0", "1", 0.125), (short, "0", "2", 0.25), (short, "0", "3", 0.375)]
    assert {(r["budget"], r["seed"]) for r in kept} == {(short, "0"), (long, "0")}

    shutil.rmtree(out)  # a fresh clone: no runs, the CSVs only
    text = study.write_report(csv_path, md, out=out).read_text()
    assert study.CARRIED_NOTE not in text and "| yolo11n | 0 | 3 | 0.375 | – | no |" in text  # too short to judge
    long_part = text[text.index("Learning curves at 6 epochs"):]
    assert "| yolo11n | 0 | 6 | 0.500 | +0.0000 (3 epochs) | yes |" in long_part
    assert "not on record" in long_part and "pst-anyk seed 0" in long_part


def test_report_holds_finished_runs_only_and_the_runner_names_the_unfinished(tmp_path):
    """The report's curves are the finished runs' (a finished run with fewer epochs than its budget was ended by
    Ultralytics' patience); a training still in progress is not in it, so the report written with the work directory
    and the one regenerated without it (a fresh clone) are the same file. :func:`unfinished_runs` names the one in
    progress (the runner logs it)."""
    csv_path, md, out = tmp_path / "acc.csv", tmp_path / "acc.md", tmp_path / "out"
    budget = study.Budget("shapes", 6, 64, 8, 0.1, extra={})
    study._append_row(csv_path, fake_row("yolo11n", 0, None, 0.5, budget=budget.key()))
    write_run(out, budget.key(), 0, [0.5] * 4)  # stopped by patience at epoch 4 (its row is recorded)
    write_run(out, budget.key(), 1, [0.1, 0.2], done=False)  # at epoch 2
    text = study.write_report(csv_path, md, out=out).read_text()
    assert "| yolo11n | 0 | 4 (stopped early: patience) | 0.500 |" in text
    assert "| yolo11n | 1 |" not in text
    assert study.unfinished_runs(out, budget) == ["yolo11n seed 1: epoch 2/6"]
    assert study.write_report(csv_path, md, out=tmp_path / "fresh").read_text() == text



def test_an_epoch_trained_twice_after_a_resume_counts_once(tmp_path):
    """A runner killed between Ultralytics' results row and its checkpoint trains that epoch again on resume, so
    results.csv holds it twice: the curve keeps the later row, in the curves CSV and in the report's plateau table."""
    budget = "shapes e3 i64 b8 f0.1"
    folder = tmp_path / "out" / "runs" / budget.replace(" ", "_") / "pst-anyk" / "seed0"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("epoch,metrics/mAP50-95(B),metrics/mAP50(B)\n"
                                        "1,0.1,0.2\n2,0.2,0.3\n2,0.25,0.35\n3,0.3,0.4\n")
    (folder / "done.json").write_text("{}")
    curves = tmp_path / "curves.csv"
    assert study.record_curves(curves, tmp_path / "out", [budget]) == 1
    kept = study.read_csv_rows(curves, ("mAP50-95",))
    assert [(r["epoch"], r["mAP50-95"]) for r in kept] == [("1", 0.1), ("2", 0.25), ("3", 0.3)]
    assert study.learning_curves(curves, budget) == {"pst-anyk": {0: [0.1, 0.25, 0.3]}}
    with open(curves, "a", encoding="utf-8") as f:  # a curves CSV written before the fix holds the epoch twice
        f.write(f"{budget},yolo11n,1,1,0.1,0.2\n{budget},yolo11n,1,2,0.2,0.3\n{budget},yolo11n,1,2,0.22,0.3\n"
                f"{budget},yolo11n,1,3,0.3,0.4\n")
    assert study.learning_curves(curves, budget)["yolo11n"] == {1: [0.1, 0.22, 0.3]}


class _Aborted(Exception):
    """Raised by :class:`_OptimizerProbe` once the trainer has built its optimizer (no step is trained)."""


def _optimizer_probe():
    from ultralytics.models.yolo.detect import DetectionTrainer

    class _OptimizerProbe(DetectionTrainer):
        """A stock trainer that stops right after setting up, carrying what it built."""

        def _setup_train(self):
            super()._setup_train()
            raise _Aborted(type(self.optimizer).__name__, self.args.lr0)

    return _OptimizerProbe


def test_study_keeps_adamw_where_optimizer_auto_would_switch_to_musgd(tmp_path):
    """Past 10000 iterations Ultralytics' optimizer=auto builds MuSGD; a study training keeps auto's AdamW (lr0 fit
    for 6 classes: 0.001), unless its arguments name an optimizer."""
    from ultralytics import YOLO

    args = dict(data="shapes", epochs=10001, imgsz=32, batch=16, nbs=16, fraction=0.03, workers=0, plots=False,
                exist_ok=True, verbose=False)  # 15 images: one batch per epoch, 10001 iterations
    with pytest.raises(_Aborted) as stock:
        YOLO("yolo11n.yaml").train(trainer=_optimizer_probe(), project=str(tmp_path), name="stock", **args)
    assert stock.value.args == ("MuSGD", 0.01)  # the switch this guards against (the test fails if it goes away)
    with pytest.raises(_Aborted) as pinned:
        study.train_or_resume(tmp_path / "study", "yolo11n.yaml", args, trainer=_optimizer_probe())
    assert pinned.value.args == ("AdamW", 0.001)
    with pytest.raises(_Aborted) as named:
        study.train_or_resume(tmp_path / "named", "yolo11n.yaml", {**args, "optimizer": "SGD"},
                              trainer=_optimizer_probe())
    assert named.value.args[0] == "SGD"


def test_study_optimizer_trains_bit_for_bit_as_auto_on_a_short_budget(tmp_path):
    """Where optimizer=auto picks AdamW (every committed row), the study's fixed AdamW trains the same weights."""
    from ultralytics import YOLO

    args = dict(data="shapes", epochs=1, imgsz=32, batch=8, nbs=8, fraction=0.03, workers=0, plots=False, val=False,
                exist_ok=True, verbose=False, seed=0, deterministic=True)
    YOLO("yolo11n.yaml").train(project=str(tmp_path), name="auto", **args)
    last, _ = study.train_or_resume(tmp_path / "study", "yolo11n.yaml", args)
    auto = torch.load(tmp_path / "auto" / "weights" / "last.pt", weights_only=False)
    pinned = torch.load(last, weights_only=False)
    assert pinned["train_args"]["optimizer"] == "AdamW" and auto["train_args"]["optimizer"] == "AdamW"
    a, b = auto["model"].state_dict(), pinned["model"].state_dict()  # the EMA (final checkpoints keep it as model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in YOLO("yolo11n.yaml").model.state_dict().items()
                   if k in a and a[k].shape == v.shape)  # it trained


def test_a_resumed_training_counts_the_time_of_every_session(tmp_path, monkeypatch):
    """A training stopped by Ctrl-C / SIGTERM (KeyboardInterrupt) after its first epoch and resumed: done.json's
    wall and CPU times are both sessions' (the ledger), not the last one's."""
    from ultralytics.engine.trainer import BaseTrainer

    args = dict(data="shapes", epochs=2, imgsz=32, batch=8, nbs=8, fraction=0.03, workers=0, plots=False,
                exist_ok=True, verbose=False, seed=0)  # validated every epoch (as the study): a results.csv row each
    save = BaseTrainer.save_model

    def save_then_stop(self):
        save(self)
        time.sleep(0.5)  # a session whose time the last session's timer could not see
        raise KeyboardInterrupt("stopped by signal 15")

    monkeypatch.setattr(BaseTrainer, "save_model", save_then_stop)
    run = tmp_path / "study" / "seed0"
    with pytest.raises(KeyboardInterrupt):
        study.train_or_resume(run, "yolo11n.yaml", args)
    (first,) = [json.loads(line) for line in (run / "sessions.jsonl").read_text().splitlines()]
    assert first["wall_s"] > 0.5 and first["cpu_s"] > 0 and not (run / "done.json").exists()
    assert (first["from_epoch"], first["to_epoch"]) == (0, 1)
    monkeypatch.setattr(BaseTrainer, "save_model", save)
    _, facts = study.train_or_resume(run, "yolo11n.yaml", args)
    sessions = [json.loads(line) for line in (run / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == 2 and facts["resumed"] == 1 and facts["timed_sessions"] == 2
    assert (sessions[1]["from_epoch"], sessions[1]["to_epoch"]) == (1, 2)  # resumed at the epoch the first saved
    assert facts["train_s"] == pytest.approx(sum(s["wall_s"] for s in sessions)) and facts["train_s"] > first["wall_s"]
    assert facts["train_cpu_s"] == pytest.approx(sum(s["cpu_s"] for s in sessions))
    assert json.loads((run / "done.json").read_text()) == facts

    # a session the ledger lacks (begun before it existed, or killed outright): the epochs do not join up from 0, so
    # the wall time is a lower bound (at least the sessions it has) and the CPU time unknown
    lines = (run / "sessions.jsonl").read_text().splitlines()
    (run / "sessions.jsonl").write_text(lines[1] + "\n")
    fallback = study._training_time(run)
    assert fallback["train_s"] == max(sessions[1]["wall_s"], sum(study._session_seconds(run / "results.csv")))
    assert math.isnan(fallback["train_cpu_s"]) and fallback["timed_sessions"] is None


def test_plateau():
    rising = [i / 100 for i in range(30)]
    assert not study.plateau(rising)[0]
    flat = rising[:15] + [0.15 + 0.0001 * i for i in range(15)]
    assert study.plateau(flat)[0]
    assert not study.plateau([0.1, 0.2])[0]  # too short to tell


def test_authors_init_changes_block_convs_only():
    torch.manual_seed(0)
    pst = PST(128, 64, 64, n=2)
    before = {n: p.clone() for n, p in pst.named_parameters()}
    assert study.init_authors(pst) == 12  # 6 convs per block (q, kv, pe, proj, 2 MLP), gate excluded
    changed = {n for n, p in pst.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if n.startswith("m.") and n.endswith("conv.weight")}
    for attn in (m for m in pst.modules() if isinstance(m, PSTAttention)):
        assert not attn.gate.weight.any()  # the gate keeps its zero init
        w = attn.conv_q.conv.weight
        assert 0.015 < w.std() < 0.025 and w.abs().max() <= 0.04  # truncated normal, std 0.02, cut at 2 std


@pytest.mark.slow
def test_interrupted_study_resumes_training_and_adds_only_missing_rows(tmp_path, research_env):
    """Kill the runner right after an any-K training saves epoch 1 of 2; the same call resumes it and scores it (CSV
    and work directory given relative to the working directory, as on the command line)."""
    import subprocess
    import sys

    budget = dict(data="shapes", epochs=2, imgsz=64, batch=8, fraction=0.03, workers=0, extra={"warmup_epochs": 0})
    code = f"""
import os, sys
from ultralytics.engine.trainer import BaseTrainer
from pst_research import study
if sys.argv[1] == "die":
    save = BaseTrainer.save_model
    BaseTrainer.save_model = lambda self: (save(self), os._exit(3))
added = study.run_study(["pst-anyk"], [0], study.Budget(**{budget!r}), "s.csv", "work", topks=(0, 8))
print("ADDED", added)
"""
    def runner(mode):
        return subprocess.run([sys.executable, "-c", code, mode], cwd=tmp_path, env=research_env, capture_output=True,
                              text=True)

    died = runner("die")
    assert died.returncode == 3, died.stdout[-2000:] + died.stderr[-2000:]
    assert not (tmp_path / "s.csv").exists()
    done = runner("live")
    assert done.returncode == 0 and "ADDED 2" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    (run,) = tmp_path.glob("work/runs/*/pst-anyk/seed0")  # a relative work directory is the user's, not runs_dir's
    assert (run / "weights" / "last.pt").is_file()
    epochs = [int(float(r.split(",")[0])) for r in (run / "results.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2]  # epoch 1 not redone
    assert json.loads((run / "done.json").read_text())["resumed"] == 1
    rows = study.read_rows(tmp_path / "s.csv")
    assert [(r["recipe"], r["pst_topk"]) for r in rows] == [("pst-anyk", "0"), ("pst-anyk", "8")]
    assert all(0 <= r["agnostic_AP"] <= 1 and 0 <= r["agnostic_AR100"] <= 1 for r in rows)  # scored, not left empty
    classes = study.read_class_aps(study.classes_csv(tmp_path / "s.csv"))  # each row's classes, beside the CSV
    assert list(classes) == [study._key(r) for r in rows]
    for r in rows:  # the six shapes classes, all in the val split: their mean is the AP
        assert list(classes[study._key(r)]) == ["circle", "square", "triangle", "star", "cross", "ring"]
        assert sum(classes[study._key(r)].values()) / 6 == pytest.approx(r["AP"], abs=1e-9)
    assert "ADDED 0" in runner("live").stdout  # nothing left to do

    # rows without per-class APs (an older runner's, or a runner stopped between a row and its classes) are scored
    # again from their weights by the next runner, only where the weights still give the row's AP
    written = study.classes_csv(tmp_path / "s.csv").read_text()
    study.classes_csv(tmp_path / "s.csv").unlink()
    lines = (tmp_path / "s.csv").read_text().splitlines()
    ap = f"{rows[1]['AP']!r}"
    assert lines[2].count(ap) >= 1
    (tmp_path / "s.csv").write_text("\n".join([*lines[:2], lines[2].replace(ap, "0.999", 1)]) + "\n")  # K 8's
    assert study.record_classes(tmp_path / "s.csv", tmp_path / "work", study.Budget(**budget)) == 1
    assert study.classes_csv(tmp_path / "s.csv").read_text() == "\n".join(written.splitlines()[:7]) + "\n"
    assert study.record_classes(tmp_path / "s.csv", tmp_path / "work", study.Budget(**budget)) == 0  # K 8: refused


def test_killed_runner_logs_its_invocation(tmp_path, cli_env):
    """`kill` (SIGTERM) stops scripts/study.py like Ctrl-C: exit 130, the lock released, the invocation logged as
    stopped with the rows it added (none here: killed during its first training) and the training it left unfinished.
    The report it writes on the way out (its CSV has an earlier row) is the one a fresh clone regenerates."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "study.py"
    csv_path = tmp_path / "s.csv"
    budget = study.Budget("shapes", 50, 32, 16, 0.05, 0)
    study._append_row(csv_path, fake_row("yolo11n", 1, None, 0.4, budget=budget.key()))  # an earlier runner's row
    proc = subprocess.Popen(
        [sys.executable, str(script), "--recipes", "yolo11n", "--seeds", "0", "--epochs", "50", "--imgsz", "32",
         "--fraction", "0.05", "--workers", "0", "--csv", str(csv_path), "--report", str(tmp_path / "r.md"),
         "--out", str(tmp_path / "out")], cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "out").rglob("results.csv")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)  # the first epoch has ended: the runner is inside its training
    if not list((tmp_path / "out").rglob("results.csv")):
        proc.kill()
        pytest.fail(f"the runner logged no epoch in 300 s (exit {proc.poll()}):\n{proc.communicate()[0][-3000:]}")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    entry = json.loads(csv_path.with_suffix(".log.jsonl").read_text().splitlines()[-1])
    assert entry["stopped"] == f"stopped by signal {int(signal.SIGTERM)}" and entry["rows_added"] == 0
    (results,) = (tmp_path / "out").rglob("seed0/results.csv")
    trained = len(results.read_text().splitlines()) - 1
    assert trained >= 1 and entry["unfinished"] == [f"yolo11n seed 0: epoch {trained}/50"]
    (lock,) = (tmp_path / "out" / "locks").rglob("seed0.lock")  # the cell it was training: released
    cell = "/".join(lock.relative_to(tmp_path / "out" / "locks").with_suffix("").parts)
    with study.StudyLock(tmp_path / "out", cell):
        pass
    assert "stopped by signal" in out
    report = (tmp_path / "r.md").read_text(encoding="utf-8")
    stop = f"stopped by signal {int(signal.SIGTERM)}; unfinished in its --out then: yolo11n seed 0: epoch {trained}/50"
    assert f"({stop}) | 0 |" in report
    clone = tmp_path / "clone"
    clone.mkdir()
    for f in tmp_path.glob("[rs]*.*"):  # the CSVs, the invocation log, the report and its plots: what is committed
        shutil.copy(f, clone)
    assert load_script("study").main(["--report-only", "--csv", str(clone / "s.csv"), "--report", str(clone / "r.md"),
                                      "--out", str(clone / "out")]) == 0
    assert (clone / "r.md").read_text(encoding="utf-8") == report


def test_invocation_log_keeps_the_commit_the_runner_started_with(tmp_path, monkeypatch):
    """A runner trains with the code it started with: its log entry carries the commit of its start, and where the
    checkout moved on while it ran (a commit made beside a long runner), the report's table says so."""
    commits = iter(["aaa1111", "bbb2222"])
    monkeypatch.setattr(study, "checkout_commit", lambda: next(commits))
    monkeypatch.setattr(study, "run_study", lambda *a, **k: 0)  # the runner's work itself is tested above
    csv_path = tmp_path / "s.csv"
    study._append_row(csv_path, fake_row("yolo11n", 0, None, 0.4))
    assert load_script("study").main(["--recipes", "yolo11n", "--seeds", "0", "--csv", str(csv_path), "--report",
                                      str(tmp_path / "r.md"), "--out", str(tmp_path / "out")]) == 0
    entry = json.loads(csv_path.with_suffix(".log.jsonl").read_text())
    assert entry["commit"] == "aaa1111" and entry["commit_at_exit"] == "bbb2222"
    assert "(started on aaa1111, the checkout was at bbb2222 when it ended) | 0 |" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("script, stem",
                         [("study", "accuracy"), ("study", "accuracy_context"), ("task_study", "tasks")])
def test_committed_reports_are_what_their_runner_writes(tmp_path, script, stem):
    """Every report in docs/ is generated: ``--report-only`` on a copy of docs/ (the CSV, the CSVs and the invocation
    log kept beside it, and the report itself, whose carried-over sections it keeps) writes it back byte for byte.
    This catches rows committed without regenerating the report, a hand edit, and a change to the generator's text
    whose reports were not regenerated."""
    docs = shutil.copytree(ROOT / "docs", tmp_path / "docs")
    csv_path, report = docs / f"{stem}.csv", docs / f"{stem}.md"
    assert csv_path.is_file() and report.is_file(), (csv_path, report)
    assert load_script(script).main(["--report-only", "--csv", str(csv_path), "--report", str(report),
                                     "--out", str(tmp_path / "out")]) == 0
    assert report.read_text(encoding="utf-8") == (ROOT / "docs" / f"{stem}.md").read_text(encoding="utf-8"), (
        f"docs/{stem}.md is not what its runner writes from the committed CSV: regenerate it with "
        f"`python scripts/{script}.py --report-only --csv docs/{stem}.csv --report docs/{stem}.md`")


def test_report_of_another_dataset_says_its_budget_is_not_the_default_studys(tmp_path):
    """scripts/study.py --report-only on a CSV of another dataset (e.g. shapes-context): the report's how-to-run part,
    which describes the default study, says that the report's own budget is another one; the default study's does
    not."""
    script = load_script("study")
    for data, other in (("shapes-context", True), ("shapes", False)):
        budget = study.Budget(data=data).key()
        csv_path, md = tmp_path / f"{data}.csv", tmp_path / f"{data}.md"
        for seed in (0, 1):
            study._append_row(csv_path, fake_row("yolo11n", seed, None, 0.4, budget=budget))
            study._append_row(csv_path, fake_row("pst-coarse", seed, 0, 0.3, budget=budget))
        assert script.main(["--report-only", "--csv", str(csv_path), "--report", str(md), "--out",
                            str(tmp_path / "none")]) == 0
        text = md.read_text()
        assert f"Budget: `{budget}`" in text
        assert (f"This report's budget is `{budget}`, not the default study's" in text) is other
