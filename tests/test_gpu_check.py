"""scripts/gpu_check.py on the CPU: arguments, the no-GPU exit, wheels, the report, and its measurement functions.

The sections need a CUDA GPU; what they are built from runs here on CPU tensors (the SDPA comparison on a PST layer,
the state-dict diff, the interleaved medians with a fake timer), the latency and compile sections at small sizes, and
the runner and report with fake sections.
"""

import doctest
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # only while importing them: scripts/ stays off the session's path
try:
    import _gpu_check_sections as gs
    import gpu_check as gc
finally:
    sys.path.remove(str(ROOT / "scripts"))


def test_doctests():
    for module in (gc, gs):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__


# ---------------------------------------------------------------------------------------------------------- arguments
def test_arguments():
    a = gc.parse_args([])
    assert a.sections == tuple(gc.SECTIONS) and a.out == gc.DEFAULT_OUT and a.wheels is None
    assert (a.epochs, a.imgsz, a.batch, a.runs, a.warmup) == (3, 256, 32, 100, 20)
    a = gc.parse_args(["--sections", "latency, sdpa", "--wheels", "w", "--out", "x.md", "--imgsz", "128"])
    assert a.sections == ("sdpa", "latency")  # run order, whatever order was given
    assert a.wheels == Path("w") and a.out == Path("x.md") and a.imgsz == 128
    assert gc.parse_args(["--prepare-wheels", "d"]).prepare_wheels == Path("d")


@pytest.mark.parametrize("argv", [["--sections", "train,gpu"], ["--sections", ""], ["--imgsz", "100"],
                                  ["--epochs", "0"], ["--warmup", "-1"], ["--prepare-wheels", "d", "--wheels", "d"]])
def test_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        gc.parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_sections_match():
    assert list(gs.SECTION_FUNCTIONS) == list(gc.SECTIONS)
    for r in gc.REQUIREMENTS:
        assert set(r.sections) <= set(gc.SECTIONS), r


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_one_line_exit_2_nothing_written(tmp_path):
    before = (ROOT / "docs" / "gpu.md").read_bytes()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "r.md")],
                         cwd=tmp_path, capture_output=True, text=True)
    lines = [s for s in (out.stdout + out.stderr).splitlines() if s.strip()]
    assert out.returncode == 2
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "nothing written" in lines[0], lines
    assert not any(tmp_path.iterdir())
    assert (ROOT / "docs" / "gpu.md").read_bytes() == before


# ------------------------------------------------------------------------------------------------------------- wheels
REQS = [gc.Requirement("ultralytics", "ultralytics", "everything", "ultralytics==8.4.190"),
        gc.Requirement("ultralytics-thop", "thop", "GFLOPs", "ultralytics-thop==2.2.3"),
        gc.Requirement("polars", "polars", "training", "polars==0.20.31"),
        gc.Requirement("numpy", "numpy", "everything"),
        gc.Requirement("opencv-python-headless", "cv2", "images")]
WHEELS = ["ultralytics-8.4.190-py3-none-any.whl", "ultralytics_thop-2.2.3-py3-none-any.whl",
          "polars-0.20.31-cp38-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]


def test_resolve_wheels():
    plan = gc.resolve_wheels(REQS, {"numpy", "polars"}.__contains__, WHEELS)  # a machine with numpy and polars
    assert [r.dist for r in plan.present] == ["polars", "numpy"]
    assert [(r.dist, w.name) for r, w in plan.install] == [("ultralytics", WHEELS[0]), ("ultralytics-thop", WHEELS[1])]
    assert [r.dist for r in plan.missing] == ["opencv-python-headless"]
    assert plan.missing_line() == ("missing, and not in the wheel folder: opencv-python-headless (import cv2: images; "
                                   "every section)")

    plan = gc.resolve_wheels(REQS, lambda m: False, [])  # a bare machine, no wheels: everything is missing
    assert not plan.present and not plan.install and len(plan.missing) == len(REQS)
    plan = gc.resolve_wheels(REQS, lambda m: True, WHEELS)  # everything there: nothing installed
    assert len(plan.present) == len(REQS) and not plan.install and not plan.missing_line()
    with pytest.raises(ValueError, match="two wheels of polars"):
        gc.resolve_wheels(REQS, lambda m: False, [*WHEELS, "polars-2.1.0-py3-none-any.whl"])


def test_wheel_set_pins():
    pinned = {gc.normalize(r.pin.split("==")[0]) for r in gc.REQUIREMENTS if r.pin}
    assert pinned == {"ultralytics", "polars", "ultralytics_thop", "onnxslim"}
    cmd = gc.pip_download_command(Path("w"), ["polars==0.20.31"], "3.12")
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "manylinux2014_x86_64" in cmd
    assert cmd[-3:] == ["-d", "w", "polars==0.20.31"]


def fake_wheel(folder: Path, dist: str = "pst_fake_dep", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel: one module whose VALUE is 42, with its dist-info."""
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = {f"{dist}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.mark.parametrize("use_pip", [True, False])
def test_install_wheels(tmp_path, use_pip):
    wheel = fake_wheel(tmp_path)
    how = gc.install_wheels([wheel], tmp_path / "site", use_pip=use_pip)
    assert ("pip install" in how) == use_pip
    code = "import importlib.metadata as m, pst_fake_dep; print(pst_fake_dep.VALUE, m.version('pst_fake_dep'))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
                         capture_output=True, text=True)
    assert out.stdout.split() == ["42", "1.0"], out.stderr


# ------------------------------------------------------------------------------------------------------------- report
def fake_results():
    return [gc.SectionResult("train", "ok", "| a |\n|---|\n| 1 |", seconds=61.2),
            gc.SectionResult("val", "failed", error="RuntimeError: no trained weights", seconds=0.1),
            gc.SectionResult("sdpa", "ok", "sdpa table"),
            gc.SectionResult("compile", "ok", "compile table"),
            gc.SectionResult("determinism", "failed", error="FloatingPointError: nan"),
            gc.SectionResult("latency", "not run", "Not selected (`--sections`)."),
            gc.SectionResult("tensorrt", "skipped", "TensorRT is not importable on this machine")]


META = {"date": "2030-01-01 00:00 UTC", "command": "python scripts/gpu_check.py --wheels .gpu_wheels",
        "machine": [("GPU", "NVIDIA H100 80GB HBM3"), ("driver / CUDA", "580.1 / CUDA 13.0")]}


def test_report_has_every_section_and_failures():
    deps = {"present": ["torch 2.11.0"], "installed": ["ultralytics 8.4.190"], "missing": ["onnx (import onnx: x)"],
            "how": "pip"}
    kept = gc.MARKER + "\n\n## How to run the GPU check\nkept text\n"
    text = gc.render_report(META, deps, fake_results(), kept)
    for i, title in enumerate(gc.SECTIONS.values(), 1):
        assert f"## {i}. {title}" in text
    assert "## 2. Validation at K 0 and 8, half and fp32 (**FAILED**, 0 s)" in text
    assert "Failed: `RuntimeError: no trained weights`" in text and "Failed: `FloatingPointError: nan`" in text
    assert "2 of 6 sections failed (val, determinism)" in text
    assert "(skipped, 0 s)" in text and "TensorRT is not importable" in text and "(not run)" in text
    assert META["command"] in text and "NVIDIA H100 80GB HBM3" in text and META["date"] in text
    assert "torch 2.11.0" in text and "ultralytics 8.4.190" in text and "**missing**: onnx" in text
    assert text.endswith(kept) and text.count(gc.MARKER) == 1


def test_docs_page_keeps_how_to_run():
    kept = gc.kept_text(gc.DEFAULT_OUT)
    assert kept.startswith(gc.MARKER)
    assert "## How to run the GPU check" in kept and "--prepare-wheels .gpu_wheels" in kept
    page = gc.DEFAULT_OUT.read_text()
    assert "**Not run on a GPU yet.**" in page[: page.index(gc.MARKER)]  # until a run replaces it


def test_run_sections_isolates_failures():
    calls = []

    def ok(name):
        return lambda ctx: calls.append(name) or f"{name} body"

    def boom(ctx):
        raise ValueError("boom\nsecond line")

    def skip(ctx):
        raise gs.SectionSkipped("not here")

    fns = {"train": boom, "val": ok("val"), "sdpa": skip, "latency": ok("latency"), "tensorrt": ok("tensorrt")}
    res = gc.run_sections(fns, None, selected=["train", "val", "sdpa", "latency"])
    assert [r.status for r in res] == ["failed", "ok", "skipped", "ok", "not run"]
    assert res[0].error == "ValueError: boom" and res[1].body == "val body" and res[2].body == "not here"
    assert calls == ["val", "latency"]


def test_main_with_fake_sections(tmp_path, monkeypatch):
    """main() end to end without a GPU: a missing package comes from the wheel folder; a failing section gives 1."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(gc, "no_gpu_reason", lambda: None)
    monkeypatch.setattr(gc, "machine_info", lambda commit: [("GPU", "fake"), ("commit", commit)])
    monkeypatch.setattr(gc, "setup_workspace", lambda work: dict(os.environ))
    monkeypatch.setattr(gc, "REQUIREMENTS", (gc.Requirement("pst-fake-dep", "pst_fake_dep", "a test"),
                                             gc.Requirement("pst-absent", "pst_absent", "nothing")))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels)

    def uses_dep(ctx):
        import pst_fake_dep

        assert ctx.device == "cuda:0" and ctx.work.is_dir()
        return f"value {pst_fake_dep.VALUE}"

    def fails(ctx):
        raise RuntimeError("section broke")

    fns = dict.fromkeys(gc.SECTIONS, uses_dep) | {"sdpa": fails}
    monkeypatch.setattr(gs, "SECTION_FUNCTIONS", fns)
    out = tmp_path / "r.md"
    code = gc.main(["--wheels", str(wheels), "--out", str(out), "--commit", "abc123", "--sections", "train,sdpa"])
    text = out.read_text()
    assert code == 1
    assert "value 42" in text and "Failed: `RuntimeError: section broke`" in text and "abc123" in text
    assert "pst_fake_dep 1.0" in text and "**missing**: pst-absent (import pst_absent: nothing; every section)" in text
    assert "--commit abc123" in text and text.endswith(gc.kept_text())
    sys.modules.pop("pst_fake_dep", None)


# ---------------------------------------------------------------------------------------- measurements (CPU stand-in)
def test_compare_sdpa_backends_on_cpu():
    from pst_yolo import PSTAttention

    torch.manual_seed(0)
    attn = PSTAttention(64, topk=8).train()  # training mode: BatchNorm statistics change with every forward
    x, u = torch.randn(2, 64, 12, 10), torch.randn(2, 64, 6, 5)
    state = {k: v.clone() for k, v in attn.state_dict().items()}
    rows = {r["backend"]: r for r in gs.compare_sdpa_backends(attn, (x, u))}
    assert all(torch.equal(v, state[k]) for k, v in attn.state_dict().items())  # state restored after every run
    assert rows["math (again)"]["status"] == "ok" and rows["math (again)"]["out_diff"] == 0
    assert rows["math (again)"]["grad_diff"] == 0  # same state, same kernel: nothing differs
    assert rows["memory-efficient"]["status"] == "unavailable" and rows["memory-efficient"]["note"]  # CUDA only
    flash = rows["flash"]  # the CPU flash kernel runs
    assert flash["status"] == "ok" and flash["out_diff"] < 1e-4 * flash["out_scale"]
    assert flash["grad_diff"] < 1e-4 * flash["grad_scale"]
    assert attn.conv_q.conv.weight.grad is None


def test_state_dict_diff():
    a = {"w": torch.zeros(3), "n": torch.tensor(5), "b": torch.ones(2)}
    assert gs.state_dict_diff(a, {k: v.clone() for k, v in a.items()}) == {
        "max_abs": 0.0, "first": None, "worst": None, "differing": 0, "total": 3}
    b = {"w": torch.tensor([0.0, 1e-7, 0.0]), "n": torch.tensor(6), "b": torch.ones(2)}
    d = gs.state_dict_diff(a, b)
    assert d["first"] == "w" and d["worst"] == "n" and d["max_abs"] == 1.0 and d["differing"] == 2
    d = gs.state_dict_diff(a, {"w": torch.zeros(3), "n": torch.tensor(5), "c": torch.ones(1)})
    assert d["first"] == "b" and d["max_abs"] == float("inf") and d["differing"] == 2 and d["total"] == 4


def test_interleaved_medians_with_fake_timer():
    clock, calls, syncs = [0.0], [], []
    costs = {"a": [5, 1, 9, 2], "b": [3, 3, 3, 3]}  # per timed call; "a" has a median of 3.5

    def fn(name):
        def run():
            calls.append(name)
            n = sum(c == name for c in calls) - 1  # warm-up calls cost nothing
            clock[0] += costs[name][n - 1] if n else 0

        return run

    res = gs.interleaved_medians({"a": fn("a"), "b": fn("b")}, runs=4, warmup=1, timer=lambda: clock[0],
                                 sync=lambda: syncs.append(len(calls)))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then each round starts further on
    assert res["a"] == {"median": 3.5, "min": 1, "n": 4} and res["b"] == {"median": 3, "min": 3, "n": 4}
    assert len(syncs) == 1 + 2 * 8  # after warm-up, then before and after every timed call


def test_match_detections():
    a = torch.tensor([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1], [50, 50, 60, 60, 0.7, 2]])
    b = torch.tensor([[21, 20, 30, 30, 0.75, 1], [0, 0, 10, 11, 0.85, 0], [50, 50, 60, 60, 0.7, 3]])  # last: class
    m = gs.match_detections(a, b)
    assert (m["a"], m["b"], m["matched"]) == (3, 3, 2)
    assert m["box"] == pytest.approx(1) and m["score"] == pytest.approx(0.05)
    assert gs.match_detections(a, b[:0])["matched"] == 0


def test_latency_section_on_cpu(tmp_path):
    ctx = gs.Context(device="cpu", work=tmp_path, runs=1, warmup=0, latency_imgsz=64)
    text = gs.latency(ctx)
    rows = [line for line in text.splitlines() if line.startswith("| fp")]
    assert len(rows) == 6 and "| fp16 | yolo11n-pst K 8 |" in text


def test_compile_section_on_cpu(tmp_path, monkeypatch):
    """The compile section end to end, with every torch.compile forced to aot_eager (inductor's code generation for the
    whole detector takes minutes on 2 CPU cores; tests/test_compile.py runs inductor on one layer)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, **{**kw, "backend": "aot_eager"}))
    ctx = gs.Context(device="cpu", work=tmp_path, det_imgsz=64, det_batch=8, det_fraction=0.05, latency_imgsz=64)
    text = gs.compiled(ctx)
    assert "| steps, K drawn | 3; K [" in text and "| graphs, graph breaks | " in text and ", 0 |" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| 0 |", "| 8 |"))]
    assert len(rows) == 2 and all(r[3] == "none" for r in rows), rows  # aot_eager: every gradient as eager's
