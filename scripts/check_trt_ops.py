#!/usr/bin/env python
"""List the ops of ONNX models and flag any that TensorRT 10's ONNX parser cannot parse or constrains.

Usage:
    python scripts/check_trt_ops.py MODEL.onnx [MODEL2.onnx ...] [--table TABLE.yaml]

Prints one report per model (op, count, status, the documented TensorRT limit and what was checked against it) and
exits 1 if any model has an op TensorRT 10 cannot parse within its documented limits. The op table is
pst_yolo/export/trt10_ops.yaml (from onnx-tensorrt's docs/operators.md; its header cites the source). Installed from a
wheel, the same check runs as ``python -m pst_yolo.export.trt_ops MODEL.onnx``.
"""

import sys

from pst_yolo.export.trt_ops import main

if __name__ == "__main__":
    sys.exit(main())
