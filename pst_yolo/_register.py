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
   dict (so CLI/API key checks accept it and ``args.yaml`` records it) and checked by wrapping ``check_cfg``; applied
   by default callbacks for train (``on_pretrain_routine_end``: model and EMA), predict (``on_predict_start``, undone
   at ``on_predict_end``) and export (``on_export_start``), and for standalone val by wrapping
   ``BaseValidator.get_model`` (no callback there sees the model before it runs). ``Model.train`` is wrapped so an
   omitted value becomes the model's own, ``Model.benchmark``/``benchmarks.benchmark`` so the PyTorch row and the
   exports run with it; a default ``on_val_end`` callback writes ``args.yaml`` for standalone validation.
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
from ultralytics.utils import LOGGER

from .data import load_index
from .nn import PST, PSTAttention
from .topk import check_topk, get_topk, quiet_clamp_warnings, set_topk
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
    import ultralytics.cfg as cfg
    import ultralytics.utils.benchmarks as benchmarks
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics.engine.model import Model
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT
    from ultralytics.utils.callbacks.base import default_callbacks

    if DEFAULT_CFG_DICT.get(TOPK_ARG) is not None:
        raise ImportError(f"Ultralytics already defines '{TOPK_ARG}': pst_yolo would shadow it ({SUPPORTED})")
    DEFAULT_CFG_DICT[TOPK_ARG] = None  # the dict get_cfg()/the CLI check keys against (DEFAULT_CFG_KEYS is its view)
    setattr(DEFAULT_CFG, TOPK_ARG, None)
    for event, callback in _TOPK_CALLBACKS.items():
        if not any(getattr(cb, _HOOK, False) for cb in default_callbacks[event]):
            setattr(callback, _HOOK, True)
            default_callbacks[event].append(callback)  # copied into every new YOLO/trainer/validator/predictor/exporter
    # get_cfg() calls check_cfg (looked up in ultralytics.cfg at call time) when any trainer/validator/predictor/
    # exporter is built: a bad pst_topk fails there, before datasets are scanned or models built.
    _install(cfg, "check_cfg", ("cfg", "hard"), _wrap_check_cfg)
    _install(BaseValidator, "get_model", ("self", "model", "trainer"), _wrap_get_model)
    _install(Model, "train", ("self", "trainer"), _wrap_train)
    # Model.benchmark passes only each format's export arguments on (pst_topk is none of them), and its PyTorch row
    # runs the model as is: both benchmark entry points run with pst_topk applied to the model itself instead.
    _install(Model, "benchmark", ("self", "data", "format", "verbose"), _wrap_model_benchmark)
    _install(benchmarks, "benchmark", ("model", "data", "imgsz"), _wrap_benchmark)
    # get_flops (looked up in torch_utils at call time by model_info) profiles the model itself on stride-sized proxy
    # images, where pst_topk often exceeds a layer's coarse tokens: without this, each layer's one clamp warning would
    # be spent on (and describe) the proxy instead of the real input.
    _install(torch_utils, "get_flops", ("model", "imgsz"), _wrap_get_flops)


TOPK_ARG = "pst_topk"


def _native(model):
    """The PyTorch module run by ``model`` (an AutoBackend is unwrapped), or None for an exported model."""
    from ultralytics.nn.autobackend import AutoBackend

    if isinstance(model, AutoBackend):
        return model.model if model.format == "pt" else None  # .model: the backend's nn.Module
    return model if isinstance(model, nn.Module) else None


def _apply_topk(args, *models, verbose: bool = True) -> int | None:
    """Apply ``args.pst_topk`` to ``models`` (logged once); when it is None, log the value the model keeps.

    Returns:
        The ``pst_topk`` the models run with, or None if they have no PST layers.
    """
    models = [m for m in models if isinstance(m, nn.Module)]
    k = getattr(args, TOPK_ARG, None)
    if k is None:
        k = get_topk(models[0]) if models else None
        if k is not None and verbose:
            mode = "coarse only" if k == 0 else "fine attention on"
            LOGGER.info(f"PST: {TOPK_ARG}={k} (the model's own value; {mode})")
        return k
    for i, model in enumerate(models):
        set_topk(model, k, verbose=verbose and i == 0)
    return k


def _warn_exported(args, model) -> None:
    """Warn that ``args.pst_topk`` (if given) cannot change the exported ``model`` (a path or format name)."""
    if getattr(args, TOPK_ARG, None) is not None:
        LOGGER.warning(
            f"{TOPK_ARG}={getattr(args, TOPK_ARG)} ignored for the exported model ({model}): fine attention is fixed "
            f"when a model is exported (export the .pt with {TOPK_ARG}=K)"
        )


def _topk_train(trainer):
    """on_pretrain_routine_end: apply ``pst_topk`` to the model and its EMA (the EMA is what is validated and saved)."""
    _apply_topk(trainer.args, trainer.model, trainer.ema and trainer.ema.ema)


def _topk_export(exporter):
    """on_export_start: apply ``pst_topk`` to the exporter's copy of the model before it is traced.

    The value is added to the export's metadata (built just before this event, written into the exported file).
    """
    k = _apply_topk(exporter.args, exporter.model)
    if k is not None and isinstance(getattr(exporter, "metadata", None), dict):
        exporter.metadata[TOPK_ARG] = k


_RESTORE = "_pst_topk_restore"  # predictor attribute: (model, value) to put back after a run


def _topk_predict_start(predictor):
    """on_predict_start: apply ``pst_topk`` for this run.

    The predictor runs the YOLO object's own module (AutoBackend does not copy it), so the previous value is put back
    when the run ends (``_topk_predict_end``), or at the start of the next run if a stream was not consumed to its end.
    """
    _topk_predict_end(predictor)
    model = _native(predictor.model)
    if model is None:
        exported = getattr(predictor.model, "metadata", None) or {}
        runs = f", which runs {TOPK_ARG}={exported[TOPK_ARG]}" if TOPK_ARG in exported else ""
        _warn_exported(predictor.args, f"{predictor.args.model or predictor.model.format}{runs}")
        return
    before = get_topk(model)
    # predict is often called once per frame: log only when asked for a value, and as verbosely as the predictor
    _apply_topk(predictor.args, model, verbose=predictor.args.verbose and predictor.args.pst_topk is not None)
    if before is not None and get_topk(model) != before:
        setattr(predictor, _RESTORE, (model, before))


def _topk_predict_end(predictor):
    """on_predict_end: give the model back its own ``pst_topk`` (a predict argument applies to that run only)."""
    model, before = getattr(predictor, _RESTORE, (None, None))
    if model is not None:
        set_topk(model, before, verbose=False)
        setattr(predictor, _RESTORE, (None, None))


def _save_val_args(validator):
    """on_val_end: write ``save_dir/args.yaml`` for standalone validation, as training does for its run.

    Ultralytics' validator writes no args.yaml; validators built by a trainer (mode 'train') are skipped so that the
    training run's own args.yaml is never overwritten.
    """
    from ultralytics.utils import YAML

    if getattr(validator.args, "mode", None) == "val" and validator.save_dir:
        YAML.save(Path(validator.save_dir) / "args.yaml", vars(validator.args))


_TOPK_CALLBACKS = {  # event -> default callback (Ultralytics' events; each gets the trainer/predictor/... object)
    "on_pretrain_routine_end": _topk_train,
    "on_predict_start": _topk_predict_start,
    "on_predict_end": _topk_predict_end,
    "on_export_start": _topk_export,
    "on_val_end": _save_val_args,
}


def _wrap_check_cfg(check_cfg):
    def check_cfg_with_pst_topk(cfg, hard=True, **kwargs):
        """Ultralytics' argument checks plus ``pst_topk`` (None or a non-negative integer)."""
        check_cfg(cfg, hard, **kwargs)
        if cfg.get(TOPK_ARG) is not None:
            cfg[TOPK_ARG] = check_topk(cfg[TOPK_ARG])

    return check_cfg_with_pst_topk


def _wrap_get_model(get_model):
    from ultralytics.nn.tasks import load_checkpoint

    def get_model_with_pst_topk(self, model, trainer=None, **kwargs):
        """Apply ``pst_topk`` to the (copied) model a standalone validation runs; record the value in ``self.args``.

        No callback sees the model of a standalone validation before it runs, so this is the place. A checkpoint
        given by path (a trainer's final validation, a validator built by hand) is loaded here, as AutoBackend would.
        """
        model = get_model(self, model, trainer, **kwargs)
        if trainer is None:
            if not isinstance(model, nn.Module) and getattr(self.args, TOPK_ARG, None) is not None:
                weights = model or self.args.model
                if not str(weights).endswith(".pt"):
                    _warn_exported(self.args, weights)
                    return model
                model = load_checkpoint(weights)[0]
            k = _apply_topk(self.args, model) if isinstance(model, nn.Module) else None
            if k is not None:
                setattr(self.args, TOPK_ARG, k)  # args.yaml and the validator's args show the value used
        return model

    return get_model_with_pst_topk


def _wrap_train(train):
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    def train_with_pst_topk(self, trainer=None, **kwargs):
        """Train; an omitted ``pst_topk`` becomes the model's own value (recorded in args.yaml and checkpoints).

        The trainer rebuilds the model from its YAML and loads the weights, which would drop a ``pst_topk`` set on
        the model (for example fine-tuning a checkpoint trained with fine attention).
        """
        given = kwargs.get(TOPK_ARG, self.overrides.get(TOPK_ARG))
        if given is None and kwargs.get("cfg"):
            given = YAML.load(check_yaml(kwargs["cfg"])).get(TOPK_ARG)
        if given is None and not kwargs.get("resume") and isinstance(self.model, nn.Module):
            k = get_topk(self.model)
            if k is not None:
                kwargs[TOPK_ARG] = k
        return train(self, trainer, **kwargs)

    return train_with_pst_topk


class _TopkApplied:
    """Context: ``pst_topk`` set on a YOLO object's module (logged), its own value restored on exit."""

    def __init__(self, model, k):
        self.model, self.k = getattr(model, "model", model), check_topk(k)

    def __enter__(self):
        self.before = get_topk(self.model) if isinstance(self.model, nn.Module) else None
        set_topk(self.model, self.k)  # warns if the model has no PST layers

    def __exit__(self, *exc):
        if self.before is not None:
            set_topk(self.model, self.before, verbose=False)


def _wrap_model_benchmark(benchmark):
    def benchmark_with_pst_topk(self, *args, **kwargs):
        """Benchmark with ``pst_topk`` applied to the model, so its PyTorch row and every export use it."""
        k = kwargs.pop(TOPK_ARG, None)
        if k is None:
            return benchmark(self, *args, **kwargs)
        self._check_is_pytorch_model()
        with _TopkApplied(self, k):
            return benchmark(self, *args, **kwargs)

    return benchmark_with_pst_topk


def _wrap_benchmark(benchmark):
    signature = inspect.signature(benchmark)

    def benchmark_with_pst_topk(*args, **kwargs):
        """``ultralytics.utils.benchmarks.benchmark`` with ``pst_topk`` applied to the model (see Model.benchmark)."""
        k = kwargs.pop(TOPK_ARG, None)
        if k is None:
            return benchmark(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if isinstance(bound.arguments["model"], (str, Path)):
            from ultralytics import YOLO

            bound.arguments["model"] = YOLO(bound.arguments["model"])
        with _TopkApplied(bound.arguments["model"], k):
            return benchmark(*bound.args, **bound.kwargs)

    return benchmark_with_pst_topk


def _wrap_get_flops(get_flops):
    def get_flops_without_clamp_warnings(model, imgsz=640, *args, **kwargs):
        """Ultralytics' ``get_flops`` with PSTAttention's clamp warning held back (see ``_register_topk_argument``)."""
        with quiet_clamp_warnings(model):
            return get_flops(model, imgsz, *args, **kwargs)

    return get_flops_without_clamp_warnings


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


def _wrap_parse_model(parse_model):
    from ultralytics.utils import LOGGER

    def parse_model_with_pst(d, ch, verbose=True):
        """Ultralytics' ``parse_model`` plus PST rows (see this module's docstring)."""
        rows = [list(r) if isinstance(r, (list, tuple)) else r for r in d["backbone"] + d["head"]]  # copies
        where = d.get("yaml_file") or "model YAML"
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 4):
                raise ValueError(f"{where} row {i} {row!r}: a layer row reads [from, repeats, module, args]")
        specs = [_PSTRow(i, row, where) for i, row in enumerate(rows) if row[2] == "PST"]
        if not specs:
            return parse_model(d, ch, verbose)

        # Stock parse of stand-in rows: PST row -> Conv with its from/n/c2; probes appended read coarse channels.
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
    from .nn import PSTBlock

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

    # Exporter.__call__ runs select_device (fails without CUDA) before any callback; only a wrapper comes first.
    _install(Exporter, "__call__", ("self", "model"), _wrap_export_call)
    # Exporter.export_engine imports onnx2engine from this module at call time, so wrapping the attribute covers it.
    _install(export_engine, "onnx2engine", ("onnx_file", "output_file"), _wrap_onnx2engine)


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
