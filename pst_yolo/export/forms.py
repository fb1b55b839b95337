"""Which form of PST attention each export format gets, and which formats cannot take PST at all.

PST's attention exists in three forms computing the same function (``pst_yolo.nn.attention``), named by its
``form``: ``"fused"`` (SDPA, the default), ``"plain"`` and ``"portable"``. Most exporters take the default graph
(TorchScript, ONNX, OpenVINO, TensorRT, LiteRT, ExecuTorch, MNN, TensorFlow), but some converters or their runtimes
lack what it uses:

- NCNN has no TopK, Gather or Where layer (pnnx converts, the runtime then fails);
- X2Paddle cannot convert ``aten::new_full`` (the padding of the selection scores) nor ``pixel_unshuffle``, Paddle
  Inference runs SDPA with the wrong layout (also at ``pst_topk=0``), and its oneDNN matmul fusion fails on a
  transposed weight;
- Core ML receives the gather index as float32 and rejects it.

For these, :func:`export_form` says ``"portable"`` and the export hook (``pst_yolo.hooks.export``) switches the
exporter's copy of the model to the portable form (:func:`set_form`) before it is traced; nothing else changes.
:func:`export_problem` names the format/argument combinations that cannot work, in one sentence with the alternative,
so the export stops before anything runs.
"""

from __future__ import annotations

__all__ = ("PORTABLE_FORMATS", "export_form", "export_problem", "set_form")

# format -> why the default attention graph does not convert or run there
PORTABLE_FORMATS = {
    "ncnn": "NCNN has no TopK, Gather or Where layer",
    "paddle": "X2Paddle/Paddle Inference cannot convert or run the fused attention and the gathers",
    "coreml": "Core ML rejects the gather index (it arrives as float32)",
    "mlmodel": "Core ML rejects the gather index (it arrives as float32)",
}

_CORE_ML_ALIASES = {"mlpackage", "mlprogram", "apple", "ios"}


def export_form(fmt: str) -> str:
    """The attention form an export to ``fmt`` traces: ``"portable"``, or ``"default"`` (the model's own form).

    Examples:
        >>> export_form("ncnn"), export_form("onnx")
        ('portable', 'default')
    """
    fmt = str(fmt).lower()
    return "portable" if fmt in PORTABLE_FORMATS or fmt in _CORE_ML_ALIASES else "default"


def export_problem(fmt: str, pst_topk: int, quantize=None) -> str | None:
    """Say in one sentence why a PST model cannot be exported to ``fmt`` with these arguments (None if it can).

    Args:
        fmt (str): Ultralytics' ``format`` argument.
        pst_topk (int): Fine-attention top-k of the export (0 = coarse only).
        quantize (int | str | None): Ultralytics' ``quantize`` argument (8 = int8).

    Returns:
        (str | None): The format, the reason and the alternative, or None.

    Examples:
        >>> export_problem("onnx", 8) is None
        True
        >>> export_problem("qnn", 8).startswith("Qualcomm QNN export (format=qnn) with fine attention (pst_topk=8)")
        True
    """
    fmt = str(fmt).lower()
    if fmt == "imx":
        return ("Sony IMX export (format=imx) cannot take a PST model: Ultralytics' IMX converter accepts only the "
                "stock YOLOv8n/YOLO11n layer layout; export format=onnx or format=litert instead.")
    if not pst_topk:
        return None
    fine = f"with fine attention (pst_topk={pst_topk})"
    coarse = "export with pst_topk=0 (coarse attention only, which converts)"
    if fmt == "qnn":
        return (f"Qualcomm QNN export (format=qnn) {fine} is not supported: the QNN compiler fails to compose the "
                f"attention's concatenations; {coarse}, or use format=onnx.")
    if fmt == "deepx":
        return (f"DEEPX export (format=deepx) {fine} is not supported: the vendor compiler rejects the fine-attention "
                f"graph; {coarse}, or use format=onnx.")
    if fmt == "edgetpu" or (fmt == "saved_model" and str(quantize).lower() in {"8", "int8", "w8a8"}):
        name = "Edge TPU" if fmt == "edgetpu" else "TensorFlow SavedModel int8"
        return (f"{name} export (format={fmt}) {fine} is not supported: TensorFlow's int8 conversion aborts on the "
                f"fine-attention graph; {coarse}, or use format=litert with quantize=8.")
    return None


def set_form(model, form: str) -> int:
    """Put every ``PSTAttention`` in ``model`` in ``form`` (``"fused"``, ``"plain"`` or ``"portable"``).

    Returns:
        (int): How many layers were set.

    Raises:
        ValueError: ``form`` is none of the three (checked before any layer changes, also in a model without PST).

    Examples:
        >>> from pst_yolo import PST
        >>> set_form(PST(64, 64, 64, n=2), "portable")
        2
    """
    from ..nn.attention import PSTAttention, check_form

    check_form(form)
    layers = [m for m in model.modules() if isinstance(m, PSTAttention)]
    for m in layers:
        m.form = form
    return len(layers)
