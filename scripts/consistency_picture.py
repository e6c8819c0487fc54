"""Make the picture of consistency with the input: original | GDAL lanczos | model raw | model + consistency |
the consistency layer, on a crop of the bundled sample.

    .venv/bin/python scripts/consistency_picture.py [--model FILE] [--out docs/img/consistency.png]

The bundled 400 x 400 sample (0.1 m) is reduced 4x with PIL bicubic (the training degradation), then enlarged
4x again with GDAL's lanczos and with the model, without (--raw) and with the default correction. Each label
gives the PSNR against the original and, after reducing the result to the input grid, against the input.
The consistency layer is the size of the correction (largest over the bands, in the input's grey levels).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from e2diffsr_core.api import open_model
from e2diffsr_core.engine import superresolve_array
from e2diffsr_core.engine.consistency import psnr_to_input

ROOT = Path(__file__).resolve().parents[1]
SCALE = 4
ZOOM = 2  # display enlargement of each crop
# dark blue (no correction) -> purple -> orange -> light yellow (large correction)
RAMP = np.array([[13, 8, 60], [110, 30, 130], [220, 90, 60], [250, 200, 80], [252, 250, 200]], np.float64)


def lanczos(lr: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """GDAL's lanczos enlargement of an H x W x 3 uint8 array, as QGIS users get it from gdalwarp."""
    from osgeo import gdal

    h, w = lr.shape[:2]
    src = gdal.GetDriverByName("MEM").Create("", w, h, 3, gdal.GDT_Byte)
    src.SetGeoTransform((0.0, 0.4, 0.0, 0.0, 0.0, -0.4))
    for b in range(3):
        src.GetRasterBand(b + 1).WriteArray(lr[:, :, b])
    out = gdal.Warp("", src, format="MEM", width=size_wh[0], height=size_wh[1], resampleAlg="lanczos")
    return out.ReadAsArray().transpose(1, 2, 0)


def colour(values: np.ndarray, top: float) -> np.ndarray:
    t = np.clip(values / top, 0, 1) * (len(RAMP) - 1)
    idx = np.arange(len(RAMP))
    return np.stack([np.interp(t, idx, RAMP[:, c]) for c in range(3)], -1).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, border: int = SCALE) -> float:
    d = a[border:-border, border:-border].astype(np.float64) - b[border:-border, border:-border]
    return 10 * np.log10(255.0 ** 2 / np.mean(d * d))


def to_u8(x01: np.ndarray) -> np.ndarray:
    return (np.clip(x01, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def panels(model, seed: int):
    from osgeo import gdal

    hr = gdal.Open(str(ROOT / "e2diffsr_core" / "data" / "sample.tif")).ReadAsArray().transpose(1, 2, 0)
    h, w = hr.shape[:2]
    lr = np.asarray(Image.fromarray(hr).resize((w // SCALE, h // SCALE), Image.BICUBIC))
    lr01 = lr.astype(np.float32).transpose(2, 0, 1) / 255
    with torch.no_grad():
        raw, _, _ = superresolve_array(model, lr01, SCALE, seed=seed, consistency=False)
        fixed, _, res = superresolve_array(model, lr01, SCALE, seed=seed, correction_map=True)
    shown = [("original", hr), ("GDAL lanczos", lanczos(lr, (w, h))), ("E2DiffSR raw", to_u8(raw)),
             ("E2DiffSR + consistency", to_u8(fixed))]
    labels = [(name, "(truth)" if i == 0 else
               f"{psnr(img, hr):.2f} dB | input {psnr_to_input(img.transpose(2, 0, 1) / 255.0, lr01):.1f} dB")
              for i, (name, img) in enumerate(shown)]
    size = res.correction.max(0) * 255  # grey levels of the input
    top = max(1.0, float(np.percentile(size, 99.5)))
    shown.append(("consistency layer", colour(size, top)))
    labels.append(("consistency layer", f"0 .. {top:.0f} grey levels"))
    return shown, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model file (default: the bundled model)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "consistency.png"))
    ap.add_argument("--crop", default="150,120,120", help="x,y,size of the crop in the original (pixels)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shown, labels = panels(open_model(args.model, "cpu"), args.seed)
    x, y, size = (int(v) for v in args.crop.split(","))
    z = size * ZOOM
    canvas = Image.new("RGB", (len(shown) * (z + 8) + 8, z + 44), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((_, img), (name, note)) in enumerate(zip(shown, labels)):
        crop = Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size])).resize((z, z), Image.NEAREST)
        canvas.paste(crop, (8 + i * (z + 8), 36))
        draw.text((8 + i * (z + 8), 6), name, fill="black")
        draw.text((8 + i * (z + 8), 20), note, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")
    for name, note in labels:
        print(f"  {name}: {note}")


if __name__ == "__main__":
    main()
