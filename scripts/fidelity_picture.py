"""Make the picture of what the guard and the border change: a flat raster, a step edge and a DEM with a lake,
each enlarged 4x by GDAL's cubic, by the model alone (--raw), by the correction without the guard (--no-guard)
and by the default.

    .venv/bin/python scripts/fidelity_picture.py [--out docs/img/fidelity.png]

Each panel is labelled with its range of values (flat: 150 everywhere; step: 50 | 200; the lake: 200 m, the
range printed is that of the pixels 3 input pixels or more inside its shore). The rasters are made here: a
64 x 64 Byte raster of 150, the same with a vertical step from 50 to 200, and a 96 x 96 Float32 30 m DEM of
hills from 0 to 1000 m around a level lake at 200 m (tests/test_fidelity.py makes the same).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from raster_support import make_raster  # noqa: E402
from test_fidelity import GT30, lake_dem  # noqa: E402

from e2diffsr_core.raster import superresolve_raster  # noqa: E402

METHODS = [("GDAL cubic", None), ("model alone (--raw)", {"raw": True}),
           ("correction, no guard", {"guard": False}), ("default", {})]


def enlarge(src: str, out: str, options: dict | None) -> np.ndarray:
    if options is None:
        ds = gdal.Open(src)
        gdal.Warp(out, ds, width=ds.RasterXSize * 4, height=ds.RasterYSize * 4, resampleAlg="cubic")
    else:
        superresolve_raster(src, out, 4.0, overwrite=True, **options)
    return gdal.Open(out).ReadAsArray().astype(np.float64)


def panel(values: np.ndarray, lo: float, hi: float, label: str) -> Image.Image:
    grey = np.clip((values - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    img = Image.fromarray(grey).convert("RGB").resize((256, 256), Image.NEAREST)
    canvas = Image.new("RGB", (256, 290), "white")
    canvas.paste(img, (0, 34))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(label.split("\n")):
        draw.text((4, 2 + 15 * i), line, fill="black")
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "fidelity.png"))
    args = p.parse_args()
    step = np.full((64, 64), 50, np.uint8)
    step[:, 32:] = 200
    dem = lake_dem()
    g = (np.arange(384) + 0.5) / 4
    inner = np.hypot(g[:, None] - 48, g[None, :] - 48) <= 17
    cases = [("flat 150", np.full((64, 64), 150, np.uint8), gdal.GDT_Byte, (110, 190), None),
             ("step 50 | 200", step, gdal.GDT_Byte, (0, 255), None),
             ("lake at 200 m", dem, gdal.GDT_Float32, (150, 250), inner)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, array, dtype, (lo, hi), where in cases:
            src = make_raster(Path(tmp) / "in.tif", array, dtype, gt=GT30)
            row = []
            for label, options in METHODS:
                out = enlarge(src, str(Path(tmp) / "out.tif"), options)
                part = out[where] if where is not None else out
                text = f"{name}: {label}\n{part.min():.2f} .. {part.max():.2f}"
                print(text.replace("\n", ": "), flush=True)
                row.append(panel(out, lo, hi, text))
            rows.append(row)
    sheet = Image.new("RGB", (4 * 262, 3 * 296), "white")
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            sheet.paste(img, (c * 262, r * 296))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
