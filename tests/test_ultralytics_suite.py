"""scripts/ultralytics_suite.py (the referee run of Ultralytics' own tests): its loader, report parsing and checks.

The runs themselves take minutes and need the sdist from PyPI; CI runs the script after this suite.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def suite():
    """The script, imported as a module."""
    spec = importlib.util.spec_from_file_location("ultralytics_suite", SCRIPTS / "ultralytics_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("plugin", [False, True])
def test_sitecustomize_loads_plugin_only_when_asked(plugin, tmp_path):
    """Every Python process started with the suite's PYTHONPATH marks itself; pst_yolo is imported iff asked."""
    markers = tmp_path / "markers.jsonl"
    env = dict(os.environ, PST_SUITE_PLUGIN="1" if plugin else "0", PST_SUITE_MARKERS=str(markers),
               PYTHONPATH=os.pathsep.join(p for p in (str(SCRIPTS / "suite_site"), os.environ.get("PYTHONPATH")) if p))
    code = "import sys; print('pst_yolo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(plugin)
    lines = [json.loads(x) for x in markers.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["start", "exit"]
    assert all(x["pst_yolo"] is plugin and not x.get("error") for x in lines)


def test_outcomes_and_comparison_inputs(suite, tmp_path):
    """JUnit cases map to outcomes under ids without the run's directory; a teardown error keeps the first outcome."""
    run = tmp_path / "stock"
    run.mkdir()
    (run / "junit.xml").write_text(f"""<testsuites><testsuite>
<testcase classname="tests.test_cli" name="test_a" file="tests/test_cli.py"/>
<testcase classname="tests.test_cli" name="test_b[{run}/weights/m.pt]" file="tests/test_cli.py">
  <failure message="ConnectionError: offline">trace</failure></testcase>
<testcase classname="tests.test_python" name="test_c" file="tests/test_python.py"><skipped message="no"/></testcase>
<testcase classname="tests.test_python" name="test_d" file="tests/test_python.py"><failure message="x"/></testcase>
<testcase classname="tests.test_python" name="test_d" file="tests/test_python.py"><error message="teardown"/></testcase>
</testsuite></testsuites>""")
    got = suite.outcomes(run / "junit.xml")
    assert {k: v[0] for k, v in got.items()} == {
        "tests/test_cli.py::test_a": "passed", "tests/test_cli.py::test_b[<run>/weights/m.pt]": "failed",
        "tests/test_python.py::test_c": "skipped", "tests/test_python.py::test_d": "failed"}
    table = suite.counts_table({"stock": got, "pst_yolo": got})
    assert table.splitlines()[-1].split() == ["total", "1", "2", "1", "1", "2", "1"]


def test_check_markers(suite, tmp_path):
    """The plugin run needs pytest and at least one `yolo` command with pst_yolo; the stock run needs it nowhere."""
    markers = tmp_path / "m.jsonl"

    def write(*lines):
        markers.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def line(pid, argv0, event, loaded, error=None):
        return dict(pid=pid, argv=[argv0], event=event, pst_yolo=loaded, error=error)

    yolo = "/venv/bin/yolo"
    write(line(1, "-m", "start", True), line(2, yolo, "start", True), line(2, yolo, "exit", True))
    assert suite.check_markers(markers, True, 1) == []
    assert suite.check_markers(markers, True, 7) == ["the pytest process wrote no marker"]
    assert len(suite.check_markers(markers, False, 1)) == 1  # the yolo exit line says loaded
    write(line(1, "-m", "start", True))
    assert suite.check_markers(markers, True, 1) == ["no `yolo` subprocess wrote a marker"]
    write(line(1, "-m", "start", False, error="ImportError: x"), line(2, "yolo", "exit", False))
    assert len(suite.check_markers(markers, True, 1)) == 3  # failed import, and not loaded in either process
    write(line(1, "-m", "start", False), line(1, "-m", "exit", False), line(2, "yolo", "exit", False))
    assert suite.check_markers(markers, False, 1) == []
