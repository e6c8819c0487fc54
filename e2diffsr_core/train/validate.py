"""Validation during training: PSNR of the model and of bicubic on one fixed crop of each validation image at
several scales (``data.val_scales``), over the crop's valid pixels, and a PNG grid (bicubic | model | HR per row)
that a person can look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evaluation.metrics import psnr, to_uint8
from ..evaluation.protocol import bicubic_pil, to_model
from ..raster_io.training_read import read_picture
from .check import MIN_VAL_SIDE
from .data import valid_corner


def val_columns(scales) -> list[str]:
    """val.csv's columns: the mean over every scale, then each scale."""
    return ["step", "psnr", "psnr_bicubic", *[f"psnr_x{s:g}" for s in scales], "images"]


def validation_items(files: list[Path], count: int, size: int, scales, bands=None, min_valid: float = 0.99,
                     seed: int = 0) -> list[dict]:
    """One crop per image (side a multiple of 8, at most ``size``; the centre one when it is valid enough, else
    a valid one fixed by ``seed``) with its PIL-bicubic LR at each of ``scales``."""
    items = []
    for k, p in enumerate(files[:count]):
        pic = read_picture(p, bands)
        h, w = pic.valid.shape
        side = min(size, h, w) // 8 * 8
        if side < MIN_VAL_SIDE:
            continue
        y, x = (h - side) // 2, (w - side) // 2
        if pic.valid[y:y + side, x:x + side].mean() < min_valid:
            y, x = valid_corner(pic.valid, side, min_valid, np.random.default_rng([seed, 5, k]))
        hr = np.ascontiguousarray(pic.rgb[y:y + side, x:x + side])
        valid = np.ascontiguousarray(pic.valid[y:y + side, x:x + side])
        for s in scales:
            lr_side = max(1, int(side / s))
            items.append({"name": p.name, "hr": hr, "valid": valid, "lr": bicubic_pil(hr, (lr_side, lr_side)),
                          "scale": float(s)})
    return items


@torch.no_grad()
def validate(stage, items: list[dict], step: int, out_dir: Path, grid_images: int, seed: int) -> dict:
    device = stage.device
    scores: dict[float, list[float]] = {}
    bicubic_scores, rows = [], []
    top = max((it["scale"] for it in items), default=0.0)
    for i, it in enumerate(items):
        hr_u8, lr_u8 = it["hr"], it["lr"]
        border = math.ceil(it["scale"])
        hr = to_model(hr_u8)[None].to(device)
        lr = to_model(lr_u8)[None].to(device)
        sr_u8 = to_uint8(stage.predict(lr, hr, seed + i))
        bic_u8 = bicubic_pil(lr_u8, (hr_u8.shape[1], hr_u8.shape[0]))
        scores.setdefault(it["scale"], []).append(psnr(sr_u8, hr_u8, border, it["valid"]))
        bicubic_scores.append(psnr(bic_u8, hr_u8, border, it["valid"]))
        if it["scale"] == top and len(rows) < grid_images:
            rows.append(np.concatenate([bic_u8, sr_u8, hr_u8], axis=1))
    if not scores:
        return {}
    if rows:
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / f"step_{step:07d}.png")
    every = [v for vs in scores.values() for v in vs]
    return {"psnr": float(np.mean(every)), "psnr_bicubic": float(np.mean(bicubic_scores)),
            **{f"psnr_x{s:g}": float(np.mean(v)) for s, v in scores.items()}, "images": len(scores[top])}
