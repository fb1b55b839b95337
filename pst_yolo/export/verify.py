"""Parity of exported models with PyTorch: same preprocessed images in, raw head outputs compared.

The exported graph is the Detect head's raw output ``(B, 4 + nc, anchors)`` (xywh boxes in input pixels, class
probabilities), before NMS. PyTorch gives the same tensor as the first output of the eval-mode model, so the two are
compared element-wise. Images are letterboxed exactly like Ultralytics' predictor does (BGR -> RGB, 0-1 floats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..topk import image_hw

__all__ = (
    "compare_outputs",
    "gather_index_ranges",
    "letterbox_images",
    "onnx_outputs",
    "openvino_outputs",
    "torch_outputs",
)


def letterbox_images(paths, imgsz: int | tuple[int, int]) -> np.ndarray:
    """Read images and letterbox them to one size, as Ultralytics' predictor does.

    Args:
        paths (Iterable[str | Path]): Image files.
        imgsz (int | tuple[int, int]): Output ``(h, w)``, or one int for a square.

    Returns:
        (np.ndarray): float32 batch (B, 3, h, w), RGB in [0, 1].
    """
    import cv2
    from ultralytics.data.augment import LetterBox

    shape = image_hw(imgsz)
    box = LetterBox(shape, auto=False)
    batch = []
    for p in paths:
        im = cv2.imread(str(p))
        if im is None:
            raise FileNotFoundError(f"cannot read image '{p}'")
        batch.append(box(image=im)[..., ::-1].transpose(2, 0, 1))  # HWC BGR -> CHW RGB
    return np.ascontiguousarray(np.stack(batch)).astype(np.float32) / 255


def torch_outputs(model, images: np.ndarray, pst_topk: int | None = None) -> np.ndarray:
    """Raw Detect output of a PyTorch model in eval mode.

    Args:
        model (ultralytics.YOLO | torch.nn.Module | str | Path): Model, its ``.model``, or a ``.pt`` file.
        images (np.ndarray): (B, 3, h, w) float32 batch.
        pst_topk (int | None): Fine-attention top-k to apply to a copy of the model first (None = keep its value).

    Returns:
        (np.ndarray): (B, 4 + nc, anchors) float32.
    """
    from copy import deepcopy

    from ultralytics import YOLO
    from ultralytics.engine.model import Model

    from ..topk import set_topk

    if isinstance(model, (str, Path)):
        model = YOLO(str(model))
    net = deepcopy(model.model if isinstance(model, Model) else model).float().eval()
    if pst_topk is not None:
        set_topk(net, pst_topk, verbose=False)
    with torch.inference_mode():
        y = net(torch.from_numpy(images))
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


def onnx_outputs(onnx_file: str | Path, images: np.ndarray, session=None) -> np.ndarray:
    """Run an exported ONNX model in ONNX Runtime on the CPU.

    Args:
        onnx_file (str | Path): Exported model (input ``images``).
        images (np.ndarray): (B, 3, h, w) float32 batch (cast to the model's input type; run in chunks of the
            export's batch size if that is fixed).
        session (onnxruntime.InferenceSession | None): Reuse a session instead of creating one.

    Returns:
        (np.ndarray): The first output as float32.
    """
    import onnxruntime as ort

    session = session or ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else len(images)  # a static export has a fixed batch
    chunks = [images[i : i + batch].astype(dtype) for i in range(0, len(images), batch)]
    return np.concatenate([session.run(None, {inp.name: x})[0] for x in chunks]).astype(np.float32)


def openvino_outputs(model_dir: str | Path, images: np.ndarray, precision: str | None = "f32") -> np.ndarray:
    """Run an OpenVINO export on the CPU.

    Args:
        model_dir (str | Path): ``*_openvino_model/`` folder or its ``.xml``.
        images (np.ndarray): (B, 3, h, w) float32 batch matching the export's input shape.
        precision (str | None): ``INFERENCE_PRECISION_HINT``; ``"f32"`` for a float32 parity check. OpenVINO's CPU
            plugin otherwise picks its own default, which is reduced precision (bf16) on CPUs with bf16 support.

    Returns:
        (np.ndarray): The first output as float32.
    """
    import openvino as ov

    path = Path(model_dir)
    xml = path if path.suffix == ".xml" else next(path.glob("*.xml"))
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    return np.asarray(compiled(images)[0], dtype=np.float32)


def gather_index_ranges(onnx_file: str | Path, images: np.ndarray) -> list[dict]:
    """Observed index ranges of every GatherElements node in an ONNX model for one input batch.

    TensorRT does not check gather indices at run time (out-of-range reads are undefined), so they must be in range
    by construction; this runs the graph with the index tensors and data shapes exposed as extra outputs and reports
    them, for assertion in tests.

    Args:
        onnx_file (str | Path): ONNX model.
        images (np.ndarray): Input batch for its first input.

    Returns:
        (list[dict]): Per GatherElements node: ``name``, ``axis``, ``min``, ``max`` of the indices and ``size`` of the
        data along ``axis``. In range means ``-size <= min`` and ``max < size``.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(onnx_file))
    nodes = [n for n in model.graph.node if n.op_type == "GatherElements"]
    if not nodes:
        return []
    outputs = {o.name for o in model.graph.output}
    extra = []
    for n in nodes:
        extra += [n.input[0], n.input[1]]
    for name in dict.fromkeys(extra):
        if name not in outputs:
            model.graph.output.append(helper.ValueInfoProto(name=name))  # untyped: ORT infers it
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, {inp.name: images.astype(dtype)})))
    ranges = []
    for n in nodes:
        axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 0)
        data, idx = values[n.input[0]], values[n.input[1]]
        ranges.append({"name": n.name, "axis": axis, "min": int(idx.min()), "max": int(idx.max()),
                       "size": int(data.shape[axis])})
    return ranges


def compare_outputs(model, exported: str | Path, image_files, sizes, pst_topk: int | None = None) -> list[dict]:
    """Raw-output differences between an export and its PyTorch model on real images, per input size.

    Args:
        model (ultralytics.YOLO | torch.nn.Module | str | Path): The PyTorch model (or ``.pt``) that was exported.
        exported (str | Path): ``.onnx`` file (ONNX Runtime, CPU) or OpenVINO folder/``.xml`` (CPU, f32).
        image_files (list[str | Path]): Real images; the first ``batch`` of them are used at each size.
        sizes (Iterable[tuple[int, int, int]]): ``(batch, h, w)`` inputs to compare at.
        pst_topk (int | None): Fine-attention top-k the export was made with (None = the model's value).

    Returns:
        (list[dict]): Per size: ``batch``, ``h``, ``w``, ``box`` and ``cls`` (max abs difference of the box and class
        rows of the (B, 4 + nc, anchors) output), and ``box_max`` (largest PyTorch box value, for scale).
    """
    exported = Path(exported)
    rows = []
    session = None
    if exported.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for batch, hh, ww in sizes:
        x = letterbox_images(list(image_files)[:batch], (hh, ww))
        ref = torch_outputs(model, x, pst_topk)
        out = onnx_outputs(exported, x, session) if session else openvino_outputs(exported, x)
        d = np.abs(out - ref)
        rows.append({"batch": batch, "h": hh, "w": ww, "box": float(d[:, :4].max()), "cls": float(d[:, 4:].max()),
                     "box_max": float(np.abs(ref[:, :4]).max())})
    return rows
