"""``pst_topk``: the fine-attention switch as an Ultralytics argument of every mode."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch.nn as nn
from ultralytics.utils import LOGGER

from ..topk import check_topk, get_topk, quiet_clamp_warnings, set_topk
from ._common import HOOK, SUPPORTED, install

__all__ = ("TOPK_ARG", "register")

def register() -> None:
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
        if not any(getattr(cb, HOOK, False) for cb in default_callbacks[event]):
            setattr(callback, HOOK, True)
            default_callbacks[event].append(callback)  # copied into every new YOLO/trainer/validator/predictor/exporter
    # get_cfg() calls check_cfg (looked up in ultralytics.cfg at call time) when any trainer/validator/predictor/
    # exporter is built: a bad pst_topk fails there, before datasets are scanned or models built.
    install(cfg, "check_cfg", ("cfg", "hard"), _wrap_check_cfg)
    install(BaseValidator, "get_model", ("self", "model", "trainer"), _wrap_get_model)
    install(Model, "train", ("self", "trainer"), _wrap_train)
    # Model.benchmark passes only each format's export arguments on (pst_topk is none of them), and its PyTorch row
    # runs the model as is: both benchmark entry points run with pst_topk applied to the model itself instead.
    install(Model, "benchmark", ("self", "data", "format", "verbose"), _wrap_model_benchmark)
    install(benchmarks, "benchmark", ("model", "data", "imgsz"), _wrap_benchmark)
    # get_flops (looked up in torch_utils at call time by model_info) profiles the model itself on stride-sized proxy
    # images, where pst_topk often exceeds a layer's coarse tokens: without this, each layer's one clamp warning would
    # be spent on (and describe) the proxy instead of the real input.
    install(torch_utils, "get_flops", ("model", "imgsz"), _wrap_get_flops)


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
