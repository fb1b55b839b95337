"""Every hook, and the Ultralytics behaviour it relies on.

Each hook exists because stock Ultralytics behaves in a particular way (it copies a model, looks a function up at call
time, rejects an unknown key, ...). These tests check that behaviour on the *original* functions (``__wrapped__``), so
a release that changes it fails here by name, not somewhere downstream; tests/test_topk_matrix.py checks the effect
of the hooks together from the user's entry points.
"""

import inspect
import os
import threading
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO
from ultralytics.cfg import get_cfg
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT

import pst_yolo
from pst_yolo import get_topk
from pst_yolo.hooks import _common

HOOKS = {h.name: h for h in pst_yolo.hooks.HOOKS}  # the package's table of its hook surface
HOOKED = {name: h.module for name, h in HOOKS.items() if name in _common.INSTALLED}  # class- or module-level
HOOKED_PER_RUN = {name: h.module for name, h in HOOKS.items() if name in _common.PER_RUN}  # on single objects


def test_the_hook_table_is_what_is_installed():
    """The package states its hook surface (pst_yolo.hooks.HOOKS); exactly those names are wrapped, each row says
    why in one line, and the table renders."""
    assert pst_yolo.hooks.installed() == set(HOOKS) and len(HOOKS) == len(pst_yolo.hooks.HOOKS)
    assert set(HOOKED) | set(HOOKED_PER_RUN) == set(HOOKS) and not set(HOOKED) & set(HOOKED_PER_RUN)
    for h in pst_yolo.hooks.HOOKS:
        assert h.why and "\n" not in h.why and isinstance(h.essential, bool), h
        assert f"`{h.name}`" in pst_yolo.hooks.hook_table()
    layout = (Path(__file__).resolve().parents[1] / "docs" / "layout.md").read_text(encoding="utf-8")
    assert pst_yolo.hooks.hook_table() in layout  # the docs' copy is the package's table


def hooked(name: str):
    """The object now at ``name`` (module attribute or class attribute)."""
    owner = _common.INSTALLED[name]
    fn = inspect.getattr_static(owner, name.rsplit(".", 1)[1])
    return fn.__func__ if isinstance(fn, classmethod) else fn


def test_exactly_the_documented_hooks_are_installed():
    assert set(_common.INSTALLED) == set(HOOKED)
    for name, module in HOOKED.items():
        fn = hooked(name)
        assert getattr(fn, _common.HOOK, False), name
        assert fn.__code__.co_filename.endswith(os.path.join("hooks", f"{module}.py")), name  # wraps() keeps names
        doc = inspect.getdoc(getattr(pst_yolo.hooks, module))  # the module docstring says what it hooks and why
        assert name.rsplit(".", 1)[1] in doc, (name, module)


def test_per_run_hooks_are_documented_and_change_one_object_only():
    """``pred_to_json`` is wrapped on the validator of a pst_yolo COCO run, never on its class or other validators."""
    from ultralytics.models.yolo.detect import DetectionValidator

    from pst_yolo.hooks.coco import record_im_file

    assert set(_common.PER_RUN) == set(HOOKED_PER_RUN)
    for name, module in HOOKED_PER_RUN.items():
        owner, method = _common.PER_RUN[name], name.rsplit(".", 1)[1]
        assert not getattr(inspect.getattr_static(owner, method), _common.HOOK, False), name  # the class: stock
        assert method in inspect.getdoc(getattr(pst_yolo.hooks, module)), (name, module)
    stock, ours = DetectionValidator(), DetectionValidator()
    record_im_file(ours)
    record_im_file(ours)  # idempotent: wrapped once
    assert "pred_to_json" not in vars(stock) and "pred_to_json" in vars(ours)
    assert vars(ours)["pred_to_json"].__code__.co_filename.endswith(os.path.join("hooks", "coco.py"))
    assert DetectionValidator.pred_to_json is _common.PER_RUN[next(iter(HOOKED_PER_RUN))].pred_to_json
    ours.class_map, pbatch = list(range(1, 81)), {"im_file": "/d/cam1/0001.jpg"}
    for v in (stock, ours):
        v.jdict = []
        predn = {"bboxes": torch.tensor([[1.0, 2.0, 5.0, 8.0]]), "conf": torch.tensor([0.5]), "cls": torch.tensor([0])}
        v.class_map = ours.class_map
        v.pred_to_json(predn, pbatch)
    assert ours.jdict == [{**stock.jdict[0], "im_file": "/d/cam1/0001.jpg"}]
    assert stock.jdict == [{"image_id": 1, "file_name": "0001.jpg", "category_id": 1, "bbox": [1.0, 2.0, 4.0, 6.0],
                            "score": 0.5}]


def test_stock_defaults_are_untouched():
    """pst_topk is an accepted argument, not a default: stock configurations have no such key."""
    assert "pst_topk" not in DEFAULT_CFG_DICT and not hasattr(DEFAULT_CFG, "pst_topk")
    assert "pst_topk" not in vars(get_cfg())
    assert get_cfg(overrides={"pst_topk": 8}).pst_topk == 8


# ---------------------------------------------------------------------------------------- what the hooks rely on
def test_stock_key_check_rejects_pst_topk_and_is_looked_up_at_call_time():
    import ultralytics.cfg as cfg

    with pytest.raises(SyntaxError, match="'pst_topk' is not a valid YOLO argument"):
        cfg.check_dict_alignment.__wrapped__(dict(DEFAULT_CFG_DICT), {"pst_topk": 8})
    # get_cfg and the CLI entrypoint look the name up in the module at call time: a function put there is the one run
    class Reached(Exception):
        pass

    def spy(base, custom, *args, **kwargs):
        raise Reached(sorted(custom))

    original = cfg.check_dict_alignment
    try:
        cfg.check_dict_alignment = spy
        with pytest.raises(Reached, match="imgsz"):
            get_cfg(overrides={"imgsz": 64})
        with pytest.raises(Reached, match="pst_topk"):
            cfg.entrypoint("val model=yolo11n-pst.yaml pst_topk=8")
    finally:
        cfg.check_dict_alignment = original
    with pytest.raises(ValueError, match="pst_topk must be a non-negative integer"):
        get_cfg(overrides={"pst_topk": -1})
    with pytest.raises(SyntaxError):  # other dictionaries (settings, solutions) keep rejecting it
        cfg.check_dict_alignment({"runs_dir": ""}, {"pst_topk": 8})


def test_stock_predictor_runs_a_copy_and_sets_up_the_source_every_run():
    """Why the predictor hooks exist: its model is a deep copy, and setup_source is its per-run first step."""
    from ultralytics.engine.predictor import BasePredictor
    from ultralytics.models.yolo.detect import DetectionPredictor

    model = YOLO("yolo11n-pst.yaml")
    predictor = DetectionPredictor(overrides={"imgsz": 64, "verbose": False, "save": False})
    BasePredictor.setup_model.__wrapped__(predictor, model.model, verbose=False)
    assert predictor.model.model is not model.model
    calls = []
    original = BasePredictor.setup_source
    try:
        BasePredictor.setup_source = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
        for _ in range(2):
            predictor(torch.zeros(1, 3, 64, 64))
    finally:
        BasePredictor.setup_source = original
    assert len(calls) == 2


def test_stock_validator_and_exporter_run_copies():
    """Standalone validation and export never run the caller's module: the value is applied to their copies."""
    from ultralytics.engine.validator import BaseValidator

    model = YOLO("yolo11n-pst.yaml").model
    copy = BaseValidator.get_model.__wrapped__(object.__new__(BaseValidator), model)
    assert copy is not model and isinstance(copy, type(model))
    from ultralytics.engine.exporter import Exporter

    class Reached(Exception):
        pass

    seen = {}

    def on_export_start(exporter):  # stops the export where the plugin's own callback records pst_topk
        seen.update(model=exporter.model, metadata=dict(exporter.metadata))
        raise Reached

    exporter = Exporter(overrides={"format": "onnx", "imgsz": 64, "device": "cpu"})
    exporter.add_callback("on_export_start", on_export_start)
    with pytest.raises(Reached):
        Exporter.__call__.__wrapped__(exporter, model)
    assert seen["model"] is not model and isinstance(seen["model"], type(model))  # it exports a copy
    assert "stride" in seen["metadata"] and "imgsz" in seen["metadata"]  # the metadata exists when the callback runs


def test_stock_trainer_copies_the_ema_after_setup_model(monkeypatch):
    """setup_model (where the run's pst_topk is applied) runs before the EMA copy is made, which copies its value."""
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.models.yolo.detect import DetectionTrainer

    class Reached(Exception):
        pass

    order = []
    setup = DetectionTrainer.setup_model
    monkeypatch.setattr(DetectionTrainer, "setup_model", lambda self: (order.append("setup_model"), setup(self))[1])

    def ema(model, *args, **kwargs):
        order.append(("ema", get_topk(model)))
        raise Reached

    monkeypatch.setattr(trainer_module, "ModelEMA", ema)
    trainer = DetectionTrainer(overrides=dict(model="yolo11n-pst.yaml", data="shapes", imgsz=32, epochs=1,
                                              workers=0, pst_topk=8, plots=False, val=False, verbose=False))
    with pytest.raises(Reached):
        trainer._setup_train()
    assert order == ["setup_model", ("ema", 8)]


def test_a_k_above_the_coarse_tokens_is_said_once_by_the_run_not_by_the_flop_counter(tmp_path, cli_env):
    """The FLOP counter runs the model itself on stride-sized proxies where any K is clamped: nothing is said there
    (no hook needed); a validation that applies such a K says once which rows clamp at its image size."""
    import subprocess
    import sys

    code = ("import pst_yolo; from ultralytics import YOLO\n"
            "m = YOLO('yolo11n-pst.yaml'); pst_yolo.set_topk(m, 100, verbose=False); m.info()\n"
            "print('INFO DONE', flush=True)\n"
            "for _ in range(2): m.predict(__import__('numpy').zeros((64, 64, 3), 'uint8'), imgsz=64, pst_topk=100, "
            "verbose=False)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    before, after = text.split("INFO DONE")
    assert "coarse tokens" not in before and "exceeds" not in before  # model.info() counted FLOPs silently
    said = [line for line in after.splitlines() if "exceeds the coarse tokens" in line]
    assert len(said) == 1 and "imgsz 64x64" in said[0] and "row 13: 4" in said[0] and "row 16: 16" in said[0], after

def test_stock_loader_gives_a_bare_oserror_for_a_cut_file(tmp_path):
    """Why torch_safe_load is wrapped: a file cut short (not at a zip boundary) fails without its name."""
    from ultralytics.nn import tasks

    from pst_yolo.hooks.safe_load import DamagedCheckpointError

    path = tmp_path / "cut.pt"
    torch.save({"model": YOLO("yolo11n-pst.yaml").model, "train_args": {}}, path)
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(OSError) as stock:
        tasks.torch_safe_load.__wrapped__(str(path))
    assert str(path) not in str(stock.value)
    with pytest.raises(DamagedCheckpointError, match=r"cut\.pt' \(20,000 bytes\) cannot be read: the file is trunc"):
        YOLO(path)


def test_check_yaml_and_dataset_check_resolve_through_check_file(tmp_path, monkeypatch):
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.checks import check_yaml

    monkeypatch.chdir(tmp_path)
    assert os.path.basename(check_yaml("yolo11-pst.yaml")) == "yolo11-pst.yaml"
    assert os.path.basename(check_det_dataset("shapes")["yaml_file"]) == "shapes.yaml"


# ------------------------------------------------------------------------------------------------ thread safety
def test_models_built_in_two_threads_keep_their_own_summaries(caplog):
    """The summary rewrite only holds back the parsing thread's records: a stock model built at the same time logs
    its own lines, and each PST model's summary has its PST rows."""
    import logging

    from ultralytics.utils import LOGGER

    records, lock = [], threading.Lock()

    class Handler(logging.Handler):
        def emit(self, record):
            with lock:
                records.append((record.thread, record.getMessage()))

    handler = Handler()
    LOGGER.addHandler(handler)
    threads = {}
    try:
        def build(cfg):
            threads[cfg] = threading.get_ident()
            YOLO(cfg, verbose=True)

        workers = [threading.Thread(target=build, args=(c,)) for c in ("yolo11n-pst.yaml", "yolo11n.yaml")] * 1
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        LOGGER.removeHandler(handler)
    pst = [m for t, m in records if t == threads["yolo11n-pst.yaml"]]
    stock = [m for t, m in records if t == threads["yolo11n.yaml"]]
    assert sum("pst_yolo.nn.pst.PST" in m for m in pst) == 2
    assert not any("pst_yolo" in m for m in stock)
    assert sum("C3k2" in m for m in stock) == 8 and sum("C3k2" in m for m in pst) == 6  # two replaced by PST
