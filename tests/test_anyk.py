"""Any-K training (``pst_topk_train``): K drawn per training step, shared by all layers; eval runs ``pst_topk``.

The K that runs is observed in the forward itself: the fine path's attention call gets ``4 K`` keys (the 2x2 patches
of K coarse tokens), so each PSTAttention's ``_attend`` is wrapped per instance to record the key count of its masked
(fine) call, and gradient hooks record what reaches the fine keys/values and the gate.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from _cli import run  # tests/_cli.py
from ultralytics import YOLO

from pst_yolo import PST, PSTAttention
from pst_yolo.topk import check_topk_train, get_topk_train, set_topk_train

KS = (0, 4, 8, 16)


class KProbe:
    """Records, per PSTAttention forward, the layer, its mode and the K its fine path ran (0: no fine call)."""

    def __init__(self, model: torch.nn.Module):
        self.calls: list[dict] = []  # one dict per forward: layer index, training, k, coarse tokens
        self.fine_grads: list[float] = []  # norms of gradients reaching the fine keys and values
        self.gate_grads: list[float] = []  # norms of gradients reaching the gate weights
        self.layers = [m for m in model.modules() if isinstance(m, PSTAttention)]
        for i, attn in enumerate(self.layers):
            attn.register_forward_pre_hook(self._start(i))
            attend = attn._attend  # the bound method; the wrapper is an instance attribute (this model only)

            def recording_attend(q, k, v, mask=None, _attend=attend):
                call = self.calls[-1]
                if mask is None:
                    call["coarse_tokens"] = k.shape[2]
                else:  # the fine call: 4 keys per selected coarse token
                    call["k"] = k.shape[2] // 4
                    if k.requires_grad:
                        for t in (k, v):
                            t.register_hook(lambda g: self.fine_grads.append(float(g.norm())))
                return _attend(q, k, v, mask)

            attn._attend = recording_attend
            if attn.gate.weight.requires_grad:  # a loaded checkpoint's parameters do not
                attn.gate.weight.register_hook(lambda g: self.gate_grads.append(float(g.norm())))

    def _start(self, i):
        def hook(module, args):
            self.calls.append({"layer": i, "training": module.training, "k": 0})

        return hook

    def steps(self) -> list[list[dict]]:
        """Training-mode forwards grouped by step (one forward of every layer per step)."""
        train = [c for c in self.calls if c["training"]]
        n = len(self.layers)
        return [train[i : i + n] for i in range(0, len(train), n)]


@pytest.fixture(scope="module")
def anyk_run(tmp_path_factory):
    """A tiny any-K training: yolo11n-pst, 1 epoch, 32 shapes images at imgsz 64, pst_topk_train=0,4,8,16."""
    import pst_yolo  # noqa: F401  (registers yolo11n-pst.yaml, data=shapes, pst_topk_train)

    project = tmp_path_factory.mktemp("anyk")
    seen = {}

    def probe(trainer):
        seen["probe"] = KProbe(trainer.model)

    def gates_after(trainer):
        seen["gates"] = [m.gate.weight.detach().clone() for m in trainer.model.modules() if isinstance(m, PSTAttention)]

    model = YOLO("yolo11n-pst.yaml")
    model.add_callback("on_train_start", probe)
    model.add_callback("on_train_end", gates_after)
    model.train(data="shapes", epochs=1, imgsz=64, batch=4, fraction=0.0625, workers=0, mosaic=0.0, warmup_epochs=0,
                optimizer="AdamW", lr0=0.002, val=False, plots=False, seed=3, pst_topk_train="0,4,8,16",
                project=str(project), name="run", exist_ok=True, verbose=False)
    return seen, project / "run"


def test_anyk_training_varies_k_per_step_shared_by_layers(anyk_run):
    seen, _ = anyk_run
    probe = seen["probe"]
    steps = probe.steps()
    assert len(steps) >= 8  # 32 images / batch 4
    drawn = []
    for step in steps:
        assert [c["layer"] for c in step] == sorted(c["layer"] for c in step)  # one forward of every layer
        k = max(c["k"] for c in step)  # the drawn K (layers with fewer coarse tokens clamp to all of them)
        assert all(c["k"] == min(k, c["coarse_tokens"]) for c in step), step  # one K shared by all layers
        drawn.append(k)
    assert set(drawn) <= set(KS)
    assert len(set(drawn)) >= 3, drawn  # K varied during training, 0 included in the set it came from
    assert 0 in drawn and any(k > 0 for k in drawn), drawn


def test_anyk_training_trains_fine_path_and_gate(anyk_run):
    seen, _ = anyk_run
    probe = seen["probe"]
    assert probe.fine_grads and max(probe.fine_grads) > 0  # gradients reached the fine keys/values
    assert probe.gate_grads and max(probe.gate_grads) > 0  # and the gate
    assert all(w.abs().max() > 0 for w in seen["gates"])  # the gates left their zero initialisation


def test_anyk_run_records_argument_and_saves_pst_topk(anyk_run):
    _, run = anyk_run
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["pst_topk_train"] == list(KS)  # a plain list in args.yaml (resume reads it back)
    assert args["pst_topk"] == 0  # the inference value saved with the model: the model's own (0)
    model = YOLO(run / "weights" / "last.pt").model
    layers = [m for m in model.modules() if isinstance(m, PSTAttention)]
    assert {m.topk for m in layers} == {0}
    probe = KProbe(model)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert [c["k"] for c in probe.calls] == [0] * len(layers)  # eval runs pst_topk, not a draw


def test_eval_runs_topk_and_train_draws_reproducibly():
    torch.manual_seed(0)
    x, u = torch.randn(1, 64, 16, 16), torch.randn(1, 64, 8, 8)

    def ks_of(seed, steps=24, training=True):
        attn = PSTAttention(64, topk=4)
        set_topk_train(attn, KS, seed=seed, verbose=False)
        probe = KProbe(attn)
        attn.train(training)
        for _ in range(steps):
            attn(x, u)
        return [c["k"] for c in probe.calls]

    a, b, c = ks_of(0), ks_of(0), ks_of(1)
    assert a == b  # a function of the seed and the step only: reproducible, and the same in every layer
    assert a != c
    assert set(a) == set(KS)
    assert ks_of(0, training=False) == [4] * 24  # eval mode: pst_topk, whatever the training set


def test_set_topk_train_off_and_get():
    pst = PST(128, 64, 64, n=2)
    assert get_topk_train(pst) == ()
    assert set_topk_train(pst, [16, 0, 8], verbose=False) == 2
    assert get_topk_train(pst) == (0, 8, 16)
    set_topk_train(pst, None, verbose=False)
    assert get_topk_train(pst) == ()
    assert get_topk_train(torch.nn.Conv2d(1, 1, 1)) is None


@pytest.mark.parametrize("good, expected", [("0,4,8,16", KS), ((16, 4), (4, 16)), ([8], (8,)), (0, (0,)),
                                            ("[0, 8]", (0, 8))])
def test_check_topk_train_accepts(good, expected):
    assert check_topk_train(good) == expected


@pytest.mark.parametrize("bad", [-1, [0, -4], "0,a", [], "", 2.5, [True], None, {"k": 8}])
def test_check_topk_train_rejects(bad):
    with pytest.raises(ValueError, match=r"pst_topk_train must be a non-negative integer or a list of them"):
        check_topk_train(bad)


def test_bad_pst_topk_train_stops_training_before_it_starts(tmp_path):
    import pst_yolo  # noqa: F401

    with pytest.raises(ValueError, match=r"pst_topk_train must be .* got \(0, -4\)"):
        YOLO("yolo11n-pst.yaml").train(data="shapes", epochs=1, imgsz=64, pst_topk_train=(0, -4),
                                       project=str(tmp_path), name="bad")
    assert not (tmp_path / "bad").exists()


def test_cli_bad_pst_topk_train_is_one_line(cli_env, tmp_path):
    out = run(["pst-yolo", "train", "model=yolo11n-pst.yaml", "data=shapes", "epochs=1", "pst_topk_train=0,4,-8",
               f"project={tmp_path}", "name=bad"], tmp_path, cli_env, ok=False)
    assert [ln for ln in out.splitlines() if ln.strip()] == [
        "pst-yolo: pst_topk_train must be a non-negative integer or a list of them (e.g. 0,4,8,16), got (0, 4, -8)"
    ]
    assert not (tmp_path / "bad").exists()


def test_stock_model_ignores_pst_topk_train():
    from types import SimpleNamespace

    from pst_yolo.hooks.topk import run_topk_train

    stock = YOLO("yolo11n.yaml").model
    assert run_topk_train(SimpleNamespace(pst_topk_train=[0, 8], model="yolo11n.yaml", seed=0), stock) is None
    pst = YOLO("yolo11n-pst.yaml").model
    assert run_topk_train(SimpleNamespace(pst_topk_train=[0, 8], model="m", seed=5), pst) == (0, 8)
    assert {(m.topk_train, m.topk_train_seed) for m in pst.modules() if isinstance(m, PSTAttention)} == {((0, 8), 5)}
    assert run_topk_train(SimpleNamespace(model="m", seed=5), pst) is None  # omitted: the model keeps its setting
