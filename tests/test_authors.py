"""The PST authors' checkpoints (their fork of Ultralytics 8.3.105) load as pst_yolo models and compute their function.

The fixture in ``tests/data/authors`` (see its README) is a ``best.pt`` written by the authors' own trainer, with the
outputs their code computes on two real inputs. Every test here opens it through a user's entry point.

Tolerance (measured, float32 rounding): the converted model's outputs differ from theirs by at most 1.1e-4 of the
output's largest value for ``y`` and 1.8e-4 per PST layer (x2, 128x160; stock 8.4.190 also computes the YOLO12 area
attention in another order). In float64 the converted model lands on their float64 result: its distance to their
float32 output equals their own float32-vs-float64 distance to 1e-9.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import run  # tests/_cli.py

from pst_yolo import PST, set_topk
from pst_yolo.authors import AUTHORS_CLASSES, AuthorsPST, convert_authors_model
from pst_yolo.explain import explain_layer

DATA = Path(__file__).parent / "data" / "authors"
CKPT = DATA / "authors_yolo11n_pst_8.3.105.pt"
EXPECTED = DATA / "expected_outputs.pt"
RTOL_Y, RTOL_LAYER = 3e-4, 5e-4  # of the reference's max-abs; measured 1.1e-4 and 1.8e-4 (module docstring)
IMGSZ = 96
ROWS = (11, 14)


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(EXPECTED, weights_only=True)


@pytest.fixture(scope="module")
def model():
    from ultralytics import YOLO

    return YOLO(str(CKPT))


def raw_authors_state() -> dict:
    """The checkpoint's PST tensors as the authors named them (unpickled into the shells, not converted)."""
    from ultralytics.nn.tasks import temporary_modules

    with temporary_modules(attributes={k: f"{v.__module__}.{v.__qualname__}" for k, v in AUTHORS_CLASSES.items()}):
        ckpt = torch.load(CKPT, map_location="cpu", weights_only=False)
    layers = ckpt["model"].model
    assert all(isinstance(layers[i], AuthorsPST) for i in ROWS)
    return {i: layers[i].state_dict() for i in ROWS}


def test_fixture_is_the_authors_file():
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (CKPT, EXPECTED)}
    assert digests == {
        CKPT.name: "26221c6bf4212d2d90a336f1817a5b2c972479e5fab47a8a8248bd8e2de44941",
        EXPECTED.name: "901c134dcb2d4cdda126aa1894666f41960fd489d6da2a96d21f15a22e77c90e",
    }


def test_every_authors_tensor_lands_in_pst_yolo_layers(model):
    raw = raw_authors_state()
    for i in ROWS:
        layer = model.model.model[i]
        assert type(layer) is PST and (layer.i, layer.f) == (i, [-1, {11: 8, 14: 6}[i]])
        ours = layer.state_dict()
        heads = layer.m[0].attn.num_heads
        for key, value in raw[i].items():
            mapped = (key.replace("attnlayer_", "m.").replace(".attn.q.", ".attn.conv_q.")
                      .replace(".attn.kv.", ".attn.conv_kv.").replace(".attn.gate_conv1d.", ".attn.gate."))
            got = ours[mapped]
            if ".gate." in mapped:  # one gate shared by all heads -> the same gate in every head
                got = got.reshape(heads, *value.shape)
                assert all(torch.equal(g, value.float()) for g in got), key
            else:
                assert torch.equal(got, value.float()), key
        bns = [m for m in layer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all((bn.eps, bn.momentum) == (1e-3, 0.03) for bn in bns)  # Ultralytics' values, copied
        assert [m.attn.topk for m in layer.m] == [0]


def test_help_points_to_the_papers_weights(cli_env, tmp_path):
    text = run(["pst-yolo", "help"], tmp_path, cli_env)
    line = next(line for line in text.splitlines() if "model=AUTHORS.pt" in line)
    page = line.rsplit(" ", 1)[-1]  # the help names the docs page on the authors' weights; it must exist
    assert page == "docs/authors_weights.md" and (Path(__file__).parents[1] / page).is_file()


def test_conversion_is_logged_once_with_the_rows(cli_env, tmp_path):
    text = run([sys.executable, "-c", f"import pst_yolo; from ultralytics import YOLO; YOLO({str(CKPT)!r})"],
               tmp_path, cli_env)
    lines = [line for line in text.splitlines() if "PST authors' format" in line]
    assert len(lines) == 1 and "rows 11, 14" in lines[0] and CKPT.name in lines[0], text


def outputs(model, x, k):
    """Detect output and the outputs of each PST layer and its attention, at pst_topk=k."""
    net = model.model.eval()
    set_topk(net, k, verbose=False)
    got, hooks = {}, []
    for i in ROWS:
        hooks.append(net.model[i].register_forward_hook(lambda m, a, o, i=i: got.__setitem__(f"model.{i}", o)))
        hooks.append(net.model[i].m[0].attn.register_forward_hook(
            lambda m, a, o, i=i: got.__setitem__(f"model.{i}.attnlayer_0.attn", o)))
    try:
        with torch.no_grad():
            y = net(x.to(next(net.parameters()).dtype))[0]
    finally:
        for h in hooks:
            h.remove()
    return y, got


def rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", ["x1", "x2"])
@pytest.mark.parametrize("k, tag", [(0, "topk0"), (8, "topk8_nonoise")])
def test_outputs_equal_the_authors(model, expected, name, k, tag):
    y, layers = outputs(model, expected[name], k)
    assert rel(y, expected[f"{name}_{tag}_y"]) < RTOL_Y
    for key, ref in expected[f"{name}_{tag}_modules"].items():
        assert rel(layers[key], ref) < RTOL_LAYER, key
    if k:  # fine attention really changed the function (their fixture: up to hundreds of px)
        assert (y - expected[f"{name}_topk0_y"]).abs().max() > 1.0


@pytest.mark.parametrize("name", ["x1", "x2"])
def test_selected_tokens_and_scores_equal_the_authors(model, expected, name):
    """Top-8 coarse tokens per image, head and layer: the same indices in the same order, the same scores."""
    net = model.model.eval()
    set_topk(net, 8, verbose=False)
    inputs = {}
    hooks = [net.model[i].m[0].attn.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a)) for i in ROWS]
    with torch.no_grad():
        net(expected[name])
    for h in hooks:
        h.remove()
    for i in ROWS:
        key = f"model.{i}.attnlayer_0.attn"
        x, u = inputs[i]
        for b in range(x.shape[0]):
            out = explain_layer(net.model[i].m[0].attn, x[b : b + 1], u[b : b + 1])
            assert out["selected"].tolist() == expected[f"{name}_topk8_nonoise_indices"][key][b], (key, b)
            sim = expected[f"{name}_topk8_nonoise_global_sim"][key][b]
            assert rel(out["scores"].flatten(1), sim) < 1e-4, (key, b)


def test_float64_lands_on_the_authors_float64(expected):
    """In float64 the distance to their float32 output is exactly their own float32-vs-float64 distance."""
    from ultralytics import YOLO

    net = YOLO(str(CKPT)).model.double().eval()
    for name in ("x1", "x2"):
        for k, tag, meta in ((0, "topk0", "topk0"), (8, "topk8_nonoise", "topk8_nonoise")):
            set_topk(net, k, verbose=False)
            with torch.no_grad():
                y = net(expected[name].double())[0]
            theirs = expected["meta"][f"{name}_{meta}_y_fp32_vs_fp64_maxabs"]
            assert abs((y - expected[f"{name}_{tag}_y"].double()).abs().max().item() - theirs) < 1e-6, (name, k)


def test_inference_is_deterministic_where_theirs_is_not(model, expected):
    """Their Gumbel top-k gives two answers for x1 (the fixture's two calls); ours gives the noise-free one twice."""
    assert expected["x1_topk8_noise_call1_indices"] != expected["x1_topk8_noise_call2_indices"]
    a, _ = outputs(model, expected["x1"], 8)
    b, _ = outputs(model, expected["x1"], 8)
    assert torch.equal(a, b)


def test_conversion_works_from_shapes_not_a_table():
    """Other widths, depths and head counts convert (shells built from a pst_yolo PST renamed to their layout)."""
    for c1, c_up, c2, n, heads in ((96, 64, 128, 2, 2), (64, 64, 192, 3, 3), (512, 256, 256, 1, 2)):
        ref = PST(c1, c_up, c2, n, 2.0, 0.5, num_heads=heads).eval()
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
        for blk in ref.m:  # their gate is shared by all heads: make ours the same in every head before renaming
            g = blk.attn.gate
            g.weight.data = torch.randn(g.weight.shape[0] // heads, *g.weight.shape[1:]).repeat(heads, 1, 1, 1) / 8
            g.bias.data = torch.randn(g.weight.shape[0] // heads).repeat(heads)
        shell = to_authors_layout(ref)
        holder = torch.nn.Sequential(shell)
        assert convert_authors_model(holder) == [-1]
        x, u = torch.randn(2, c1, 12, 10), torch.randn(2, c_up, 6, 5)
        for k in (0, 4):
            set_topk(ref, k, verbose=False), set_topk(holder[0], k, verbose=False)
            with torch.no_grad():
                assert torch.allclose(holder[0].eval()([x, u]), ref([x, u]), atol=1e-5), (c1, c_up, c2, n, heads, k)


def to_authors_layout(pst: PST) -> torch.nn.Module:
    """A shell holding ``pst``'s modules under the authors' names (what unpickling their file produces)."""
    from pst_yolo.authors import AuthorsPSAttn, AuthorsPSAttnBlock

    shell = AuthorsPST()
    shell.cv1, shell.cvup, shell.cv2 = pst.cv1, pst.cvup, pst.cv2
    for j, blk in enumerate(pst.m):
        a, b = AuthorsPSAttn(), AuthorsPSAttnBlock()
        a.q, a.kv, a.proj, a.pe = blk.attn.conv_q, blk.attn.conv_kv, blk.attn.proj, blk.attn.pe
        hd = blk.attn.head_dim
        a.gate_conv1d = torch.nn.Conv1d(2 * hd, hd, 1)
        a.gate_conv1d.weight.data = blk.attn.gate.weight.data[:hd, :, :, 0].clone()
        a.gate_conv1d.bias.data = blk.attn.gate.bias.data[:hd].clone()
        a.num_heads, a.head_dim, a.topk, a.tau = blk.attn.num_heads, hd, 0, 1.0
        b.attn, b.mlp = a, blk.mlp
        setattr(shell, f"attnlayer_{j}", b)
    return shell


# ------------------------------------------------------------------------------------ every entry point, fresh process
@pytest.fixture(scope="module")
def context_images(test_root):
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset("shapes-context")  # generated on first use
    return sorted(Path(data["val"]).glob("*.jpg"))[:2]


def test_cli_val_predict_explain(cli_env, tmp_path, context_images):
    common = [f"model={CKPT}", f"imgsz={IMGSZ}", f"project={tmp_path}", "pst_topk=8"]
    text = run(["pst-yolo", "val", "data=shapes-context", "batch=32", "plots=False", *common], tmp_path, cli_env)
    assert "PST authors' format" in text and "pst_topk=8 (fine attention on, 2 layers)" in text
    assert "mAP50-95" in text
    text = run(["pst-yolo", "predict", f"source={context_images[0]}", "save=False", *common], tmp_path, cli_env)
    assert "pst_topk=8 (fine attention on, 2 layers)" in text and "96x96" in text
    text = run(["pst-yolo", "explain", f"source={context_images[0]}", *common], tmp_path, cli_env)
    assert "1 picture saved" in text, text
    assert list(tmp_path.rglob("*.jpg")) or list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("k", [0, 8])
def test_onnx_export_matches_pytorch(cli_env, tmp_path, context_images, k):
    import onnx

    from pst_yolo.export.verify import letterbox_images, onnx_outputs, torch_outputs

    ckpt = tmp_path / CKPT.name  # the export is written beside the checkpoint
    ckpt.write_bytes(CKPT.read_bytes())
    text = run(["pst-yolo", "export", f"model={ckpt}", "format=onnx", f"imgsz={IMGSZ}", f"pst_topk={k}"], tmp_path,
               cli_env)
    assert "PST authors' format" in text
    path = ckpt.with_suffix(".onnx")
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["pst_topk"] == str(k)
    x = letterbox_images(context_images, IMGSZ)
    diff = np.abs(onnx_outputs(path, x) - torch_outputs(str(CKPT), x, pst_topk=k)).max()
    assert diff <= 1e-3, diff


def test_restricted_loading_admits_the_authors_classes_and_nothing_else(cli_env, tmp_path):
    fork = tmp_path / "fork.pt"
    make_fork_checkpoint(fork)
    code = f"""
import pst_yolo
from ultralytics import YOLO
from ultralytics.utils import SAFE_LOAD
assert SAFE_LOAD
m = YOLO({str(CKPT)!r})
print("LOADED", sum(isinstance(x, pst_yolo.PST) for x in m.model.modules()))
try:
    YOLO({str(fork)!r})
except TypeError as e:
    print("REFUSED", e)
"""
    text = run([sys.executable, "-c", code], tmp_path, {**cli_env, "ULTRALYTICS_SAFE_LOAD": "1"})
    assert "LOADED 2" in text
    refused = next(line for line in text.splitlines() if line.startswith("REFUSED"))
    assert str(fork) in refused and "ultralytics.nn.modules.block.FancyFuse" in refused and "PSAttn" in refused


def make_fork_checkpoint(path: Path) -> None:
    """A checkpoint of 'another fork': a stock model holding a module class neither Ultralytics nor pst_yolo has."""
    import ultralytics.nn.modules.block as block
    from ultralytics import YOLO

    fancy = type("FancyFuse", (torch.nn.Module,), {"__module__": block.__name__})
    block.FancyFuse = fancy
    try:
        model = YOLO("yolo11n.yaml")
        model.model.model[-2].extra = fancy()
        model.save(path)
    finally:
        delattr(block, "FancyFuse")


def test_another_forks_checkpoint_fails_with_one_message(cli_env, tmp_path):
    fork = tmp_path / "fork.pt"
    make_fork_checkpoint(fork)
    out = subprocess.run(["pst-yolo", "val", f"model={fork}"], cwd=tmp_path, env=cli_env, capture_output=True,
                         text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    last = text.strip().splitlines()[-1]
    assert "UnknownClassesError" in last and str(fork) in last and "FancyFuse" in last and "PSAttn" in last, text


# ------------------------------------------------------------------------------------ saving and fine-tuning
def test_saved_model_is_pst_yolos_and_loads_without_the_plugin(model, tmp_path, cli_env):
    path = tmp_path / "converted.pt"
    set_topk(model.model, 8, verbose=False)  # saved with the model
    model.save(path)
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    assert "pst_yolo.nn.pst.PST" in names and not names & set(AUTHORS_CLASSES)
    code = f"""
import sys, torch
from ultralytics import YOLO
m = YOLO({str(path)!r})  # plain Ultralytics: unpickling imports pst_yolo by itself
print("PST", sum(type(x).__name__ == "PST" for x in m.model.modules()))
y = m.model.eval()(torch.load({str(EXPECTED)!r}, weights_only=True)["x1"])[0]
torch.save(y, {str(tmp_path / "y.pt")!r})
"""
    text = run([sys.executable, "-c", code], tmp_path, cli_env)
    assert "PST 2" in text and "PST authors' format" not in text  # nothing left to convert
    ref = outputs(model, torch.load(EXPECTED, weights_only=True)["x1"], 8)[0]
    assert rel(torch.load(tmp_path / "y.pt"), ref) < RTOL_Y  # pst_topk=8 was saved with it


def test_fine_tuning_starts_from_every_converted_tensor(model, tmp_path, context_images):
    """Any-K fine-tuning: the PST rows start as converted (not fresh), the gate trains, the result is pst_yolo's."""
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import DEFAULT_CFG_KEYS

    converted = {k: v.clone() for k, v in model.model.state_dict().items()}
    start = {}

    def keep_start(trainer):
        start.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    ft = YOLO(str(CKPT))
    ft.add_callback("on_train_start", keep_start)
    ft.train(data="shapes-context", epochs=1, imgsz=IMGSZ, batch=8, fraction=0.1, workers=0, plots=False,
             project=str(tmp_path), name="ft", pst_topk_train="0,4,8,16", val=False, amp=False)
    pst_keys = [k for k in converted if k.startswith(("model.11.", "model.14.")) and "num_batches" not in k]
    assert len(pst_keys) == 2 * 47  # every PST tensor of both rows (BatchNorm step counters aside)
    assert all(torch.equal(start[k].float(), converted[k].float()) for k in converted), "training did not start there"

    run_dir = tmp_path / "ft"
    last = YOLO(str(run_dir / "weights" / "last.pt")).model
    gates = [k for k in pst_keys if ".attn.gate." in k]
    assert gates and all(not torch.equal(last.state_dict()[k].float(), converted[k].float()) for k in gates)
    assert all(last.state_dict()[k].abs().sum() > 0 for k in gates)
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(run_dir / "weights" / "last.pt")))
    assert "pst_yolo.nn.pst.PST" in names and not names & set(AUTHORS_CLASSES)
    args = yaml.safe_load((run_dir / "args.yaml").read_text())
    assert set(args) <= set(DEFAULT_CFG_KEYS) | {"pst_topk", "pst_topk_train", "save_dir"}  # no 8.3.105 keys
    assert args["data"] == "shapes-context" and args["pst_topk_train"] == [0, 4, 8, 16]


def test_cli_train_from_the_authors_checkpoint(cli_env, tmp_path):
    text = run(["pst-yolo", "train", f"model={CKPT}", "data=shapes-context", f"imgsz={IMGSZ}", "epochs=1",
                "fraction=0.05", "batch=8", "workers=0", "plots=False", "val=False", "pst_topk_train=0,8",
                f"project={tmp_path}", "name=cli"], tmp_path, cli_env)
    assert "PST authors' format" in text and "112 into PST rows 11, 14" in text
    assert (tmp_path / "cli" / "weights" / "last.pt").is_file()


def save_in_authors_format(yolo, path: Path) -> None:
    """Save ``yolo`` with its PST layers as the authors' fork pickles them (their class paths and tensor names)."""
    import ultralytics.nn.modules.block as block

    net = yolo.model
    for i, layer in enumerate(net.model):
        if isinstance(layer, PST):
            shell = to_authors_layout(layer)
            shell.i, shell.f, shell.type = layer.i, layer.f, "ultralytics.nn.modules.block.PST"
            net.model[i] = shell
    shells = [AuthorsPST, *(c for c in AUTHORS_CLASSES.values() if c is not AuthorsPST)]
    saved = {c: (c.__module__, c.__qualname__) for c in shells}
    try:
        for path_name, cls in AUTHORS_CLASSES.items():
            cls.__module__, _, cls.__qualname__ = path_name.rpartition(".")
            setattr(block, cls.__qualname__, cls)
        torch.save({"model": net, "train_args": {}, "version": "8.3.105"}, path)
    finally:
        for cls, (module, name) in saved.items():
            cls.__module__, cls.__qualname__ = module, name
        for path_name in AUTHORS_CLASSES:
            if hasattr(block, path_name.rpartition(".")[2]):
                delattr(block, path_name.rpartition(".")[2])


def test_classification_layout_converts(tmp_path):
    """The authors' classification layout (PST in the backbone, fusing P4 with P5) loads through the same path."""
    from ultralytics import YOLO

    ref = YOLO("yolo11n-cls-pst.yaml")
    net = ref.model.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = net(x)
    want = want[0] if isinstance(want, tuple) else want
    path = tmp_path / "authors_cls.pt"
    save_in_authors_format(ref, path)
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    assert "ultralytics.nn.modules.block.PST" in names and "pst_yolo.nn.pst.PST" not in names
    loaded = YOLO(str(path)).model.eval()
    assert loaded.model[10].__class__ is PST and loaded.model[10].i == 10
    with torch.no_grad():
        got = loaded(x)
    assert torch.allclose(got[0] if isinstance(got, tuple) else got, want, atol=1e-5)
