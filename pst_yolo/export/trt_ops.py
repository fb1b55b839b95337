"""Static TensorRT 10 compatibility check of an ONNX model, against the parser's documented operator table.

The table (``trt10_ops.yaml`` next to this file, transcribed from onnx-tensorrt's ``docs/operators.md``) says which ONNX
operators TensorRT 10 imports, for which data types, and with which restrictions. :func:`check_trt_ops` walks a graph
and reports, per operator type:

- ``error``: TensorRT 10 cannot parse it (not in the table, marked unsupported, a custom domain, an opset outside the
  parser's range, a data type the table does not list), a documented restriction is violated, or the op is random
  (an exported detector must give the same boxes every time);
- ``limited``: the table documents a restriction and the graph satisfies it (checked where it can be checked from the
  graph: constant inputs, attributes, ranks, types);
- ``ok``: supported without restrictions.

Runtime-only conditions (e.g. GatherElements indices within range) cannot be seen in a graph; see
:func:`pst_yolo.export.verify.gather_index_ranges` for that check.

Command line (also ``scripts/check_trt_ops.py``): ``python -m pst_yolo.export.trt_ops MODEL.onnx [MORE.onnx ...]``
prints one report per model and exits 1 if any op would not parse.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

__all__ = ("OpFinding", "TRTReport", "check_trt_ops", "load_trt_table", "main")

TABLE = Path(__file__).with_name("trt10_ops.yaml")
TOPK_MAX = 3840  # "`K` input must be less than 3840" (TopK row)

# ONNX TensorProto.DataType -> the table's type names
_DTYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE", 16: "BF16",
           17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4", 23: "FP4", 8: "STRING", 4: "UINT16", 5: "INT16",
           12: "UINT32", 13: "UINT64", 21: "UINT4", 14: "COMPLEX64", 15: "COMPLEX128"}
# Ops whose listed types are those of an input (comparisons, logic, shape queries) rather than of their output.
_TYPE_OF_INPUT = {op: 0 for op in ("Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor",
                                   "Not", "Shape", "Size", "IsInf", "IsNaN", "Cast", "CastLike", "ArgMax", "ArgMin",
                                   "NonZero", "QuantizeLinear", "DequantizeLinear")}
_TYPE_OF_INPUT["Where"] = 1
_REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare"}


@cache
def load_trt_table(path: str | Path = TABLE) -> dict:
    """Load the TensorRT operator table.

    Args:
        path (str | Path): YAML table; defaults to the TensorRT 10 table shipped with pst_yolo.

    Returns:
        (dict): ``{"tensorrt": str, "opset": (lo, hi), "random": set, "notes": dict, "ops": {op: {"supported": bool,
        "types": set[str], "limits": str}}}``.

    Examples:
        >>> table = load_trt_table()
        >>> table["ops"]["TopK"]["limits"]
        '`sorted` must be 1. `K` input must be less than 3840.'
        >>> table["ops"]["BitwiseAnd"]["supported"]
        False
    """
    raw = yaml.safe_load(Path(path).read_text())
    ops = {}
    for op, row in raw["ops"].items():
        row = row or {}
        ops[op] = {
            "supported": bool(row.get("supported", True)),
            "types": set(str(row.get("types", "")).split()),
            "limits": " ".join(str(row.get("limits", "")).split()),
        }
    return {"tensorrt": str(raw["tensorrt"]), "opset": tuple(raw["opset"]), "random": set(raw.get("random", ())),
            "notes": dict(raw.get("notes", {})), "ops": ops}


@dataclass
class OpFinding:
    """What the check found for one operator type.

    Attributes:
        op (str): Operator type (``domain::Op`` outside the default ONNX domain).
        count (int): Nodes of this type in the graph (subgraphs included).
        status (str): ``"ok"``, ``"limited"`` (restriction documented and satisfied) or ``"error"``.
        limit (str): The table's restriction text for this op ('' if none).
        details (list[str]): Per-node facts checked (e.g. ``K=8, sorted=1``) or the reasons for an error.
    """

    op: str
    count: int
    status: str = "ok"
    limit: str = ""
    details: list[str] = field(default_factory=list)


@dataclass
class TRTReport:
    """Result of :func:`check_trt_ops`.

    Attributes:
        model (str): The checked model's name.
        opset (int): The model's default-domain opset.
        tensorrt (str): TensorRT release of the table.
        findings (list[OpFinding]): One per operator type, most frequent first.
        errors (list[str]): Model-level problems (opset out of range).
    """

    model: str
    opset: int
    tensorrt: str
    findings: list[OpFinding]
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if TensorRT 10 can parse every node within its documented limits."""
        return not self.errors and all(f.status != "error" for f in self.findings)

    @property
    def ops(self) -> dict[str, int]:
        """Operator type -> node count."""
        return {f.op: f.count for f in self.findings}

    def format(self) -> str:
        """Human-readable report: one row per operator type, then a verdict line."""
        n = sum(f.count for f in self.findings)
        lines = [f"{self.model}: opset {self.opset}, {n} nodes, {len(self.findings)} op types; checked against the "
                 f"TensorRT {self.tensorrt} ONNX parser table (onnx-tensorrt docs/operators.md)"]
        lines += [f"  {'op':<20}{'count':>6}  status"]
        for f in self.findings:
            row = f"  {f.op:<20}{f.count:>6}  {f.status.upper() if f.status == 'error' else f.status}"
            if f.limit:
                row += f"  [TensorRT: {f.limit}]"
            lines.append(row)
            lines += [f"  {'':<26}  -> {d}" for d in f.details]
        lines += [f"  ERROR: {e}" for e in self.errors]
        bad = [f.op for f in self.findings if f.status == "error"]
        limited = sum(f.status == "limited" for f in self.findings)
        if self.ok:
            lines.append(f"PASS: every op parses in TensorRT {self.tensorrt}; {limited} constrained op types checked "
                         "within their documented limits")
        else:
            lines.append(f"FAIL: {', '.join(bad) or 'model'} cannot be parsed by TensorRT {self.tensorrt} as exported")
        return "\n".join(lines)


def check_trt_ops(model, table: dict | None = None) -> TRTReport:
    """Check an ONNX model against TensorRT 10's ONNX parser table.

    Args:
        model (str | Path | onnx.ModelProto): ONNX file or loaded model.
        table (dict | None): Operator table from :func:`load_trt_table`; the shipped TensorRT 10 table by default.

    Returns:
        (TRTReport): Findings per operator type; ``report.ok`` is False if anything would not parse.

    Examples:
        >>> import onnx
        >>> from onnx import helper as h, TensorProto as T
        >>> x = h.make_tensor_value_info("x", T.FLOAT, [1, 100])
        >>> k = h.make_tensor("k", T.INT64, [1], [8])
        >>> nodes = [h.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, sorted=0)]
        >>> outs = [h.make_tensor_value_info("v", T.FLOAT, [1, 8]), h.make_tensor_value_info("i", T.INT64, [1, 8])]
        >>> graph = h.make_graph(nodes, "g", [x], outs, [k])
        >>> report = check_trt_ops(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]))
        >>> report.ok, report.findings[0].details
        (False, ['TopK: K=8, sorted=0: `sorted` must be 1'])
    """
    import onnx

    table = table or load_trt_table()
    name = "model"
    if not isinstance(model, onnx.ModelProto):
        name = Path(model).name
        model = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    errors = []
    lo, hi = table["opset"]
    if not lo <= opset <= hi:
        errors.append(f"opset {opset} is outside TensorRT {table['tensorrt']}'s supported range {lo}-{hi}")

    try:  # element types of intermediate tensors, for the per-op type check
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 (types are then checked where the graph states them)
        inferred = model
    graph = _Graph(inferred.graph)
    nodes = list(graph.all_nodes())
    counts = Counter(_op_name(n) for n in nodes)
    findings = {op: OpFinding(op, c) for op, c in counts.most_common()}
    for node in nodes:
        finding = findings[_op_name(node)]
        for problem in _node_problems(node, graph, table, finding):
            if problem not in finding.details:
                finding.details.append(problem)
            finding.status = "error"
    for f in findings.values():
        row = table["ops"].get(f.op)
        if row and row["limits"]:
            f.limit = row["limits"]
            if f.status == "ok":
                f.status = "limited"
    return TRTReport(name, opset, table["tensorrt"], list(findings.values()), errors)


# ------------------------------------------------------------------------------------------------------- internals
def _op_name(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


class _Graph:
    """Lookups over a graph: constants (initializers, Constant nodes) and element types of named tensors."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.const = {t.name: t for t in graph.initializer}
        self.types = {}
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if vi.type.HasField("tensor_type"):
                self.types[vi.name] = vi.type.tensor_type.elem_type
        for t in graph.initializer:
            self.types[t.name] = t.data_type
        for node in self.all_nodes():
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value":
                        self.const[node.output[0]] = a.t
                        self.types[node.output[0]] = a.t.data_type
        self._np = numpy_helper.to_array

    def all_nodes(self, graph=None):
        """Every node, including those of If/Loop/Scan bodies."""
        for node in (graph or self.graph).node:
            yield node
            for a in node.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from self.all_nodes(g)

    def constant(self, name: str):
        """The numpy value of a constant tensor, or None if ``name`` is computed at run time (or empty)."""
        return self._np(self.const[name]) if name and name in self.const else None

    def dtype(self, name: str) -> str | None:
        code = self.types.get(name)
        return _DTYPES.get(code, f"type{code}") if code else None


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _node_problems(node, graph: _Graph, table: dict, finding: OpFinding) -> list[str]:
    """Reasons ``node`` will not parse in TensorRT (empty if it will); records checked facts in ``finding.details``."""
    op = _op_name(node)
    row = table["ops"].get(op)
    if node.domain not in ("", "ai.onnx"):
        return [f"custom domain '{node.domain}': TensorRT needs a plugin for it"]
    if row is None:
        return [f"{op} is not in TensorRT {table['tensorrt']}'s operator table"]
    if not row["supported"]:
        return [f"{op} is not supported by TensorRT {table['tensorrt']}"]
    if op in table["random"]:
        return [f"{op} is random: the exported model would not be deterministic"]
    problems = []

    # Data type (where shape inference or the graph knows it)
    index = _TYPE_OF_INPUT.get(op)
    tensors = [node.input[index]] if index is not None and len(node.input) > index else list(node.output[:1])
    if op in ("Cast", "CastLike") and node.output:
        tensors.append(node.output[0])
    for t in tensors:
        dtype = graph.dtype(t)
        if dtype and row["types"] and dtype not in row["types"] and dtype not in table["notes"]:
            problems.append(f"{op} on {dtype} ('{t}'): TensorRT supports {' '.join(sorted(row['types']))}")

    a = _attrs(node)
    if op == "TopK":
        k = graph.constant(node.input[1])
        if k is None:
            problems.append(f"TopK '{node.name}': K is computed at run time; TensorRT needs a build-time constant K")
        else:
            k = int(k.reshape(-1)[0])
            srt = int(a.get("sorted", 1))
            fact = f"TopK: K={k}, sorted={srt}"
            if srt != 1:
                problems.append(f"{fact}: `sorted` must be 1")
            if k >= TOPK_MAX:
                problems.append(f"{fact}: `K` input must be less than {TOPK_MAX}")
            if not problems and fact not in finding.details:
                finding.details.append(fact)
    elif op in _REDUCE or op in ("Squeeze", "Unsqueeze"):
        axes = node.input[1] if len(node.input) > 1 and node.input[1] else None  # opset >= 13/18: an input
        if axes is not None and graph.constant(axes) is None:
            problems.append(f"{op} '{node.name}': `axes` is computed at run time; TensorRT needs a constant")
        elif f"{op}: constant `axes`" not in finding.details:
            finding.details.append(f"{op}: constant `axes`")
    elif op in ("CumSum", "OneHot") and graph.constant(node.input[1]) is None:
        what = "axis" if op == "CumSum" else "depth"
        problems.append(f"{op} '{node.name}': `{what}` must be a build-time constant")
    elif op == "Resize":
        ctm = a.get("coordinate_transformation_mode", b"half_pixel").decode()
        mode = a.get("mode", b"nearest").decode()
        nearest = a.get("nearest_mode", b"round_prefer_floor").decode()
        if ctm not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"):
            problems.append(f"Resize '{node.name}': coordinate_transformation_mode '{ctm}' is unsupported")
        if mode not in ("nearest", "linear"):
            problems.append(f"Resize '{node.name}': mode '{mode}' is unsupported (nearest, linear only)")
        if mode == "nearest" and nearest not in ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"):
            problems.append(f"Resize '{node.name}': nearest_mode '{nearest}' is unsupported")
        if a.get("antialias", 0):
            problems.append(f"Resize '{node.name}': antialiasing is not supported")
        if a.get("keep_aspect_ratio_policy", b"stretch").decode() != "stretch":
            problems.append(f"Resize '{node.name}': only keep_aspect_ratio_policy 'stretch' is supported")
        fact = f"Resize: mode={mode}, coordinate_transformation_mode={ctm}" + (
            f", nearest_mode={nearest}" if mode == "nearest" else "")
        if not problems and fact not in finding.details:
            finding.details.append(fact)
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = a.get("kernel_shape", [])
        if op != "LpPool" and len(kernel) not in (2, 3):
            problems.append(f"{op} '{node.name}': {len(kernel)}D pooling; only 2D or 3D pooling is supported")
        if any(d != 1 for d in a.get("dilations", [])):
            problems.append(f"{op} '{node.name}': `dilations` must be empty or all ones, got {a['dilations']}")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            problems.append(f"MaxPool '{node.name}': the `Indices` output is unsupported")
        fact = f"{op}: {len(kernel)}D, kernel {list(kernel)}, no dilation" + (", no Indices" if op == "MaxPool" else "")
        if not problems and fact not in finding.details:
            finding.details.append(fact)
    elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = graph.constant(node.input[2])
        if training is None or bool(training):
            problems.append(f"Dropout '{node.name}': `is_training` must be an initializer that is False")
    elif op == "ScatterND" and a.get("reduction", b"none").decode() != "none":
        problems.append(f"ScatterND '{node.name}': `reduction` other than `none` is not supported")
    elif op == "Constant" and any(k in a for k in ("sparse_value", "value_string", "value_strings")):
        problems.append(f"Constant '{node.name}': sparse/string values are unsupported")
    elif op == "LayerNormalization" and any(node.output[1:]):
        problems.append(f"LayerNormalization '{node.name}': only the first output `Y` is supported")
    elif op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zero = graph.constant(node.input[2])
        if zero is None or zero.any():
            problems.append(f"{op} '{node.name}': the zero point must be 0")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check each ONNX model named in ``argv``, print the reports; return 0 if all pass, 1 otherwise."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="check_trt_ops",
        description="List the ops of ONNX models and flag any that TensorRT 10's ONNX parser cannot parse or "
        "constrains, citing the documented limit (table: pst_yolo/export/trt10_ops.yaml).",
    )
    parser.add_argument("models", nargs="+", help="ONNX model files")
    parser.add_argument("--table", default=str(TABLE), help="operator table YAML (default: the TensorRT 10 table)")
    args = parser.parse_args(argv)
    table = load_trt_table(args.table)
    ok = True
    for model in args.models:
        report = check_trt_ops(model, table)
        print(report.format(), end="\n\n")
        ok &= report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
