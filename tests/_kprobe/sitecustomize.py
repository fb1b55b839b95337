"""K probe: records the ``pst_topk`` every PSTAttention forward runs with, in any Python process of a test.

Put this folder on PYTHONPATH and set ``PST_KPROBE=<file>``: Python imports this module at start-up (``site``), before
the test's code, Ultralytics or pst_yolo; it registers a global forward hook (``torch.nn.modules.module.
register_module_forward_hook``) and never imports pst_yolo, so a process that does not import the plugin stays so.
Each process appends one JSON line ``{"pid", "argv", "seen": [[topk, H, W, training, profiling], ...]}`` at exit; a
script can also call :func:`take` to read and clear what it saw so far.
"""

import atexit
import json
import os
import sys

_SEEN = []


def take() -> list:
    """The forwards seen since the last call, as ``[topk, H, W, training, profiling]`` rows, and forget them.

    ``profiling`` marks forwards that are not a run: Ultralytics' FLOP counter (thop, on a proxy input) and the stride
    probe a model's constructor runs on a zero image.
    """
    seen = _SEEN[:]
    _SEEN.clear()
    return seen


if os.environ.get("PST_KPROBE"):
    import torch

    def _building() -> bool:
        """Whether a model is being built: its constructor runs a forward on a zero image to find the strides."""
        frame = sys._getframe(2)
        while frame is not None:
            code = frame.f_code
            if code.co_name == "__init__" and code.co_filename.replace("\\", "/").endswith("ultralytics/nn/tasks.py"):
                return True
            frame = frame.f_back
        return False

    def _record(module, args, output):
        if type(module).__name__ == "PSTAttention":
            profiling = "total_ops" in vars(module) or "total_ops" in module._buffers  # thop (Ultralytics' FLOP count)
            _SEEN.append([int(module.topk), *(int(s) for s in args[0].shape[2:]), bool(module.training),
                          profiling or _building()])

    torch.nn.modules.module.register_module_forward_hook(_record)

    @atexit.register
    def _dump():
        with open(os.environ["PST_KPROBE"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv, "seen": _SEEN}) + "\n")
