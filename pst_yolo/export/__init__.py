"""Exporting PST detectors for edge devices: TensorRT 10 op compatibility, backend preconditions, parity helpers.

Exports themselves are Ultralytics' (``pst-yolo export model=best.pt format=onnx pst_topk=8``); ``pst_topk`` is
applied to the exported copy by an ``on_export_start`` callback (``pst_yolo.hooks``). This package adds:

- :func:`check_trt_ops` (CLI: ``scripts/check_trt_ops.py MODEL.onnx``): every op of an ONNX graph against TensorRT
  10's parser table, shipped as ``trt10_ops.yaml``;
- :func:`tensorrt_problem` / :class:`ExportBackendError`: a one-sentence failure when ``format=engine`` cannot run;
- :mod:`pst_yolo.export.forms`: the attention form each format traces (portable for NCNN, Paddle, Core ML) and the
  formats that cannot take PST, each with a one-sentence reason;
- :mod:`pst_yolo.export.verify`: raw-output parity of ONNX Runtime / OpenVINO exports with PyTorch.

The export matrix (every Ultralytics format x pst_topk, exported, run and compared with PyTorch) is a research tool
outside the package: ``scripts/export_matrix.py``.
"""

from .backends import ENGINE_FORMATS, ExportBackendError, check_onnx_for_tensorrt, tensorrt_problem
from .forms import PORTABLE_FORMATS, export_form, export_problem, set_form
from .trt_ops import OpFinding, TRTReport, check_trt_ops, load_trt_table

__all__ = (
    "ENGINE_FORMATS",
    "ExportBackendError",
    "OpFinding",
    "PORTABLE_FORMATS",
    "TRTReport",
    "check_onnx_for_tensorrt",
    "check_trt_ops",
    "export_form",
    "export_problem",
    "load_trt_table",
    "set_form",
    "tensorrt_problem",
)
