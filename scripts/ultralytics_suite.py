#!/usr/bin/env python
"""Ultralytics' own test suite as the referee: it must give the same outcomes with and without pst_yolo loaded.

Usage: ``python scripts/ultralytics_suite.py [--full] [--keep] [--no-standins] [-- PYTEST_ARGS...]``

1. Gets the tests of the installed Ultralytics version from its sdist (``pip download --no-binary :all:``) into a
   cache directory, once; later runs need no network.
2. Runs ``tests/test_python.py``, ``test_cli.py``, ``test_engine.py`` and ``test_exports.py`` twice, offline
   (``YOLO_OFFLINE=1``, settings in a fresh temporary ``YOLO_CONFIG_DIR``): first with stock Ultralytics, then with
   ``pst_yolo`` imported first in every Python process (pytest and every ``yolo ...`` command the tests start), through
   ``scripts/suite_site/sitecustomize.py`` on ``PYTHONPATH``. The two runs differ in one environment variable only.
3. Checks, from the markers each process writes, that the plugin was loaded in the pytest process and in the CLI
   subprocesses of the second run, and in no process of the first.
4. Prints passed/failed/skipped per file for both runs and exits 1 with a table of the tests whose outcome differs.

Before the runs, ``scripts/suite_standins.py`` builds local stand-ins for the weights and datasets the tests download
(untrained checkpoints of Ultralytics' own YAMLs, tiny datasets made of the package's two asset images), once, in a
stock process; each run gets its own copy in its weights and datasets directories, so stock models are really loaded,
trained, validated, run and exported in both runs (``--no-standins`` leaves them out). Tests that still need the
network, or assert what only trained weights give, fail in both runs the same way: that is expected and compared like
any other outcome. ``DESELECT`` lists the tests left out by default, each with its reason; ``--full``
runs them too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = HERE / "suite_site"  # holds sitecustomize.py
FILES = ("tests/test_python.py", "tests/test_cli.py", "tests/test_engine.py", "tests/test_exports.py")

# Left out by default (--full runs them), to keep both runs within ~25 min on 2 CPU cores: with the stand-ins every
# stock task really trains, validates and predicts, and a full run took 586 s of CPU (1117 s on 2 shared, busy cores);
# without these, a run takes 434-463 s of CPU (440 s wall on 2 lightly loaded cores), the stand-ins 16 s.
# Each left-out test repeats, for another task, a code path that a kept test runs with the plugin loaded: the `yolo`
# CLI train/val of the detect case (the other tasks' trainers and validators run in-process in test_engine.py's
# test_task and test_python.py's test_val), test_grayscale's detect case, test_distill's detect case.
_OTHER_TASKS = ("classify-model0-imagenet10", "depth-model1-depth8.yaml", "obb-model3-dota8.yaml",
                "pose-model4-coco8-pose.yaml", "segment-model5-coco8-seg.yaml", "semantic-model6-cityscapes8.yaml")
DESELECT: dict[str, str] = {
    **{f"tests/test_cli.py::test_{mode}[{p}]": f"`yolo {mode}` of the detect case runs the same CLI path; the task's "
       f"{mode} itself runs in-process in other kept tests; 5-30 s each"
       for mode in ("train", "val") for p in _OTHER_TASKS},
    **{f"tests/test_python.py::test_grayscale[{p}]": "a one-epoch training like the detect case, for another task "
       "(whose training test_engine.py's test_task runs); 15-30 s each" for p in _OTHER_TASKS[2:]},
    **{f"tests/test_cli.py::test_distill[{p}]": "distillation like the detect case, for another task; 10-30 s each"
       for p in ("segment-coco8-seg.yaml-yolo26n-seg.yaml-teacher1", "pose-coco8-pose.yaml-yolo26n-pose.yaml-teacher2",
                 "obb-dota8.yaml-yolo26n-obb.yaml-teacher3")},
}

PYTEST_INI = """[pytest]
markers =
    slow: skip slow tests unless --slow is set
filterwarnings =
    ignore::torch.jit.TracerWarning
"""


def fetch_tests(version: str, cache: Path) -> Path:
    """Return a directory holding Ultralytics ``version``'s ``tests/`` package, unpacked once from its sdist."""
    dest = cache / f"ultralytics-{version}"
    if (dest / "tests" / "__init__.py").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
               f"ultralytics=={version}", "-d", tmp]
        if subprocess.run(cmd).returncode:
            raise SystemExit(f"could not fetch the Ultralytics {version} sdist ({' '.join(cmd[1:])}); it is needed "
                             f"once, then {dest} is reused")
        (sdist,) = Path(tmp).glob("ultralytics-*.tar.gz")
        prefix = f"ultralytics-{version}/tests/"
        staging = Path(tmp) / "unpacked"
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.8.17 / 3.12
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            if not members:
                raise SystemExit(f"{sdist.name} has no tests/ directory")
            for m in members:
                m.name = m.name[len(f"ultralytics-{version}/"):]
                tar.extract(m, staging, **safe)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(staging), str(dest))
    return dest


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished child processes (and theirs), 0 where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_standins(out: Path) -> float:
    """Build the stand-in weights and datasets into ``out`` in a stock, offline process; return the seconds taken."""
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(out.parent / f"{out.name}-config"))
    for key in ("PST_SUITE_MARKERS", "PST_SUITE_PLUGIN"):
        env.pop(key, None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(HERE / "suite_standins.py"), str(out)], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"building the stand-ins failed:\n{proc.stdout}{proc.stderr}")
    return time.time() - t0


def run_suite(tests: Path, workdir: Path, plugin: bool, pytest_args: list[str],
              standins: Path | None = None) -> tuple[Path, Path, int, float]:
    """Run the test files once in a fresh copy of ``tests``; return (junit xml, markers file, pytest pid, seconds).

    ``standins`` (from ``build_standins``) holds ``weights`` and ``datasets``, copied into the run's own directories.
    """
    workdir.mkdir(parents=True)
    shutil.copytree(tests / "tests", workdir / "tests")
    if standins:
        for name in ("weights", "datasets"):
            shutil.copytree(standins / name, workdir / name)
    (workdir / "pytest.ini").write_text(PYTEST_INI)
    markers = workdir / "markers.jsonl"
    markers.touch()
    # YOLO_AUTOINSTALL=False: a test must not pip-install into this environment (Ultralytics' check_requirements would,
    # e.g. for MNN), or the second run would run in a different environment than the first.
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False", YOLO_CONFIG_DIR=str(workdir / "config"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `yolo` of this interpreter
    env.pop("PST_SUITE_MARKERS", None)
    subprocess.run(  # Ultralytics writes its settings file; datasets, weights and runs go into the work dir
        [sys.executable, "-c", "import sys; from ultralytics.utils import SETTINGS; SETTINGS.update("
         "datasets_dir=sys.argv[1] + '/datasets', runs_dir=sys.argv[1] + '/runs', weights_dir=sys.argv[1] + '/weights',"
         " sync=False)", str(workdir)],
        check=True, env=env, capture_output=True,
    )
    env.update(PST_SUITE_PLUGIN="1" if plugin else "0", PST_SUITE_MARKERS=str(markers))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), env.get("PYTHONPATH")) if p)
    junit = workdir / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", *FILES, "-p", "no:cacheprovider", "-q", "-rfE", "--color=no",
           f"--junitxml={junit}", "-o", "junit_family=xunit1", "--durations=15"]
    cmd += [f"--deselect={t}" for t in DESELECT] + pytest_args
    label = "with pst_yolo" if plugin else "stock"
    shown = " ".join(c for c in cmd[1:] if not c.startswith("--deselect="))
    print(f"\n=== Ultralytics tests, {label}: {shown} (+{len(DESELECT)} --deselect)\n    in {workdir}", flush=True)
    t0, cpu0 = time.time(), _children_cpu()
    with open(workdir / "pytest.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.wait()
    seconds = time.time() - t0
    print(f"pytest exited {proc.returncode} after {seconds:.0f} s, {_children_cpu() - cpu0:.0f} s CPU "
          f"(log: {workdir / 'pytest.log'})", flush=True)
    if not junit.is_file():
        raise SystemExit(f"pytest wrote no report; see {workdir / 'pytest.log'}")
    summary = (workdir / "pytest.log").read_text(errors="replace").rstrip().rsplit("\n", 1)[-1]
    deselected = int(re.search(r"(\d+) deselected", summary)[1]) if "deselected" in summary else 0
    if deselected != len(DESELECT) and not pytest_args:  # e.g. another Ultralytics version renamed a test
        print(f"WARNING: {deselected} tests deselected, not {len(DESELECT)}: check DESELECT against these tests")
    return junit, markers, proc.pid, seconds


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Map each test id in a JUnit report to (outcome, message): passed, failed, error or skipped.

    The run's directory (in test ids parametrized with weight paths) reads ``<run>`` so both runs' ids match.
    """
    result = {}
    for case in ET.parse(junit).iter("testcase"):
        path = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        test_id = f"{path}::{case.get('name')}".replace(str(junit.parent), "<run>")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip()
                break
        if test_id in result and result[test_id][0] != "passed":  # a teardown error after a failure: keep the first
            continue
        result[test_id] = (outcome, message)
    return result


def check_markers(markers: Path, plugin: bool, pytest_pid: int) -> list[str]:
    """Return problems with where pst_yolo was (not) loaded, from the lines each Python process wrote."""
    lines = [json.loads(x) for x in markers.read_text().splitlines() if x.strip()]
    problems = [f"pid {x['pid']} {x['argv']}: import pst_yolo failed: {x['error']}" for x in lines if x.get("error")]
    wrong = [x for x in lines if x["pst_yolo"] != plugin and (plugin or x["event"] == "exit")]
    problems += [f"pid {x['pid']} {x['argv']} ({x['event']}): pst_yolo {'not ' if plugin else ''}loaded" for x in wrong]
    pids = {x["pid"] for x in lines}
    cli = {x["pid"] for x in lines if x["argv"] and Path(x["argv"][0]).name == "yolo"}
    if pytest_pid not in pids:
        problems.append("the pytest process wrote no marker")
    if not cli:
        problems.append("no `yolo` subprocess wrote a marker")
    print(f"markers: {len(pids)} Python processes ({len(cli)} `yolo` commands), pst_yolo "
          f"{'loaded in every one' if plugin else 'loaded in none'}{'' if not problems else ': NO'}")
    return problems


def counts_table(runs: dict[str, dict[str, tuple[str, str]]]) -> str:
    """Per-file passed/failed/skipped counts of each run (errors count as failed), as a text table."""
    head = "".join(f"{label + ' passed':>17}{'failed':>8}{'skipped':>8}" for label in runs)
    rows = [f"{'file':<18}{head}"]
    files = sorted({t.split("::")[0] for r in runs.values() for t in r})
    for f in [*files, "total"]:
        cells = ""
        for r in runs.values():
            c = Counter(o for t, (o, _) in r.items() if f == "total" or t.split("::")[0] == f)
            cells += f"{c['passed']:>17}{c['failed'] + c['error']:>8}{c['skipped']:>8}"
        rows.append(f"{Path(f).name:<18}{cells}")
    return "\n".join(rows)


def main() -> int:
    """Fetch the tests, run them twice, compare; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "pst_yolo" / "ultralytics-tests", help="where the sdist's tests are unpacked (kept)")
    parser.add_argument("--workdir", type=Path, help="where both runs happen (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, reports, runs)")
    parser.add_argument("--full", action="store_true", help="also run the tests DESELECT leaves out")
    parser.add_argument("--no-standins", action="store_true",
                        help="do not give the tests local stand-ins for the weights and datasets they download")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if args.full:
        DESELECT.clear()

    import ultralytics

    tests = fetch_tests(ultralytics.__version__, args.cache)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ultralytics_suite_"))
    try:
        runs, problems, seconds = {}, [], {}
        standins = None
        if not args.no_standins:
            standins = workdir / "standins"
            print(f"stand-in weights and datasets built in {build_standins(standins):.0f} s: {standins}", flush=True)
        for label, plugin in (("stock", False), ("pst_yolo", True)):
            junit, markers, pid, seconds[label] = run_suite(tests, workdir / label, plugin, args.pytest_args, standins)
            runs[label] = outcomes(junit)
            problems += [f"{label} run: {p}" for p in check_markers(markers, plugin, pid)]

        print(f"\nUltralytics {ultralytics.__version__} tests, outcomes per file "
              f"(stock {seconds['stock']:.0f} s, pst_yolo {seconds['pst_yolo']:.0f} s):")
        print(counts_table(runs))
        stock, plug = runs["stock"], runs["pst_yolo"]
        absent = ("absent", "")
        differ = sorted(t for t in stock.keys() | plug.keys() if stock.get(t, absent)[0] != plug.get(t, absent)[0])
        if differ:
            print(f"\n{len(differ)} test(s) differ:")
            print(f"{'test':<90}{'stock':>10}{'pst_yolo':>10}")
            for t in differ:
                (a, ma), (b, mb) = stock.get(t, absent), plug.get(t, absent)
                print(f"{t:<90}{a:>10}{b:>10}")
                for label, m in (("stock", ma), ("pst_yolo", mb)):
                    if m:
                        print(f"    {label}: {m[:600]}")
        else:
            print(f"\nAll {len(stock)} tests have the same outcome with and without pst_yolo.")
        for p in problems:
            print(f"PROBLEM: {p}")
        return 1 if differ or problems else 0
    finally:
        if args.keep or args.workdir:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
