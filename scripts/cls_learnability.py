#!/usr/bin/env python
"""Can a classifier learn shapes-cls from scratch at all? A plain PyTorch loop, no Ultralytics trainer, no augmentation
beyond horizontal flips: yolo11n-cls (or another classification YAML) on the train split, accuracy on train and val.

Measured on the first shapes-cls (240 train / 60 val images; 2-core CPU, 40 epochs at 64 px, AdamW 1e-3, batch 16):
train accuracy reached ~0.98 while val stayed at chance (0.15-0.28 for 6 classes): 240 images were memorised, not
generalised from, so the set was grown to 2400 / 600 images. On that set the same loop (batch 32) reaches val 0.59
after 20 epochs, still rising: it can be learned from scratch.

Example:
    python scripts/cls_learnability.py --model yolo11n-cls.yaml --epochs 40 --imgsz 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def load(root: Path, split: str, imgsz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``root/split/<class>/*.jpg`` as a (N, 3, imgsz, imgsz) float tensor and their class indices."""
    files = sorted((root / split).glob("*/*.jpg"))
    names = sorted({f.parent.name for f in files})
    x = np.stack([cv2.resize(cv2.imread(str(f)), (imgsz, imgsz))[:, :, ::-1] for f in files]).astype(np.float32) / 255
    y = torch.tensor([names.index(f.parent.name) for f in files])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="yolo11n-cls.yaml")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from ultralytics.nn.tasks import ClassificationModel

    import pst_yolo  # noqa: F401  (PST configs by bare name)
    from pst_yolo.hooks.names import _image_folder

    root = Path(_image_folder("shapes-cls"))  # exactly the folder data=shapes-cls resolves to (generated if missing)
    torch.manual_seed(args.seed)
    (xt, yt), (xv, yv) = load(root, "train", args.imgsz), load(root, "val", args.imgsz)
    model = ClassificationModel(args.model, nc=int(yt.max()) + 1, verbose=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(16):
            xb = xt[idx].flip(3) if torch.rand(1) < 0.5 else xt[idx]
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (epoch + 1) % 5 == 0:
            model.eval()
            with torch.no_grad():
                out = [model(x) for x in (xt, xv)]  # eval mode: (probabilities, logits)
                acc = [(o[0].argmax(1) == y).float().mean().item() for o, y in zip(out, (yt, yv))]
            print(f"epoch {epoch + 1}: train acc {acc[0]:.3f}, val acc {acc[1]:.3f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
