"""``pst_topk``: the fine-attention switch as an argument of every Ultralytics mode.

The K a run uses is that run's ``pst_topk`` argument or, when it is omitted, the model's own value (the ``topk`` its
PST layers carry, saved in checkpoints and set by ``pst_yolo.set_topk``). It is applied class-level, at the point
where each kind of run takes its model, every time it runs, so it holds for every YOLO object, trainer, validator,
predictor and exporter whenever it was created (also before ``import pst_yolo``: unpickling a PST checkpoint imports
the plugin). A model without PST layers is left alone; a ``pst_topk`` given to it gets one warning.

``pst_topk_train`` (train only) is any-K training: each training step runs a K drawn from the given set (see
:func:`pst_yolo.topk.set_topk_train`); validation, the saved checkpoints and every later run use ``pst_topk``. It is
accepted and checked by the same ``check_dict_alignment`` hook and applied by the same ``BaseTrainer.setup_model``
hook, seeded with the run's ``seed``; a run that does not pass it keeps the stock arguments.

Hooks, and why no official extension point serves (Ultralytics' callbacks are copied into each object when it is
created, so an object made before the plugin was imported never sees them, and no callback sees a standalone
validation's model or a predictor's model before every run):

- ``ultralytics.cfg.check_dict_alignment`` (looked up in its module by ``get_cfg`` and the CLI ``entrypoint``): accepts
  ``pst_topk`` and ``pst_topk_train`` as keys of a full Ultralytics configuration and checks their values. The keys
  are not added to Ultralytics' defaults, so the arguments (and ``args.yaml``) of a run that does not pass them are
  exactly the stock ones.
- ``Model.train``: an omitted ``pst_topk`` becomes the model's own value in the run's arguments: the trainer rebuilds
  the model from its YAML (dropping a value set on the model), and the arguments reach DDP workers and ``args.yaml``.
- ``BaseTrainer.setup_model`` (first step of every training, in DDP workers too, before the EMA copy is made).
- ``BaseValidator.get_model`` (the model a standalone validation runs; a trainer's validation runs the EMA).
- ``BasePredictor.setup_model`` (remembers the module a predictor deep-copies: its value stays the model's own, so
  ``set_topk`` reaches a predictor that already exists) and ``BasePredictor.setup_source`` (the first step of every
  predict/track run once the predictor has its model, inside the predictor's lock).
- ``Exporter.__call__`` is wrapped in ``hooks/export.py``; it exports :func:`export_model`'s copy of the model, which
  runs the value (dry run and tracing alike), and the exported file's metadata records it.
- ``Model.benchmark``: it passes only each format's export arguments on, so the value is applied to the benchmarked
  model itself for the duration of the benchmark (its PyTorch row and every export run it).

A value above some layers' coarse tokens at the run's ``imgsz`` is said once per model, K and size when the run
applies it (:func:`pst_yolo.topk.warn_clamped`); the layers themselves clamp silently, so the FLOP counter's
stride-sized proxy images and compiled graphs see no warning.
"""

from __future__ import annotations

import weakref
from copy import deepcopy
from pathlib import Path

import torch.nn as nn
from ultralytics.utils import DEFAULT_CFG_KEYS, LOGGER

from ..topk import (
    advance_topk_train,
    attention_layers,
    check_topk,
    check_topk_train,
    get_topk,
    set_topk,
    set_topk_train,
    warn_clamped,
)
from ._common import install

__all__ = ("TOPK_ARG", "TOPK_TRAIN_ARG", "export_model", "register", "run_topk", "run_topk_train")

TOPK_ARG = "pst_topk"
TOPK_TRAIN_ARG = "pst_topk_train"
CHECKS = {TOPK_ARG: check_topk, TOPK_TRAIN_ARG: lambda ks: list(check_topk_train(ks))}  # a list: YAML-safe args


def register() -> None:
    import ultralytics.cfg as cfg
    from ultralytics.engine.model import Model
    from ultralytics.engine.predictor import BasePredictor
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.engine.validator import BaseValidator

    install(cfg, "check_dict_alignment", ("base", "custom", "e", "allowed_custom_keys"), _wrap_check_dict_alignment)
    install(Model, "train", ("self", "trainer"), _wrap_model_train)
    install(BaseTrainer, "setup_model", ("self",), _wrap_trainer_setup_model)
    install(BaseValidator, "get_model", ("self", "model", "trainer"), _wrap_validator_get_model)
    install(BasePredictor, "setup_model", ("self", "model", "verbose"), _wrap_predictor_setup_model)
    install(BasePredictor, "setup_source", ("self", "source"), _wrap_predictor_setup_source)
    install(Model, "benchmark", ("self", "data", "format", "verbose"), _wrap_model_benchmark)


def _native(model):
    """The PyTorch module run by ``model`` (an AutoBackend is unwrapped), or None for an exported model."""
    from ultralytics.nn.autobackend import AutoBackend

    if isinstance(model, AutoBackend):
        return model.model if model.format == "pt" else None  # .model: the backend's nn.Module
    return model if isinstance(model, nn.Module) else None


def run_topk(args, model, own: int | None = None, verbose: bool = True, warn_clamp: bool = True) -> int | None:
    """Apply the run's ``pst_topk`` to ``model`` (or ``own``, the model's own value, when the argument is omitted).

    Args:
        args (SimpleNamespace): The run's arguments (``pst_topk`` may be absent or None).
        model (nn.Module | None): The module the run executes; None or a module without PST layers is left alone.
        own (int | None): The value to use when ``pst_topk`` is omitted; None keeps the model's current value.
        verbose (bool): Log a given value once per run.
        warn_clamp (bool): Say once (per model, K and ``args.imgsz``) which PST rows have fewer coarse tokens than K
            (:func:`pst_yolo.topk.warn_clamped`); exports clamp to their own size and say so themselves.

    Returns:
        The K the PST layers run with, or None if ``model`` has none.
    """
    given = getattr(args, TOPK_ARG, None)
    layers = attention_layers(model) if isinstance(model, nn.Module) else []
    if not layers:
        if given is not None:
            LOGGER.warning(f"{TOPK_ARG}={given} ignored: {_name(args, model)} has no PST layer")
        return None
    k = given if given is not None else own
    if k is not None:
        set_topk(model, k, verbose=verbose and given is not None)
    k = get_topk(model)
    if k and warn_clamp and getattr(args, "imgsz", None):
        warn_clamped(model, k, args.imgsz)  # once per model, K and size: layers whose coarse tokens K exceeds
    return k


def run_topk_train(args, model) -> tuple[int, ...] | None:
    """Apply the run's ``pst_topk_train`` (any-K training, seeded with ``args.seed``) to ``model`` if it is given.

    Returns:
        The Ks training draws from (``()``: off), or None if ``model`` has no PST layer or the argument is omitted.
    """
    given = getattr(args, TOPK_TRAIN_ARG, None)
    if given is None:
        return None
    ks = check_topk_train(given)
    if not (isinstance(model, nn.Module) and attention_layers(model)):
        LOGGER.warning(f"{TOPK_TRAIN_ARG}={','.join(map(str, ks))} ignored: {_name(args, model)} has no PST layer")
        return None
    set_topk_train(model, ks, seed=getattr(args, "seed", 0) or 0)
    if max(ks) and getattr(args, "imgsz", None):
        warn_clamped(model, max(ks), args.imgsz)
    return ks


def _name(args, model) -> str:
    """How to name ``model`` in a message: its file, else its class."""
    return f"'{args.model}'" if getattr(args, "model", None) else f"the {type(model).__name__}"


def _warn_exported(args, name, metadata=None) -> None:
    """Warn that ``args.pst_topk`` (if given) cannot change the exported model ``name`` (its ``metadata`` if known)."""
    if getattr(args, TOPK_ARG, None) is not None:
        runs = f", which runs {TOPK_ARG}={metadata[TOPK_ARG]}" if TOPK_ARG in (metadata or {}) else ""
        LOGGER.warning(
            f"{TOPK_ARG}={getattr(args, TOPK_ARG)} ignored for the exported model ({name}{runs}): fine attention is "
            f"fixed when a model is exported (export the .pt with {TOPK_ARG}=K)"
        )


# ------------------------------------------------------------------------------------------------------- arguments
def _wrap_check_dict_alignment(check_dict_alignment):
    def check_dict_alignment_with_pst_topk(base, custom, e=None, allowed_custom_keys=None, *args, **kwargs):
        """Ultralytics' key check, with ``pst_topk`` and ``pst_topk_train`` accepted (values checked) against a full
        configuration.

        ``base`` is Ultralytics' full configuration in every mode (``get_cfg`` and the CLI); the settings and
        solutions commands check against other dictionaries, which keep rejecting the keys.
        """
        for key, check in CHECKS.items():
            if key in custom and key not in base and DEFAULT_CFG_KEYS <= base.keys():
                if custom[key] is not None:
                    custom[key] = check(custom[key])  # in place: the caller merges this dict
                allowed = {"augmentations", "save_dir"} if allowed_custom_keys is None else allowed_custom_keys
                allowed_custom_keys = {*allowed, key}
            elif custom.get(key) is not None:  # a reused configuration that already has the key
                custom[key] = check(custom[key])
        return check_dict_alignment(base, custom, e, allowed_custom_keys, *args, **kwargs)

    return check_dict_alignment_with_pst_topk


# ----------------------------------------------------------------------------------------------------------- train
def _wrap_model_train(train):
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    def train_with_pst_topk(self, trainer=None, **kwargs):
        """Train; an omitted ``pst_topk`` becomes the model's own value (recorded in args.yaml and checkpoints)."""
        given = kwargs.get(TOPK_ARG, self.overrides.get(TOPK_ARG))
        if given is None and kwargs.get("cfg"):
            given = YAML.load(check_yaml(kwargs["cfg"])).get(TOPK_ARG)
        if given is None and not kwargs.get("resume") and isinstance(self.model, nn.Module):
            k = get_topk(self.model)
            if k is not None:  # PST models only: a stock run's arguments stay the stock ones
                kwargs[TOPK_ARG] = k
        return train(self, trainer, **kwargs)

    return train_with_pst_topk


def _advance(trainer) -> None:
    """on_train_batch_start of an any-K run: draw the step's K before the forward (``advance_topk_train``)."""
    advance_topk_train(trainer.model)


def _wrap_trainer_setup_model(setup_model):
    def setup_model_with_pst_topk(self, *args, **kwargs):
        """Build or load the model as usual, then apply ``pst_topk`` and ``pst_topk_train`` (before the EMA copy)."""
        ckpt = setup_model(self, *args, **kwargs)
        run_topk(self.args, self.model)
        if run_topk_train(self.args, self.model) and _advance not in self.callbacks["on_train_batch_start"]:
            self.add_callback("on_train_batch_start", _advance)  # each step's K drawn outside the (compiled) forward
        return ckpt

    return setup_model_with_pst_topk


# ------------------------------------------------------------------------------------------------------------- val
def _wrap_validator_get_model(get_model):
    from ultralytics.nn.tasks import load_checkpoint
    from ultralytics.utils import YAML

    def get_model_with_pst_topk(self, model, trainer=None, *args, **kwargs):
        """The model a standalone validation runs, with ``pst_topk`` applied and recorded in ``self.args``.

        A checkpoint given by path (a trainer's final validation of best.pt, a validator built by hand) is loaded
        here, as AutoBackend would, when a value is given. A PST validation also writes ``save_dir/args.yaml``, so the
        value it ran with is on disk next to its plots.
        """
        model = get_model(self, model, trainer, *args, **kwargs)
        if trainer is not None:
            return model  # the EMA, which carries the training run's value
        if not isinstance(model, nn.Module) and getattr(self.args, TOPK_ARG, None) is not None:
            weights = model or self.args.model
            if not str(weights).endswith(".pt"):
                _warn_exported(self.args, weights)  # AutoBackend loads it as it is
                return model
            model = load_checkpoint(weights)[0]
        k = run_topk(self.args, model if isinstance(model, nn.Module) else None)
        if k is not None:
            setattr(self.args, TOPK_ARG, k)
            if getattr(self.args, "mode", None) == "val" and self.save_dir:
                YAML.save(Path(self.save_dir) / "args.yaml", vars(self.args))
        return model

    return get_model_with_pst_topk


# --------------------------------------------------------------------------------------------------------- predict
OWN = "_pst_topk_own"  # predictor attribute: where the value of a run without pst_topk comes from


def _wrap_predictor_setup_model(setup_model):
    def setup_model_remembering_own_topk(self, model, *args, **kwargs):
        """Set up the predictor's copy of ``model`` as usual; remember where the model's own ``pst_topk`` lives.

        The predictor runs a deep copy. The module it copied (a YOLO object's ``.model``) keeps the model's own value,
        so ``set_topk`` on it, or on its YOLO object, reaches this predictor; a model loaded from a file keeps the value
        its checkpoint carries.
        """
        setup_model(self, model, *args, **kwargs)
        copy = _native(self.model)
        if copy is not None and attention_layers(copy):
            setattr(self, OWN, weakref.ref(model) if isinstance(model, nn.Module) else get_topk(copy))

    return setup_model_remembering_own_topk


def _wrap_predictor_setup_source(setup_source):
    def setup_source_with_pst_topk(self, source, *args, **kwargs):
        """Apply ``pst_topk`` to the predictor's model at the start of every run (the model exists by then).

        Without a ``pst_topk`` argument the run uses the model's own value: that of the module the predictor copied
        (see ``setup_model_remembering_own_topk``), read now, so a ``set_topk`` since the copy was made counts.
        """
        model = _native(self.model)
        if model is None:
            _warn_exported(self.args, self.args.model or self.model.format, getattr(self.model, "metadata", None))
        else:
            own = getattr(self, OWN, None)
            if isinstance(own, weakref.ref):
                copied = own()
                own = get_topk(copied) if copied is not None else None
            # predict is often called once per frame: log a given value only as verbosely as the predictor
            run_topk(self.args, model, own, verbose=bool(self.args.verbose))
        return setup_source(self, source, *args, **kwargs)

    return setup_source_with_pst_topk


# ---------------------------------------------------------------------------------------------------------- export
def export_model(exporter, model):
    """The module ``exporter`` should export: for a PST model, a copy with the run's ``pst_topk`` applied.

    The exporter copies the model it is given and runs it (dry run, then tracing); giving it a copy that already runs
    the value makes both use it, and leaves the caller's module as it was. The value is recorded in the exported
    file's metadata by a callback added to this exporter's own callbacks dict (the YOLO object's, which the exporter
    shares, stays as it was). A model without PST layers is returned unchanged.
    """
    if not isinstance(model, nn.Module) or not attention_layers(model):
        run_topk(exporter.args, model)  # a given value: the one-line "has no PST layer" warning
        return model
    copy = deepcopy(model)
    k = run_topk(exporter.args, copy, warn_clamp=False)  # the export clamps at its own size (hooks/export.py)

    def record_topk(exporter):
        """on_export_start: the metadata (built just before) gets the value the graph runs."""
        exporter.metadata[TOPK_ARG] = k

    start = [*exporter.callbacks.get("on_export_start", []), record_topk]
    exporter.callbacks = {**exporter.callbacks, "on_export_start": start}
    return copy


# ------------------------------------------------------------------------------------------------------- benchmark
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
