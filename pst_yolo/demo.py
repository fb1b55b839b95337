"""``pst-yolo demo``: train yolo11n-pst on the offline ``shapes`` dataset on the CPU, then compare coarse vs fine.

Trains with any-K training (``pst_topk_train=0,4,8,16``, the recommended recipe of docs/fine_attention.md: every
``pst_topk`` of the set works at inference, ``pst_topk=0`` as well as after coarse-only training), validates the best
checkpoint with fine attention off (``pst_topk=0``) and on (``pst_topk=8``), and prints the mAPs and where the weights
and plots are.
``pst_topk_train=0`` trains coarse-only, as the paper does.

Runs are named as ``train`` names them: a second demo goes to ``pst_demo-2`` (Ultralytics numbers the folder) and never
replaces a finished one unless ``exist_ok=True`` asks for it; ``project=`` and ``name=`` choose another place. Every
argument is checked before anything trains.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ("DEFAULTS", "check_demo_args", "demo_cli", "run_demo")

DEFAULTS = {  # about 10 minutes on a 2-core CPU
    "model": "yolo11n-pst.yaml",
    "data": "shapes",
    "epochs": 40,
    "imgsz": 160,
    "batch": 16,
    "nbs": 16,  # one optimizer step per batch: 512 images give 32 steps an epoch (Ultralytics' 64 would give 8)
    "pst_topk_train": [0, 4, 8, 16],  # any-K training: one K of the set per step
    "topk": 8,
    "device": "cpu",
    "name": "pst_demo",  # saved under Ultralytics' runs_dir, e.g. runs/detect/pst_demo (then pst_demo-2, ...)
}


def check_demo_args(cfg: dict) -> None:
    """Raise before training if any demo argument is invalid: the demo's own ``topk`` and every train argument.

    Raises:
        PSTArgumentError: A bad ``topk``, ``pst_topk`` or ``pst_topk_train`` (names the argument and the value).
        SyntaxError | TypeError | ValueError: What Ultralytics' own argument check raises for other keys.
    """
    from ultralytics.cfg import get_cfg

    from .nn.attention import PSTArgumentError, check_topk

    try:
        check_topk(cfg["topk"])
    except PSTArgumentError:
        raise PSTArgumentError(f"topk (the demo validates with pst_topk=0 and pst_topk=topk) must be a positive "
                               f"integer, e.g. topk=8; got {cfg['topk']!r}") from None
    get_cfg(overrides={k: v for k, v in cfg.items() if k != "topk"})  # keys, types; pst_topk(_train) values


def run_demo(**overrides) -> dict:
    """Train, validate with ``pst_topk`` 0 and ``topk``, print a summary table and return its contents.

    Args:
        **overrides: Any key of ``DEFAULTS``; other keys are passed to ``YOLO.train`` unchanged.

    Returns:
        (dict): ``rows`` (pst_topk, mAP50, mAP50-95 per validation), ``weights`` (best.pt), ``save_dir`` (plots).
    """
    from ultralytics import YOLO

    import pst_yolo  # noqa: F401  (registers PST)
    from pst_yolo.topk import check_topk_train

    cfg = {**DEFAULTS, **overrides}
    check_demo_args(cfg)
    topk = cfg.pop("topk")
    common = {k: cfg[k] for k in ("data", "imgsz", "batch", "device")}
    t0 = time.time()
    model = YOLO(cfg.pop("model"))
    model.train(**cfg)  # exist_ok as in train (default False: a new folder, never a finished run overwritten)
    save_dir, best = Path(model.trainer.save_dir), Path(model.trainer.best)
    minutes = (time.time() - t0) / 60
    ks = getattr(model.trainer.args, "pst_topk_train", None)
    ks = check_topk_train(ks) if ks is not None else ()  # as the run applied it (a CLI gives "0,4,8,16")
    if any(ks):
        how = f"any-K training: pst_topk_train={','.join(map(str, ks))}"
    else:
        how = f"trained at pst_topk={k}" if (k := cfg.get("pst_topk", 0)) else "coarse attention only"

    rows = []
    for k in dict.fromkeys((0, topk)):
        metrics = YOLO(best).val(**common, pst_topk=k, project=str(save_dir), name=f"val_pst_topk{k}", exist_ok=True)
        rows.append({"pst_topk": k, "mAP50": metrics.box.map50, "mAP50-95": metrics.box.map})

    lines = [
        "",
        f"pst_yolo demo: {model.model.yaml.get('yaml_file', 'model')} trained {cfg['epochs']} epochs on "
        f"{cfg['data']} at imgsz {cfg['imgsz']} ({minutes:.1f} min, {how})",
        "",
        "| pst_topk | attention     | mAP50 | mAP50-95 |",
        "|---------:|---------------|------:|---------:|",
        *(
            f"| {r['pst_topk']:>8} | {'coarse only' if r['pst_topk'] == 0 else 'coarse + fine':<13} "
            f"| {r['mAP50']:.3f} | {r['mAP50-95']:>8.3f} |"
            for r in rows
        ),
        "",
        f"run:     {save_dir}",
        f"weights: {best}",
        f"plots:   {save_dir} (results.png, confusion matrices; val runs in {save_dir}/val_pst_topk*)",
    ]
    print("\n".join(lines), flush=True)
    return {"rows": rows, "weights": best, "save_dir": save_dir}


def demo_cli(args: list[str]) -> None:
    """Parse ``key=value`` arguments (as the ``yolo`` CLI does) and run the demo."""
    from ultralytics.cfg import smart_value

    overrides = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise SyntaxError(f"pst-yolo demo: expected key=value arguments (e.g. epochs=5), got '{arg}'")
        overrides[key] = smart_value(value)
    run_demo(**overrides)
