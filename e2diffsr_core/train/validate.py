"""Validation during training: PSNR of the model and of bicubic on centre crops, and a PNG grid
(bicubic | model | HR per row) that a person can look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evaluation.metrics import psnr, to_uint8
from ..evaluation.protocol import bicubic_pil, to_model


@torch.no_grad()
def validate(stage, items: list[dict], step: int, out_dir: Path, grid_images: int, seed: int) -> dict:
    device = stage.device
    scores, bicubic_scores, rows = [], [], []
    for i, it in enumerate(items):
        hr_u8, lr_u8 = it["hr"], it["lr"]
        border = math.ceil(it["scale"])
        hr = to_model(hr_u8)[None].to(device)
        lr = to_model(lr_u8)[None].to(device)
        sr_u8 = to_uint8(stage.predict(lr, hr, seed + i))
        bic_u8 = bicubic_pil(lr_u8, (hr_u8.shape[1], hr_u8.shape[0]))
        scores.append(psnr(sr_u8, hr_u8, border))
        bicubic_scores.append(psnr(bic_u8, hr_u8, border))
        if i < grid_images:
            rows.append(np.concatenate([bic_u8, sr_u8, hr_u8], axis=1))
    if not scores:
        return {}
    if rows:
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / f"step_{step:07d}.png")
    return {"psnr": float(np.mean(scores)), "psnr_bicubic": float(np.mean(bicubic_scores)),
            "scale": items[0]["scale"], "images": len(scores)}
