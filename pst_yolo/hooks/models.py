"""Model YAML parsing: rows naming ``PST`` build like stock modules.

Hooks ``ultralytics.nn.tasks.parse_model`` (looked up in its module by ``DetectionModel.__init__`` and every other
task model at call time). Why no official extension point serves: Ultralytics' parser resolves module names from its
own imports and keeps its channel bookkeeping local, so it cannot build a two-input module with inferred channels.

The wrapper lets the *stock* parser do all the arithmetic: each PST row is handed to it as a stand-in ``Conv`` row
with the same ``from``/repeats/``c2`` (so ``c2`` gets the stock width and ``max_channels`` scaling and ``n`` the stock
depth scaling), plus one probe ``Conv`` row per PST reading the coarse input's channels. The stand-ins are then
replaced by real ``PST`` modules and the probes dropped; the per-layer summary is rewritten to match. A YAML without
PST rows goes to the stock parser untouched.
"""

from __future__ import annotations

import logging
import re
import threading

import torch.nn as nn

from ..nn import PST
from ._common import install

__all__ = ("register",)


def register() -> None:
    import ultralytics.nn.tasks as tasks

    install(tasks, "parse_model", ("d", "ch", "verbose"), _wrap_parse_model)


class _PSTRow:
    """A validated PST YAML row ``[[fine, coarse], n, PST, [c2, mlp_ratio, e, k]]``."""

    EXAMPLE = "[[-1, 10], 2, PST, [512, 2, 0.5]]"

    def __init__(self, i: int, row, where: str):
        self.i, self.row, self.where = i, row, where
        f, n, _, args = row
        if not (isinstance(f, (list, tuple)) and len(f) == 2 and all(isinstance(x, int) for x in f)):
            self.fail(f"'from' must be two layer indices [fine, coarse], got {f!r}")
        if any(not -i <= x < i for x in f):
            self.fail(f"'from' {f!r} must name earlier layers (indices in [{-i}, {i - 1}])")
        if not isinstance(n, int) or n < 1:
            self.fail(f"repeats must be a positive integer, got {n!r}")
        if not isinstance(args, (list, tuple)) or not 1 <= len(args) <= 4:
            self.fail(f"args must be [c2, mlp_ratio, e, k] (1 to 4 values), got {args!r}")
        args = list(args) + [2.0, 0.5, 0][len(args) - 1 :]
        c2, mlp_ratio, e, k = args
        if not (isinstance(c2, int) and c2 > 0):
            self.fail(f"c2 must be a positive integer, got {c2!r}")
        for label, value in (("mlp_ratio", mlp_ratio), ("e", e)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                self.fail(f"{label} must be a positive number, got {value!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            self.fail(f"k (fine-attention top-k) must be a non-negative integer, got {k!r}")
        self.coarse = f[1] % i  # absolute index of the coarse input (negative 'from' counts back from row i)
        self.n, self.c2, self.extra = n, c2, (mlp_ratio, e, k)

    def fail(self, problem: str):
        raise ValueError(f"{self.where} row {self.i} {self.row}: {problem}. A PST row reads {self.EXAMPLE}")


def _wrap_parse_model(parse_model):
    from ultralytics.utils import LOGGER

    def parse_model_with_pst(d, ch, verbose=True):
        """Ultralytics' ``parse_model`` plus PST rows (see this module's docstring)."""
        rows = [list(r) if isinstance(r, (list, tuple)) else r for r in d["backbone"] + d["head"]]  # copies
        where = d.get("yaml_file") or "model YAML"
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 4):
                raise ValueError(f"{where} row {i} {row!r}: a layer row reads [from, repeats, module, args]")
        specs = [_PSTRow(i, row, where) for i, row in enumerate(rows) if row[2] == "PST"]
        if not specs:
            return parse_model(d, ch, verbose)

        # Stock parse of stand-in rows: PST row -> Conv with its from/n/c2; probes appended read coarse channels.
        for s in specs:
            rows[s.i] = [s.row[0][0], s.n, "Conv", [s.c2, 1]]
        probes = [[s.coarse, 1, "Conv", [8, 1]] for s in specs]
        nb = len(d["backbone"])
        stand_in = {**d, "backbone": rows[:nb], "head": rows[nb:] + probes}
        capture = _Capture()
        LOGGER.addFilter(capture)
        try:
            model, _ = parse_model(stand_in, ch, verbose)
        finally:
            LOGGER.removeFilter(capture)
        layers = list(model)[: len(rows)]
        probe_layers = list(model)[len(rows) :]

        lines = {}
        for s, probe in zip(specs, probe_layers):
            convs = list(layers[s.i]) if isinstance(layers[s.i], nn.Sequential) else [layers[s.i]]
            args = [convs[0].conv.in_channels, probe.conv.in_channels, convs[0].conv.out_channels, len(convs)]
            args += list(s.extra)
            try:
                m = PST(*args)
            except ValueError as e:
                s.fail(f"{e} (scale {d.get('scale') or '-'})")
            m.np = sum(p.numel() for p in m.parameters())
            m.i, m.f, m.type = s.i, list(s.row[0]), f"{PST.__module__}.{PST.__name__}"
            layers[s.i] = m
            lines[s.i] = f"{s.i:>3}{m.f!s:>20}{len(convs):>3}{m.np:10.0f}  {m.type:<45}{args!s:<30}"
        capture.replay(LOGGER, lines, len(rows))
        save = sorted({x % m.i for m in layers for x in ([m.f] if isinstance(m.f, int) else m.f) if x != -1})
        return nn.Sequential(*layers), save

    return parse_model_with_pst


class _Capture(logging.Filter):
    """Hold back the stock parser's per-layer summary so PST rows can be rewritten before it is printed.

    Only records logged by the thread that parses are held: the filter sits on the process-wide logger, and models
    built at the same time in other threads (with or without PST rows) must log their own lines, unchanged.
    """

    ROW = re.compile(r"\s*(\d+)\s")

    def __init__(self):
        super().__init__()
        self.records = []
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.records.append(record)
        return False

    def replay(self, logger: logging.Logger, lines: dict[int, str], n_layers: int) -> None:
        """Re-emit held records: PST rows replaced by ``lines``, probe rows (index >= ``n_layers``) dropped."""
        for record in self.records:
            row = self.ROW.match(record.getMessage())
            i = int(row.group(1)) if row else -1
            if i >= n_layers:
                continue
            if i in lines:
                record.msg, record.args = lines[i], None
            logger.handle(record)
