#!/usr/bin/env python
"""Measure PST on a CUDA GPU in one command and write the results to docs/gpu.md.

Two steps, because the GPU machines this project borrows have PyTorch but neither Ultralytics nor a network:

1. Here, with the package registries: ``python scripts/gpu_check.py --prepare-wheels .gpu_wheels`` downloads the
   few wheels such a machine lacks (see ``REQUIREMENTS``) into a git-ignored folder and prints their size.
2. There, with this working tree and that folder copied along:
   ``python scripts/gpu_check.py --wheels .gpu_wheels [--out PATH] [--commit HASH]``. It installs only what is
   missing into a temporary folder (never touching the machine's own packages), imports pst_yolo from this working
   tree, runs the sections below and writes the markdown report.

Sections (``--sections``, each independent: one that raises is reported with its one-line message and the others
still run; the exit code is 1 if any failed): ``train`` any-K AMP training of yolo11n-pst on shapes; ``val`` its
mAP50-95 at pst_topk 0 and 8 in half and fp32; ``sdpa`` the SDPA backends forward and backward at K 8 and 16;
``compile`` a ``compile=True`` any-K training through the trainer, then inductor against eager on the detector;
``determinism`` two ``deterministic=True`` trainings with one seed; ``latency`` CUDA eager latency of yolo11n-pst
against yolo11n at 640; ``tensorrt`` fp16 engines at pst_topk 0 and 8 where TensorRT is importable.

Without a CUDA GPU it prints one line and exits with 2, writing nothing. The sections themselves live in
``_gpu_check_sections.py`` beside this file; this file imports nothing beyond the standard library until it knows
there is a GPU, so it runs before Ultralytics is installed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "docs" / "gpu.md"
MARKER = "<!-- gpu_check: the text above this line is written by scripts/gpu_check.py; the text below it is kept -->"
TREE_BUDGET_MIB = 64  # the most a borrowed GPU machine takes along: working tree plus wheels

# The target machine's interpreter: its wheels are chosen for it (all of the pinned set is pure Python or abi3).
TARGET_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


@dataclass(frozen=True)
class Requirement:
    """One distribution the check imports: its import name, what needs it, and the wheel to bring if it may lack it.

    Args:
        dist (str): Distribution name (as pip knows it).
        module (str): Top-level module that ``import`` looks for.
        why (str): What needs it, for the report.
        pin (str | None): ``name==version`` downloaded by ``--prepare-wheels``; None for what the machine must have.
        sections (tuple[str, ...]): Sections that cannot run without it (all of them when empty).
    """

    dist: str
    module: str
    why: str
    pin: str | None = None
    sections: tuple[str, ...] = ()

    def describe(self) -> str:
        """``dist (import module: why; sections ...)`` for a missing-package message.

        Examples:
            >>> Requirement("onnx", "onnx", "ONNX export", sections=("tensorrt",)).describe()
            'onnx (import onnx: ONNX export; section tensorrt)'
        """
        where = f"section{'s' * (len(self.sections) > 1)} {', '.join(self.sections)}" if self.sections else \
            "every section"
        return f"{self.dist} (import {self.module}: {self.why}; {where})"


# Found by experiment (importing pst_yolo, then a training, a validation and an ONNX export, recording which
# distributions the loaded modules came from). The first four are what a PyTorch image lacks; the rest are
# expected there and are only checked. polars is pinned to 0.20.31 (29 MB), the smallest release Ultralytics accepts
# (>=0.20); from 1.3x on polars ships a separate ~54 MB runtime that would not fit beside the working tree.
REQUIREMENTS = (
    Requirement("ultralytics", "ultralytics", "everything (pst_yolo is a plugin for it)", "ultralytics==8.4.190"),
    Requirement("polars", "polars", "training: Ultralytics reads results.csv at every checkpoint save",
                "polars==0.20.31", ("train", "determinism")),
    Requirement("ultralytics-thop", "thop", "GFLOPs in model summaries (without it Ultralytics reports 0)",
                "ultralytics-thop==2.2.3", ("train",)),
    Requirement("onnxslim", "onnxslim", "ONNX simplification in the TensorRT export", "onnxslim==0.1.98",
                ("tensorrt",)),
    Requirement("torch", "torch", "everything"),
    Requirement("torchvision", "torchvision", "Ultralytics (NMS, transforms)"),
    Requirement("numpy", "numpy", "everything"),
    Requirement("opencv-python-headless", "cv2", "images: the shapes dataset, Ultralytics' loaders"),
    Requirement("pillow", "PIL", "Ultralytics' image checks"),
    Requirement("pyyaml", "yaml", "model and dataset YAMLs"),
    Requirement("matplotlib", "matplotlib", "Ultralytics' metrics module imports it"),
    Requirement("requests", "requests", "Ultralytics' download utilities import it"),
    Requirement("onnx", "onnx", "ONNX export before a TensorRT build", sections=("tensorrt",)),
)

SECTIONS = {  # name -> title, in the order they run and are reported
    "train": "Any-K AMP training",
    "val": "Validation at K 0 and 8, half and fp32",
    "sdpa": "SDPA backends, forward and backward",
    "compile": "compile=True any-K training; inductor against eager",
    "determinism": "Two deterministic=True trainings, one seed",
    "latency": "CUDA eager latency at 640",
    "tensorrt": "TensorRT fp16 engines",
}


# ------------------------------------------------------------------------------------------------------ arguments
def _sections(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown or text!r}; choose from {','.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in names)  # run order, whatever order was given


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _imgsz(text: str) -> int:
    value = _positive(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (the model's largest stride), got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prepare-wheels", type=Path, metavar="DIR",
                   help="download the wheel set for the GPU machine into DIR, replacing the wheels there\n"
                        "(run where pip reaches the package registry)")
    p.add_argument("--python-version", default=TARGET_PYTHON,
                   help=f"with --prepare-wheels: the GPU machine's Python (default {TARGET_PYTHON})")
    p.add_argument("--wheels", type=Path, metavar="DIR", help="install what this machine lacks from the wheels in DIR")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report to write (default docs/gpu.md)")
    p.add_argument("--sections", type=_sections, default=tuple(SECTIONS),
                   help=f"comma-separated subset to run (default all: {','.join(SECTIONS)})")
    p.add_argument("--epochs", type=_positive, default=3, help="any-K AMP training epochs (default 3)")
    p.add_argument("--imgsz", type=_imgsz, default=256, help="training and validation image size (default 256)")
    p.add_argument("--batch", type=_positive, default=32, help="training and validation batch (default 32)")
    p.add_argument("--runs", type=_positive, default=100, help="timed interleaved rounds for latency (default 100)")
    p.add_argument("--warmup", type=int, default=20, help="untimed rounds before timing (default 20)")
    p.add_argument("--commit", default=None, help="git commit to report when the working tree has no .git")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (datasets, runs, engines)")
    args = p.parse_args(argv)
    if args.prepare_wheels and args.wheels:
        p.error("--prepare-wheels (here) and --wheels (on the GPU machine) are two separate steps")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


# --------------------------------------------------------------------------------------------------------- wheels
def normalize(name: str) -> str:
    """Distribution name as wheel file names spell it (PEP 503 normalised, ``-`` as ``_``).

    Examples:
        >>> normalize("Ultralytics-THOP"), normalize("opencv.python")
        ('ultralytics_thop', 'opencv_python')
    """
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_dist(path: str | Path) -> str:
    """Normalised distribution name of a wheel file (``polars-0.20.31-cp38-abi3-....whl`` -> ``polars``)."""
    return normalize(Path(path).name.split("-")[0])


@dataclass
class WheelPlan:
    """What a machine has, what the wheel folder brings, and what is missing from both."""

    present: list[Requirement] = field(default_factory=list)
    install: list[tuple[Requirement, Path]] = field(default_factory=list)
    missing: list[Requirement] = field(default_factory=list)

    def missing_line(self) -> str:
        """One line naming every missing distribution and what needs it ('' when nothing is missing)."""
        if not self.missing:
            return ""
        return "missing, and not in the wheel folder: " + ", ".join(r.describe() for r in self.missing)


def resolve_wheels(requirements: Iterable[Requirement], importable: Callable[[str], bool],
                   wheel_files: Iterable[str | Path]) -> WheelPlan:
    """Split ``requirements`` into present, to install from ``wheel_files``, and missing.

    Args:
        requirements (Iterable[Requirement]): What the check imports.
        importable (Callable[[str], bool]): Whether a top-level module can be found on this machine.
        wheel_files (Iterable[str | Path]): Wheels at hand (one per distribution).

    Returns:
        (WheelPlan): A requirement is present when its module is importable, else installed from its wheel if there
        is one, else missing.

    Raises:
        ValueError: If the folder holds two wheels of one needed distribution (an install would be ambiguous).

    Examples:
        >>> reqs = [Requirement("ultralytics", "ultralytics", "all"), Requirement("numpy", "numpy", "all")]
        >>> plan = resolve_wheels(reqs, lambda m: m == "numpy", ["ultralytics-8.4.190-py3-none-any.whl"])
        >>> [r.dist for r in plan.present], [w.name for _, w in plan.install], plan.missing
        (['numpy'], ['ultralytics-8.4.190-py3-none-any.whl'], [])
    """
    by_dist: dict[str, list[Path]] = {}
    for f in wheel_files:
        by_dist.setdefault(wheel_dist(f), []).append(Path(f))
    plan = WheelPlan()
    for req in requirements:
        if importable(req.module):
            plan.present.append(req)
            continue
        found = by_dist.get(normalize(req.dist), [])
        if len(found) > 1:
            raise ValueError(f"two wheels of {req.dist} in the wheel folder ({', '.join(p.name for p in found)}); "
                             f"keep one (prepare the folder again)")
        if found:
            plan.install.append((req, found[0]))
        else:
            plan.missing.append(req)
    return plan


def module_importable(module: str) -> bool:
    """Whether ``import module`` would find something (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_version(req: Requirement) -> str:
    """``name version`` of the distribution that provides ``req.module`` here (its pip name if that is unknown)."""
    from importlib import metadata

    try:
        dist = (metadata.packages_distributions().get(req.module) or [req.dist])[0]
        return f"{dist} {metadata.version(dist)}"
    except Exception:
        return req.dist


def install_wheels(wheels: list[Path], target: Path, use_pip: bool | None = None) -> str:
    """Install ``wheels`` into ``target`` without dependencies, leaving the interpreter's own packages alone.

    With pip (``--no-index --no-deps --target``) when it is importable, else by unpacking each wheel (what pip does for
    pure and abi3 wheels without scripts). Returns how it was done, for the report.

    Raises:
        RuntimeError: pip failed (its last output line is the message).
    """
    target.mkdir(parents=True, exist_ok=True)
    if not wheels:
        return "nothing to install"
    if use_pip is None:
        use_pip = module_importable("pip")
    if use_pip:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, wheels)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            lines = (out.stderr or out.stdout).strip().splitlines() or [f"exit code {out.returncode}"]
            raise RuntimeError(f"pip install --target failed: {lines[-1]}")
        return "pip install --no-index --no-deps --target <temporary folder>"
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            z.extractall(target)
    return "unpacked into <temporary folder> (pip not importable)"


def pip_download_command(directory: Path, pins: Iterable[str], python_version: str = TARGET_PYTHON) -> list[str]:
    """The ``pip download`` command that fetches ``pins`` as wheels for the GPU machine (no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--python-version", python_version, "--implementation", "cp"]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    return [*cmd, "-d", str(directory), *pins]


def tree_bytes(root: Path = ROOT) -> int | None:
    """Bytes of the files that travel with a working tree (tracked plus untracked, not ignored); None without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((root / f).stat().st_size for f in out.stdout.decode().split("\0") if f and (root / f).is_file())


def prepare_wheels(directory: Path, python_version: str = TARGET_PYTHON) -> int:
    """Download the pinned wheel set into ``directory`` (old wheels there are removed first); print sizes."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.whl"):
        old.unlink()
    pins = [r.pin for r in REQUIREMENTS if r.pin]
    cmd = pip_download_command(directory, pins, python_version)
    print("gpu_check: " + shlex.join(cmd[1:]), file=sys.stderr, flush=True)
    if subprocess.run(cmd).returncode:
        print("gpu_check: pip download failed (above); the wheel folder is incomplete", file=sys.stderr)
        return 1
    wheels = sorted(directory.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"{total / 2**20:8.2f} MiB  {len(wheels)} wheels in {directory}")
    tree = tree_bytes()
    if tree is not None:
        both = (tree + total) / 2**20
        print(f"{tree / 2**20:8.2f} MiB  working tree; with the wheels {both:.1f} MiB of the {TREE_BUDGET_MIB} MiB "
              f"a GPU machine takes along" + ("" if both <= TREE_BUDGET_MIB else "  -- TOO LARGE"))
        if both > TREE_BUDGET_MIB:
            return 1
    return 0


# ---------------------------------------------------------------------------------------------------------- report
@dataclass
class SectionResult:
    """Outcome of one section: status is ``ok``, ``failed``, ``skipped`` or ``not run``."""

    name: str
    status: str
    body: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def title(self) -> str:
        return SECTIONS.get(self.name, self.name)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters).

    Examples:
        >>> one_line(ValueError("bad value\\nmore detail"))
        'ValueError: bad value'
    """
    msg = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def run_sections(sections: dict[str, Callable], ctx, log: Callable[[str], None] = lambda m: None,
                 selected: Iterable[str] | None = None) -> list[SectionResult]:
    """Run each selected section function ``fn(ctx) -> markdown`` in order; an exception fails only its own section.

    An exception with a true ``section_skipped`` attribute marks its section skipped (its message is the body).

    Args:
        sections (dict[str, Callable]): Section name -> function, in run order.
        ctx: Passed to each function (shared state such as the trained weights lives on it).
        log (Callable[[str], None]): Progress messages.
        selected (Iterable[str] | None): Names to run (default all); the others are ``not run``.

    Returns:
        (list[SectionResult]): One per section, in order.
    """
    chosen = set(sections if selected is None else selected)
    results = []
    for name, fn in sections.items():
        if name not in chosen:
            results.append(SectionResult(name, "not run", "Not selected (`--sections`)."))
            continue
        log(f"section {name}: {SECTIONS.get(name, name)} ...")
        t0 = time.perf_counter()
        try:
            res = SectionResult(name, "ok", fn(ctx) or "")
        except Exception as e:  # a failing section is reported; the others still run
            if getattr(e, "section_skipped", False):  # cannot apply here (e.g. no TensorRT): its message says why
                res = SectionResult(name, "skipped", str(e))
            else:
                traceback.print_exc()
                res = SectionResult(name, "failed", error=one_line(e))
        res.seconds = time.perf_counter() - t0
        log(f"section {name}: {res.status} ({res.seconds:.0f} s){': ' + res.error if res.error else ''}")
        results.append(res)
    return results


def kept_text(path: Path = DEFAULT_OUT) -> str:
    """The hand-written part of the report page: from the marker line on (just the marker if there is none)."""
    text = path.read_text() if path.is_file() else ""
    i = text.find(MARKER)
    return text[i:] if i >= 0 else MARKER + "\n"


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table.

    Examples:
        >>> print(md_table(["a", "b"], [[1, "x"]]))
        | a | b |
        |---|---|
        | 1 | x |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(meta: dict, deps: dict, results: list[SectionResult], kept: str = MARKER + "\n") -> str:
    """The report page: header, machine, dependencies, one part per section, then the kept hand-written text.

    Args:
        meta (dict): ``date``, ``command`` and ``machine`` (a list of (label, value) pairs).
        deps (dict): ``present``, ``installed``, ``missing`` (lists of strings) and ``how`` (how they were installed).
        results (list[SectionResult]): The sections' outcomes, in order.
        kept (str): Text from the marker line on, appended unchanged.
    """
    failed = [r for r in results if r.status == "failed"]
    ran = [r for r in results if r.status != "not run"]
    verdict = (f"{len(failed)} of {len(ran)} sections failed ({', '.join(r.name for r in failed)})" if failed
               else f"all {len(ran)} sections that ran finished")
    out = [
        "# PST on a GPU",
        "",
        f"Measured by `scripts/gpu_check.py` on {meta['date']}: {verdict}. Every number on this page comes from that "
        "one run; the command was:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        md_table(["machine", ""], [[k, v] for k, v in meta["machine"]]),
        "",
        "**Dependencies.** " + "; ".join(
            p for p in (
                f"present on the machine: {', '.join(deps.get('present', [])) or 'none'}",
                f"installed from the wheel folder ({deps.get('how', '')}): {', '.join(deps.get('installed', []))}"
                if deps.get("installed") else "nothing installed from wheels",
                f"**missing**: {', '.join(deps['missing'])}" if deps.get("missing") else "",
            ) if p
        ) + ".",
        "",
    ]
    for i, r in enumerate(results, 1):
        status = {"ok": "ok", "failed": "**FAILED**", "skipped": "skipped", "not run": "not run"}[r.status]
        timing = f", {r.seconds:.0f} s" if r.status in ("ok", "failed", "skipped") else ""
        out += [f"## {i}. {r.title} ({status}{timing})", ""]
        if r.error:
            out += [f"Failed: `{r.error}`", ""]
        if r.body:
            out += [r.body.rstrip(), ""]
    return "\n".join(out) + "\n" + kept


# --------------------------------------------------------------------------------------------------------- machine
def git_commit(root: Path = ROOT) -> str | None:
    """``HEAD`` of the working tree's git checkout (``+ uncommitted changes`` if dirty), or None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception as e:
        return f"not importable ({one_line(e)})"


def machine_info(commit: str | None) -> list[tuple[str, str]]:
    """(label, value) rows: GPU, driver, CUDA, cuDNN, torch, ultralytics, pst_yolo and its commit, Python, CPU."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return [
        ("GPU", f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
                f"{torch.cuda.device_count()} visible)"),
        ("driver / CUDA", f"{_nvidia_driver()} / CUDA {torch.version.cuda} (cuDNN {torch.backends.cudnn.version()})"),
        ("torch / torchvision", f"{torch.__version__} / {_version('torchvision')}"),
        ("ultralytics", _version("ultralytics")),
        ("pst_yolo", f"{_version('pst_yolo')}, commit {commit or git_commit() or 'unknown (no git checkout)'}"),
        ("Python", f"{platform.python_version()} on {platform.platform(terse=True)}, {os.cpu_count()} CPUs"),
    ]


# ------------------------------------------------------------------------------------------------------------ main
def _log(msg: str) -> None:
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check (None when it has a CUDA GPU)."""
    try:
        import torch
    except Exception as e:
        return f"PyTorch is not importable ({one_line(e)})"
    if not torch.cuda.is_available():
        return f"no CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def setup_workspace(work: Path) -> dict:
    """Point Ultralytics' settings, datasets and runs into ``work``, offline; return the environment for workers.

    Must run before anything imports Ultralytics (its settings file is read at import).
    """
    os.environ.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(work / "config"))
    from ultralytics.utils import SETTINGS

    SETTINGS.update(datasets_dir=str(work / "datasets"), runs_dir=str(work / "runs"),
                    weights_dir=str(work / "weights"), sync=False)
    return dict(os.environ)


def prepare_dependencies(wheels: Path | None, site: Path) -> dict:
    """Make pst_yolo (this working tree) and what the machine lacks importable, installing from ``wheels``.

    The working tree and ``site`` (where the missing wheels are installed) go first on ``sys.path`` and on
    ``PYTHONPATH`` (for worker processes); the interpreter's own packages are left as they are.

    Returns:
        (dict): For the report: ``present``, ``installed`` and ``missing`` (lists of strings) and ``how``.
    """
    wheel_files = sorted(wheels.glob("*.whl")) if wheels else []
    if wheels and not wheel_files:
        _log(f"no wheels in '{wheels}' (prepare them with --prepare-wheels)")
    deps = {"present": [], "installed": [], "missing": [], "how": ""}
    try:
        plan = resolve_wheels(REQUIREMENTS, module_importable, wheel_files)
        deps["how"] = install_wheels([w for _, w in plan.install], site)
        deps["present"] = [installed_version(r) for r in plan.present]
        deps["installed"] = [" ".join(w.name.split("-")[:2]) for _, w in plan.install]
        deps["missing"] = [r.describe() for r in plan.missing]
        if plan.missing:
            _log(plan.missing_line() + (f" '{wheels}'" if wheels else " (no --wheels given)"))
    except Exception as e:
        deps["missing"] = [f"the wheels could not be installed: {one_line(e)}"]
        _log(deps["missing"][0])
    sys.path[:0] = [str(ROOT), str(site)]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(site), os.environ.get("PYTHONPATH")) if p)
    importlib.invalidate_caches()
    return deps


def main(argv: list[str] | None = None) -> int:
    """Run the check (see the module docstring); return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels, args.python_version)
    reason = no_gpu_reason()
    if reason:
        print(f"gpu_check: {reason}; nothing measured, nothing written", file=sys.stderr)
        return 2

    command = "python " + shlex.join([os.path.relpath(__file__, Path.cwd()), *argv])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    work = Path(tempfile.mkdtemp(prefix="pst_gpu_check_"))
    site = work / "site"
    try:
        deps = prepare_dependencies(args.wheels, site)
        sys.path.append(str(HERE))  # already there when run as a script
        import _gpu_check_sections as gs

        try:
            env = setup_workspace(work)
        except Exception as e:  # Ultralytics not importable: every section fails with that message
            _log(f"cannot set up Ultralytics: {one_line(e)}")
            env = dict(os.environ)
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # what deterministic=True sets; a worker has it before any cuBLAS
        ctx = gs.Context(device="cuda:0", work=work, env=env, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                         runs=args.runs, warmup=args.warmup)
        results = run_sections(gs.SECTION_FUNCTIONS, ctx, _log, args.sections)
        try:
            machine = machine_info(args.commit)
        except Exception as e:
            machine = [("machine", f"unknown ({one_line(e)})")]
        meta = {"date": date, "command": command, "machine": machine}
        text = render_report(meta, deps, results, kept_text(DEFAULT_OUT))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        _log(f"wrote {args.out}")
        return 1 if any(r.status == "failed" for r in results) else 0
    finally:
        if args.keep:
            _log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
