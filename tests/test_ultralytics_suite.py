"""scripts/ultralytics_suite.py (the referee run of Ultralytics' own tests): its loader, report parsing and checks.

The runs themselves take minutes and need the sdist from PyPI; CI runs the script after this suite.
"""

import json
import os
import subprocess
import sys

import pytest
from _cli import SCRIPTS, load_script  # tests/_cli.py


@pytest.fixture(scope="module")
def suite():
    """The referee script, imported as a module."""
    return load_script("ultralytics_suite")


@pytest.fixture(scope="module")
def standins():
    """The stand-in builder, imported as a module."""
    return load_script("suite_standins")


def test_standin_weight_loads_as_the_real_one(standins, tmp_path):
    """A stand-in checkpoint loads with YOLO(path) with the task, classes and keypoints of the real weights."""
    from ultralytics import YOLO

    assert standins.WEIGHTS["yolo26n-pose.pt"] == ("yolo26n-pose.yaml", "pose", "coco8-pose.yaml", 3)
    standins.build_weight(tmp_path / "w.pt", *standins.WEIGHTS["yolo26n-pose.pt"])
    model = YOLO(tmp_path / "w.pt")
    assert model.task == "pose" and model.names == {0: "person"}
    assert list(model.model.kpt_shape) == [17, 3] and model.model.yaml["channels"] == 3
    assert model.overrides["data"] == "coco8-pose.yaml" and model.ckpt["version"]


def test_standin_datasets_have_the_layout_of_their_yamls(standins, tmp_path):
    """Each stand-in dataset has the folders its Ultralytics YAML names, and a label, mask or depth map per image."""
    standins.build_datasets(tmp_path)
    for yaml_file, targets in (("coco8.yaml", "labels"), ("coco8-grayscale.yaml", "labels"),
                               ("coco8-seg.yaml", "labels"), ("coco8-pose.yaml", "labels"), ("dota8.yaml", "labels"),
                               ("cityscapes8.yaml", "masks"), ("depth8.yaml", "depth")):
        data = standins.dataset_yaml(yaml_file)
        for split in ("train", "val"):
            images = sorted((tmp_path / data["path"] / data[split]).glob("*.jpg"))
            assert len(images) == 4, (yaml_file, split)
            for im in images:
                suffix = ".txt" if targets == "labels" else ".png"
                assert (tmp_path / data["path"] / targets / split / im.with_suffix(suffix).name).is_file()
    pose = (tmp_path / "coco8-pose" / "labels" / "train" / "bus.txt").read_text().split("\n")[0].split()
    assert len(pose) == 5 + 17 * 3
    assert len(list((tmp_path / "imagenet10" / "train").iterdir())) == 10


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
