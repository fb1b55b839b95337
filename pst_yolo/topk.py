"""Fine attention switch: ``set_topk`` for library users; ``pst_topk=K`` on the CLI and in the YOLO API.

Any-K training: ``set_topk_train`` (``pst_topk_train=0,4,8,16`` as a train argument) makes each training step run a K
drawn from a set, so one model works at every K of the set at inference (where ``pst_topk`` chooses).
"""

from __future__ import annotations

import weakref

import torch.nn as nn
from ultralytics.utils import LOGGER

from .nn import PSTAttention
from .nn.attention import PSTArgumentError, check_topk

__all__ = (
    "advance_topk_train",
    "attention_layers",
    "check_topk",
    "clamp_topk",
    "coarse_tokens",
    "check_topk_train",
    "get_topk",
    "get_topk_train",
    "image_hw",
    "set_topk",
    "set_topk_train",
    "warn_clamped",
)

TOPK_TRAIN_HELP = "a non-negative integer or a list of them (e.g. 0,4,8,16)"


def attention_layers(model) -> list[PSTAttention]:
    """The PSTAttention layers of ``model`` (a YOLO object or any nn.Module), in module order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a YOLO model or torch nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, PSTAttention)]


def image_hw(imgsz) -> tuple[int, int]:
    """``(h, w)`` of an ``imgsz`` argument: an int is square, a one-element list too.

    Examples:
        >>> image_hw(64), image_hw([96]), image_hw((96, 64))
        ((64, 64), (96, 96), (96, 64))
    """
    size = (imgsz,) if isinstance(imgsz, int) else tuple(int(v) for v in imgsz)
    return (size[0], size[0]) if len(size) == 1 else size[:2]


def coarse_tokens(model: nn.Module, imgsz: tuple[int, int], channels: int | None = None) -> list[int]:
    """Coarse tokens (``Hc * Wc``) each PST attention layer of ``model`` sees on a ``(h, w)`` input, in module order.

    One forward pass of a blank image in eval mode (the model's mode is restored afterwards). ``channels`` (input
    channels) defaults to the model YAML's, else 3.

    Examples:
        >>> coarse_tokens(nn.Sequential(nn.Conv2d(3, 8, 1)), (64, 64))  # no PST layer: nothing to count
        []
    """
    import torch

    layers = attention_layers(model)
    if not layers:
        return []
    if channels is None:
        cfg = getattr(model, "yaml", None)
        channels = int(cfg.get("channels", 3)) if isinstance(cfg, dict) else 3
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[1].shape[2] * a[1].shape[3]))
             for i, m in enumerate(layers)]
    p = next(model.parameters())
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, *imgsz, dtype=p.dtype, device=p.device))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(layers))]


_CLAMP_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {(k, (h, w)) checked}


def warn_clamped(model: nn.Module, k: int, imgsz) -> dict[int, int]:
    """Warn once per model, ``k`` and image size where ``k`` exceeds some PST layers' coarse tokens at ``imgsz``.

    Such a layer attends to all of its coarse tokens (the forward clamps ``k`` to their count, silently, so that the
    module stays free of logging inside ``torch.compile`` graphs and of warnings spent on proxy inputs such as the
    FLOP counter's); the run that sets the value says so once, here, with the image size it runs at. Costs one
    forward pass of a blank image the first time (``coarse_tokens``).

    Args:
        model (nn.Module): The image model a run executes (an Ultralytics model: it has ``stride``).
        k (int): The largest K the run uses.
        imgsz (int | tuple | list): The run's image size (``imgsz``; an int is square).

    Returns:
        (dict[int, int]): ``{model row: coarse tokens}`` of the PST rows ``k`` exceeds (empty when already checked).

    Examples:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> net = DetectionModel("yolo11n-pst.yaml", verbose=False)
        >>> warn_clamped(net, 8, 64)  # 64 x 64: the PST of row 13 reads a 2 x 2 coarse map, that of row 16 a 4 x 4
        {13: 4}
        >>> warn_clamped(net, 8, 64)  # once per model, K and size
        {}
        >>> warn_clamped(nn.Sequential(nn.Conv2d(3, 8, 1)), 8, 64)  # no PST layer: nothing to check
        {}
    """
    if not k or not hasattr(model, "stride"):
        return {}  # not an image model (a bare PST layer takes a pair of maps)
    size = image_hw(imgsz)
    checked = _CLAMP_CHECKED.setdefault(model, set())
    if (k, size) in checked:  # checked first: a predictor applies its value at every call
        return {}
    checked.add((k, size))
    tokens = coarse_tokens(model, size)
    names = [name for name, m in model.named_modules() if isinstance(m, PSTAttention)]
    rows = {}  # model row (the YAML's layer index) -> its coarse tokens
    for name, m in zip(names, tokens):
        parts = name.split(".")
        rows[int(parts[1]) if parts[0] == "model" and parts[1].isdigit() else name] = m
    clamped = {row: m for row, m in rows.items() if m < k}
    if clamped:
        where = ", ".join(f"row {row}: {m}" for row, m in clamped.items())
        LOGGER.warning(
            f"pst_topk={k} exceeds the coarse tokens of {len(clamped)} of {len(rows)} PST rows at imgsz "
            f"{size[0]}x{size[1]} ({where}): they attend to all their coarse tokens, as with pst_topk equal to that "
            f"count"
        )
    return clamped


def clamp_topk(model: nn.Module, imgsz: tuple[int, int], channels: int | None = None) -> dict[int, tuple[int, int]]:
    """Clamp each PST layer's ``topk`` to its coarse tokens at ``imgsz``, as validation does at run time.

    For exports: a traced graph pads the selection to ``topk`` entries instead of clamping, so without this an
    oversized ``pst_topk`` makes the graph (and its memory) grow with K while computing the same function.

    Returns:
        (dict[int, tuple[int, int]]): ``{layer index: (k before, k after)}`` for the layers that were clamped.
    """
    changed = {}
    for i, (attn, m) in enumerate(zip(attention_layers(model), coarse_tokens(model, imgsz, channels))):
        if attn.topk > m:
            changed[i] = (attn.topk, m)
            attn.topk = m
    return changed


def set_topk(model, k: int, verbose: bool = True) -> int:
    """Set fine-attention top-k of every PST layer in ``model`` (0 = coarse only); returns the number of layers set.

    Args:
        model (ultralytics.YOLO | nn.Module): A YOLO object, its ``.model``, or any module containing PST layers.
            The value is the model's own from now on: every later run that does not pass ``pst_topk`` uses it, also
            a predictor that already exists (it runs a copy of the module, made before).
        k (int): Coarse tokens kept per image and head for fine attention. A layer with fewer coarse tokens attends
            to all of them (a run that applies the value says so once: :func:`warn_clamped`).
        verbose (bool): Log the value applied.

    Examples:
        >>> from pst_yolo import PST
        >>> set_topk(PST(256, 128, 64, n=2), 8, verbose=False)
        2
    """
    k = check_topk(k)
    layers = attention_layers(model)
    for attn in layers:
        attn.topk = k

    if verbose:
        if layers:
            LOGGER.info(f"PST: pst_topk={k} ({'coarse only' if k == 0 else 'fine attention on'}, {len(layers)} layers)")
        else:
            LOGGER.warning(f"pst_topk={k} ignored: the {type(model).__name__} has no PST layer")
    return len(layers)


def check_topk_train(ks) -> tuple[int, ...]:
    """Return ``ks`` (a ``pst_topk_train`` value) as a sorted tuple of distinct Ks, or raise ``PSTArgumentError``.

    Accepted: an integer, a list or tuple of integers, or a comma-separated string (``"0,4,8,16"``). Ultralytics'
    command line turns ``pst_topk_train=0,4,8,16`` into a tuple and ``pst_topk_train=[0,4,8,16]`` into a list.

    Examples:
        >>> check_topk_train("16,0,4,8,8")
        (0, 4, 8, 16)
        >>> check_topk_train(8)
        (8,)
        >>> try:
        ...     check_topk_train([0, -4])
        ... except ValueError as e:
        ...     print(e)
        pst_topk_train must be a non-negative integer or a list of them (e.g. 0,4,8,16), got [0, -4]
    """
    values = ks
    if isinstance(values, str):
        parts = [p.strip() for p in values.strip().strip("[]()").split(",")]
        values = [int(p) if p.isdigit() else p for p in parts]
    elif not isinstance(values, (list, tuple)):
        values = [values]
    try:
        if not values:
            raise PSTArgumentError("empty")
        return tuple(sorted({check_topk(k) for k in values}))
    except PSTArgumentError:
        raise PSTArgumentError(f"pst_topk_train must be {TOPK_TRAIN_HELP}, got {ks!r}") from None


def advance_topk_train(model) -> int | None:
    """Any-K training: draw the next step's K and give it to every PST layer before the forward runs.

    The trainer calls this at the start of each batch (``on_train_batch_start``), so the K is a plain attribute when
    the forward runs: no Python randomness inside the model, which ``torch.compile`` would otherwise split around.

    Returns:
        The K of the step, or None if the model has no PST layer in any-K training.

    Examples:
        >>> from pst_yolo import PST
        >>> m = PST(64, 64, 64, n=2)
        >>> _ = set_topk_train(m, "0,8", verbose=False)
        >>> [advance_topk_train(m) for _ in range(4)]
        [0, 0, 8, 8]
    """
    layers = [a for a in attention_layers(model) if a.topk_train]
    k = None
    for attn in layers:
        attn.topk_step = attn.draw_topk()  # the same (seed, step) in every layer: the same K
        k = attn.topk_step
    return k


def set_topk_train(model, ks, seed: int = 0, verbose: bool = True) -> int:
    """Any-K training: make every PST layer of ``model`` run a K drawn from ``ks`` in each training-mode forward.

    One K is drawn per training step and shared by all layers (the draw is a function of ``seed`` and a step counter
    that this call resets in every layer), so each step trains one configuration that inference can run, including
    ``K = 0`` when ``ks`` holds it. Eval mode (validation, predict, export) is unaffected: it runs ``pst_topk``.

    Args:
        model (ultralytics.YOLO | nn.Module): A YOLO object, its ``.model``, or any module containing PST layers.
        ks (int | Iterable[int] | str | None): The Ks to draw from (see :func:`check_topk_train`); None or ``()``
            switches any-K training off (training then runs ``pst_topk``).
        seed (int): Seed of the draws (the trainer passes its ``seed``).
        verbose (bool): Log the set applied.

    Returns:
        The number of PST attention layers set.

    Examples:
        >>> from pst_yolo import PST
        >>> set_topk_train(PST(256, 128, 64, n=2), "0,4,8,16", verbose=False)
        2
    """
    ks = () if ks is None or (isinstance(ks, (list, tuple)) and not ks) else check_topk_train(ks)
    layers = attention_layers(model)
    for attn in layers:
        attn.topk_train, attn.topk_train_seed, attn.topk_train_step, attn.topk_step = ks, int(seed), 0, None
    if verbose and ks:
        if layers:
            LOGGER.info(f"PST: pst_topk_train={','.join(map(str, ks))} (any-K training: one K drawn per step, "
                        f"seed {seed}, {len(layers)} layers)")
        else:
            LOGGER.warning(f"pst_topk_train={','.join(map(str, ks))} ignored: the {type(model).__name__} has no PST "
                           "layer")
    return len(layers)


def get_topk_train(model) -> tuple[int, ...] | None:
    """Return the any-K training set of the PST layers in ``model`` (``()`` = off), or None if it has none."""
    values = {attn.topk_train for attn in attention_layers(model)}
    if len(values) > 1:
        raise ValueError(f"PST layers have different pst_topk_train values {sorted(values)}: call set_topk_train")
    return values.pop() if values else None


def get_topk(model) -> int | None:
    """Return the fine-attention top-k of the PST layers in ``model``, or None if it has none.

    Raises:
        ValueError: If the layers disagree (only possible after setting ``PSTAttention.topk`` by hand).
    """
    values = {attn.topk for attn in attention_layers(model)}
    if len(values) > 1:
        raise ValueError(f"PST layers have different pst_topk values {sorted(values)}: call set_topk(model, k)")
    return values.pop() if values else None
