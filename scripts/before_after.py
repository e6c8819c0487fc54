"""Make the README's before/after picture from the bundled sample: original | bicubic x4 | E2DiffSR x4 as
the tools make it (temperature 0) | E2DiffSR x4 with the authors' sampling (temperature 1).

    .venv/bin/python scripts/before_after.py [--model FILE] [--out docs/img/before_after.png]

The bundled 400 x 400 sample is reduced 4x with PIL bicubic (the paper's protocol), then enlarged 4x
again with bicubic and with E2DiffSR; a crop of each is shown beside the same crop of the original, labelled
with the PSNR of the whole enlarged picture against the original (border of 4 px removed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from e2diffsr_core.api import open_model
from e2diffsr_core.engine import superresolve_array
from e2diffsr_core.evaluation.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="model file (default: the bundled model)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "before_after.png"))
    ap.add_argument("--crop", default="150,120,160", help="x,y,size of the crop in the original (pixels)")
    ap.add_argument("--zoom", type=int, default=2, help="display enlargement of each crop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from osgeo import gdal

    hr = gdal.Open(str(ROOT / "e2diffsr_core" / "data" / "sample.tif")).ReadAsArray().transpose(1, 2, 0)
    h, w = hr.shape[:2]
    lr = Image.fromarray(hr).resize((w // 4, h // 4), Image.BICUBIC)
    bicubic = np.asarray(lr.resize((w, h), Image.BICUBIC))
    model = open_model(args.model, "cpu")
    lr01 = np.asarray(lr, np.float32).transpose(2, 0, 1) / 255
    outs = {}
    for temperature in (0.0, 1.0):
        with torch.no_grad():
            sr, _, _ = superresolve_array(model, lr01, 4.0, seed=args.seed, temperature=temperature)
        outs[temperature] = (np.clip(sr, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    x, y, size = (int(v) for v in args.crop.split(","))
    panels = [("original", hr), (f"bicubic x4, {psnr(bicubic, hr, 4):.2f} dB", bicubic),
              (f"E2DiffSR x4 (default), {psnr(outs[0.0], hr, 4):.2f} dB", outs[0.0]),
              (f"E2DiffSR x4, temperature 1, {psnr(outs[1.0], hr, 4):.2f} dB", outs[1.0])]
    z = size * args.zoom
    canvas = Image.new("RGB", (len(panels) * (z + 8) + 8, z + 36), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, img) in enumerate(panels):
        crop = Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size])).resize((z, z), Image.NEAREST)
        canvas.paste(crop, (8 + i * (z + 8), 28))
        draw.text((8 + i * (z + 8), 8), name, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
