"""How the working range of Byte bands was chosen: rules compared on the validation pictures, as they are and
with their contrast squeezed into a narrow band of values (what a hazy or dark 8-bit picture looks like).

    python scripts/working_range.py [SCALES] [LOW,HIGH ...]    # e.g. 2,4 33,64 96,160 (data/samples, 'val')

Each validation picture is reduced as the evaluator does (PIL bicubic), written as a Byte GeoTIFF and
super-resolved by ``superresolve`` with the bundled model and default settings, once per rule, each rule
given as ``ranges=``. For a squeezed version, the picture's values v become LOW + v * (HIGH - LOW) / 255
(rounded) before the reduction, and the result is compared with the squeezed picture. Rules:

- ``full``: 0..255 for every band (the model's training range; the rule before this comparison),
- ``band``: each band's 0.5th..99.5th percentile of its values (the rule of the other data types),
- ``shared``: the lowest and highest of those percentiles over the bands (one range: colours keep their
  balance),
- ``narrow``: ``shared`` when its span is under half of 0..255, else ``full``.

Printed per rule: PSNR (dB, peak 255, border ceil(s), as the evaluator) and the largest overshoot beyond
the reference picture's own lowest and highest value (DN).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal

from e2diffsr_core.evaluation.metrics import psnr
from e2diffsr_core.evaluation.protocol import find_images, make_lr, read_rgb, select_split
from e2diffsr_core.raster import superresolve_raster

RULES = ("full", "band", "shared", "narrow")


def ranges_of(lr: np.ndarray, rule: str) -> list[tuple[float, float]]:
    """The working range of each band of ``lr`` (H x W x 3 uint8) under ``rule``."""
    bands = [tuple(float(v) for v in np.percentile(lr[..., b], (0.5, 99.5))) for b in range(3)]
    bands = [(lo, hi) if hi > lo else (max(0.0, lo - 1), min(255.0, hi + 1)) for lo, hi in bands]
    shared = (min(lo for lo, _ in bands), max(hi for _, hi in bands))
    if rule == "full":
        return [(0.0, 255.0)] * 3
    if rule == "band":
        return bands
    if rule == "shared":
        return [shared] * 3
    return [shared] * 3 if shared[1] - shared[0] < 127.5 else [(0.0, 255.0)] * 3


def run(lr: np.ndarray, scale: float, out_size, ranges, folder: Path) -> np.ndarray:
    src, out = folder / "lr.tif", folder / "sr.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), lr.shape[1], lr.shape[0], 3, gdal.GDT_Byte)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(lr[..., b])
    ds = None
    superresolve_raster(str(src), str(out), scale, ranges=ranges, overwrite=True)
    sr = gdal.Open(str(out)).ReadAsArray().transpose(1, 2, 0)
    assert sr.shape[:2] == out_size, (sr.shape, out_size)
    return sr


def main(scales: list[float], squeezes: list[tuple[int, int] | None]) -> None:
    files = select_split("data/samples", find_images("data/samples"), "data/samples/split.json", "val")
    with tempfile.TemporaryDirectory() as d:
        for squeeze in squeezes:
            for s in scales:
                acc = {r: [] for r in RULES}
                for p in files:
                    hr = read_rgb(p)
                    if squeeze is not None:
                        lo, hi = squeeze
                        hr = np.rint(lo + hr.astype(np.float64) * (hi - lo) / 255).astype(np.uint8)
                    h, w = hr.shape[:2]
                    lr = make_lr(hr, s)
                    if (int(lr.shape[1] * s), int(lr.shape[0] * s)) != (w, h):
                        hr = hr[: int(lr.shape[0] * s), : int(lr.shape[1] * s)]
                        h, w = hr.shape[:2]
                    for rule in RULES:
                        sr = run(lr, s, (h, w), ranges_of(lr, rule), Path(d))
                        over = max(0, int(sr.max()) - int(hr.max()), int(hr.min()) - int(sr.min()))
                        acc[rule].append((psnr(sr, hr, math.ceil(s)), over))
                name = "as they are" if squeeze is None else f"squeezed into {squeeze[0]}..{squeeze[1]}"
                print(f"x{s:g}, {name}:", flush=True)
                for rule in RULES:
                    a = np.array(acc[rule], np.float64)
                    print(f"  {rule:7s} psnr {a[:, 0].mean():.3f}  largest overshoot {int(a[:, 1].max())} DN",
                          flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    scales = [float(v) for v in (args[0] if args else "2,4").split(",")]
    squeezes: list[tuple[int, int] | None] = [None] + [tuple(int(v) for v in a.split(",")) for a in args[1:]]
    if len(squeezes) == 1:
        squeezes += [(33, 64), (96, 160)]
    main(scales, squeezes)
