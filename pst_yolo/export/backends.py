"""Preconditions of export backends that Ultralytics would otherwise only discover deep inside the export.

``format=engine`` needs the ``tensorrt`` package and an NVIDIA CUDA GPU. Without them Ultralytics fails with a
traceback from ``select_device`` (no GPU), or tries to pip-install ``tensorrt-cu*`` and then fails importing it. The
export hook in ``pst_yolo.hooks`` calls :func:`tensorrt_problem` first and raises :class:`ExportBackendError`
with its one sentence instead; the ``pst-yolo`` CLI prints that sentence without a traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

__all__ = ("ENGINE_FORMATS", "ExportBackendError", "check_onnx_for_tensorrt", "tensorrt_problem")

ENGINE_FORMATS = {"engine", "tensorrt", "trt"}  # Ultralytics' names for a TensorRT export


class ExportBackendError(RuntimeError):
    """An export backend is missing or cannot run here; the message says what is missing and how to get it."""


def _cuda_major() -> str:
    return (torch.version.cuda or "12").split(".")[0]


def tensorrt_problem(model: str | Path | None = None, autoinstall: bool | None = None) -> str | None:
    """Say, in one sentence, why a TensorRT export cannot run on this machine (None if it can).

    Args:
        model (str | Path | None): The model being exported, only to name its ONNX file in the advice.
        autoinstall (bool | None): Whether Ultralytics may pip-install ``tensorrt`` itself (its AutoUpdate, on when
            online and ``YOLO_AUTOINSTALL`` is not false); None reads Ultralytics' settings.

    Returns:
        (str | None): The problem and its fix, or None if TensorRT is importable (or will be auto-installed) and a CUDA
        GPU is visible.
    """
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = torch.cuda.is_available()
    if autoinstall is None:
        from ultralytics.utils import AUTOINSTALL, ONLINE

        autoinstall = bool(AUTOINSTALL and ONLINE)
    onnx_name = f"{Path(str(model)).stem}.onnx" if model else "model.onnx"
    engine_name = Path(onnx_name).with_suffix(".engine").name
    pip = f"pip install tensorrt-cu{_cuda_major()}"
    trtexec = (f"export format=onnx here and build the engine on the target with "
               f"`trtexec --onnx={onnx_name} --saveEngine={engine_name}`")
    if not has_gpu and not has_trt:
        return (f"TensorRT export (format=engine) needs the TensorRT Python package and an NVIDIA CUDA GPU, and "
                f"this machine has neither: on a GPU machine run `{pip}` (TensorRT 10) and repeat this export, "
                f"or {trtexec}.")
    if not has_gpu:
        return (f"TensorRT export (format=engine) needs an NVIDIA CUDA GPU, and torch sees none "
                f"(torch.cuda.is_available() is False): run this export on the GPU machine or Jetson that will run "
                f"the engine, or {trtexec}.")
    if not has_trt and not autoinstall:
        return (f"TensorRT export (format=engine) needs the TensorRT Python package, which is not installed (and "
                f"Ultralytics' AutoUpdate is off or offline): run `{pip}` (TensorRT 10) and repeat this export.")
    return None


def check_onnx_for_tensorrt(onnx_file: str | Path, trt_version: str | None = None):
    """Check ``onnx_file`` against TensorRT 10's ONNX parser table before an engine is built from it.

    Args:
        onnx_file (str | Path): The ONNX model TensorRT is about to parse.
        trt_version (str | None): Installed TensorRT version; None imports ``tensorrt`` to read it.

    Returns:
        (TRTReport): The report, if every op parses.

    Raises:
        ExportBackendError: With the op report, if an op would not parse and TensorRT is 10.x (or not importable). For
            another major version, whose table this is not, the report is logged as a warning instead.
    """
    from ultralytics.utils import LOGGER

    from .trt_ops import check_trt_ops

    report = check_trt_ops(onnx_file)
    if report.ok:
        return report
    if trt_version is None:
        try:
            import tensorrt

            trt_version = tensorrt.__version__
        except ImportError:
            pass
    message = f"TensorRT 10 cannot parse '{onnx_file}' as exported:\n{report.format()}"
    if trt_version is None or trt_version.split(".")[0] == "10":
        raise ExportBackendError(message)
    LOGGER.warning(f"{message}\n(the table is TensorRT 10's and TensorRT {trt_version} is installed: building anyway)")
    return report
