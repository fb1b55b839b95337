"""Export of PST models: ``pst_topk`` on the exporter's copy, and for TensorRT a one-sentence failure and an op check.

Hooks ``Exporter.__call__`` and ``ultralytics.utils.export.engine.onnx2engine`` (which ``Exporter.export_engine``
imports from its module at call time). Why no official extension point serves: callbacks are copied into an exporter
from the YOLO object that makes it (see ``hooks/topk.py``), no export callback runs before ``select_device`` (which
fails without CUDA), and none sees the intermediate ONNX file before TensorRT parses it. Models without PST layers
are exported exactly as without the plugin.
"""

from __future__ import annotations

from contextvars import ContextVar

from ..topk import attention_layers
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
    from ..export.backends import ENGINE_FORMATS, ExportBackendError, tensorrt_problem

    def export_with_pst(self, model=None, *args, **kwargs):
        """Export with ``pst_topk`` applied; for a PST model and ``format=engine``, fail first in one sentence
        (``ExportBackendError``) if TensorRT or a CUDA GPU is missing."""
        pst = hasattr(model, "modules") and bool(attention_layers(model))
        model = export_model(self, model)
        if pst and str(self.args.format).lower() in ENGINE_FORMATS:
            problem = tensorrt_problem(getattr(self.args, "model", None))
            if problem:
                raise ExportBackendError(problem)
        token = _EXPORTING_PST.set(pst)
        try:
            return call(self, model, *args, **kwargs)
        finally:
            _EXPORTING_PST.reset(token)

    return export_with_pst


def _wrap_onnx2engine(onnx2engine):
    from ..export.backends import check_onnx_for_tensorrt

    def onnx2engine_after_op_check(onnx_file, *args, **kwargs):
        """Check ``onnx_file`` of a PST model against TensorRT 10's ONNX parser table, then build the engine."""
        if _EXPORTING_PST.get():
            check_onnx_for_tensorrt(onnx_file)
        return onnx2engine(onnx_file, *args, **kwargs)

    return onnx2engine_after_op_check
