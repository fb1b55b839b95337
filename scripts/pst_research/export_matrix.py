"""Export matrix: every Ultralytics format x {stock YOLO11, PST pst_topk=0, PST pst_topk=K}, compared with PyTorch.

Each cell exports a copy of the model with ``YOLO.export`` (the plugin's hooks in place, exactly as a user runs it),
then, where the format runs on this machine, validates the exported file with ``YOLO(file).val`` and predicts a few
images, against PyTorch run the same way (square letterbox, batch 1). Cells run in their own process (a converter may
abort the interpreter) with a time limit, and each result is appended to ``results.jsonl`` as it finishes, so an
interrupted run resumes where it stopped. ``format_table`` turns the results into the markdown table of docs/export.md.
CLI: ``scripts/export_matrix.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ("MODEL_ROWS", "export_matrix", "format_table", "run_cell")

MODEL_ROWS = ("stock", "k0", "k8")  # column names: stock YOLO11, PST coarse only, PST with fine attention
_NO_RUNTIME = {  # formats Ultralytics can export here but whose runtime needs other hardware or OS
    "coreml": "Core ML runs only on macOS",
    "mlmodel": "Core ML runs only on macOS",
    "engine": "needs an NVIDIA GPU",
    "edgetpu": "needs a Coral Edge TPU",
    "rknn": "needs a Rockchip NPU",
    "imx": "needs a Sony IMX500 camera",
    "axelera": "needs an Axelera accelerator",
    "hailo": "needs a Hailo accelerator",
    "deepx": "needs a DEEPX NPU",
    "ascend": "needs a Huawei Ascend NPU",
    "coreai": "Core AI runs only on Apple devices",
}


def _cell_env() -> dict:
    """The environment of a cell's process: offline, and this research package importable (it is not installed)."""
    here = str(Path(__file__).resolve().parents[1])  # scripts/, the folder holding pst_research
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, YOLO_OFFLINE="1", PYTHONPATH=path)


def _first_line(text: str, limit: int = 160) -> str:
    """The most telling line of an error output: the last exception line, shortened."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "Exception" in ln or ln.startswith("pst-yolo:"):
            return ln[:limit]
    return (lines[-1] if lines else "no output")[:limit]


def _boxes(results) -> list:
    """Per image: boxes (xyxy) sorted by confidence, with class, as nested lists."""
    out = []
    for r in results:
        order = r.boxes.conf.argsort(descending=True)
        out.append(
            [[*r.boxes.xyxy[i].tolist(), float(r.boxes.cls[i])] for i in order.tolist()]
        )
    return out


def run_cell(model: str, fmt: str, pst_topk: int | None, quantize, imgsz: int, data: str, workdir: str,
             n_images: int = 16) -> dict:
    """Export ``model`` to ``fmt`` and compare the export with PyTorch (run in the cell's own process).

    Args:
        model (str): ``.pt`` weights; copied into ``workdir`` first so exports land there.
        fmt (str): Ultralytics export format, or ``"pytorch"`` for the reference row itself.
        pst_topk (int | None): Fine-attention top-k (None for a stock model).
        quantize (int | None): ``quantize`` export argument (8 for the int8 rows, calibrated on ``data``).
        imgsz (int): Export and validation size.
        data (str): Dataset for validation and int8 calibration.
        workdir (str): Folder for the copy and its export.
        n_images (int): Validation images whose predicted boxes are compared.

    Returns:
        (dict): ``exported``, ``runs``, ``map`` (mAP50-95), ``map50``, ``boxes`` (per image), ``reason``.
    """
    import shutil

    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    import pst_yolo  # noqa: F401  (hooks)

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    pt = work / "model.pt"
    shutil.copy(model, pt)
    topk = {} if pst_topk is None else {"pst_topk": pst_topk}
    cell = {"exported": False, "runs": False, "map": None, "map50": None, "boxes": None, "reason": ""}
    val_dir = Path(check_det_dataset(data)["val"])
    images = sorted(str(p) for p in val_dir.rglob("*.jpg"))[:n_images]
    if fmt == "pytorch":
        target, cell["exported"] = str(pt), True
    else:
        from ultralytics.engine.exporter import export_formats

        formats = export_formats()
        takes = dict(zip(formats["Argument"], formats["Arguments"])).get(fmt, [])
        extra = {"quantize": quantize} if quantize else {}
        if "data" in takes:  # calibration (int8 formats) on the offline data, never Ultralytics' download default
            extra["data"] = data
        target = YOLO(str(pt)).export(format=fmt, imgsz=imgsz, **topk, **extra)
        cell["exported"] = bool(target) and Path(str(target)).exists()
        print("PST_MATRIX_EXPORTED", flush=True)  # for the parent, should the runtime then kill this process
        if not cell["exported"]:
            cell["reason"] = "export returned no file"
            return cell
        if fmt in _NO_RUNTIME:
            cell["reason"] = _NO_RUNTIME[fmt]
            return cell
    run_args = topk if fmt == "pytorch" else {}
    m = YOLO(str(target), task="detect")
    metrics = m.val(data=data, imgsz=imgsz, batch=1, rect=False, plots=False, verbose=False, **run_args)
    cell.update(runs=True, map=float(metrics.box.map), map50=float(metrics.box.map50))
    cell["boxes"] = _boxes(YOLO(str(target), task="detect").predict(images, imgsz=imgsz, conf=0.1, verbose=False,
                                                                       **run_args))
    return cell


def _short(reason: str, limit: int = 90) -> str:
    """A reason for a table cell: exception class without its module path, cut at ``limit`` characters."""
    import re

    reason = re.sub(r"^[\w.]*\.(\w+(Error|Exception|Fail))\b", r"\1", reason).replace("|", "/")
    return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "…"


def _box_delta(ref, got) -> tuple[bool, float | None]:
    """(same box count and classes on every image, largest coordinate difference in pixels)."""
    if ref is None or got is None or len(ref) != len(got):
        return False, None
    same, delta = True, 0.0
    for a, b in zip(ref, got):
        if len(a) != len(b):
            same = False
            continue
        for ba, bb in zip(a, b):
            delta = max(delta, *(abs(x - y) for x, y in zip(ba[:4], bb[:4])))
            same &= ba[4] == bb[4]
    return same, delta


def export_matrix(pst_model: str | Path, stock_model: str | Path, formats, out: str | Path, topk: int = 8,
                  imgsz: int = 128, data: str = "shapes", int8_formats=(), python: dict | None = None,
                  timeout: int = 900, log=print) -> list[dict]:
    """Run (or resume) the matrix; returns one dict per (format, model row, precision).

    Args:
        pst_model (str | Path): Trained PST ``.pt``.
        stock_model (str | Path): Trained stock YOLO11 ``.pt`` (same data and recipe).
        formats (Iterable[str]): Ultralytics formats to export.
        out (str | Path): Output folder (``results.jsonl`` and one work folder per cell).
        topk (int): The fine-attention column's ``pst_topk``.
        imgsz (int): Export and validation size.
        data (str): Validation (and int8 calibration) dataset.
        int8_formats (Iterable[str]): Formats to also export with ``quantize=8``.
        python (dict | None): Interpreter per format (a converter needing other package versions); default this one.
        timeout (int): Seconds per cell.
        log (Callable): Progress printer.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.jsonl"
    done = {}
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            done[r["format"], r["model"], r["quantize"]] = r
    models = {"stock": (str(stock_model), None), "k0": (str(pst_model), 0), f"k{topk}": (str(pst_model), topk)}
    jobs = [("pytorch", name, None) for name in models]
    jobs += [(fmt, name, None) for fmt in formats for name in models]
    jobs += [(fmt, name, 8) for fmt in int8_formats for name in models]
    for fmt, name, quantize in jobs:
        if (fmt, name, quantize) in done:
            continue
        model, k = models[name]
        tag = f"{fmt}{'_int8' if quantize else ''}_{name}"
        args = json.dumps([model, fmt, k, quantize, imgsz, data, str(out / tag)])
        code = ("import json, sys; from pst_research.export_matrix import run_cell; "
                "print('PST_MATRIX_CELL ' + json.dumps(run_cell(*json.loads(sys.argv[1]))))")
        exe = (python or {}).get(fmt, sys.executable)
        t0 = time.time()
        try:
            proc = subprocess.run([exe, "-c", code, args], capture_output=True, text=True, timeout=timeout,
                                  env=_cell_env(), cwd=out)
            text = proc.stdout + proc.stderr
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PST_MATRIX_CELL ")), None)
            if line:
                cell = json.loads(line[len("PST_MATRIX_CELL "):])
            else:
                exported = "PST_MATRIX_EXPORTED" in proc.stdout
                crash = f"crashed (signal {-proc.returncode}) " if proc.returncode < 0 else ""
                cell = {"exported": exported, "runs": False, "map": None, "map50": None, "boxes": None,
                        "reason": f"{'inference ' if exported else ''}{crash}{_first_line(text)}"}
        except subprocess.TimeoutExpired:
            cell = {"exported": False, "runs": False, "map": None, "map50": None, "boxes": None,
                    "reason": f"no result within {timeout} s"}
        cell.update(format=fmt, model=name, quantize=quantize, seconds=round(time.time() - t0, 1))
        with open(results_file, "a") as f:
            f.write(json.dumps(cell) + "\n")
        done[fmt, name, quantize] = cell
        log(f"{tag}: exported={cell['exported']} runs={cell['runs']} mAP={cell['map']} {cell['reason']}")
    return list(done.values())


def format_table(rows: list[dict], topk: int = 8) -> str:
    """Markdown: one line per format (and int8 variant), columns stock / k=0 / k=K with exported, runs, Δ mAP."""
    by = {(r["format"], r["model"], r["quantize"]): r for r in rows}
    names = ("stock", "k0", f"k{topk}")
    head = ["format", "stock YOLO11n", "PST pst_topk=0", f"PST pst_topk={topk}"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|"]
    keys = list(dict.fromkeys((r["format"], r["quantize"]) for r in rows if r["format"] != "pytorch"))
    for fmt, quantize in keys:
        cells = []
        for name in names:
            r = by.get((fmt, name, quantize))
            ref = by.get(("pytorch", name, None))
            if r is None:
                cells.append("—")
            elif not r["exported"]:
                cells.append(f"✗ export: {_short(r['reason'])}")
            elif not r["runs"]:
                cells.append(f"✓ exported; not run: {r['reason']}" if r["reason"] in _NO_RUNTIME.values() else
                             f"✓ exported; ✗ {_short(r['reason'])}")
            else:
                delta = r["map"] - ref["map"] if ref and ref.get("map") is not None else float("nan")
                same, box = _box_delta(ref and ref.get("boxes"), r.get("boxes"))
                boxes = f"same boxes (≤{box:.2g} px)" if same else "boxes differ" + (f" (≤{box:.2g} px)" if box else "")
                cells.append(f"✓ runs, ΔmAP50-95 {delta:+.4f}, {boxes}")
        label = f"{fmt} int8" if quantize else fmt
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    refs = [by.get(("pytorch", n, None)) for n in names]
    maps = ", ".join(f"{h} {r['map']:.4f}" for h, r in zip(head[1:], refs) if r and r.get("map") is not None)
    return "\n".join(lines) + (f"\n\nPyTorch mAP50-95 (same validation): {maps}." if maps else "")
