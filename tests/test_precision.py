"""Selection under reduced precision: scores accumulate in fp32 from the q/k the layer computed.

On a trained checkpoint's real activations (the authors' fixture, tests/data/authors, its two reference inputs), each
PST layer runs under CPU autocast fp16 and bf16 and as a ``.half()`` module. The scores it ranks must be the fp32
scores of the q/k it computed in that precision, and every selected coarse token that differs from the fp32 run's
must be one whose fp32 8th/9th score margin is below what that precision's q/k moved the scores by.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pst_yolo import set_topk

DATA = Path(__file__).parent / "data" / "authors"
K = 8


@pytest.fixture(scope="module")
def layers():
    """[(attention module, its fp32 inputs (x, u))] for both PST layers and both reference inputs."""
    from ultralytics import YOLO

    net = YOLO(str(DATA / "authors_yolo11n_pst_8.3.105.pt")).model.float().eval()
    set_topk(net, K, verbose=False)
    attns = [m for m in net.modules() if type(m).__name__ == "PSTAttention"]
    expected = torch.load(DATA / "expected_outputs.pt", weights_only=True)
    out = []
    for name in ("x1", "x2"):
        seen = {}
        hooks = [a.register_forward_pre_hook(lambda m, a, i=i, seen=seen: seen.__setitem__(i, a))
                 for i, a in enumerate(attns)]
        with torch.no_grad():
            net(expected[name])
        for h in hooks:
            h.remove()
        out += [(attns[i], seen[i]) for i in range(len(attns))]
    return out


def run(attn, x, u, mode):
    """Run ``attn`` in ``mode``; return (ranked scores, selected indices, its q, its coarse k) as fp32 tensors."""
    got = {}
    real_topk = torch.Tensor.topk

    def topk(t, *args, **kwargs):
        got["scores"] = t.detach().float()
        result = real_topk(t, *args, **kwargs)
        got["idx"] = result.indices
        return result

    m = copy.deepcopy(attn)
    if mode == "half":
        m, x, u = m.half(), x.half(), u.half()
    hq = m.conv_q.register_forward_hook(lambda mod, a, o: got.__setitem__("q", o.detach().float()))
    hk = m.conv_kv.register_forward_hook(lambda mod, a, o: None if "kv" in got else got.update(kv=o.detach().float()))
    torch.Tensor.topk = topk
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16 if mode == "fp16" else torch.bfloat16,
                                             enabled=mode in ("fp16", "bf16")):
            m(x, u)
    finally:
        torch.Tensor.topk = real_topk
        hq.remove(), hk.remove()
    B, C, H, W = got["q"].shape
    nh, hd = m.num_heads, m.head_dim
    q = got["q"].permute(0, 2, 3, 1).reshape(B, H * W, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
    Hc, Wc = got["kv"].shape[2:]
    k = got["kv"].permute(0, 2, 3, 1).reshape(B, Hc * Wc, nh, 2 * hd).transpose(1, 2)[..., :hd]  # (B, nh, M, hd)
    M = Hc * Wc
    return got["scores"][..., :M], got["idx"], q, k


def fp32_scores(q, k, scale):
    return (q.double().mean(2, keepdim=True) @ k.double().transpose(2, 3)).squeeze(2) * scale  # (B, nh, M)


@pytest.mark.parametrize("mode", ["fp16", "bf16", "half"])
def test_selection_changes_only_where_precision_must_change_it(layers, mode):
    changed = total = 0
    for attn, (x, u) in layers:
        ref_scores, ref_idx, q32, k32 = run(attn, x, u, "fp32")
        scores, idx, q, k = run(attn, x, u, mode)
        # 1. the ranked scores are the fp32 scores of this precision's q/k (not scores rounded to the precision)
        own = fp32_scores(q, k, attn.scale)
        assert torch.allclose(scores.double(), own, rtol=1e-5, atol=1e-4 * own.abs().max().item()), mode
        # 2. a selection differs only where fp32's 8th/9th margin is below what this precision moved the scores by
        moved = (own - fp32_scores(q32, k32, attn.scale)).abs().amax(2)  # (B, nh)
        top = ref_scores.double().sort(2, descending=True).values
        margin = top[..., K - 1] - top[..., K]  # (B, nh)
        for b in range(idx.shape[0]):
            for h in range(idx.shape[1]):
                total += 1
                if set(idx[b, h].tolist()) != set(ref_idx[b, h].tolist()):
                    changed += 1
                    assert margin[b, h] < 2 * moved[b, h], (mode, b, h, margin[b, h].item(), moved[b, h].item())
    assert total == 9  # (1 + 2 images) x (2 + 1 heads: model.11 has 2, model.14 has 1)
    print(f"{mode}: {changed} of {total} selections differ from fp32")


def topk_indices(onnx_file, x) -> list:
    """The indices output of every TopK node of an ONNX file (in graph order), run in ONNX Runtime on ``x``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_file))
    names = [n.output[1] for n in model.graph.node if n.op_type == "TopK"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.astype("float16" if "16" in session.get_inputs()[0].type else "float32")}
    return session.run(names, feed)


def test_fp16_onnx_selects_like_fp32(tmp_path):
    """The half-precision ONNX export (dynamic, as TensorRT fp16 engines are built from) selects the fp32 export's
    tokens on the reference inputs, and those are the authors' noise-free top-8. (The order inside the top 8 may
    differ where two scores are closer than fp16 resolves; the fine path uses the set.)"""
    from ultralytics import YOLO

    expected = torch.load(DATA / "expected_outputs.pt", weights_only=True)
    files = {}
    for half in (False, True):
        pt = tmp_path / f"half{int(half)}.pt"
        pt.write_bytes((DATA / "authors_yolo11n_pst_8.3.105.pt").read_bytes())
        files[half] = YOLO(str(pt)).export(format="onnx", imgsz=96, dynamic=True, half=half, pst_topk=K)
    for name in ("x1", "x2"):
        x = expected[name].numpy()
        fp32, fp16 = topk_indices(files[False], x), topk_indices(files[True], x)
        assert len(fp32) == len(fp16) == 2
        for a, b in zip(fp32, fp16):
            assert (np.sort(a, -1) == np.sort(b, -1)).all(), name
        ref = expected[f"{name}_topk8_nonoise_indices"]
        assert [t.tolist() for t in fp32] == [ref["model.11.attnlayer_0.attn"], ref["model.14.attnlayer_0.attn"]]
