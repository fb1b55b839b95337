"""``pst_yolo.explain`` / ``pst-yolo explain``: the tensors are the layer's, the geometry is predict's, nothing stays.

- explain_layer recomputes a PST attention call exactly (its output equals the module's), selects what the naive
  reference selects, and its query attention is the explicit softmax row.
- Geometry: a model whose PST selection is known (a bright patch wins top-1 by construction) is explained through
  Ultralytics' letterbox; the selected token is reported and drawn at exactly the patch's pixels.
- A rectangular batch of 2 gives what each image gives alone, and saves one PNG per image.
- A normal predict is unchanged by an explain run in between: same boxes, no hooks or callbacks left, same predictor.
- The command works from another directory on a saved checkpoint and fails clearly on bad input.
"""

import cv2
import numpy as np
import pytest
import torch
from _cli import run
from nn.reference import conv_bn, pst_attention_ref, randomize_  # tests/nn: the naive reference
from ultralytics import YOLO

from pst_yolo import PSTAttention, explain, get_topk
from pst_yolo.explain import draw_selection, explain_layer

GEOMETRY_YAML = """\
nc: 1
backbone:
  - [-1, 1, nn.AvgPool2d, [8, 8]] # 0 P3/8: mean colour of each 8x8 input block
  - [-1, 1, nn.AvgPool2d, [2, 2]] # 1 P4/16
head:
  - [[0, 1], 1, PST, [64, 2, 0.5]] # 2 fine P3, coarse P4: one block, one head of 32 channels
  - [[2], 1, Detect, [nc]] # 3
"""


# ---------------------------------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("topk", [0, 3, 40])  # 40 > the 35 coarse tokens: clamped
def test_explain_layer_matches_module_and_reference(topk):
    attn = PSTAttention(64, topk=topk)
    with torch.no_grad():
        randomize_(attn, seed=1)
    attn.eval()
    x, u = torch.randn(1, 64, 9, 13), torch.randn(1, 64, 5, 7)  # odd fine map: 2x2 patches cut at the border
    queries = torch.tensor([0, 5 * 13 + 7, 9 * 13 - 1])
    out = explain_layer(attn, x, u, queries)
    with torch.no_grad():
        torch.testing.assert_close(out["output"], attn(x, u), rtol=1e-5, atol=1e-5)
    _, ref_selected = pst_attention_ref(attn, x, u)
    k = min(topk, 35)
    assert out["selected"].shape == (2, k)
    for h in range(2):
        assert set(out["selected"][h].tolist()) == set(ref_selected.get((0, h), ()))
    # query attention: the explicit softmax row of each chosen query over the 35 coarse tokens
    q = conv_bn(attn.conv_q, x.double()).view(2, 32, 117)
    kc = conv_bn(attn.conv_kv, u.double()).view(2, 64, 35)[:, :32]
    rows = torch.softmax(torch.einsum("hdq,hdm->hqm", q[:, :, queries], kc) / 32**0.5, -1)
    torch.testing.assert_close(out["attention"].double().view(2, 3, 35), rows, rtol=1e-4, atol=1e-6)
    if topk:
        assert out["gate"].shape == (2, 9, 13)
        assert ((out["gate"] > 0) & (out["gate"] < 1)).all()
        assert out["gate"].std() > 0  # randomized gate weights: a real per-position map
    else:
        assert out["gate"] is None


# ---------------------------------------------------------------------------------------------------- geometry
def geometry_model(tmp_path) -> YOLO:
    """A model whose PST layer selects the brightest coarse token (stride 16) as its top-1, by construction.

    ``cv1``/``cvup`` pass the mean brightness into channel 0, every query is the constant e0 and every key is the
    token's brightness on axis 0, so the selection score ``s_j = mean_i q_i · k_j / √d`` is the brightness of token j.
    """
    cfg = tmp_path / "geometry-pst.yaml"
    cfg.write_text(GEOMETRY_YAML)
    model = YOLO(str(cfg))
    pst = model.model.model[2]
    attn = pst.m[0].attn
    with torch.no_grad():
        for conv in (pst.cv1, pst.cvup):
            conv.conv.weight.zero_()
            conv.conv.weight[0, :, 0, 0] = 1 / 3  # channel 0 = mean of RGB
        attn.conv_q.conv.weight.zero_()
        attn.conv_q.bn.bias.zero_()
        attn.conv_q.bn.bias[0] = 1.0  # q_i = e0 for every query
        attn.conv_kv.conv.weight.zero_()
        attn.conv_kv.conv.weight[0, 0, 0, 0] = 1.0  # k_j[0] = brightness of token j
    return model


def test_bright_patch_is_selected_and_drawn_at_its_pixels(tmp_path):
    # 160x100 image, letterboxed square to 128x128 (rect=False): gain 0.8, 24 rows of padding above and below.
    # Coarse token (4, 5) at stride 16 covers input x 80..96, y 64..80, i.e. image x 100..120, y (64-24)/0.8 = 50..70.
    image = np.zeros((100, 160, 3), np.uint8)
    image[50:70, 100:120] = 255
    exp = explain(geometry_model(tmp_path), image, pst_topk=1, imgsz=128, rect=False, points=[[110, 60]], verbose=False)
    assert len(exp) == 1
    exp = exp[0]
    assert exp.input_shape == (128, 128)
    (layer,) = exp.layers
    assert layer.label == "P3 fusion (row 2, block 1/1)" and layer.stride == (8, 8) and layer.fine_hw == (16, 16)
    assert layer.topk == 1
    assert layer.selected.tolist() == [[[4, 5]]]
    assert layer.fine_patches.tolist() == [[[[8, 10], [8, 11], [9, 10], [9, 11]]]]
    np.testing.assert_allclose(layer.selected_boxes, [[[100, 50, 120, 70]]], atol=1e-9)
    assert layer.max_error < 1e-4
    # (110, 60) -> input (88 + 0, 48 + 24) = (88, 72): fine token row 9, column 11
    assert layer.queries.tolist() == [[9, 11]]

    rgb = exp.image[..., ::-1]
    drawn = draw_selection(rgb, layer.selected_boxes)
    changed = np.argwhere((drawn != rgb).any(2))
    assert changed.min(0).tolist() == [50, 100] and changed.max(0).tolist() == [69, 119]
    assert (drawn[50:70, 100:120] != rgb[50:70, 100:120]).any(2).all()

    one_hot = np.zeros((8, 8), np.float32)
    one_hot[4, 5] = 1.0
    heat = exp.to_image(one_hot, (16, 16))  # a coarse map placed on the image: exactly the token's pixels
    assert heat.shape == (100, 160)
    assert np.argwhere(heat > 0).min(0).tolist() == [50, 100] and np.argwhere(heat > 0).max(0).tolist() == [69, 119]


# ---------------------------------------------------------------------------------------------------- batch, rect
def test_rect_batch2_equals_single_images_and_saves_pngs(tmp_path):
    torch.manual_seed(0)  # the same untrained weights whatever ran before in this process
    model = YOLO("yolo11n-pst.yaml")
    rng = np.random.default_rng(0)
    images = [np.full((48, 96, 3), 20, np.uint8), rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)]  # dark, noise
    # 96x48 at imgsz 96 (rect): gain 1, padded to 96x64, 8 rows above: (10, 10) -> input (10, 18), (90, 40) -> (90, 48)
    args = dict(pst_topk=3, imgsz=96, points=[[10, 10], [90, 40]], verbose=False, project=str(tmp_path))
    batch = explain(model, images, batch=2, save=True, name="batch", **args)
    single = [explain(model, im, name="single", **args)[0] for im in images]
    assert [e.save_path.name for e in batch] == ["image0.png", "image1.png"]
    assert all(e.save_path.parent == tmp_path / "batch" for e in batch)
    for e in batch:
        png = cv2.imread(str(e.save_path))
        assert png is not None and png.shape[0] > 200 and png.shape[1] > 600
    for b, s in zip(batch, single):
        assert b.input_shape == s.input_shape == (64, 96)
        assert [layer.label for layer in b.layers] == ["P4 fusion (row 13, block 1/1)", "P3 fusion (row 16, block 1/1)"]
        assert b.layers[1].queries.tolist() == [[2, 1], [6, 11]]  # stride 8
        assert b.layers[0].queries.tolist() == [[1, 0], [3, 5]]  # stride 16
        for lb, ls in zip(b.layers, s.layers):
            assert lb.max_error < 1e-4 and lb.topk == 3
            assert lb.selected.tolist() == ls.selected.tolist()
            np.testing.assert_allclose(lb.gate, ls.gate, atol=1e-5)
            np.testing.assert_allclose(lb.attention, ls.attention, atol=1e-5)
            # relative to the layer's largest score: an untrained layer has scores near 0 (1e-20) whose own relative
            # rounding between a batch of 2 and of 1 is larger than 1e-4
            np.testing.assert_allclose(lb.scores, ls.scores, rtol=1e-4, atol=1e-6 * np.abs(ls.scores).max())
            assert lb.gate.shape == (lb.selected.shape[0], *lb.fine_hw)
        torch.testing.assert_close(b.result.boxes.data, s.result.boxes.data, atol=1e-3, rtol=1e-4)
    for layer in range(2):  # the two images are not mixed up: their selection scores differ
        assert not np.allclose(batch[0].layers[layer].scores, batch[1].layers[layer].scores, rtol=1e-2, atol=0)


# ---------------------------------------------------------------------------------------------------- predict unchanged
def hooks_left(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_normal_predict_is_unchanged(tmp_path):
    model = YOLO("yolo11n-pst.yaml")
    image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    args = dict(imgsz=64, conf=1e-6, max_det=20, verbose=False)
    before = model.predict(image, pst_topk=2, **args)[0].boxes.data.clone()
    predictor, callbacks = model.predictor, {k: list(v) for k, v in model.callbacks.items()}
    hooks = hooks_left(model.model), hooks_left(predictor.model)
    exp = explain(model, image, pst_topk=2, project=str(tmp_path), **args)[0]
    torch.testing.assert_close(exp.result.boxes.data, before, rtol=0, atol=0)  # explain shows what predict does
    assert model.predictor is predictor  # the caller's predictor is back, untouched
    assert {k: list(v) for k, v in model.callbacks.items()} == callbacks
    assert (hooks_left(model.model), hooks_left(predictor.model)) == hooks == (0, 0)
    assert get_topk(model.model) == 0  # pst_topk=2 applied only for the runs
    after = model.predict(image, pst_topk=2, **args)[0].boxes.data
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert len(before) > 0


# ---------------------------------------------------------------------------------------------------- errors, command
def test_bad_input_fails_clearly():
    with pytest.raises(ValueError, match="has none"):
        explain("yolo11n.yaml", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"points must be image pixels \[\[x, y\]"):
        explain("yolo11n-pst.yaml", np.zeros((32, 32, 3), np.uint8), points=[1, 2, 3])
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        explain("yolo11n-pst.yaml", np.zeros((32, 32, 3), np.uint8), points=[[40, 5]], imgsz=32, verbose=False)


def test_command_on_a_checkpoint_from_another_directory(tmp_path, cli_env):
    ckpt = tmp_path / "ckpt" / "model.pt"
    ckpt.parent.mkdir()
    YOLO("yolo11n-pst.yaml").save(ckpt)
    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(2)
    cv2.imwrite(str(src / "a.jpg"), rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(src / "b.png"), rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    video = cv2.VideoWriter(str(src / "c.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(2):
        video.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    video.release()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    cmd = ["pst-yolo", "explain", f"model={ckpt}", f"source={src}", "pst_topk=4"]
    out = run([*cmd, "imgsz=64", f"project={tmp_path / 'runs'}", "name=ex", "conf=0.001"], cwd, cli_env)
    saved = sorted(p.name for p in (tmp_path / "runs" / "ex").iterdir())
    assert saved == ["a.png", "b.png", "c_1.png", "c_2.png"], out
    assert "4 pictures saved to" in out
    err = run(["pst-yolo", "explain", f"source={src}"], cwd, cli_env, ok=False)
    assert "model= is required" in err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    err = run([*cmd[:3], f"source={bad}", "imgsz=64", f"project={tmp_path / 'runs'}", "name=bad"], cwd, cli_env,
              ok=False)
    assert err.strip().splitlines()[-1].startswith(f"pst-yolo explain: no image of source={bad} could be read"), err
    assert not list((tmp_path / "runs").glob("bad*/*.png"))
