"""TensorRT export (``format=engine``) of PST models: a one-sentence failure, and an op check before the build.

Hooks ``Exporter.__call__`` (Ultralytics runs ``select_device``, which fails without CUDA, before any callback; only a
wrapper comes first) and ``ultralytics.utils.export.engine.onnx2engine`` (which ``Exporter.export_engine`` imports
from its module at call time). Why no official extension point serves: no export callback runs before the device is
selected, and none sees the intermediate ONNX file before TensorRT parses it.
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
    from ..export.backends import ENGINE_FORMATS, ExportBackendError, tensorrt_problem

    def export_with_backend_check(self, model=None, *args, **kwargs):
        """Raise ``ExportBackendError`` (one sentence) if ``format=engine`` cannot run here; else export as usual."""
        if str(self.args.format).lower() in ENGINE_FORMATS:
            problem = tensorrt_problem(getattr(self.args, "model", None))
            if problem:
                raise ExportBackendError(problem)
        return call(self, model, *args, **kwargs)

    return export_with_backend_check


def _wrap_onnx2engine(onnx2engine):
    from ..export.backends import check_onnx_for_tensorrt

    def onnx2engine_after_op_check(onnx_file, *args, **kwargs):
        """Check ``onnx_file`` against TensorRT 10's ONNX parser table, then build the engine."""
        check_onnx_for_tensorrt(onnx_file)
        return onnx2engine(onnx_file, *args, **kwargs)

    return onnx2engine_after_op_check
