"""Accuracy study: does PST beat the stock YOLO, and at which fine-attention setting? (``scripts/study.py``)

A matrix of training recipes (:data:`RECIPES`) is trained with several seeds under one budget (:class:`Budget`), each
trained model is validated at several ``pst_topk`` values and scored with pycocotools (:func:`pst_yolo.coco.evaluate`),
and each finished ``(recipe, seed, K)`` is appended to a CSV at once. A finished row is never redone, so the study can
be interrupted and started again with the same command (an interrupted training resumes from its ``last.pt``). The
report (:func:`write_report`: markdown tables with mean ± std over seeds, paired per-seed differences to the baseline,
a plot against K and the baseline's learning curves with a plateau check) is generated from the CSV alone.

This is a research tool, not part of the installed package: it lives in ``scripts/pst_research`` beside its command
line and imports ``pst_yolo`` like any user code. The same functions run the study on a user's own data
(``data=coco`` on a GPU machine) and are unit-tested (``tests/test_study.py``); the script only parses arguments.

The models are scored on their final weights (``last.pt``, EMA), not ``best.pt``: best.pt is chosen on the very val
split that is scored, by each recipe at its own ``pst_topk``, which would favour recipes by selection rather than by
training.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn
from ultralytics.utils import LOGGER

from pst_yolo.coco import AGNOSTIC_METRICS, COCO_METRICS

__all__ = (
    "RECIPES",
    "Budget",
    "Recipe",
    "StudyLock",
    "classes_csv",
    "context_runs",
    "converged_epochs",
    "curves_csv",
    "epoch_chain",
    "init_authors",
    "longer_budget",
    "paired_differences",
    "plateau",
    "read_class_aps",
    "read_rows",
    "record_classes",
    "record_curves",
    "run_study",
    "shareable_command",
    "study_optimizer",
    "summarize",
    "unfinished_runs",
    "write_report",
)

DEFAULT_EXTRA = {"cache": "ram"}  # decoded images kept in memory (no JPEG decoding every epoch); part of the key
AUTHORS_INIT_STD = 0.02  # the authors' truncated-normal std for the convolutions of their PST block


@dataclass(frozen=True)
class Recipe:
    """One cell of the matrix: a model and how it is trained.

    Args:
        name (str): Row label (also the run directory name).
        model (str): Model YAML (by bare name).
        train (dict): Extra training arguments of this recipe (``pst_topk``, ``pst_topk_train`` ...).
        topks (tuple[int, ...] | None): ``pst_topk`` values it is validated at; None for a model without PST.
        baseline (str | None): Recipe it is compared with, paired per seed (None: it is a baseline).
        init (str): ``"default"`` (PyTorch's, this project's choice) or ``"authors"`` (:func:`init_authors`).
        about (str): One line for the report.
        label (str): The recipe as the headline table names it; default: ``name``.
    """

    name: str
    model: str
    train: dict = field(default_factory=dict)
    topks: tuple[int, ...] | None = (0, 4, 8, 16)
    baseline: str | None = "yolo11n"
    init: str = "default"
    about: str = ""
    label: str = ""


RECIPES = {
    r.name: r
    for r in (
        Recipe("yolo11n", "yolo11n.yaml", topks=None, baseline=None, about="stock YOLO11n (the baseline)",
               label="yolo11n (stock)"),
        Recipe("pst-coarse", "yolo11n-pst.yaml", about="yolo11n-pst trained coarse-only (pst_topk=0)",
               label="yolo11n-pst (coarse only, the default)"),
        Recipe("pst-k8", "yolo11n-pst.yaml", {"pst_topk": 8}, about="yolo11n-pst trained with fine attention, K=8",
               label="yolo11n-pst (trained at `pst_topk=8`)"),
        Recipe("pst-anyk", "yolo11n-pst.yaml", {"pst_topk_train": [0, 4, 8, 16]},
               about="yolo11n-pst any-K training (pst_topk_train=0,4,8,16: one K per step), saved with pst_topk=0",
               label="yolo11n-pst (any-K: `pst_topk_train=0,4,8,16`)"),
        Recipe("pst-coarse-authors-init", "yolo11n-pst.yaml", init="authors",
               about="pst-coarse with the authors' init (block convs truncated normal, std 0.02)",
               label="yolo11n-pst (coarse only, the authors' init)"),
        Recipe("yolo12n", "yolo12n.yaml", topks=None, baseline=None,
               about="stock YOLO12n (the baseline of the authors' layout)", label="yolo12n (stock)"),
        Recipe("yolo12n-pst", "yolo12n-pst.yaml", topks=(0, 8), baseline="yolo12n",
               about="the authors' layout (YOLO12 backbone + PST), trained coarse-only",
               label="yolo12n-pst (the authors' layout, coarse only)"),
    )
}


@dataclass
class Budget:
    """The training and validation budget shared by every run of a study (part of each row's key).

    Args:
        data (str): Dataset name or data YAML (offline: ``shapes``).
        epochs (int): Training epochs.
        imgsz (int): Train and val image size.
        batch (int): Batch size (``nbs`` = ``batch``: the loss is not rescaled for small batches).
        fraction (float): Fraction of the train split used.
        workers (int): Dataloader workers.
        extra (dict): Further training arguments, the same for every recipe.
    """

    data: str = "shapes"
    epochs: int = 100
    imgsz: int = 128
    batch: int = 16
    fraction: float = 1.0
    workers: int = 2
    extra: dict = field(default_factory=lambda: dict(DEFAULT_EXTRA))

    def key(self) -> str:
        """A short text naming the budget; rows are finished per budget.

        Examples:
            >>> Budget("shapes", 2, 64, 16, 0.1).key()
            'shapes e2 i64 b16 f0.1 cache=ram'
            >>> Budget("shapes", 2, 64, 16, 0.1, extra={}).key()
            'shapes e2 i64 b16 f0.1'
        """
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.extra.items()))
        base = f"{self.data} e{self.epochs} i{self.imgsz} b{self.batch} f{self.fraction}"
        return f"{base} {extra}" if extra else base

    def train_args(self) -> dict:
        """Ultralytics training arguments of this budget."""
        return dict(data=self.data, epochs=self.epochs, imgsz=self.imgsz, batch=self.batch, nbs=self.batch,
                    fraction=self.fraction, workers=self.workers, plots=False, exist_ok=True, verbose=False,
                    **self.extra)


# ---------------------------------------------------------------------------------------------------- the authors' init
def init_authors(model: nn.Module, std: float = AUTHORS_INIT_STD) -> int:
    """Initialise every convolution of every PST block as the authors do: truncated normal (std 0.02), zero bias.

    The gate keeps this project's zero initialisation (the authors' gate is a different, shared layer with PyTorch's
    default init, and an untrained gate should mix 50/50); BatchNorm layers are unchanged. Draws from torch's global
    generator, so a trainer's seed makes it reproducible.

    Args:
        model (nn.Module): Any module containing PST blocks.
        std (float): Standard deviation (values truncated at ±2 std).

    Returns:
        The number of convolutions initialised.

    Examples:
        >>> from pst_yolo import PST
        >>> init_authors(PST(64, 64, 64, n=1))  # attention q, kv, pe, proj + two MLP convs
        6
    """
    from pst_yolo.nn.block import PSTBlock

    n = 0
    for block in (m for m in model.modules() if isinstance(m, PSTBlock)):
        gate = block.attn.gate
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d) and m is not gate):
            nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            n += 1
    return n


def _authors_init_trainer():
    """A DetectionTrainer whose freshly built model gets :func:`init_authors` (not when weights are loaded)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class AuthorsInitTrainer(DetectionTrainer):
        def get_model(self, cfg=None, weights=None, verbose=True):
            model = super().get_model(cfg, weights, verbose)
            if weights is None:
                n = init_authors(model)
                LOGGER.info(f"PST: authors' init (truncated normal, std {AUTHORS_INIT_STD}) of {n} block convolutions")
            return model

    return AuthorsInitTrainer


# ------------------------------------------------------------------------------------------------------------ the CSV
KEY = ("budget", "recipe", "seed", "pst_topk")
# new columns go at the end: an older runner appends its rows to a migrated file with them empty (append_csv_row)
COLUMNS = (*KEY, "model", *COCO_METRICS, "ul_mAP50-95", "ul_mAP50", "ms_per_image", "train_s", "train_cpu_s",
           "eval_s", "resumed", "weights", "commit", "torch", "ultralytics", "machine", "finished", *AGNOSTIC_METRICS,
           "timed_sessions")
# timed_sessions: the training sessions train_s / train_cpu_s add up (all of them, :func:`train_or_resume`); empty in
# rows written before the runner timed every session, whose times are those of the last session only


CLASS_COLUMNS = (*KEY, "class", "AP")  # the per-class CSV beside a study CSV: one row per (row of the study, class)


def _key(row: dict) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY)


def read_csv_rows(path: str | Path, numeric: tuple[str, ...]) -> list[dict]:
    """The rows of a results CSV (empty if it does not exist), the ``numeric`` columns as floats (nan if empty)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for c in numeric:
            r[c] = float(r[c]) if r.get(c) not in (None, "") else math.nan
    return rows


def _is_file_at(f, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path`` (not replaced while its opener waited for the lock)."""
    try:
        st, here = os.fstat(f.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _migrate_csv(path: Path, f, columns: tuple[str, ...]) -> None:
    """Rewrite the CSV open as ``f`` (locked) with the header ``columns``, every row kept (new columns empty).

    A new file replaces the old one (``os.replace``: atomic, so a crash leaves one or the other, never half of
    each); a writer that opened the old file meanwhile sees that it was replaced once it holds the lock and reopens.
    """
    f.seek(0)
    reader = csv.DictReader(f)
    unknown = [c for c in reader.fieldnames or () if c not in columns]
    if unknown:
        raise ValueError(f"{path} has column(s) {unknown} that this version of pst_yolo does not write (columns: "
                         f"{', '.join(columns)}): it was written by another version or holds another table; write to "
                         "another file, or use the version that wrote it")
    rows = list(reader)
    tmp = path.with_name(f".{path.name}.migrating")
    with open(tmp, "w", newline="", encoding="utf-8") as new:
        writer = csv.DictWriter(new, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({c: r.get(c) or "" for c in columns} for r in rows)
        new.flush()
        os.fsync(new.fileno())
    os.replace(tmp, path)
    LOGGER.info(f"{path}: header extended by {', '.join(c for c in columns if c not in reader.fieldnames)} "
                f"({len(rows)} rows kept; their new columns are empty)")


def append_csv_row(path: Path, row: dict, columns: tuple[str, ...]) -> None:
    """Append one row (header first if the file is new) and flush it to disk: an interruption loses no row.

    A file whose header lacks some of ``columns`` (written before they were recorded) is first rewritten with the
    header ``columns``, its rows kept and their new columns left empty (:func:`_migrate_csv`). A header that is
    ``columns`` followed by more (a newer version's file: new columns go at the end) gets the row with those left
    empty; any other header with columns that ``columns`` lacks is an error (another version's file, or another
    table).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with open(path, "a+", newline="", encoding="utf-8") as f:
            _try_lock(f.fileno(), block=True)  # runners side by side: one header, whole rows (released on close)
            if not _is_file_at(f, path):  # another runner migrated the file while this one waited: reopen
                continue
            f.seek(0)
            header = next(csv.reader(f), None)
            newer = header is not None and tuple(header[: len(columns)]) == tuple(columns)
            if header is not None and tuple(header) != tuple(columns) and not newer:
                _migrate_csv(path, f, columns)
                continue  # append to the new file (this lock, on the old one, is released on close)
            writer = csv.DictWriter(f, fieldnames=header if newer else columns, extrasaction="ignore")
            if header is None:
                writer.writeheader()
            writer.writerow({c: row.get(c, "") if c in columns else "" for c in writer.fieldnames})
            f.flush()
            os.fsync(f.fileno())
            return


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a study CSV (empty if it does not exist); numbers as floats, ``pst_topk`` '' for stock models."""
    return read_csv_rows(path, (*COCO_METRICS, "ul_mAP50-95", "ul_mAP50", "ms_per_image", "train_s", "train_cpu_s",
                                "eval_s", *AGNOSTIC_METRICS))


def _append_row(path: Path, row: dict) -> None:
    """Append one study row (see :func:`append_csv_row`)."""
    append_csv_row(path, row, COLUMNS)


def _try_lock(fd: int, block: bool = False) -> bool:
    """Take an exclusive OS lock on the open file ``fd``; False if another process holds it (and ``block`` is off).

    The kernel releases it when the holder closes the file or dies, so a killed runner never leaves a stale lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK if block else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


class StudyLock:
    """A lock held by one process: a second runner on the same work (e.g. started twice in the background) gets a
    ``RuntimeError`` naming the holder's pid instead of training the same thing twice.

    An OS file lock (``flock``) on ``<out>/study.lock`` or ``<out>/locks/<name>.lock``: atomic, and released by the
    kernel when its holder exits or is killed, so there is no stale lock to take over. The file (which holds the
    holder's pid, for the message) stays behind; only the lock on it counts.

    Args:
        out (Path): The work directory.
        name (str): What is locked: ``"study"`` (the whole directory) or a cell such as ``"<budget>/<recipe>/seed0"``.
    """

    def __init__(self, out: Path, name: str = "study"):
        *folders, last = name.split("/")
        self.path = Path(out) / "study.lock" if name == "study" else Path(out, "locks", *folders, f"{last}.lock")
        self.name = name
        self._file = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        if not _try_lock(f.fileno()):
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            what = f"works in {self.path.parent}" if self.name == "study" else f"trains {self.name}"
            raise RuntimeError(f"another study runner (pid {pid}) {what} (lock {self.path}); wait for it or stop it")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None


def checkout_commit() -> str:
    """The checkout's short commit, ``+dirty`` where tracked files differ from it, ``unknown`` outside git."""
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{commit}{'+dirty' if dirty else ''}" if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    """Commit, versions and machine, recorded in every row."""
    import torch
    import ultralytics

    commit = checkout_commit()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(commit=commit, torch=torch.__version__, ultralytics=ultralytics.__version__,
                machine=f"{socket.gethostname()}; {cpu}; {os.cpu_count()} CPUs; threads {torch.get_num_threads()}")


# ------------------------------------------------------------------------------------------------------ running a cell
def study_optimizer(data: str, task: str = "detect") -> dict:
    """The optimizer every study training uses unless its arguments name one: AdamW set up exactly as Ultralytics'
    ``optimizer=auto`` sets it up for a run of at most 10000 iterations (its lr0 fit 0.002 * 5 / (4 + nc), momentum
    0.9 as Adam's beta1, bias warmup from 0).

    Past 10000 iterations (313 epochs of 512 images at batch 16) ``optimizer=auto`` switches to MuSGD at lr0 0.01, so
    a longer budget would change the optimizer as well as the epochs, and on a CPU MuSGD's orthogonalisation costs
    about ten times the time of a batch (measured: 9 s against 0.9 s per batch of 16 at imgsz 128). Fixing auto's
    short-run choice keeps every budget one recipe; wherever auto picks AdamW the training is the same, bit for bit.

    Args:
        data (str): Dataset name (``datasets.yaml``) or YAML; its class count sets lr0.
        task (str): The model's task (classification datasets are resolved differently).

    Returns:
        Training arguments: ``optimizer``, ``lr0``, ``momentum``, ``warmup_bias_lr``.
    """
    from ultralytics.data.utils import check_cls_dataset, check_det_dataset

    if task == "classify":  # an image folder; a name of datasets.yaml is generated and resolved as its trainer does
        from pst_yolo.hooks.names import _image_folder

        nc = check_cls_dataset(_image_folder(data) or data)["nc"]
    else:
        nc = check_det_dataset(data)["nc"]
    return dict(optimizer="AdamW", lr0=round(0.002 * 5 / (4 + nc), 6), momentum=0.9, warmup_bias_lr=0.0)


def train_or_resume(run: Path, model: str, args: dict, task: str | None = None, trainer=None) -> tuple[Path, dict]:
    """Train ``model`` into the run folder ``run`` once: resume it if an earlier training was interrupted, reuse it if
    it finished. ``run/done.json`` marks a finished training and keeps its timing facts.

    The times count every session of a resumed training: each call that trains appends its wall and CPU time and the
    epochs it went from and to to ``run/sessions.jsonl``, also when it is interrupted (Ctrl-C, SIGTERM). Where that
    ledger misses a session that saved an epoch (a run begun before the ledger existed, or a process killed outright:
    its epochs do not join up), or a line of it is cut short, the wall time is a lower bound (the larger of the
    ledger's sum and that of results.csv's per-session ``time`` column, the training loop only), the CPU time is
    unknown (nan) and ``timed_sessions`` is None. A session killed outright before it saved an epoch is not seen: its
    time is missing.

    Args:
        run (Path): The run folder (``project/name`` of the training).
        model (str): Model YAML or weights to start from.
        args (dict): Training arguments (``project`` and ``name`` are set from ``run``; without an ``optimizer``,
            :func:`study_optimizer`'s).
        task (str | None): Task of the model (None: inferred).
        trainer: Trainer class (None: the task's stock trainer).

    Returns:
        ``run/weights/last.pt`` and ``{"train_s", "train_cpu_s", "resumed", "timed_sessions"}`` (``resumed``: the
        number of sessions after the first; times nan when unknown: a finished run that stopped before ``done.json``
        was written).
    """
    from ultralytics import YOLO
    from ultralytics.nn.tasks import torch_safe_load

    # absolute, because Ultralytics puts a relative ``project`` under its own runs_dir/<task>, away from ``run``
    run = Path(run).resolve()
    last, done = run / "weights" / "last.pt", run / "done.json"
    if done.is_file():
        return last, json.loads(done.read_text())
    ckpt = torch_safe_load(str(last))[0] if last.is_file() else {}
    resumed = ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None  # else final (stripped) or none
    if resumed or not last.is_file():
        t0, c0, start = time.time(), time.process_time(), ckpt["epoch"] + 1 if resumed else 0  # epochs saved before
        try:
            if resumed:
                LOGGER.info(f"study: resuming {run} from {last}")
                YOLO(last).train(resume=True, trainer=trainer)
            else:
                yolo = YOLO(model, task=task)
                if str(args.get("optimizer", "auto")).lower() == "auto":
                    args = {**args, **study_optimizer(args["data"], yolo.task)}
                yolo.train(trainer=trainer, **{**args, "project": str(run.parent), "name": run.name})
        finally:  # this session's time, finished or interrupted: the next session adds its own
            if run.is_dir():
                session = {"from_epoch": start, "to_epoch": _logged_epochs(run / "results.csv"),
                           "wall_s": time.time() - t0, "cpu_s": time.process_time() - c0}
                with open(run / "sessions.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(session) + "\n")
        facts = _training_time(run)
    else:
        facts = (_training_time(run) if (run / "sessions.jsonl").is_file()  # finished, stopped before done.json
                 else dict(train_s=math.nan, train_cpu_s=math.nan, resumed=0, timed_sessions=None))
    done.write_text(json.dumps(facts))
    return last, facts


def _training_time(run: Path) -> dict:
    """``{"train_s", "train_cpu_s", "resumed", "timed_sessions"}`` of the training in ``run`` over all its sessions (see
    :func:`train_or_resume`): the ledger ``sessions.jsonl`` where its sessions join up from epoch 0 (each starts at
    or before the epoch the one before it reached), else a lower bound of the wall time and nan (CPU)."""
    path = run / "sessions.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    ledger = []
    for line in lines:
        try:
            ledger.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: that session's time is not known
            pass
    joined = len(ledger) == len(lines) and bool(ledger) and ledger[0]["from_epoch"] == 0 and all(
        b["from_epoch"] <= a["to_epoch"] for a, b in zip(ledger, ledger[1:]))
    wall = sum(s["wall_s"] for s in ledger)
    if joined:
        return dict(train_s=wall, train_cpu_s=sum(s["cpu_s"] for s in ledger), resumed=len(ledger) - 1,
                    timed_sessions=len(ledger))
    loop = _session_seconds(run / "results.csv")  # each session's training-loop seconds (a short one can hide)
    seen = len(lines) + bool(ledger and ledger[0]["from_epoch"] > 0)  # at least one session before the ledger's
    return dict(train_s=max(wall, sum(loop)), train_cpu_s=math.nan, resumed=max(seen, len(loop)) - 1,
                timed_sessions=None)


def _logged_epochs(results: Path) -> int:
    """The last epoch Ultralytics' results.csv has a row of (0 if none)."""
    if not results.is_file():
        return 0
    with open(results, newline="", encoding="utf-8") as f:
        return max((int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("epoch")), default=0)


def _session_seconds(results: Path) -> list[float]:
    """The training-loop seconds of each session of a run, from Ultralytics' results.csv: its ``time`` column counts
    from the start of each session (it starts again from 0 on a resume; here the first session was stopped after
    logging epoch 2 but before saving it, so the second trained epoch 2 again). A session is seen where the column
    falls: one whose first epoch took longer than all of the session before it is merged into that one.

    Examples:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "results.csv"
        >>> _ = f.write_text("epoch,time\\n1,30.0\\n2,61.0\\n2,30.5\\n3,60.5\\n")
        >>> _session_seconds(f)
        [61.0, 60.5]
    """
    if not results.is_file():
        return []
    with open(results, newline="", encoding="utf-8") as f:
        times = [float(r["time"]) for r in csv.DictReader(f) if r.get("time")]
    return [t for t, after in zip(times, [*times[1:], -math.inf]) if after < t]


def _train(recipe: Recipe, seed: int, budget: Budget, out: Path) -> tuple[Path, dict]:
    """Train (or resume, or skip if finished) one recipe and seed; returns last.pt and timing facts."""
    run = _runs_dir(out, budget.key()) / recipe.name / f"seed{seed}"
    trainer = _authors_init_trainer() if recipe.init == "authors" else None
    return train_or_resume(run, recipe.model, {**budget.train_args(), **recipe.train, "seed": seed}, trainer=trainer)


def shareable_command(command: str, root: str | Path) -> str:
    """``command`` with every absolute path written shareably: relative to ``root`` (the repository) where it lies
    inside it, else as ``<dir>/`` and its last part (the invocation log is committed; it holds no path of a machine).

    Examples:
        >>> shareable_command("study.py --csv /src/repo/docs/a.csv --out /data/me/study_out --seeds 0", "/src/repo")
        'study.py --csv docs/a.csv --out <dir>/study_out --seeds 0'
    """
    words = []
    for word in shlex.split(command):
        path = Path(word)
        if path.is_absolute():
            try:
                word = shlex.quote(path.relative_to(root).as_posix())
            except ValueError:
                word = f"<dir>/{shlex.quote(path.name)}"
        else:
            word = shlex.quote(word)
        words.append(word)
    return " ".join(words)


def _relative(path: str | Path, base: str | Path) -> str:
    """``path`` relative to ``base`` where it lies inside it (rows name weights inside the work directory, so that a
    committed CSV holds no absolute path of the machine that trained), else as it is.

    Examples:
        >>> _relative("/w/out/runs/a/seed0/weights/last.pt", "/w/out")
        'runs/a/seed0/weights/last.pt'
        >>> _relative("/elsewhere/last.pt", "/w/out")
        '/elsewhere/last.pt'
    """
    path, base = Path(path), Path(base)
    try:
        return path.relative_to(base.resolve() if path.is_absolute() else base).as_posix()
    except ValueError:
        return str(path)


def _cell_rows(recipe, seed, budget, out, missing, env, facts, weights) -> list[dict]:
    """Validate ``weights`` at the ``missing`` pst_topk values and score them: one row each (with ``class_AP``, each
    class's AP, which goes to the per-class CSV)."""
    rows = []
    for k in missing:
        t0 = time.time()
        r = _score(weights, budget, out, f"{recipe.name}_seed{seed}_k{'' if k is None else k}", k, class_agnostic=True)
        metrics = (*COCO_METRICS, *AGNOSTIC_METRICS, "ul_mAP50-95", "ul_mAP50", "ms_per_image")
        rows.append({**{m: r[m] for m in metrics}, **facts, **env,
                     "budget": budget.key(), "recipe": recipe.name, "seed": seed, "model": recipe.model,
                     "pst_topk": "" if k is None else k, "eval_s": round(time.time() - t0, 1),
                     "weights": _relative(weights, out),
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "class_AP": r["class_AP"]})
    return rows


def _score(weights, budget: Budget, out: Path, name: str, k, **kwargs) -> dict:
    """One validation of ``weights`` at ``pst_topk`` ``k`` on the budget's val split, scored by pycocotools with each
    class's AP (``class_AP``); the outputs go to ``out/val/name``."""
    from pst_yolo.coco import evaluate

    (r,) = evaluate(str(weights), budget.data, topks=(k,), imgsz=budget.imgsz, batch=32, plots=False,
                    workers=budget.workers, project=str(out / "val"), name=name, exist_ok=True, verbose=False,
                    per_class=True, **kwargs)
    return r


def classes_csv(csv_path: str | Path) -> Path:
    """The per-class AP CSV kept beside a study CSV: ``accuracy.csv`` -> ``accuracy_classes.csv``."""
    return _beside(csv_path, "classes")


def _beside(csv_path: str | Path, part: str) -> Path:
    """A CSV kept beside a study CSV, named after it: ``accuracy.csv``, ``curves`` -> ``accuracy_curves.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_{part}.csv")


def _append_class_rows(csv_path: Path, row: dict, class_ap: dict[str, float]) -> None:
    """Append each class's AP of one study row to the per-class CSV (:data:`CLASS_COLUMNS`)."""
    for name, ap in class_ap.items():
        append_csv_row(classes_csv(csv_path), {**{k: row[k] for k in KEY}, "class": name, "AP": ap}, CLASS_COLUMNS)


def read_class_aps(path: str | Path) -> dict[tuple[str, ...], dict[str, float]]:
    """``{row key: {class: AP}}`` of a per-class CSV (:func:`classes_csv`); empty if it does not exist."""
    out = {}
    for r in read_csv_rows(path, ("AP",)):
        out.setdefault(_key(r), {})[r["class"]] = r["AP"]
    return out


AP_MATCH = 1e-4  # a row's AP and the AP of the same weights scored again agree this closely (the scores are the same)


def record_classes(csv_path: str | Path, out: str | Path, budget: Budget) -> int:
    """Score per class every row of ``budget`` in the study CSV that has no per-class rows yet and whose weights are
    in the work directory ``out``: rows written before the runner recorded per-class APs, or by a runner stopped
    between a row and its classes.

    The weights are validated again as the row was (same K, imgsz, batch); the classes are recorded only if that
    validation's AP is the row's (within :data:`AP_MATCH`), i.e. the weights are the ones the row scored. One runner
    does this at a time (a lock in ``out``); another one skips it.

    Returns:
        The number of rows scored per class.
    """
    csv_path, out = Path(csv_path), Path(out)
    have = read_class_aps(classes_csv(csv_path))
    todo = [r for r in read_rows(csv_path) if r["budget"] == budget.key() and _key(r) not in have
            and r.get("weights") and (out / r["weights"]).is_file()]
    if not todo:
        return 0
    done = 0
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(StudyLock(out, f"{budget.key().replace(' ', '_')}/classes"))
        except RuntimeError:
            return 0  # another runner scores them
        have = read_class_aps(classes_csv(csv_path))  # again under the lock
        for row in todo:
            if _key(row) in have:
                continue
            k = None if row["pst_topk"] == "" else int(row["pst_topk"])
            r = _score(out / row["weights"], budget, out, f"{row['recipe']}_seed{row['seed']}_k{row['pst_topk']}", k)
            if abs(r["AP"] - row["AP"]) > AP_MATCH:
                LOGGER.warning(f"study: {row['weights']} scores AP {r['AP']:.4f} now, its row says {row['AP']:.4f}: "
                               "not the weights the row scored; its per-class APs are not recorded")
                continue
            _append_class_rows(csv_path, row, r["class_AP"])
            done += 1
    return done


def run_study(recipes: list[str], seeds: list[int], budget: Budget, csv_path: str | Path, out: str | Path,
              topks: tuple[int, ...] | None = None) -> int:
    """Train and score every ``(recipe, seed)`` not yet finished; append each ``(recipe, seed, K)`` row at once.

    Seeds are the outer loop, so an interrupted study has whole seeds of every recipe to report.

    Args:
        recipes (list[str]): Names from :data:`RECIPES`.
        seeds (list[int]): Training seeds.
        budget (Budget): The shared budget.
        csv_path (str | Path): The study CSV (created, or appended to).
        out (str | Path): Work directory for runs and validation outputs (weights live there).
        topks (tuple[int, ...] | None): Override every PST recipe's ``pst_topk`` values.

    Returns:
        The number of rows added (by this runner; on Ctrl-C/SIGTERM the ``KeyboardInterrupt`` carries it as
        ``rows_added``).
    """
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {unknown}; valid: {', '.join(RECIPES)}")
    csv_path, out = Path(csv_path), Path(out).resolve()  # relative: against the working directory, as a user means it
    added = 0
    try:
        if scored := record_classes(csv_path, out, budget):
            LOGGER.info(f"study: {scored} earlier rows scored per class ({classes_csv(csv_path).name})")
        for row in _new_rows(recipes, seeds, budget, csv_path, out, topks):
            class_ap = row.pop("class_AP", {})
            _append_row(csv_path, row)
            _append_class_rows(csv_path, row, class_ap)
            added += 1
    except KeyboardInterrupt as e:
        e.rows_added = added
        raise
    return added


def _missing(csv_path: Path, budget: Budget, name: str, seed: int, ks: list) -> list:
    """The ``pst_topk`` values of cell ``(name, seed)`` that have no row in the CSV yet."""
    done = {_key(r) for r in read_rows(csv_path)}
    return [k for k in ks if (budget.key(), name, str(seed), "" if k is None else str(k)) not in done]


def _new_rows(recipes, seeds, budget, csv_path, out, topks):
    """Train and score each unfinished cell under its lock (a cell another live runner holds is skipped); yield the
    rows as they are scored."""
    env = environment()
    for seed in seeds:
        for name in recipes:
            recipe = RECIPES[name]
            ks = [None] if recipe.topks is None else list(topks or recipe.topks)
            if not _missing(csv_path, budget, name, seed, ks):
                continue
            with contextlib.ExitStack() as held:
                try:
                    held.enter_context(StudyLock(out, f"{budget.key().replace(' ', '_')}/{name}/seed{seed}"))
                except RuntimeError as e:  # a second runner on the same work: it takes the next cell instead
                    LOGGER.info(f"study: skipping {name} seed {seed}: {e}")
                    continue
                todo = _missing(csv_path, budget, name, seed, ks)  # again under the lock: it may have just finished
                if todo:
                    LOGGER.info(f"study: {name} seed {seed} ({budget.key()}): pst_topk {todo}")
                    weights, facts = _train(recipe, seed, budget, out)
                    record_curves(curves_csv(csv_path), out, [budget.key()])
                    yield from _cell_rows(recipe, seed, budget, out, todo, env, facts, weights)


# ----------------------------------------------------------------------------------------------------------- analysis
def _mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (nan for one value) and count.

    Examples:
        >>> _mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0, 3)
    """
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def _k(row) -> int | None:
    return None if str(row["pst_topk"]) == "" else int(row["pst_topk"])


def summarize(rows: list[dict], metric: str = "AP") -> dict[tuple[str, int | None], tuple[float, float, int]]:
    """``{(recipe, pst_topk): (mean, std, seeds)}`` of ``metric`` over seeds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["recipe"], _k(r)), []).append(r[metric])
    return {g: _mean_std(v) for g, v in groups.items()}


def paired_differences(rows: list[dict], a: tuple[str, int | None], b: tuple[str, int | None],
                       metric: str = "AP") -> tuple[float, float, int, int]:
    """Per-seed differences ``a - b`` of ``metric``: (mean, std, seeds paired, seeds where a > b).

    Examples:
        >>> rows = [{"recipe": r, "pst_topk": k, "seed": s, "AP": v} for r, k, s, v in
        ...         [("x", 8, 0, 0.5), ("x", 8, 1, 0.6), ("b", "", 0, 0.4), ("b", "", 1, 0.62)]]
        >>> mean, std, n, wins = paired_differences(rows, ("x", 8), ("b", None))
        >>> round(mean, 3), n, wins
        (0.04, 2, 1)
    """
    by = {}
    for r in rows:
        by[(r["recipe"], _k(r), str(r["seed"]))] = r[metric]
    seeds = sorted({s for (n, k, s) in by if (n, k) == a} & {s for (n, k, s) in by if (n, k) == b})
    diffs = [by[(*a, s)] - by[(*b, s)] for s in seeds]
    mean, std, n = _mean_std(diffs)
    return mean, std, n, sum(d > 0 for d in diffs)


def plateau(curve: list[float], window: int | None = None, tol: float = 0.005) -> tuple[bool, float, int]:
    """The plateau criterion of a learning curve (val mAP50-95 per epoch).

    The mean of the last ``window`` epochs (default: a fifth of the epochs, at least 3) exceeds the mean of the
    ``window`` epochs before it by less than ``tol`` (0.005 = half a point of mAP50-95).

    Returns:
        (plateaued, gain of the last window, window).

    Examples:
        >>> ok, gain, window = plateau([0.1, 0.2, 0.3, 0.35, 0.38, 0.40, 0.401, 0.402, 0.402, 0.403])
        >>> ok, round(gain, 4), window
        (False, 0.0087, 3)
        >>> plateau([0.3, 0.35, 0.38, 0.40, 0.401, 0.402, 0.402, 0.403, 0.403, 0.404])[0]
        True
    """
    window = window or max(3, len(curve) // 5)
    if len(curve) < 2 * window:
        return False, math.nan, window
    gain = sum(curve[-window:]) / window - sum(curve[-2 * window : -window]) / window
    return gain < tol, gain, window


CURVE_COLUMNS = ("budget", "recipe", "seed", "epoch", "mAP50-95", "mAP50")


def curves_csv(csv_path: str | Path) -> Path:
    """The per-epoch curves CSV kept beside a study CSV: ``accuracy.csv`` -> ``accuracy_curves.csv``."""
    return _beside(csv_path, "curves")


def _runs_dir(out: str | Path, budget_key: str) -> Path:
    """The folder of one budget's training runs in the study's work directory (``<recipe>/seed<n>`` under it)."""
    return Path(out) / "runs" / budget_key.replace(" ", "_")


def _run_results(out: str | Path, budget_key: str) -> list[tuple[str, str, Path]]:
    """``(recipe, seed, results.csv)`` of every run of one budget on disk (finished or not)."""
    return [(r.parent.parent.name, r.parent.name[4:], r)
            for r in sorted(_runs_dir(out, budget_key).glob("*/seed*/results.csv"))]


def _last_per_epoch(rows) -> list[dict]:
    """``rows`` (each with an ``epoch``) in epoch order, one per epoch: the last one written.

    A runner killed after Ultralytics wrote an epoch's results row but before it saved that epoch's checkpoint resumes
    from the epoch before and trains the epoch again, so results.csv holds that epoch twice; the second row is the one
    the final weights descend from.
    """
    return sorted({int(r["epoch"]): r for r in rows}.values(), key=lambda r: int(r["epoch"]))


def _results_curve(results: Path) -> list[dict]:
    """``[{epoch, mAP50-95, mAP50}]`` of one run's Ultralytics results.csv (val metrics, EMA, one row per epoch)."""
    with open(results, newline="", encoding="utf-8") as f:
        return _last_per_epoch({"epoch": int(float(r["epoch"])), "mAP50-95": float(r["metrics/mAP50-95(B)"]),
                                "mAP50": float(r.get("metrics/mAP50(B)") or "nan")} for r in csv.DictReader(f)
                               if r.get("metrics/mAP50-95(B)"))


def record_curves(path: str | Path, out: str | Path, budgets) -> int:
    """Copy the per-epoch val metrics of every finished training under ``out`` into the curves CSV ``path``, once per
    ``(budget, recipe, seed)``.

    The runs' results.csv files live in the work directory, which is not committed (and not kept between machines);
    this CSV is, so the learning curves and the plateau check can be regenerated from a fresh clone. Only finished
    trainings (``done.json`` beside them) are copied: a curve in progress would be frozen half-way. Runners side by
    side take the file's lock for the whole check-and-append, so no curve is written twice.

    Args:
        path (str | Path): The curves CSV (created, or appended to).
        out (str | Path): The study's work directory (``runs/<budget>/<recipe>/seed<n>``).
        budgets: Budget keys whose runs to copy.

    Returns:
        The number of curves (runs) added.
    """
    finished = [((budget, recipe, seed), results) for budget in budgets
                for recipe, seed, results in _run_results(out, budget) if (results.parent / "done.json").is_file()]
    if not finished:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    added = 0
    with open(path, "a+", newline="", encoding="utf-8") as f:
        _try_lock(f.fileno(), block=True)
        f.seek(0)
        have = {(r["budget"], r["recipe"], r["seed"]) for r in csv.DictReader(f)}
        writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
        header = os.fstat(f.fileno()).st_size == 0  # (the size does not grow before the flush)
        for key, results in finished:
            if key in have:
                continue
            if header:
                writer.writeheader()
                header = False
            writer.writerows({"budget": key[0], "recipe": key[1], "seed": key[2], **r} for r in _results_curve(results))
            have.add(key)
            added += 1
        f.flush()
        os.fsync(f.fileno())
    return added


def learning_curves(path: str | Path | None, budget_key: str) -> dict[str, dict[int, list[float]]]:
    """``{recipe: {seed: val mAP50-95 per epoch}}`` of one budget's finished runs, from the curves CSV ``path``
    (:func:`record_curves`).

    The report reads its curves from this committed file only, never from the work directory: a report written by a
    runner and the same report regenerated in a fresh clone are then the same file. Trainings still in progress are
    named in the runner's invocation log instead (:func:`unfinished_runs`)."""
    runs = {}
    for r in read_csv_rows(path, ("mAP50-95",)) if path is not None else []:
        if r["budget"] == budget_key:
            runs.setdefault((r["recipe"], int(r["seed"])), []).append(r)
    curves = {}
    for (recipe, seed), rows in runs.items():
        curves.setdefault(recipe, {})[seed] = [r["mAP50-95"] for r in _last_per_epoch(rows)]
    return curves


def unfinished_runs(out: str | Path, budget: Budget) -> list[str]:
    """The trainings of ``budget`` under ``out`` that have not finished (no ``done.json``), each as ``"<recipe> seed
    <n>: epoch <trained>/<epochs>"``: what a runner that stops leaves to the next one (it resumes them)."""
    return [f"{recipe} seed {seed}: epoch {_logged_epochs(results)}/{budget.epochs}"
            for recipe, seed, results in _run_results(out, budget.key())
            if not (results.parent / "done.json").is_file()]


# ------------------------------------------------------------------------------------------------------------- report
def _fmt(mean: float, std: float, n: int = 0, signed: bool = False) -> str:
    if math.isnan(mean):
        return "–"
    d = 4 if signed else 3  # differences: one more digit
    return f"{mean:{'+' if signed else ''}.{d}f}" + (f" ± {std:.{d}f}" if not math.isnan(std) else "")


def _cell_order(cell: tuple[str, int | None]) -> tuple[int, int]:
    """Sort key of a ``(recipe, pst_topk)`` cell: the order of :data:`RECIPES`, then K (stock first)."""
    order = list(RECIPES)
    return (order.index(cell[0]) if cell[0] in order else len(order), cell[1] or 0)


def _baseline_k(rows, recipe: Recipe, k):
    """The baseline cell a PST cell is paired with: the stock baseline, or the same K of a PST baseline."""
    base = RECIPES.get(recipe.baseline)
    return None if base is None or base.topks is None else k


def plot_results(rows: list[dict], path: Path) -> Path:
    """mAP50-95 and APs against ``pst_topk``, one line per recipe (error bars: std over seeds); stock as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    recipes = [r for r in RECIPES if any(row["recipe"] == r for row in rows)]
    for ax, metric, title in zip(axes, ("AP", "APs"), ("mAP50-95 (pycocotools)", "AP small objects")):
        stats = summarize(rows, metric)
        for i, name in enumerate(recipes):
            color = f"C{i}"
            cells = sorted((k, v) for (r, k), v in stats.items() if r == name and k is not None)
            if cells:
                ks, vals = zip(*cells)
                ax.errorbar(ks, [v[0] for v in vals], yerr=[0 if math.isnan(v[1]) else v[1] for v in vals],
                            marker="o", capsize=3, color=color, label=name)
            elif (name, None) in stats:
                mean, std, _ = stats[(name, None)]
                ax.axhline(mean, color=color, ls="--", label=f"{name} (no PST)")
                if not math.isnan(std):
                    ax.axhspan(mean - std, mean + std, color=color, alpha=0.12)
        ax.set_xlabel("pst_topk at validation (0 = coarse only)")
        ax.set_xticks(sorted({_k(r) for r in rows if _k(r) is not None}) or [0])
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_band(runs: list[list[float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs, mean, min and max over the runs (seeds) of one recipe; each epoch over the runs that reached it, so a
    run that stopped early does not cut the others short.

    Examples:
        >>> curve_band([[0.1, 0.2, 0.3], [0.3]])
        ([1, 2, 3], [0.2, 0.2, 0.3], [0.1, 0.2, 0.3], [0.3, 0.2, 0.3])
    """
    n = max(len(c) for c in runs)
    cols = [[c[e] for c in runs if len(c) > e] for e in range(n)]
    return list(range(1, n + 1)), [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def plot_curves(curves: dict[str, dict[int, list[float]]], path: Path) -> Path:
    """Val mAP50-95 per epoch of each recipe: mean over seeds, band = min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, by_seed) in enumerate(sorted(curves.items())):
        runs = [c for c in by_seed.values() if c]
        if not runs:
            continue
        epochs, mean, lo, hi = curve_band(runs)
        short = sum(len(c) < len(epochs) for c in runs)
        label = f"{name} ({len(runs)} seeds{f'; {short} stopped early' if short else ''})"
        ax.plot(epochs, mean, color=f"C{i}", label=label,
                lw=2.5 if RECIPES.get(name, Recipe("", "")).baseline is None else 1.2)
        ax.fill_between(epochs, lo, hi, color=f"C{i}", alpha=0.12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP50-95 (Ultralytics, EMA)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(csv_path: str | Path, md_path: str | Path, out: str | Path | None = None, budget: str | None = None,
                 banner: str = "", how_to_run: str = "") -> Path:
    """Generate the markdown report, the plot against K and the learning-curve plot from the CSV and the CSVs kept
    beside it (per-class APs, curves).

    Args:
        csv_path (str | Path): The study CSV.
        md_path (str | Path): Markdown to write; the plots are written next to it (``<stem>.png``,
            ``<stem>_curves.png``).
        out (str | Path | None): The work directory holding the runs: the curves of its finished runs are copied into
            the curves CSV beside ``csv_path`` first (:func:`record_curves`); the report itself reads the CSVs only.
        budget (str | None): Budget key to report; default: the budget of most rows (others are listed, not mixed).
        banner (str): A note printed first (e.g. that this is a smoke run of the pipeline).
        how_to_run (str): Markdown appended at the end (the command of the full study and its cost).

    Returns:
        The markdown path.
    """
    csv_path, md_path = Path(csv_path), Path(md_path)
    all_rows = read_rows(csv_path)
    if not all_rows:
        raise ValueError(f"{csv_path} has no rows: run the study first")
    budgets = {}
    for r in all_rows:
        budgets[r["budget"]] = budgets.get(r["budget"], 0) + 1
    budget = budget or report_budget(all_rows)
    rows = [r for r in all_rows if r["budget"] == budget]
    seeds = sorted({int(r["seed"]) for r in rows})
    envs = sorted({(r["commit"], r["torch"], r["ultralytics"], r["machine"]) for r in rows})
    trainings = {(r["recipe"], r["seed"]): (r["train_s"], r["train_cpu_s"]) for r in rows}
    last_only = len({(r["recipe"], r["seed"]) for r in rows if str(r.get("resumed")) not in ("", "0")
                     and not r.get("timed_sessions")})  # resumed, a session not timed
    untimed = sum(math.isnan(t) for t, _ in trainings.values())
    train_h = sum(t for t, _ in trainings.values() if not math.isnan(t)) / 3600  # nan: time unknown
    cpu_h = sum(c for _, c in trainings.values() if not math.isnan(c)) / 3600
    eval_h = sum(r["eval_s"] for r in rows) / 3600
    plot = plot_results(rows, md_path.with_suffix(".png"))

    lines = ["# Accuracy: does PST help?", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    studied = {r["recipe"] for r in all_rows}  # a study of a few recipes: those its CSV has at any budget
    if gaps := missing_cells(rows, recipes=studied):
        lines += ["> **Incomplete: the matrix asks for seeds 0, 1, 2 of every recipe"
                  + ("" if set(RECIPES) <= studied else f" it studies ({', '.join(sorted(studied))})")
                  + "; not run yet: "
                  + "; ".join(f"{n} (seed {', '.join(map(str, g))})" for n, g in gaps.items()) + ".**", ""]
    lines += [
        f"Generated by `scripts/study.py` from [`{csv_path.name}`]({csv_path.name}) ({len(rows)} rows: "
        f"{len(trainings)} trainings, seeds {', '.join(map(str, seeds))}). Budget: `{budget}` "
        "(data, epochs, imgsz, batch, train fraction). Scores: pycocotools on the val split, each model's final "
        "weights (last.pt, EMA); AP = mAP50-95, AR = AR100.",
        "",
        f"Time: {'at least ' if last_only or untimed else ''}{train_h:.2f} h of training wall time ({cpu_h:.2f} h "
        f"CPU time of the training process{_unknown(trainings.values())}), {eval_h:.2f} h of validation."
        + (f" Resumed with a session left untimed (their times are lower bounds): {last_only} of the "
           f"{len(trainings)} trainings." if last_only else "")
        + (f" Not timed: {untimed} of the {len(trainings)} trainings." if untimed else ""),
    ]
    for commit, tv, uv, machine in envs:
        lines.append(f"Run with commit `{commit}`, torch {tv}, ultralytics {uv}, on {machine}.")
    others = [b for b in budgets if b != budget]
    if others:
        lines.append(f"Rows of other budgets in the CSV, not in these tables (a longer run of the baseline is compared "
                     f"with its own seed at the end): {', '.join(f'`{b}`' for b in others)}.")

    curves_path = curves_csv(csv_path)
    if out is not None:
        record_curves(curves_path, out, budgets)
    context = _context_study_runs(all_rows, csv_path, curves_path)  # empty unless a shapes-context study
    if verdict := context_verdict(context, all_rows):
        lines += ["", "## Verdict: does PST learn the context, and how well?", "",
                  "Each PST recipe against its stock baseline at each budget, on the seeds both have (details: "
                  "[Did each run learn the context?](#did-each-run-learn-the-context)). Learned: at least one class "
                  f"told apart (its AP, or the run's, above {TOLD_APART}). *Better* / *worse*, *sooner* / *later* only "
                  "where every paired seed agrees.", "", *verdict]
    lines += ["", "## Headline", "", *headline_table(rows)]
    if len(by_budget := budget_table(all_rows, budget)) > 3:  # another budget of the same study has a PST row
        lines += ["", "## The same study at more epochs", "",
                  "The stock baseline's AP, and each PST recipe's paired per-seed Δ to the baseline trained with the "
                  "same seed and epochs (mean ± std; wins/seeds: seeds where PST is higher). Ultralytics' learning "
                  "rate decays to the last epoch of each budget, so every column is a finished run.", "", *by_budget]
    lines += ["", "## Results (mean ± std over seeds)", "",
              "| recipe | pst_topk | seeds | AP | AP50 | AP75 | APs | APm | APl | AR100 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    stats = {m: summarize(rows, m) for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
    cells = sorted(stats["AP"], key=_cell_order)
    for name, k in cells:
        n = stats["AP"][(name, k)][2]
        vals = " | ".join(_fmt(*stats[m][(name, k)]) for m in stats)
        lines.append(f"| {name} | {'–' if k is None else k} | {n} | {vals} |")

    lines += ["", "## Paired per-seed difference to the baseline", "",
              "Each seed's PST model minus the baseline trained with the same seed (mean ± std over seeds; "
              "wins = seeds where PST is higher).", "",
              "| recipe | pst_topk | baseline | Δ AP | Δ APs | seeds (wins, AP) |", "|---|---:|---|---:|---:|---:|"]
    for name, k in cells:
        recipe = RECIPES.get(name)
        if recipe is None or recipe.baseline is None:
            continue
        base = (recipe.baseline, _baseline_k(rows, recipe, k))
        d_ap = paired_differences(rows, (name, k), base, "AP")
        d_aps = paired_differences(rows, (name, k), base, "APs")
        if d_ap[2]:
            lines.append(f"| {name} | {'–' if k is None else k} | {base[0]} | {_fmt(*d_ap[:2], signed=True)} | "
                         f"{_fmt(*d_aps[:2], signed=True)} | {d_ap[2]} ({d_ap[3]}) |")

    lines += _agnostic_section(rows)
    lines += _context_section(all_rows, context)
    lines += _anyk_section(rows)
    lines += _curves_section(budget, md_path, curves_path)
    lines += _longer_section(all_rows, budget, curves_path)
    lines += ["", f"![mAP50-95 and APs against pst_topk]({plot.name})", ""]
    if how_to_run:
        lines += [how_to_run.strip(), ""]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path


def _unknown(times) -> str:
    """``"; not recorded for n of m trainings"`` where some CPU times (``(train_s, train_cpu_s)`` pairs) are nan.

    Examples:
        >>> _unknown([(10.0, 9.0), (20.0, float("nan"))])
        '; not recorded for 1 of 2 trainings'
    """
    times = list(times)
    n = sum(math.isnan(c) for _, c in times)
    return f"; not recorded for {n} of {len(times)} trainings" if n else ""



def missing_cells(rows: list[dict], seeds: tuple[int, ...] = (0, 1, 2), recipes=None) -> dict[str, list[int]]:
    """``{recipe: [seeds]}`` of the full matrix (every recipe, ``seeds``, every ``pst_topk`` of the recipe) that have
    no row in ``rows`` (one budget); empty when the study is complete.

    Args:
        rows (list[dict]): The rows of one budget.
        seeds (tuple[int, ...]): The seeds the matrix asks for.
        recipes (Iterable[str] | None): The recipes of the matrix (a study of a few recipes, e.g. those of any
            budget of its CSV); default: every recipe of :data:`RECIPES`.

    Examples:
        >>> rows = [{"recipe": r, "pst_topk": k, "seed": s} for r in RECIPES for s in (0, 1, 2)
        ...         for k in (RECIPES[r].topks or [""]) if (r, s) != ("yolo12n", 1)]
        >>> missing_cells(rows)
        {'yolo12n': [1]}
        >>> missing_cells(rows[:1], recipes=["yolo11n"])
        {'yolo11n': [1, 2]}
    """
    have = {(r["recipe"], int(r["seed"]), "" if _k(r) is None else _k(r)) for r in rows}
    out = {}
    for name, recipe in RECIPES.items():
        if recipes is not None and name not in recipes:
            continue
        ks = recipe.topks or ("",)
        gaps = [s for s in seeds if any((name, s, k) not in have for k in ks)]
        if gaps:
            out[name] = gaps
    return out


def report_budget(rows: list[dict]) -> str:
    """The budget a report is about by default: the one with the most rows; of budgets with as many, the longest
    (the same study trained to more epochs, once every seed of it has finished).

    Examples:
        >>> rows = [{"budget": b} for b in ["s e100 i64 b8 f1.0"] * 2 + ["s e200 i64 b8 f1.0"] * 2 + ["x"]]
        >>> report_budget(rows), report_budget(rows[:3])
        ('s e200 i64 b8 f1.0', 's e100 i64 b8 f1.0')
    """
    counts = {}
    for r in rows:
        counts[r["budget"]] = counts.get(r["budget"], 0) + 1
    return max(counts, key=lambda b: (counts[b], (_with_epochs(b) or ("", 0))[1]))


def headline_table(rows: list[dict]) -> list[str]:
    """The headline table: every cell's AP per seed, its mean, and the paired per-seed difference to its stock
    baseline (rows of one budget).

    Examples:
        >>> rows = [{"recipe": r, "pst_topk": k, "seed": s, "AP": v} for r, k, s, v in
        ...         [("yolo11n", "", 0, 0.36), ("yolo11n", "", 1, 0.37), ("pst-coarse", 0, 0, 0.34),
        ...          ("pst-coarse", 0, 1, 0.33), ("pst-anyk", 0, 2, 0.35)]]
        >>> print("\\n".join(headline_table(rows)))
        | model (training) | pst_topk | AP per seed (seed 0, 1, ...) | mean | paired Δ vs stock (per seed) |
        |---|---:|---|---:|---:|
        | yolo11n (stock) | – | 0.360, 0.370 | 0.365 | – |
        | yolo11n-pst (coarse only, the default) | 0 | 0.340, 0.330 | 0.335 | -0.020, -0.040 |
        | yolo11n-pst (any-K: `pst_topk_train=0,4,8,16`) | 0 | seed 2: 0.350 | 0.350 | – |
    """
    by = {}
    for r in rows:
        by.setdefault((r["recipe"], _k(r)), {})[int(r["seed"])] = r["AP"]
    lines = ["| model (training) | pst_topk | AP per seed (seed 0, 1, ...) | mean | paired Δ vs stock (per seed) |",
             "|---|---:|---|---:|---:|"]
    for name, k in sorted(by, key=_cell_order):
        recipe, aps = RECIPES.get(name), by[(name, k)]
        seeds = sorted(aps)
        if seeds == list(range(len(seeds))):
            per_seed = ", ".join(f"{aps[s]:.3f}" for s in seeds)
        else:
            per_seed = ", ".join(f"seed {s}: {aps[s]:.3f}" for s in seeds)
        base = by.get((recipe.baseline, _baseline_k(rows, recipe, k))) if recipe and recipe.baseline else None
        paired = [s for s in seeds if base and s in base]
        delta = ", ".join(f"{aps[s] - base[s]:+.3f}" for s in paired) or "–"
        label = (recipe.label if recipe else "") or name
        lines.append(f"| {label} | {'–' if k is None else k} | {per_seed} | {_mean_std(list(aps.values()))[0]:.3f} "
                     f"| {delta} |")
    return lines


def budget_table(all_rows: list[dict], budget: str, ks: tuple[int, ...] = (0, 8)) -> list[str]:
    """The table of the same study at every number of epochs in the CSV: the stock baseline's AP, then each
    PST recipe's paired per-seed Δ to the baseline trained with the same seed and epochs (``ks`` of each recipe).

    Only budgets that differ from ``budget`` in their epochs alone are columns, and only cells trained at two or more
    of them are rows (the per-K tables of each budget are in the report). Each entry is mean ± std (one seed: the
    value alone) and in brackets the seeds, or the wins over the seeds (PST higher).

    Examples:
        >>> rows = [{"budget": f"shapes e{e} i128 b16 f1.0", "recipe": r, "pst_topk": k, "seed": s, "AP": v}
        ...         for e, r, k, s, v in [(100, "yolo11n", "", 0, 0.36), (100, "yolo11n", "", 1, 0.38),
        ...                               (100, "pst-coarse", 0, 0, 0.33), (100, "pst-coarse", 0, 1, 0.34),
        ...                               (200, "yolo11n", "", 0, 0.44), (200, "pst-coarse", 0, 0, 0.45),
        ...                               (100, "pst-k8", 0, 0, 0.3)]]  # pst-k8: one budget only, no row
        >>> print("\\n".join(budget_table(rows, "shapes e100 i128 b16 f1.0")))
        | model (training) | pst_topk | 100 epochs | 200 epochs |
        |---|---:|---:|---:|
        | yolo11n (stock): AP (seeds) | – | 0.370 ± 0.014 (2) | 0.440 (1) |
        | yolo11n-pst (coarse only, the default): paired Δ (wins/seeds) | 0 | -0.035 ± 0.007 (0/2) | +0.010 (1/1) |
    """
    own = _with_epochs(budget)
    if own is None:
        return []
    by_epochs = {}
    for r in all_rows:
        parsed = _with_epochs(r["budget"])
        if parsed and parsed[0] == own[0]:
            by_epochs.setdefault(parsed[1], []).append(r)
    epochs = sorted(by_epochs)
    lines = ["| model (training) | pst_topk | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
             "|---|---:|" + "---:|" * len(epochs)]

    base = RECIPES["yolo11n"]
    cells = [("yolo11n", None)] + [(n, k) for n, r in RECIPES.items() if r.baseline == base.name
                                   for k in (r.topks or ()) if k in ks]
    for name, k in cells:
        found = []
        for e in epochs:
            if name == base.name:
                m, sd, n = summarize(by_epochs[e]).get((name, None), (math.nan, math.nan, 0))
                found.append(f"{_fmt(m, sd)} ({n})" if n else "–")
            else:
                m, sd, n, wins = paired_differences(by_epochs[e], (name, k), (base.name, None))
                spread = "" if math.isnan(sd) else f" ± {sd:.3f}"
                found.append(f"{m:+.3f}{spread} ({wins}/{n})" if n else "–")
        if sum(f != "–" for f in found) < (1 if name == base.name else 2):
            continue
        what = ": AP (seeds)" if name == base.name else ": paired Δ (wins/seeds)"
        lines.append(f"| {RECIPES[name].label}{what} | {'–' if k is None else k} | " + " | ".join(found) + " |")
    return lines


def _with_epochs(budget: str, epochs: int | None = None) -> tuple[str, int] | None:
    """``(the budget key with its epochs replaced by 'e*', its epochs)``; with ``epochs``, the key at that many; None
    for a key that is not a :meth:`Budget.key`.

    Examples:
        >>> _with_epochs("my e3 data.yaml e100 i128 b16 f1.0 cache=ram")  # the data name may hold anything
        ('my e3 data.yaml e* i128 b16 f1.0 cache=ram', 100)
        >>> _with_epochs("shapes e100 i128 b16 f1.0", 200)
        ('shapes e200 i128 b16 f1.0', 100)
        >>> _with_epochs("legacy") is None
        True
    """
    m = re.fullmatch(r"(.*) e(\d+)( i\d+ b\d+ f\S+(?: .*)?)", budget)
    if m is None:
        return None
    return f"{m[1]} e{'*' if epochs is None else epochs}{m[3]}", int(m[2])


def longer_budget(all_rows: list[dict], budget: str, recipe: str = "yolo11n",
                  k: int | None = None) -> list[tuple[int, int, float, float]]:
    """A cell trained for longer: ``(epochs, seed, AP there, AP at `budget`)`` for every seed of ``(recipe, k)`` that
    also has a row under a budget differing from ``budget`` only in its (larger) number of epochs.

    This is the check that matters with Ultralytics' schedule: the learning rate decays linearly to the last epoch of
    whatever budget is set, so every run still gains while it anneals, and only a longer run tells whether the
    shorter one stopped short.

    Examples:
        >>> rows = [{"budget": b, "recipe": "yolo11n", "seed": "0", "pst_topk": "", "AP": ap} for b, ap in
        ...         [("shapes e100 i128 b16 f1.0", 0.36), ("shapes e200 i128 b16 f1.0", 0.38),
        ...          ("shapes e50 i128 b16 f1.0", 0.30), ("shapes e200 i160 b16 f1.0", 0.5), ("legacy", 0.1)]]
        >>> longer_budget(rows, "shapes e100 i128 b16 f1.0")  # not shorter, not another imgsz, not unparseable
        [(200, 0, 0.38, 0.36)]
    """
    own = _with_epochs(budget)
    if own is None:
        return []
    return sorted((e, seed, ap, runs[own[1]]) for seed, runs in epoch_chain(all_rows, budget, recipe, k).items()
                  if own[1] in runs for e, ap in runs.items() if e > own[1])


def epoch_chain(all_rows: list[dict], budget: str, recipe: str = "yolo11n", k: int | None = None
                ) -> dict[int, dict[int, float]]:
    """``{seed: {epochs: AP}}`` of one cell at ``budget`` and at every budget that differs from it only in its epochs.

    Examples:
        >>> rows = [{"budget": f"shapes e{e} i128 b16 f1.0", "recipe": "yolo11n", "pst_topk": "", "seed": s, "AP": v}
        ...         for e, s, v in [(100, 0, 0.36), (200, 0, 0.44), (400, 0, 0.48), (200, 1, 0.43)]]
        >>> epoch_chain(rows, "shapes e100 i128 b16 f1.0")
        {0: {100: 0.36, 200: 0.44, 400: 0.48}, 1: {200: 0.43}}
    """
    own = _with_epochs(budget)
    chain = {}
    for r in all_rows if own else ():
        parsed = _with_epochs(r["budget"])
        if r["recipe"] == recipe and _k(r) == k and parsed and parsed[0] == own[0]:
            chain.setdefault(int(r["seed"]), {})[parsed[1]] = r["AP"]
    return {s: dict(sorted(c.items())) for s, c in sorted(chain.items())}


def converged_epochs(chain: dict[int, dict[int, float]], tol: float = 0.01
                     ) -> tuple[int | None, dict[int, list[float]]]:
    """The doubling check: the fewest epochs ``E`` such that every seed trained at both ``E`` and ``2E`` gains less
    than ``tol`` AP from the doubling, and every doubling measured (``{E: [gain of each seed]}``).

    This is the convergence test that works with Ultralytics' schedule, which decays the learning rate linearly to the
    last epoch of whatever budget is set: a run's curve keeps climbing until the rate is small, so a run still gains
    over the fifth of its epochs before the last and the window criterion (:func:`plateau`) can fail for a run that a
    longer budget would not improve; only a run twice as long tells whether the shorter one stopped short.

    Examples:
        >>> converged_epochs({0: {100: 0.36, 200: 0.44, 400: 0.48, 800: 0.485}, 1: {100: 0.37, 200: 0.43}})
        (400, {100: [0.08, 0.06], 200: [0.04], 400: [0.005]})
        >>> converged_epochs({0: {100: 0.36, 200: 0.44}})[0] is None
        True
    """
    doublings = {}
    for runs in chain.values():
        for e, ap in runs.items():
            if 2 * e in runs:
                doublings.setdefault(e, []).append(round(runs[2 * e] - ap, 6))
    doublings = dict(sorted(doublings.items()))
    return next((e for e, gains in doublings.items() if all(g < tol for g in gains)), None), doublings


def _doubling_section(all_rows: list[dict], budget: str) -> list[str]:
    """The AP of the baseline (and of each PST cell at K = 0 trained at several budgets) per seed and number of
    epochs, and the doubling check's verdict."""
    chains = {}
    for name, k in [("yolo11n", None)] + [(n, 0) for n, r in RECIPES.items() if r.baseline == "yolo11n"]:
        chain = epoch_chain(all_rows, budget, name, k)
        if any(len(runs) > 1 for runs in chain.values()):  # trained at two budgets or more
            chains[(name, k)] = chain
    if ("yolo11n", None) not in chains:
        return []
    epochs = sorted({e for c in chains.values() for runs in c.values() for e in runs})
    lines = ["", "**Doubling check** (the convergence criterion of the study): AP per seed at each number of "
             "epochs, in brackets the gain over the same seed at half as many; a budget is converged when doubling "
             "it gains less than 0.01 AP on every seed trained at both.", "",
             "| recipe | pst_topk | seed | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
             "|---|---:|---:|" + "---:|" * len(epochs)]
    for (name, k), chain in chains.items():
        for seed, runs in chain.items():
            cells = [("–" if e not in runs else f"{runs[e]:.3f}"
                      + (f" ({runs[e] - runs[e // 2]:+.3f})" if e % 2 == 0 and e // 2 in runs else ""))
                     for e in epochs]
            lines.append(f"| {name} | {'–' if k is None else k} | {seed} | " + " | ".join(cells) + " |")
    done, doublings = converged_epochs(chains[("yolo11n", None)])
    if not doublings:
        return lines
    last = max(doublings)
    gains = ", ".join(f"{g:+.3f}" for g in doublings[last])
    if done is None:
        verdict = (f"yolo11n is not converged at any budget measured: its longest doubling, {last} → {2 * last} "
                   f"epochs, still gains {gains} ({len(doublings[last])} seed(s)).")
    else:
        verdict = (f"yolo11n converged at {done} epochs: doubling to {2 * done} gains "
                   + ", ".join(f"{g:+.3f}" for g in doublings[done]) + f" ({len(doublings[done])} seed(s)).")
    return [*lines, "", verdict]


def _longer_section(all_rows: list[dict], budget: str, path: Path | None = None) -> list[str]:
    parsed = _with_epochs(budget)
    if parsed is None:
        return []
    own = parsed[1]
    lines = ["", "## Would more epochs change the result? (the same seed, a longer budget)", ""]
    cells = sorted({(r["recipe"], _k(r)) for r in all_rows if r["budget"] != budget}, key=_cell_order)
    found = {c: longer_budget(all_rows, budget, *c) for c in cells}
    if not found.get(("yolo11n", None)):
        return [*lines, f"No yolo11n row of a longer budget than {own} epochs in the CSV yet: run this budget's study "
                        f"command with `--recipes yolo11n --seeds 0 --epochs {2 * own}`: its row lands in this "
                        "section of the next report."]
    lines += ["Criterion: the baseline trained longer (twice the epochs; same seed, everything else equal) scores less "
              "than 0.01 AP more. The learning-rate schedule ends at the last epoch of each budget, so this compares "
              "finished runs, not points on one curve. PST cells trained longer are paired with their stock baseline "
              "of the same budget and seed.", "",
              f"| recipe | pst_topk | epochs | seed | AP | AP at {own} epochs | Δ | Δ vs baseline, these epochs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, k), runs in found.items():
        recipe = RECIPES.get(name)
        base = {(e, s): ap for e, s, ap, _ in found.get((recipe.baseline, None), [])} if recipe else {}
        for epochs, seed, ap, ap_own in runs:
            vs = f"{ap - base[(epochs, seed)]:+.3f}" if (epochs, seed) in base else "–"
            lines.append(f"| {name} | {'–' if k is None else k} | {epochs} | {seed} | {ap:.3f} | {ap_own:.3f} | "
                         f"{ap - ap_own:+.3f} | {vs} |")
    lines += _doubling_section(all_rows, budget)
    lines += _longer_summary(found, own)
    parsed_all = {b: _with_epochs(b) or ("", 0) for b in {r["budget"] for r in all_rows}}
    longer_budgets = {b: e for b, (key, e) in parsed_all.items() if key == parsed[0] and e > own}
    for longer, epochs in sorted(longer_budgets.items(), key=lambda kv: kv[1]):
        curves = learning_curves(path, longer)
        missing = sorted({(r["recipe"], r["seed"]) for r in all_rows if r["budget"] == longer}
                         - {(n, str(s)) for n, runs in curves.items() for s in runs})
        lines += ["", f"Learning curves at {epochs} epochs (the window criterion as above: the last fifth of the "
                      "epochs against the fifth before it, < 0.005; the learning rate decays to the last epoch, so "
                      "every run climbs until late in its schedule and this can fail for a run that a longer budget "
                      "would not improve: the doubling check decides):", ""]
        lines += _plateau_table(curves, epochs) if curves else []
        if missing:
            lines += ["", "Curves not on record (trained before the runner kept them in "
                      f"`{Path(path).name if path else 'the curves CSV'}`): "
                      + ", ".join(f"{n} seed {s}" for n, s in missing) + "."]
    return lines


def _longer_summary(found: dict, own: int) -> list[str]:
    """Mean ± std over seeds of each cell at each longer budget, and its paired per-seed Δ to the stock baseline of that
    budget; empty while no cell has two seeds there (the per-run table says it all)."""
    groups = {}  # (epochs, recipe, k) -> {seed: (AP, AP at own)}
    for (name, k), runs in found.items():
        for epochs, seed, ap, ap_own in runs:
            groups.setdefault((epochs, name, k), {})[seed] = (ap, ap_own)
    if not any(len(g) > 1 for g in groups.values()):
        return []
    lines = ["", "Over seeds (mean ± std; paired Δ: each seed minus the same seed's baseline at the same budget; "
             "wins = seeds where the cell is higher):", "",
             f"| recipe | pst_topk | epochs | seeds | AP | Δ vs {own} epochs | paired Δ vs baseline | seeds (wins) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (epochs, name, k), by_seed in sorted(groups.items(), key=lambda g: (g[0][0], *_cell_order(g[0][1:]))):
        recipe = RECIPES.get(name)
        base = groups.get((epochs, recipe.baseline, None), {}) if recipe and recipe.baseline else {}
        diffs = [by_seed[s][0] - base[s][0] for s in sorted(by_seed) if s in base]
        paired = f"{_fmt(*_mean_std(diffs)[:2], signed=True)} | {len(diffs)} ({sum(d > 0 for d in diffs)})" \
            if diffs else "– | –"
        gain = _mean_std([ap - ap_own for ap, ap_own in by_seed.values()])
        lines.append(f"| {name} | {'–' if k is None else k} | {epochs} | {len(by_seed)} | "
                     f"{_fmt(*_mean_std([ap for ap, _ in by_seed.values()])[:2])} | {_fmt(*gain[:2], signed=True)} | "
                     f"{paired} |")
    return lines


def _agnostic_section(rows: list[dict]) -> list[str]:
    """The class-agnostic AP of each cell (rows scored with it only), its gap to the AP, and its paired Δ to the
    baseline: whether a recipe's loss is in finding the objects or in naming them."""
    scored = [{**r, "class_gap": r["agnostic_AP"] - r["AP"]} for r in rows
              if not math.isnan(r.get("agnostic_AP", math.nan))]
    if not scored:
        return []
    lines = ["", "## Class-agnostic AP: finding the objects, whatever their class", "",
             "The same boxes scored once more with every class taken as one (pycocotools' `useCats=0`): agnostic − AP "
             "is what class confusions cost, and a recipe whose agnostic AP matches the baseline's but whose AP does "
             f"not loses on naming, not on finding. Rows with it: {len(scored)} of {len(rows)} (rows scored before the "
             "runner recorded it have none).", "",
             "| recipe | pst_topk | seeds | agnostic AP | agnostic − AP | paired Δ agnostic AP vs baseline | "
             "seeds (wins) |", "|---|---:|---:|---:|---:|---:|---:|"]
    agnostic, gap = summarize(scored, "agnostic_AP"), summarize(scored, "class_gap")
    for name, k in sorted(agnostic, key=_cell_order):
        recipe = RECIPES.get(name)
        d = (paired_differences(scored, (name, k), (recipe.baseline, _baseline_k(scored, recipe, k)), "agnostic_AP")
             if recipe and recipe.baseline else (math.nan, math.nan, 0, 0))
        paired = f"{_fmt(*d[:2], signed=True)} | {d[2]} ({d[3]})" if d[2] else "– | –"
        lines.append(f"| {name} | {'–' if k is None else k} | {agnostic[(name, k)][2]} | "
                     f"{_fmt(*agnostic[(name, k)][:2])} | {_fmt(*gap[(name, k)][:2], signed=True)} | {paired} |")
    return lines


TOLD_APART = 0.5  # a class's AP above this: told apart from every other class (see context_runs)


def _learned_from(curve: list[float], level: float) -> int | None:
    """The first epoch (1-based) from which every value of ``curve`` is above ``level``; None if the last is not.

    Examples:
        >>> _learned_from([0.1, 0.6, 0.2, 0.6, 0.7], 0.5)
        4
        >>> _learned_from([0.6, 0.4], 0.5) is None
        True
    """
    epoch = None
    for i in range(len(curve) - 1, -1, -1):
        if not curve[i] > level:
            break
        epoch = i + 1
    return epoch


def context_runs(all_rows: list[dict], class_aps: dict, curves: dict[str, dict[str, dict[int, list[float]]]]
                 ) -> list[dict]:
    """Which classes each run tells apart on a set of balanced classes that only context separates (shapes-context):
    one dict per ``(budget, recipe, seed)`` of the rows (a stock model's row, a PST model's at K = 0).

    The ceilings that decide it: when a detector cannot tell a class from the others, the boxes it ranks for that
    class are of every class alike, so at any recall only that class's share of them is right, and the class's AP is
    at most 1/n of n balanced classes (1/3 here); when it confuses the class with one other class only, at most 1/2.
    A class whose own AP is above :data:`TOLD_APART` (1/2) is therefore told apart from every other one
    (``told_apart`` counts them). Without per-class APs the run's AP says less: above 1/2, at least one class is told
    apart (``at_least`` 1); at most 1/n, it is where a run that tells none apart would be (``at_chance``). ``epoch``
    is the first epoch from which the run's val mAP50-95 curve stays above 1/2: from then on it tells at least one
    class apart.

    Args:
        all_rows (list[dict]): Study rows (any budgets).
        class_aps (dict): ``{row key: {class: AP}}`` (:func:`read_class_aps`).
        curves (dict): ``{budget: {recipe: {seed: val mAP50-95 per epoch}}}`` (:func:`learning_curves`).

    Returns:
        Dicts with ``budget``, ``epochs``, ``recipe``, ``seed``, ``AP``, ``agnostic_AP``, ``classes`` (``{class:
        AP}``, empty where not recorded), ``n_classes``, ``told_apart`` (None without per-class APs), ``at_least``
        (the fewest classes it surely tells apart), ``at_chance`` (AP ≤ 1/n) and ``epoch`` (None without a curve, or
        where the curve does not end above 1/2).

    Examples:
        >>> rows = [{"budget": "shapes-context e200 i256 b16 f1.0", "recipe": "yolo11n", "seed": "0",
        ...          "pst_topk": "", "AP": 0.62, "agnostic_AP": 0.86}]
        >>> key = ("shapes-context e200 i256 b16 f1.0", "yolo11n", "0", "")
        >>> (run,) = context_runs(rows, {key: {"a": 0.84, "b": 0.86, "c": 0.16}},
        ...                       {rows[0]["budget"]: {"yolo11n": {0: [0.2, 0.55, 0.4, 0.58, 0.62]}}})
        >>> run["told_apart"], run["epoch"]
        (2, 4)
    """
    runs = []
    for r in all_rows:
        k = _k(r)
        if k not in (None, 0):
            continue
        classes = class_aps.get(_key(r), {})
        n = len(classes) or 3  # the classes of shapes-context where the CSV has none
        told = sum(ap > TOLD_APART for ap in classes.values()) if classes else None
        curve = curves.get(r["budget"], {}).get(r["recipe"], {}).get(int(r["seed"]))
        parsed = _with_epochs(r["budget"])
        runs.append({"budget": r["budget"], "epochs": parsed and parsed[1], "recipe": r["recipe"],
                     "seed": int(r["seed"]), "AP": r["AP"], "agnostic_AP": r.get("agnostic_AP", math.nan),
                     "classes": classes, "n_classes": n, "told_apart": told,
                     "at_least": told if told is not None else int(r["AP"] > TOLD_APART),
                     "at_chance": r["AP"] <= 1 / n,
                     "epoch": _learned_from(curve, TOLD_APART) if curve else None})
    return sorted(runs, key=lambda c: (c["epochs"] or 0, RECIPES.get(c["recipe"], Recipe("", "")).baseline
                                       is not None, c["recipe"], c["seed"]))


def _compare(diffs: list[float], more: str, less: str, same: str) -> str:
    """The word for a set of paired differences: ``more`` if every one is above 0, ``less`` if every one is below,
    else ``same`` (mixed signs, or none)."""
    if diffs and all(d > 0 for d in diffs):
        return more
    if diffs and all(d < 0 for d in diffs):
        return less
    return same


def context_verdict(runs: list[dict], all_rows: list[dict]) -> list[str]:
    """The verdict of a context study, one sentence per budget and PST recipe with its baseline at that budget:
    how often it learned the context against its baseline, how well once learned (paired per seed where both did),
    how soon (the epoch from which each one's curve stays above 1/2, paired per seed), and how much fine attention
    moves its AP (each K against K = 0 on the same weights).

    The words follow the signs: *better* / *worse* (*sooner* / *later*) only where every paired seed agrees, else
    *level* (*mixed*); the numbers beside them say by how much.

    Args:
        runs (list[dict]): :func:`context_runs` of the rows.
        all_rows (list[dict]): The study rows (for fine attention's Δ).

    Returns:
        Markdown list items, one per (budget, PST recipe); empty where no PST recipe has its baseline's runs.

    Examples:
        >>> run = lambda recipe, seed, ap, epoch: {"epochs": 200, "budget": "b", "recipe": recipe, "seed": seed,
        ...     "AP": ap, "agnostic_AP": ap + 0.01 * seed, "at_least": int(ap > 0.5), "epoch": epoch}
        >>> runs = [run("yolo11n", 0, 0.92, 89), run("yolo11n", 1, 0.93, 91), run("pst-anyk", 0, 0.90, 120),
        ...         run("pst-anyk", 1, 0.91, 81)]
        >>> print(context_verdict(runs, [])[0])
        - **200 epochs** (seeds 0, 1): pst-anyk learned the context as often as yolo11n (2 of 2 runs against 2 of 2); \
once learned, worse (AP 0.905 against 0.925; paired Δ -0.0200 ± 0.0000, higher in 0 of 2 seeds), class-agnostic AP \
paired Δ -0.0200 ± 0.0000 (worse at finding the marks); from epoch 120, 81 against 89, 91 (mixed).
    """
    lines = []
    budgets = dict.fromkeys((c["epochs"], c["budget"]) for c in runs)
    for epochs, budget in budgets:
        here = [c for c in runs if c["budget"] == budget]
        for name in dict.fromkeys(c["recipe"] for c in here):
            recipe = RECIPES.get(name)
            base = recipe and recipe.baseline
            if not base or not any(c["recipe"] == base for c in here):
                continue
            mine = {c["seed"]: c for c in here if c["recipe"] == name}
            theirs = {c["seed"]: c for c in here if c["recipe"] == base}
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                continue
            n_a, n_b = (sum(bool(runs_[s]["at_least"]) for s in seeds) for runs_ in (mine, theirs))
            often = "more often than" if n_a > n_b else "less often than" if n_a < n_b else "as often as"
            text = (f"- **{epochs} epochs** (seed{'' if len(seeds) == 1 else 's'} {', '.join(map(str, seeds))}): "
                    f"{name} learned the context {often} {base} ({n_a} of {len(seeds)} runs against {n_b} of "
                    f"{len(seeds)})")
            text += _once_learned(mine, theirs, seeds)
            if fine := _fine_attention_deltas([r for r in all_rows if r["budget"] == budget], name):
                worst = max(abs(d[0]) for _, d in fine)
                text += f"; fine attention (K > 0 against K = 0) moves its mean AP by at most {worst:.4f}"
            lines.append(text + ".")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _paired_clause(mine: dict, theirs: dict, seeds: list, metric: str) -> tuple[list[float], str]:
    """The per-seed differences ``mine - theirs`` of ``metric`` on ``seeds`` (those where both have it), and
    ``"paired Δ mean ± std"`` of them (no std for one seed)."""
    seeds = [s for s in seeds if not math.isnan(mine[s].get(metric, math.nan))
             and not math.isnan(theirs[s].get(metric, math.nan))]
    diffs = [mine[s][metric] - theirs[s][metric] for s in seeds]
    mean, std, n = _mean_std(diffs)
    return diffs, f"paired Δ {_fmt(mean, std if n > 1 else math.nan, signed=True)}"


def _once_learned(mine: dict, theirs: dict, seeds: list) -> str:
    """The verdict's "how well, how soon" clause (:func:`context_verdict`): paired on the seeds where both runs learned
    the context; unpaired means where each learned it only on seeds the other did not; empty where one never did."""
    both = [s for s in seeds if mine[s]["at_least"] and theirs[s]["at_least"]]
    if not both:
        a = [mine[s]["AP"] for s in seeds if mine[s]["at_least"]]
        b = [theirs[s]["AP"] for s in seeds if theirs[s]["at_least"]]
        if not (a and b):
            return ""
        return (f"; once learned, AP {_mean_std(a)[0]:.3f} ({_plural(len(a), 'run')}) against {_mean_std(b)[0]:.3f} "
                f"({_plural(len(b), 'run')}), no seed where both did")
    diffs, paired = _paired_clause(mine, theirs, both, "AP")
    text = (f"; once learned, {_compare(diffs, 'better', 'worse', 'level')} (AP "
            f"{_mean_std([mine[s]['AP'] for s in both])[0]:.3f} against "
            f"{_mean_std([theirs[s]['AP'] for s in both])[0]:.3f}; {paired}, higher in {sum(d > 0 for d in diffs)} of "
            f"{_plural(len(both), 'seed')})")
    found, paired = _paired_clause(mine, theirs, both, "agnostic_AP")
    if found:  # finding the marks, whatever their class: is a gap in naming them or in finding them?
        text += f", class-agnostic AP {paired} ({_compare(found, 'better', 'worse', 'level')} at finding the marks)"
    if timed := [s for s in both if mine[s]["epoch"] and theirs[s]["epoch"]]:
        when = _compare([mine[s]["epoch"] - theirs[s]["epoch"] for s in timed], "later", "sooner", "mixed")
        text += (f"; from epoch {', '.join(str(mine[s]['epoch']) for s in timed)} against "
                 f"{', '.join(str(theirs[s]['epoch']) for s in timed)} ({when})")
    return text


def _fine_attention_deltas(rows: list[dict], name: str) -> list[tuple[int, tuple]]:
    """``[(K, paired_differences(K against K = 0))]`` of recipe ``name`` in ``rows`` (one budget), every K > 0 it was
    scored at on weights that also have a K = 0 row: what fine attention changes on the same weights."""
    ks = sorted({_k(r) for r in rows if r["recipe"] == name and _k(r)})
    return [(k, d) for k in ks if (d := paired_differences(rows, (name, k), (name, 0)))[2]]


def _context_study_runs(all_rows: list[dict], csv_path: Path, curves_path: Path) -> list[dict]:
    """:func:`context_runs` of every ``shapes-context`` budget of the CSV; empty for a study on other data."""
    budgets = sorted({r["budget"] for r in all_rows if r["budget"].startswith("shapes-context ")})
    curves = {b: learning_curves(curves_path, b) for b in budgets}
    return context_runs([r for r in all_rows if r["budget"] in budgets], read_class_aps(classes_csv(csv_path)),
                        curves) if budgets else []


def _context_section(all_rows: list[dict], runs: list[dict]) -> list[str]:
    """Which runs learned the context (``runs``: :func:`_context_study_runs`): a table of every run of every budget
    of a ``shapes-context`` study, how often each recipe learned it at each budget, and fine attention's Δ."""
    if not runs:
        return []
    budgets = sorted({c["budget"] for c in runs})
    names = list(dict.fromkeys(n for c in runs for n in c["classes"]))
    lines = ["", "## Did each run learn the context?", "",
             "A mark's class is decided only by the shape around it. When a detector cannot tell a class from the "
             "others, the boxes it ranks for that class are of every class alike, so that class's AP is at most its "
             "share of the marks, 1/3; confusing it with one other class only, at most 1/2. A class whose AP is above "
             f"{TOLD_APART} is therefore **told apart** from every other one (its boxes found and classed by the "
             "context). Runs without per-class APs: AP above 1/2 means at least one class is told apart; AP ≤ 1/3 is "
             "where a run that tells none apart would be (at chance). "
             f"**From epoch**: the first epoch from which Ultralytics' val mAP50-95 stays above {TOLD_APART} (at "
             "least one class told apart from then on). The class-agnostic AP is how well the marks are found, "
             "whatever their class (a model that hedges between classes also loses some of it to its duplicate "
             "boxes). Stock models as trained, PST models at K = 0; every budget of the CSV.", "",
             f"| epochs | recipe | seed | AP | class-agnostic AP | AP per class ({' / '.join(names) or '–'}) "
             "| classes told apart | from epoch |",
             "|---:|---|---:|---:|---:|---|---:|---:|"]
    for c in runs:
        per_class = " / ".join(f"{c['classes'][n]:.3f}" if n in c["classes"] else "–" for n in names) or "–"
        told = (f"{c['told_apart']} of {c['n_classes']}" if c["told_apart"] is not None
                else f"≥ {c['at_least']} of {c['n_classes']}" if c["at_least"] else "AP at chance" if c["at_chance"]
                else "?")
        lines.append(f"| {c['epochs']} | {c['recipe']} | {c['seed']} | {c['AP']:.3f} | "
                     f"{_fmt(c['agnostic_AP'], math.nan)} | {per_class} | {told} | {c['epoch'] or '–'} |")
    lines += ["", "How often each recipe learned it:", ""]
    groups = {}
    for c in runs:
        groups.setdefault((c["epochs"], c["recipe"]), []).append(c)
    for (epochs, recipe), group in groups.items():
        some = [c for c in group if c["at_least"]]
        every = [c for c in group if c["told_apart"] == c["n_classes"]]
        known = [c for c in group if c["classes"]]
        text = f"- {epochs} epochs, {recipe}: at least one class told apart in {len(some)} of {len(group)} runs"
        if some:
            text += f" (AP {', '.join(format(c['AP'], '.3f') for c in some)}"
            when = [str(c["epoch"]) for c in some if c["epoch"]]
            text += f"; from epoch {', '.join(when)})" if when else ")"
        if known:
            text += f"; every class in {len(every)} of {len(known)} runs with per-class APs"
        lines.append(text)
    fine = []
    for budget in budgets:  # does fine attention add anything? each K against K = 0, the same weights
        rows = [r for r in all_rows if r["budget"] == budget]
        parsed = _with_epochs(budget)
        for name in sorted({r["recipe"] for r in rows if _k(r) == 0}):
            fine += [f"{parsed and parsed[1]} epochs, {name} K = {k}: {_fmt(*d[:2], signed=True)} "
                     f"({_plural(d[2], 'run')})" for k, d in _fine_attention_deltas(rows, name)]
    if fine:
        lines += ["", "Fine attention on the same weights (Δ AP against K = 0, mean ± std over runs): "
                  + "; ".join(fine) + "."]
    return lines


def _anyk_section(rows: list[dict]) -> list[str]:
    """Does every K work after any-K training? Each K against K = 0 minus one std; its best K, paired."""
    ap = summarize(rows, "AP")
    ks = sorted(k for (r, k) in ap if r == "pst-anyk" and k is not None)
    if 0 not in ks:
        return []
    m0, s0, _ = ap[("pst-anyk", 0)]
    floor = m0 - (0 if math.isnan(s0) else s0)
    lines = ["", "## Any-K training: does every K work?", "",
             f"pst-anyk at K = 0: AP {_fmt(m0, s0)}; criterion: AP at each K ≥ {floor:.3f} (its K = 0 value minus "
             "one std).", "", "| pst_topk | AP | ≥ criterion | Δ vs own K = 0 (paired) |", "|---:|---:|---|---:|"]
    for k in ks:
        m, s, _ = ap[("pst-anyk", k)]
        d = paired_differences(rows, ("pst-anyk", k), ("pst-anyk", 0))
        lines.append(f"| {k} | {_fmt(m, s)} | {'yes' if m >= floor else 'no'} | {_fmt(*d[:2], signed=True)} |")
    best = max(ks, key=lambda k: ap[("pst-anyk", k)][0])
    lines += ["", f"Best K of pst-anyk: {best}. Paired per seed (Δ AP, mean ± std, seeds):", ""]
    for other in dict.fromkeys((("yolo11n", None), ("pst-coarse", 0), ("pst-coarse", best))):
        d = paired_differences(rows, ("pst-anyk", best), other)
        if d[2]:
            label = other[0] + ("" if other[1] is None else f" at K = {other[1]}")
            lines.append(f"- vs {label}: {_fmt(*d[:2], signed=True)} ({d[2]} seeds, higher in {d[3]})")
    return lines


CURVES_HEADING = "## Learning curves and the plateau criterion"
CARRIED_NOTE = ("(Carried over from the previous report: the curves it was computed from are not in the curves CSV; "
                "the table and plot are unchanged.)")


def _carried_curves_section(md_path: Path, budget: str) -> list[str]:
    """The learning-curve section of the report already at ``md_path``, kept as it was (with a note saying so), if that
    report is about ``budget``.

    A report whose curves predate the curves CSV (computed from the runs' results.csv files, which are not committed)
    would otherwise lose, when regenerated, a section (and its plot) it cannot recompute.
    """
    if not md_path.is_file():
        return []
    text = md_path.read_text(encoding="utf-8")
    start = text.find(CURVES_HEADING)
    if start < 0 or f"Budget: `{budget}`" not in text[:start]:
        return []
    end = text.find("\n## ", start + len(CURVES_HEADING))
    lines = text[start: None if end < 0 else end].rstrip("\n").split("\n")
    if CARRIED_NOTE not in lines:
        lines[1:1] = ["", CARRIED_NOTE]
    return ["", *lines]


PLATEAU_CRITERION = ("Criterion: the baseline's val mAP50-95 (Ultralytics, per epoch) averaged over the last fifth of "
                     "the epochs (at least 3) exceeds the average of the fifth before it by less than 0.005.")


def _plateau_table(curves: dict[str, dict[int, list[float]]], epochs: int | None = None) -> list[str]:
    """One row per finished run (``curves``: :func:`learning_curves`): its final val mAP50-95, the gain of its last
    window and whether it meets the criterion. A run with fewer than the budget's ``epochs`` is marked as stopped
    early: Ultralytics' ``patience`` ended it without a new best for that many epochs, and its row is of the weights
    it stopped with."""
    lines = ["| recipe | seed | epochs | final mAP50-95 | gain of the last window | plateaued |",
             "|---|---:|---:|---:|---:|---|"]
    for name, runs in sorted(curves.items(), key=lambda kv: RECIPES.get(kv[0], Recipe("", "")).baseline is not None):
        for seed, curve in sorted(runs.items()):
            ok, gain, window = plateau(curve)
            g = "–" if math.isnan(gain) else f"{gain:+.4f} ({window} epochs)"
            n = f"{len(curve)}{' (stopped early: patience)' if epochs and len(curve) < epochs else ''}"
            lines.append(f"| {name} | {seed} | {n} | {curve[-1] if curve else math.nan:.3f} | {g} | "
                         f"{'yes' if ok else 'no'} |")
    return lines


def _curves_section(budget: str, md_path: Path, path: Path | None = None) -> list[str]:
    curves = learning_curves(path, budget)
    if not curves:
        return _carried_curves_section(md_path, budget)
    plot = plot_curves(curves, md_path.with_name(f"{md_path.stem}_curves.png"))
    parsed = _with_epochs(budget)
    return ["", CURVES_HEADING, "", PLATEAU_CRITERION, "", *_plateau_table(curves, parsed and parsed[1]), "",
            f"![val mAP50-95 per epoch]({plot.name})"]
