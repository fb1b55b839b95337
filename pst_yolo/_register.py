"""The one place where pst_yolo touches Ultralytics internals.

``register()`` (called by ``import pst_yolo``; idempotent) installs these hooks:

1. ``ultralytics.nn.tasks.parse_model`` is wrapped so that YAML rows naming ``PST`` build like stock modules. The
   stock parser cannot build a two-input module with inferred channels (its channel bookkeeping is local), so the
   wrapper lets the *stock* parser do all the arithmetic: each PST row is handed to it as a stand-in ``Conv`` row
   with the same ``from``/repeats/``c2`` (so ``c2`` gets the stock width and ``max_channels`` scaling and ``n`` the
   stock depth scaling), plus one probe ``Conv`` row per PST reading the coarse input's channels. The stand-ins are
   then replaced by real ``PST`` modules and the probes dropped; the per-layer summary is rewritten to match.
2. ``check_file`` (in ``ultralytics.utils.checks``, which ``check_yaml`` uses, and in ``ultralytics.data.utils``,
   which ``check_det_dataset`` uses) is wrapped so that bare names resolve to pst_yolo's configs from any directory:
   ``yolo11n-pst.yaml`` and the datasets named in ``datasets.yaml`` (``data=shapes``).
3. ``pst_topk`` becomes an Ultralytics argument (default None = keep the model's value): added to the default config
   dict (so CLI/API key checks accept it and ``args.yaml`` records it), applied by default callbacks for train
   (``on_pretrain_routine_end``: model and EMA), predict (``on_predict_start``) and export (``on_export_start``), and
   for standalone val by wrapping ``BaseValidator.get_model`` (no callback there sees the model before it runs).
4. ``generate_ddp_file`` (``ultralytics.utils.dist``) is wrapped so that the worker script of multi-GPU training
   imports pst_yolo before it unpickles the trainer state and rebuilds the trainer from its arguments. Otherwise the
   workers know PST only if that state happens to reference a pst_yolo object (it need not: a YAML model or a resumed
   ``last.pt`` is pickled as its name, and a YOLO object created before ``import pst_yolo`` lacks pst_yolo's
   callbacks), and they reject ``pst_topk`` (always among the trainer's arguments) and ``yolo11n-pst.yaml``.
5. Restricted loading (``ULTRALYTICS_SAFE_LOAD=1``): PST, PSTBlock and PSTAttention are added to the allow-list of
   ``ultralytics.nn.tasks._SafeLoad`` (its ``_registry``, built by ``_build``), and nothing else, so checkpoints with
   PST layers load once pst_yolo is imported while any other unknown class is still refused.
6. TensorRT export (``format=engine``): ``Exporter.__call__`` is wrapped to fail first, in one sentence
   (``pst_yolo.export.ExportBackendError``), when TensorRT or a CUDA GPU is missing, instead of Ultralytics'
   traceback from ``select_device`` or its pip-install attempt; ``ultralytics.utils.export.engine.onnx2engine`` is
   wrapped to check the intermediate ONNX against TensorRT 10's parser table before building (``check_trt_ops``).
   A default ``on_export_start`` callback (after the pst_topk one) records the exported ``pst_topk`` in the export
   metadata (ONNX ``metadata_props``, OpenVINO ``metadata.yaml``), since an exported graph has it fixed.

Every hooked name is checked before it is wrapped: a newer Ultralytics that moves one fails loudly at import.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from functools import cache, wraps
from pathlib import Path

import torch.nn as nn

from .data import load_index
from .nn import PST
from .topk import set_topk
from .utils import resource_path

__all__ = ("register",)

SUPPORTED = "ultralytics>=8.4.190,<8.5"  # keep in sync with pyproject.toml
_HOOK = "_pst_yolo_hook"  # attribute marking our wrappers (idempotence)


def _target(module, name: str, params: tuple[str, ...]):
    """Return ``module.name`` after checking it is a function whose leading parameters are ``params``."""
    import ultralytics

    fn = getattr(module, name, None)
    found = tuple(inspect.signature(fn).parameters)[: len(params)] if callable(fn) else None
    if found != params:
        raise ImportError(
            f"pst_yolo cannot hook {module.__name__}.{name}{params} in ultralytics {ultralytics.__version__} "
            f"(found {found}); pst_yolo is tested with {SUPPORTED}: install a supported version"
        )
    return fn


def _install(module, name: str, params: tuple[str, ...], make_wrapper) -> None:
    """Replace ``module.name`` by ``make_wrapper(original)`` unless it is already ours."""
    fn = _target(module, name, params)
    if not getattr(fn, _HOOK, False):
        wrapper = wraps(fn)(make_wrapper(fn))
        setattr(wrapper, _HOOK, True)
        setattr(module, name, wrapper)


def register() -> None:
    """Install pst_yolo's hooks into Ultralytics (idempotent)."""
    import ultralytics.data.utils as data_utils
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks

    _install(tasks, "parse_model", ("d", "ch", "verbose"), _wrap_parse_model)
    # check_yaml looks check_file up in its own module at call time, so wrapping checks.check_file covers it.
    _target(checks, "check_yaml", ("file", "suffix", "hard"))
    for module in (checks, data_utils):
        _install(module, "check_file", ("file", "suffix", "download"), _wrap_check_file)
    _register_topk_argument()
    _register_ddp_worker_import()
    _register_safe_load_classes()
    _register_export_checks()


# --------------------------------------------------------------------------------------------------------- pst_topk
def _register_topk_argument() -> None:
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT
    from ultralytics.utils.callbacks.base import default_callbacks

    if DEFAULT_CFG_DICT.get(TOPK_ARG) is not None:
        raise ImportError(f"Ultralytics already defines '{TOPK_ARG}': pst_yolo would shadow it ({SUPPORTED})")
    DEFAULT_CFG_DICT[TOPK_ARG] = None  # the dict get_cfg()/the CLI check keys against (DEFAULT_CFG_KEYS is its view)
    setattr(DEFAULT_CFG, TOPK_ARG, None)
    for event, models in _TOPK_EVENTS.items():
        for callback in default_callbacks[event]:
            if getattr(callback, _HOOK, False):
                break
        else:
            callback = _topk_callback(models)
            setattr(callback, _HOOK, True)
            default_callbacks[event].append(callback)  # copied into every new trainer/predictor/exporter
    _install(BaseValidator, "get_model", ("self", "model", "trainer"), _wrap_get_model)


TOPK_ARG = "pst_topk"
_TOPK_EVENTS = {  # event -> models the callback applies pst_topk to
    "on_pretrain_routine_end": lambda trainer: (trainer.model, trainer.ema and trainer.ema.ema),
    "on_predict_start": lambda predictor: (_backend_module(predictor.model),),
    "on_export_start": lambda exporter: (exporter.model,),
}


def _backend_module(model):
    """The PyTorch model in an ``AutoBackend``, whose ``backend`` (8.4) is not an nn.Module (``modules()`` stops)."""
    inner = getattr(getattr(model, "backend", None), "model", None)
    return inner if isinstance(inner, nn.Module) else model


def _apply_topk(args, *models) -> None:
    k = getattr(args, TOPK_ARG, None)
    if k is not None:
        for model in models:
            if isinstance(model, nn.Module):
                set_topk(model, k)


def _topk_callback(models):
    def apply_pst_topk(obj):
        """Apply ``obj.args.pst_topk`` to the models of this trainer/predictor/exporter."""
        _apply_topk(obj.args, *models(obj))

    return apply_pst_topk


def _wrap_get_model(get_model):
    def get_model_with_pst_topk(self, model, trainer=None, **kwargs):
        """Apply ``pst_topk`` to the (copied) model a standalone validation runs."""
        model = get_model(self, model, trainer, **kwargs)
        if trainer is None:
            _apply_topk(self.args, model)
        return model

    return get_model_with_pst_topk


# ---------------------------------------------------------------------------------------------------------- configs
@cache
def _resources() -> dict[str, Path]:
    """Bare file name -> path for every YAML under ``cfg/``, plus ``NAME``/``NAME.yaml`` for each named dataset."""
    files = {p.name: p for p in sorted(resource_path("cfg").rglob("*.yaml"))}
    for name, entry in load_index().items():
        if entry["yaml"] in files:  # datasets defined by Ultralytics itself (coco, coco8) resolve the stock way
            files[name] = files[f"{name}.yaml"] = files[entry["yaml"]]
    return files


def _wrap_check_file(check_file):
    def check_file_with_pst(file, *args, **kwargs):
        """Resolve pst_yolo's bare config/dataset names first, then defer to Ultralytics' ``check_file``."""
        name = str(file).strip()
        if name and not os.path.exists(name) and not any(s in name for s in "/\\:"):
            if (path := _resources().get(name)) is not None:
                return str(path)
        return check_file(file, *args, **kwargs)

    return check_file_with_pst


# ------------------------------------------------------------------------------------------------------ parse_model
class _PSTRow:
    """A validated PST YAML row ``[[fine, coarse], n, PST, [c2, mlp_ratio, e, k]]``."""

    EXAMPLE = "[[-1, 10], 2, PST, [512, 2, 0.5]]"

    def __init__(self, i: int, row, where: str):
        self.i, self.row, self.where = i, row, where
        f, n, _, args = row
        if not (isinstance(f, (list, tuple)) and len(f) == 2 and all(isinstance(x, int) for x in f)):
            self.fail(f"'from' must be two layer indices [fine, coarse], got {f!r}")
        if any(not -i <= x < i for x in f):
            self.fail(f"'from' {f!r} must name earlier layers (indices in [{-i}, {i - 1}])")
        if not isinstance(n, int) or n < 1:
            self.fail(f"repeats must be a positive integer, got {n!r}")
        if not isinstance(args, (list, tuple)) or not 1 <= len(args) <= 4:
            self.fail(f"args must be [c2, mlp_ratio, e, k] (1 to 4 values), got {args!r}")
        args = list(args) + [2.0, 0.5, 0][len(args) - 1 :]
        c2, mlp_ratio, e, k = args
        if not (isinstance(c2, int) and c2 > 0):
            self.fail(f"c2 must be a positive integer, got {c2!r}")
        for label, value in (("mlp_ratio", mlp_ratio), ("e", e)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                self.fail(f"{label} must be a positive number, got {value!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            self.fail(f"k (fine-attention top-k) must be a non-negative integer, got {k!r}")
        self.coarse = f[1] % i  # absolute index of the coarse input (negative 'from' counts back from row i)
        self.n, self.c2, self.extra = n, c2, (mlp_ratio, e, k)

    def fail(self, problem: str):
        raise ValueError(f"{self.where} row {self.i} {self.row}: {problem}. A PST row reads {self.EXAMPLE}")


def _yaml_row(row) -> list:
    return list(row) if isinstance(row, (list, tuple)) and len(row) == 4 else row


def _wrap_parse_model(parse_model):
    from ultralytics.utils import LOGGER

    def parse_model_with_pst(d, ch, verbose=True):
        """Ultralytics' ``parse_model`` plus PST rows (see this module's docstring)."""
        rows = [_yaml_row(r) for r in d["backbone"] + d["head"]]
        where = d.get("yaml_file") or "model YAML"
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 4):
                raise ValueError(f"{where} row {i} {row!r}: a layer row reads [from, repeats, module, args]")
        specs = [_PSTRow(i, row, where) for i, row in enumerate(rows) if row[2] == "PST"]
        if not specs:
            return parse_model(d, ch, verbose)

        # Stock parse of stand-in rows: PST row -> Conv with its from/n/c2; probes appended read coarse channels.
        rows = [list(r) for r in rows]
        for s in specs:
            rows[s.i] = [s.row[0][0], s.n, "Conv", [s.c2, 1]]
        probes = [[s.coarse, 1, "Conv", [8, 1]] for s in specs]
        nb = len(d["backbone"])
        stand_in = {**d, "backbone": rows[:nb], "head": rows[nb:] + probes}
        capture = _Capture()
        LOGGER.addFilter(capture)
        try:
            model, _ = parse_model(stand_in, ch, verbose)
        finally:
            LOGGER.removeFilter(capture)
        layers = list(model)[: len(rows)]
        probe_layers = list(model)[len(rows) :]

        lines = {}
        for s, probe in zip(specs, probe_layers):
            convs = list(layers[s.i]) if isinstance(layers[s.i], nn.Sequential) else [layers[s.i]]
            args = [convs[0].conv.in_channels, probe.conv.in_channels, convs[0].conv.out_channels, len(convs)]
            args += list(s.extra)
            try:
                m = PST(*args)
            except ValueError as e:
                s.fail(f"{e} (scale {d.get('scale') or '-'})")
            m.np = sum(p.numel() for p in m.parameters())
            m.i, m.f, m.type = s.i, list(s.row[0]), f"{PST.__module__}.{PST.__name__}"
            layers[s.i] = m
            lines[s.i] = f"{s.i:>3}{m.f!s:>20}{len(convs):>3}{m.np:10.0f}  {m.type:<45}{args!s:<30}"
        capture.replay(LOGGER, lines, len(rows))
        save = sorted({x % m.i for m in layers for x in ([m.f] if isinstance(m.f, int) else m.f) if x != -1})
        return nn.Sequential(*layers), save

    return parse_model_with_pst


class _Capture(logging.Filter):
    """Hold back the stock parser's per-layer summary so PST rows can be rewritten before it is printed."""

    ROW = re.compile(r"\s*(\d+)\s")

    def __init__(self):
        super().__init__()
        self.records = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def replay(self, logger: logging.Logger, lines: dict[int, str], n_layers: int) -> None:
        """Re-emit held records: PST rows replaced by ``lines``, probe rows (index >= ``n_layers``) dropped."""
        for record in self.records:
            row = self.ROW.match(record.getMessage())
            i = int(row.group(1)) if row else -1
            if i >= n_layers:
                continue
            if i in lines:
                record.msg, record.args = lines[i], None
            logger.handle(record)


# ------------------------------------------------------------------------------------------------------ DDP workers
_DDP_IMPORT = "import pst_yolo  # added by pst_yolo: registers PST, its configs and pst_topk in this worker\n"


def _register_ddp_worker_import() -> None:
    import ultralytics.utils.dist as dist

    # generate_ddp_command() looks generate_ddp_file up in its own module at call time, so wrapping it there suffices.
    _target(dist, "generate_ddp_command", ("trainer",))
    _install(dist, "generate_ddp_file", ("trainer",), _wrap_generate_ddp_file)


def _wrap_generate_ddp_file(generate_ddp_file):
    def generate_ddp_file_with_pst(trainer):
        """Ultralytics' DDP worker script with ``import pst_yolo`` right after it sets ``sys.path``."""
        import ultralytics

        file = generate_ddp_file(trainer)
        path = Path(file)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("sys.path = ")), None)
        if at is None:
            raise RuntimeError(
                f"pst_yolo cannot add 'import pst_yolo' to the DDP worker script {file} of ultralytics "
                f"{ultralytics.__version__} (no 'sys.path = ' line); pst_yolo is tested with {SUPPORTED}"
            )
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines.insert(at + 1, indent + _DDP_IMPORT)
        path.write_text("".join(lines), encoding="utf-8")
        return file

    return generate_ddp_file_with_pst


# -------------------------------------------------------------------------------------------------- restricted load
def _safe_classes() -> dict:
    """Allow-list entries ``{"module.Name": class}`` for exactly the classes a PST checkpoint pickles."""
    from .nn import PSTAttention, PSTBlock

    return {f"{c.__module__}.{c.__qualname__}": c for c in (PST, PSTBlock, PSTAttention)}


def _register_safe_load_classes() -> None:
    import ultralytics
    from ultralytics.nn import tasks

    safe_load = getattr(tasks, "_SafeLoad", None)
    build = vars(safe_load).get("_build") if isinstance(safe_load, type) else None
    if not (isinstance(build, classmethod) and hasattr(safe_load, "_registry") and hasattr(safe_load, "_lock")):
        raise ImportError(
            f"pst_yolo cannot add PST to the restricted-loading allow-list of ultralytics {ultralytics.__version__} "
            f"(ultralytics.nn.tasks._SafeLoad._build/_registry changed); pst_yolo is tested with {SUPPORTED}"
        )
    if not getattr(build.__func__, _HOOK, False):
        original = build.__func__

        @wraps(original)
        def _build_with_pst(cls):
            """Ultralytics' allow-list plus PST's three classes."""
            return {**original(cls), **_safe_classes()}

        setattr(_build_with_pst, _HOOK, True)
        safe_load._build = classmethod(_build_with_pst)
    with safe_load._lock:
        if safe_load._registry is not None:  # a restricted load ran before pst_yolo was imported
            safe_load._registry.update(_safe_classes())
# ----------------------------------------------------------------------------------------------------------- export
def _register_export_checks() -> None:
    import ultralytics.utils.export.engine as export_engine
    from ultralytics.engine.exporter import Exporter
    from ultralytics.utils.callbacks.base import default_callbacks

    # Exporter.__call__ runs select_device (fails without CUDA) before any callback; only a wrapper comes first.
    _install(Exporter, "__call__", ("self", "model"), _wrap_export_call)
    # Exporter.export_engine imports onnx2engine from this module at call time, so wrapping the attribute covers it.
    _install(export_engine, "onnx2engine", ("onnx_file", "output_file"), _wrap_onnx2engine)
    callbacks = default_callbacks["on_export_start"]
    if not any(getattr(c, _HOOK, False) and c.__name__ == _record_topk.__name__ for c in callbacks):
        setattr(_record_topk, _HOOK, True)
        callbacks.append(_record_topk)  # after apply_pst_topk (registered first)


def _record_topk(exporter) -> None:
    """Write the exported model's fine-attention top-k into the export metadata as ``pst_topk``."""
    from .topk import get_topk

    k = get_topk(exporter.model)
    if k is not None:
        exporter.metadata[TOPK_ARG] = k


def _wrap_export_call(call):
    from .export.backends import ENGINE_FORMATS, ExportBackendError, tensorrt_problem

    def export_with_backend_check(self, model=None, *args, **kwargs):
        """Raise ``ExportBackendError`` (one sentence) if ``format=engine`` cannot run here; else export as usual."""
        if str(self.args.format).lower() in ENGINE_FORMATS:
            problem = tensorrt_problem(getattr(self.args, "model", None))
            if problem:
                raise ExportBackendError(problem)
        return call(self, model, *args, **kwargs)

    return export_with_backend_check


def _wrap_onnx2engine(onnx2engine):
    from .export.backends import check_onnx_for_tensorrt

    def onnx2engine_after_op_check(onnx_file, *args, **kwargs):
        """Check ``onnx_file`` against TensorRT 10's ONNX parser table, then build the engine."""
        check_onnx_for_tensorrt(onnx_file)
        return onnx2engine(onnx_file, *args, **kwargs)

    return onnx2engine_after_op_check
