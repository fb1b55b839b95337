"""Multi-GPU training (Ultralytics DDP) with the plugin, exercised as far as a machine without GPUs allows.

``device=0,1`` makes Ultralytics' trainer write a worker script and the pickled trainer state
(``ultralytics.utils.dist.generate_ddp_file``) and launch it with ``torch.distributed.run``. Here:

1. the worker script is generated from a real trainer by Ultralytics' own ``generate_ddp_command`` and run in a fresh
   interpreter on the CPU (one process, no process group) up to one forward/backward step of the PST detector;
2. the PST detector is trained under ``torch.nn.parallel.DistributedDataParallel`` in two CPU processes (gloo,
   launched by ``torch.distributed.run``) with the DDP options Ultralytics uses, checking gradients are all-reduced.

Not covered without GPUs: ``BaseTrainer._setup_ddp`` (it selects CUDA devices and NCCL), i.e. the worker script and
DDP running in the same processes.
"""

import re
import sys
from pathlib import Path

import pytest
from _cli import run  # tests/_cli.py

from pst_yolo.hooks import ddp

ultralytics = pytest.importorskip("ultralytics")
pytest.importorskip("cloudpickle", reason="Ultralytics pickles the DDP trainer state with cloudpickle")
from ultralytics.utils import dist  # noqa: E402

LAUNCH = """
import os
import sys
import pst_yolo
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.dist import generate_ddp_command


def one_step(trainer):
    '''Stop the worker after its first training batch; report the PST gradients (pickled by value).'''
    from pst_yolo import PST, get_topk
    params = [p for m in trainer.model.modules() if isinstance(m, PST) for p in m.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    ok = all(bool(g.isfinite().all()) for g in grads)
    print(f"STEP pst_topk={get_topk(trainer.model)} grads={len(grads)}/{len(params)} finite={ok}", flush=True)
    os._exit(0)


for name, bare, topk in (("bare", True, None), ("topk", False, 2)):
    # As YOLO("yolo11n-pst.yaml").train(...) sets up a trainer: a YAML model stays a name until the trainer builds it.
    model = YOLO("yolo11n-pst.yaml")
    callbacks = model.callbacks
    if bare:  # e.g. `yolo train resume model=last.pt`: no pst_yolo object in the pickled state
        callbacks = {k: [f for f in v if not f.__module__.startswith("pst_yolo")] for k, v in callbacks.items()}
    args = dict(model.overrides, data="shapes", epochs=1, imgsz=64, batch=4, workers=0, plots=False, device="cpu",
                project=sys.argv[1], name=name, exist_ok=True, pst_topk=topk, mode="train")
    trainer = DetectionTrainer(overrides=args, _callbacks=callbacks)
    trainer.add_callback("on_train_batch_end", one_step)
    assert isinstance(trainer.model, str)
    cmd, file = generate_ddp_command(trainer)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[-1] == file
    print("FILE", name, file)
"""



def test_worker_script_imports_pst_yolo(tmp_path):
    from types import SimpleNamespace

    trainer = SimpleNamespace(args=SimpleNamespace(), model=None, callbacks={})
    file = dist.generate_ddp_file(trainer)
    try:
        text = open(file).read()
    finally:
        dist.ddp_cleanup(trainer, file)
    lines = [line.strip() for line in text.splitlines()]
    at = lines.index(ddp.DDP_IMPORT.strip())
    assert lines[at - 1].startswith("sys.path = ")  # importable from the launching process' sys.path
    assert at < next(i for i, line in enumerate(lines) if "torch_load(" in line)  # before the state is unpickled
    compile(text, file, "exec")


def test_worker_script_without_sys_path_line_is_a_loud_error(tmp_path):
    def changed_format(trainer):  # what a future Ultralytics might generate
        path = tmp_path / "worker.py"
        path.write_text("import runpy\n")
        return str(path)

    with pytest.raises(RuntimeError, match="cannot add 'import pst_yolo' to the DDP worker script"):
        ddp._wrap_generate_ddp_file(changed_format)(object())


@pytest.mark.slow
def test_ddp_worker_bootstrap_on_cpu(tmp_path, cli_env):
    """Ultralytics' generated worker, run as `torch.distributed.run` would run it, rebuilds the trainer, resolves
    yolo11n-pst.yaml and data=shapes, accepts pst_topk and takes a training step, with no pst_yolo import by the user.
    'bare': the pickled state references no pst_yolo object, so only the hook's import registers the plugin."""
    text = run([sys.executable, "-c", LAUNCH, str(tmp_path / "runs")], tmp_path, cli_env)
    files = dict(re.findall(r"^FILE (\w+) (.+)$", text, re.M))
    assert set(files) == {"bare", "topk"}
    try:
        for name, file in files.items():
            out = run([sys.executable, file], tmp_path, cli_env)
            assert "pst_yolo.nn.pst.PST" in out  # the worker built yolo11n-pst.yaml (its layer summary)
            step = re.search(r"STEP pst_topk=(\d+) grads=(\d+)/(\d+) finite=(\w+)", out)
            assert step, out[-3000:]
            topk, grads, params, finite = int(step[1]), int(step[2]), int(step[3]), step[4] == "True"
            assert finite and grads > 0
            if name == "topk":  # pst_topk reached the worker: fine attention on, so the gates get gradients too
                assert "PST: pst_topk=2 (fine attention on, 2 layers)" in out
                assert (topk, grads) == (2, params)
            else:
                assert topk == 0 and grads == params - 4  # coarse only: both layers' gate weight and bias unused
    finally:
        for file in files.values():  # what ddp_cleanup() removes after a real launch
            for suffix in (".py", ".pt"):
                Path(file).with_suffix(suffix).unlink(missing_ok=True)


DDP_SCRIPT = """
import sys
import torch
import torch.distributed as torch_dist
import pst_yolo
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG

torch_dist.init_process_group("gloo")
rank, world = torch_dist.get_rank(), torch_dist.get_world_size()


def gathered(t):
    out = [torch.empty_like(t) for _ in range(world)]
    torch_dist.all_gather(out, t)
    return out


# The options BaseTrainer._setup_train passes to DDP: compile off (default) and compile on. Any-K training with seed 0
# draws K = 0, 0, 8, 8 (with 0 in the set) and 4, 4, 8, 8: a K > 0 step after K = 0 steps is where a gate unused at
# K = 0 broke the static graph of the compile=True construction.
DEFAULT, COMPILE = dict(find_unused_parameters=True), dict(find_unused_parameters=False, static_graph=True)
CASES = [(0, DEFAULT, ()), (0, COMPILE, ()), (2, DEFAULT, ())]
CASES += [(0, kwargs, ks) for kwargs in (DEFAULT, COMPILE) for ks in ((0, 8), (4, 8))]
for topk, kwargs, ks in CASES:
    torch.manual_seed(0)
    model = DetectionModel("yolo11n-pst.yaml", nc=6, verbose=False)
    model.args = DEFAULT_CFG
    pst_yolo.set_topk(model, topk, verbose=False)
    if ks:
        pst_yolo.topk.set_topk_train(model, ks, seed=0, verbose=False)
    ddp = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(rank + 1)  # each rank its own images
    for it in range(4 if ks else 2):  # a second iteration fails if DDP mishandles parameters unused in the first
        batch = {"img": torch.rand(2, 3, 64, 64, generator=g), "cls": torch.tensor([[1.0], [3.0]]),
                 "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.3, 0.6, 0.2, 0.4]]),
                 "batch_idx": torch.tensor([0.0, 1.0])}
        loss, _ = ddp(batch)
        opt.zero_grad()
        loss.sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert grads.isfinite().all()
        assert all(torch.equal(grads, x) for x in gathered(grads)), "gradients differ across ranks"
        opt.step()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert all(torch.equal(params, x) for x in gathered(params)), "parameters diverged"
    # One write per line: two ranks share stdout and print() may split text and newline into two writes.
    sys.stdout.write(f"DDP OK rank={rank} topk={topk} ks={','.join(map(str, ks)) or '-'} {sorted(kwargs)}\\n")
    sys.stdout.flush()
torch_dist.destroy_process_group()
"""


@pytest.mark.slow
def test_pst_detector_under_ddp_on_cpu(tmp_path, cli_env):
    """Two gloo processes launched like Ultralytics launches its workers; losses differ per rank, gradients don't."""
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(dist.find_free_network_port()), str(script)]
    out = run(cmd, tmp_path, {**cli_env, "OMP_NUM_THREADS": "1"})
    # Not anchored to line starts: the two ranks' lines may still interleave with other processes' output.
    done = sorted(re.findall(r"DDP OK rank=([01]) topk=(\d) ks=([\d,-]+) (\[[^\]]*\])", out))
    default, compiled = "['find_unused_parameters']", "['find_unused_parameters', 'static_graph']"
    cases = [("0", "-", default), ("0", "-", compiled), ("2", "-", default)]
    cases += [("0", ks, o) for o in (default, compiled) for ks in ("0,8", "4,8")]  # any-K, with and without K = 0
    expected = sorted((str(r), *c) for r in (0, 1) for c in cases)
    assert done == expected, out[-3000:]
