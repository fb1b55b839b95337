"""Export of PST models: the run's ``pst_topk``, the attention form each format needs, one-sentence failures, and
TensorRT's op check.

Hooks ``Exporter.__call__`` (Ultralytics runs ``select_device``, which fails without CUDA, and its own format checks
before any callback; only a wrapper comes first) and ``ultralytics.utils.export.engine.onnx2engine`` (which
``Exporter.export_engine`` imports from its module at call time). Why no official extension point serves: callbacks
are copied into an exporter from the YOLO object that makes it (see ``hooks/topk.py``), no export callback runs before
the device is selected and the format checked, and none sees the intermediate ONNX file before TensorRT parses it.

For models with PST layers only (stock models pass through untouched), the ``__call__`` wrapper exports a copy of the
model (``hooks.topk.export_model``) that

- runs the export's ``pst_topk`` (or the model's own value), recorded in the exported file's metadata; a value above
  a layer's coarse tokens at the export's image size is clamped for that layer (one warning), as validation clamps
  it, so the graph does not grow with K;
- is refused with one sentence (``ExportBackendError``) when the format cannot take PST with these arguments
  (``pst_yolo.export.forms.export_problem``) or TensorRT cannot run here (``tensorrt_problem``);
- uses the portable attention form for the formats that need it (``export_form``); the caller's model is unchanged.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
import torch.nn as nn

from ..topk import attention_layers, clamp_topk, get_topk, image_hw
from ._common import install
from .topk import export_model

_EXPORTING_PST: ContextVar[bool] = ContextVar("pst_yolo_exporting_pst", default=False)

__all__ = ("register",)


def register() -> None:
    import ultralytics.utils.export.engine as export_engine
    from ultralytics.engine.exporter import Exporter

    # Exporter.__call__ runs select_device (fails without CUDA) before any callback; only a wrapper comes first.
    install(Exporter, "__call__", ("self", "model"), _wrap_export_call)
    # Exporter.export_engine imports onnx2engine from this module at call time, so wrapping the attribute covers it.
    install(export_engine, "onnx2engine", ("onnx_file", "output_file"), _wrap_onnx2engine)


def _wrap_export_call(call):
    from ultralytics.utils import LOGGER

    from ..export.backends import ENGINE_FORMATS, ExportBackendError, tensorrt_problem
    from ..export.forms import PORTABLE_FORMATS, export_form, export_problem, set_form

    def export_with_pst(self, model=None, *args, **kwargs):
        """Export a PST model's checked, ``pst_topk``-applied copy in the form its format needs; others as usual."""
        if not (isinstance(model, nn.Module) and attention_layers(model)):
            return call(self, export_model(self, model), *args, **kwargs)  # unchanged (a given pst_topk: a warning)
        fmt = str(self.args.format).lower()
        copy = export_model(self, model)
        k = get_topk(copy)
        if problem := export_problem(fmt, k, getattr(self.args, "quantize", None)):
            raise ExportBackendError(problem)
        if k:
            _clamp_to_export_size(self, copy, k, fmt)  # before TensorRT's presence: K's bound is the user's to fix
        if fmt in ENGINE_FORMATS and (problem := tensorrt_problem(getattr(self.args, "model", None))):
            raise ExportBackendError(problem)
        if export_form(fmt) == "portable":
            n = set_form(copy, "portable")
            LOGGER.info(f"PST: portable attention in {n} layers for format={fmt} "
                        f"({PORTABLE_FORMATS.get(fmt, PORTABLE_FORMATS['coreml'])})")
        token = _EXPORTING_PST.set(True)
        try:
            return call(self, copy, *args, **kwargs)
        finally:
            _EXPORTING_PST.reset(token)

    return export_with_pst


def _export_size(exporter, model) -> tuple[int, int]:
    """The (h, w) the exporter will trace at, as Ultralytics derives it from ``imgsz`` and the model's stride."""
    from ultralytics.utils.checks import check_imgsz

    stride = int(max(getattr(model, "stride", torch.tensor([32])).max(), 32))
    return image_hw(check_imgsz(exporter.args.imgsz, stride=stride, min_dim=2))


def _clamp_to_export_size(exporter, model, k: int, fmt: str) -> None:
    """Clamp ``pst_topk`` per layer to its coarse tokens at the export size (one warning); TensorRT's TopK bound."""
    from ultralytics.utils import LOGGER

    from ..export.backends import ENGINE_FORMATS, ExportBackendError
    from ..export.trt_ops import TOPK_MAX

    size = _export_size(exporter, model)
    changed = clamp_topk(model, size)  # input channels from the model's YAML
    if changed:
        after = ", ".join(str(v[1]) for v in changed.values())
        LOGGER.warning(f"PST: pst_topk={k} exceeds the coarse tokens of {len(changed)} PST layer(s) at imgsz "
                       f"{size[0]}x{size[1]}; exported with K = {after} there (all their coarse tokens: the same "
                       f"function, as validation clamps it); the file records pst_topk={k}")
    if fmt in ENGINE_FORMATS:
        ks = [attn.topk for attn in attention_layers(model)]
        if max(ks) >= TOPK_MAX:
            raise ExportBackendError(
                f"TensorRT's TopK takes K below {TOPK_MAX}, and pst_topk={k} at imgsz {size[0]}x{size[1]} needs K = "
                f"{max(ks)}: export with pst_topk<{TOPK_MAX} (values that large select nearly every coarse token)"
            )


def _wrap_onnx2engine(onnx2engine):
    from ..export.backends import check_onnx_for_tensorrt

    def onnx2engine_after_op_check(onnx_file, *args, **kwargs):
        """Check ``onnx_file`` of a PST model against TensorRT 10's ONNX parser table, then build the engine."""
        if _EXPORTING_PST.get():
            check_onnx_for_tensorrt(onnx_file)
        return onnx2engine(onnx_file, *args, **kwargs)

    return onnx2engine_after_op_check
