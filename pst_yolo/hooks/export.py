"""Export of PST models: the attention form each format needs, one-sentence failures, and TensorRT's op check.

Hooks ``Exporter.__call__`` (Ultralytics runs ``select_device``, which fails without CUDA, and its own format checks
before any callback; only a wrapper comes first) and ``ultralytics.utils.export.engine.onnx2engine`` (which
``Exporter.export_engine`` imports from its module at call time). Why no official extension point serves: no export
callback runs before the device is selected and the format checked, none sees the intermediate ONNX file before
TensorRT parses it, and none brackets the whole export (the model's attention form must be put back afterwards).

For models with PST layers only (stock models pass through untouched), the ``__call__`` wrapper

- stops with one sentence (``ExportBackendError``) when the format cannot take PST with these arguments
  (``pst_yolo.export.forms.export_problem``) or TensorRT cannot run here (``tensorrt_problem``);
- switches the model to the portable attention form for the formats that need it (``export_form``) for the duration
  of the export: the exporter deep-copies the model, so its copy is traced in that form.
"""

from __future__ import annotations

from ._common import install

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
    from ..export.forms import PORTABLE_FORMATS, export_form, export_problem, set_portable
    from ..topk import get_topk

    def export_with_pst_checks(self, model=None, *args, **kwargs):
        """Check the format for PST models, switch them to the attention form it needs, then export as usual."""
        fmt = str(self.args.format).lower()
        if fmt in ENGINE_FORMATS:
            problem = tensorrt_problem(getattr(self.args, "model", None))
            if problem:
                raise ExportBackendError(problem)
        k = get_topk(model) if model is not None else None  # None: no PST layer (a stock model)
        if k is None:
            return call(self, model, *args, **kwargs)
        requested = getattr(self.args, "pst_topk", None)
        problem = export_problem(fmt, k if requested is None else requested, getattr(self.args, "quantize", None))
        if problem:
            raise ExportBackendError(problem)
        if export_form(fmt) != "portable":
            return call(self, model, *args, **kwargs)
        before = {m: m.portable for m in model.modules() if hasattr(m, "portable")}
        n = set_portable(model, True)
        LOGGER.info(f"PST: portable attention in {n} layers for format={fmt} "
                    f"({PORTABLE_FORMATS.get(fmt, PORTABLE_FORMATS['coreml'])})")
        try:
            return call(self, model, *args, **kwargs)
        finally:
            for m, value in before.items():
                m.portable = value

    return export_with_pst_checks


def _wrap_onnx2engine(onnx2engine):
    from ..export.backends import check_onnx_for_tensorrt

    def onnx2engine_after_op_check(onnx_file, *args, **kwargs):
        """Check ``onnx_file`` against TensorRT 10's ONNX parser table, then build the engine."""
        check_onnx_for_tensorrt(onnx_file)
        return onnx2engine(onnx_file, *args, **kwargs)

    return onnx2engine_after_op_check
