"""The authors' checkpoint format: open the paper's released weights as pst_yolo models.

The PST authors trained their COCO detectors (YOLOv11-P²HCT-N/S/M) with a fork of Ultralytics 8.3.105 that defines
three module classes stock Ultralytics lacks, ``ultralytics.nn.modules.block.PST``, ``PSAttnBlock`` and ``PSAttn``;
their checkpoints pickle instances of them. Loading such a file here takes two steps:

1. unpickling: the three class paths resolve to the shells below (:data:`AUTHORS_CLASSES`), which only hold the
   pickled state (``pst_yolo.hooks.safe_load`` does this inside Ultralytics' loader, with and without restricted
   loading);
2. conversion (:func:`convert_authors_model`): every shell ``PST`` becomes a ``pst_yolo.PST`` built from the shapes of
   its tensors (any width, depth, head count, position in the model) and loaded with its tensors, mapped as below.

Their module and ours compute the same function where the tensors below map one to one (measured on a checkpoint
their trainer wrote: ``tests/test_authors.py``). The differences, and what the conversion does about each:

- **Gate.** Theirs is one ``Conv1d(2d -> d)`` shared by all heads; ours is one 1x1 map per head (a grouped conv).
  Their gate is copied into every head, which is the same function; fine-tuning may then let the heads differ.
- **Selection noise.** Their fine path adds Gumbel noise to the selection scores at inference, so the same image can
  give different boxes. Ours ranks the scores without noise (deterministic and exportable); the conversion keeps
  their ``topk`` and drops ``tau``, the noise temperature.
- **Fine keys in training.** With fine attention on in training, theirs normalises the fine keys/values with batch
  statistics; ours always uses the running statistics for them (``PSTAttention``). Their recipe trains with ``topk=0``,
  so their released weights never saw either.
- **Initialisation** (truncated normal, std 0.02, in their blocks) matters only for training from scratch, not here.
- BatchNorm ``eps`` and ``momentum`` are copied from their layers (Ultralytics sets 1e-3 and 0.03 when it builds a
  model; a freshly made module has PyTorch's defaults).
"""

from __future__ import annotations

import math
import re

import torch.nn as nn

from .nn import PST

__all__ = ("AUTHORS_CLASSES", "AuthorsFormatError", "convert_authors_model", "is_authors_model")

_MODULE = "ultralytics.nn.modules.block"  # where the authors' fork defines the three classes


class _Shell(nn.Module):
    """Holds the pickled state of one of the authors' modules until it is converted; never runs."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"{type(self).__name__} is an unconverted module of the authors' checkpoint format; load the file with "
            f"YOLO(...) after 'import pst_yolo', or call pst_yolo.authors.convert_authors_model(model)"
        )


class AuthorsPST(_Shell):
    """Shell for the authors' ``ultralytics.nn.modules.block.PST`` (cv1, cvup, cv2, attnlayer_{i})."""


class AuthorsPSAttnBlock(_Shell):
    """Shell for the authors' ``PSAttnBlock`` (attn, mlp)."""


class AuthorsPSAttn(_Shell):
    """Shell for the authors' ``PSAttn`` (q, kv, proj, pe, gate_conv1d; num_heads, head_dim, topk, tau)."""


# The authors' class paths -> their shells; the only names an authors' checkpoint needs beyond stock Ultralytics.
AUTHORS_CLASSES = {f"{_MODULE}.{n}": c for n, c in (("PST", AuthorsPST), ("PSAttnBlock", AuthorsPSAttnBlock),
                                                     ("PSAttn", AuthorsPSAttn))}


class AuthorsFormatError(ValueError):
    """An authors' module whose tensors do not fit the layout this converter knows."""


def is_authors_model(model: nn.Module) -> bool:
    """Whether ``model`` still holds unconverted modules of the authors' format."""
    return any(isinstance(m, _Shell) for m in model.modules())


def convert_authors_model(model: nn.Module) -> list[int]:
    """Replace every authors' ``PST`` inside ``model`` by a ``pst_yolo.PST`` with the same function, in place.

    Args:
        model (nn.Module): A model unpickled from the authors' format (shells in place of their PST layers).

    Returns:
        (list[int]): The YAML row index (``i``) of each converted layer, in model order (``-1`` where it has none).

    Raises:
        AuthorsFormatError: A layer whose tensors do not fit (names the layer and what is wrong).
    """
    rows = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, AuthorsPST):
                new = _convert_pst(child, name)
                setattr(parent, name, new)
                rows.append(getattr(new, "i", -1))
    left = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _Shell)})
    if left:
        raise AuthorsFormatError(f"the authors' {', '.join(left)} found outside a PST layer: not a layout pst_yolo "
                                 f"knows how to convert")
    return rows


def _blocks(old: nn.Module, where: str) -> list[nn.Module]:
    """The authors' ``attnlayer_{i}`` children in index order, checked to be contiguous from 0."""
    found = {}
    for name, child in old.named_children():
        if m := re.fullmatch(r"attnlayer_(\d+)", name):
            found[int(m.group(1))] = child
    if not found or sorted(found) != list(range(len(found))):
        raise AuthorsFormatError(f"{where}: expected blocks attnlayer_0 ... attnlayer_(n-1), found {sorted(found)}")
    return [found[i] for i in range(len(found))]


def _convert_pst(old: nn.Module, where: str) -> PST:
    """One authors' ``PST`` -> ``pst_yolo.PST`` (same device and dtype), checked tensor by tensor."""
    where = f"PST row {old.i}" if hasattr(old, "i") else f"PST '{where}'"
    try:
        c1, c_up = old.cv1.conv.in_channels, old.cvup.conv.in_channels
        c_, c2 = old.cv1.conv.out_channels, old.cv2.conv.out_channels
        blocks = _blocks(old, where)
        attn = blocks[0].attn
        num_heads, head_dim = int(attn.num_heads), int(attn.head_dim)
        hidden = blocks[0].mlp[0].conv.out_channels
        topk = int(getattr(attn, "topk", 0) or 0)
    except AttributeError as e:
        raise AuthorsFormatError(f"{where}: not the authors' PST layout ({e})") from e
    if num_heads * head_dim != c_:
        raise AuthorsFormatError(f"{where}: {num_heads} heads x {head_dim} dims != hidden width {c_}")
    e, ratio = c_ / c2, hidden / c_
    if int(c2 * e) != c_:  # float rounding: the smallest e above c_/c2 gives c_ back
        e = math.nextafter(e, math.inf)
    if int(c_ * ratio) != hidden:  # the same for the MLP width
        ratio = math.nextafter(ratio, math.inf)
    new = PST(c1, c_up, c2, len(blocks), ratio, e, topk, num_heads=num_heads)

    mapped = {_map_key(key): value for key, value in old.state_dict().items()}
    state = new.state_dict()
    gate = [k for k in list(mapped) if ".attn.gate." in k]
    for k in gate:  # one gate shared by all heads -> the same gate in each head
        w = mapped.pop(k)
        if k in state and w.numel() * num_heads == state[k].numel():
            w = w.repeat(num_heads, *[1] * (w.dim() - 1)).reshape(state[k].shape)
        mapped[k] = w
    missing, unexpected = sorted(set(state) - set(mapped)), sorted(set(mapped) - set(state))
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(state[k].shape)}" for k in set(state) & set(mapped)
             if mapped[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise AuthorsFormatError(f"{where} (PST{(c1, c_up, c2, len(blocks))}, {num_heads} heads): tensors do not map; "
                                 f"missing {missing[:4]}, unexpected {unexpected[:4]}, shapes {wrong[:4]}")
    new.load_state_dict(mapped)
    _copy_bn_settings(old, new, where)
    dtype = next(old.parameters()).dtype
    new = new.to(device=next(old.parameters()).device, dtype=dtype).train(old.training)
    for attr in ("i", "f"):
        if hasattr(old, attr):
            setattr(new, attr, getattr(old, attr))
    new.type = f"{PST.__module__}.{PST.__name__}"
    new.np = sum(p.numel() for p in new.parameters())
    return new


_KEY = [  # (authors' name pattern, pst_yolo's name); applied in order to each state-dict key
    (r"^attnlayer_(\d+)\.attn\.q\.", r"m.\1.attn.conv_q."),
    (r"^attnlayer_(\d+)\.attn\.kv\.", r"m.\1.attn.conv_kv."),
    (r"^attnlayer_(\d+)\.attn\.gate_conv1d\.", r"m.\1.attn.gate."),
    (r"^attnlayer_(\d+)\.", r"m.\1."),  # attn.pe, attn.proj, mlp.0, mlp.1: the same names below the block
]


def _map_key(key: str) -> str:
    """The pst_yolo state-dict name of one of the authors' (relative to the PST layer)."""
    for pattern, repl in _KEY:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key  # cv1, cvup, cv2


def _copy_bn_settings(old: nn.Module, new: nn.Module, where: str) -> None:
    """Give each BatchNorm of ``new`` the eps and momentum of its counterpart in ``old``."""
    old_bn = {_map_key(n): m for n, m in old.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for name, m in new.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if name not in old_bn:
                raise AuthorsFormatError(f"{where}: no BatchNorm for {name}")
            m.eps, m.momentum = old_bn[name].eps, old_bn[name].momentum
