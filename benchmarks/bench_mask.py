"""A masked run against the whole run (JSON): a polygon over 10% of the raster should cost at most 20%.

    .venv/bin/python benchmarks/bench_mask.py [--side 160] [--scale 2] [--repeats 3] [--model FILE]

A crop of the bundled sample (``--side`` input pixels a side) is super-resolved whole and with a mask: one
square polygon covering 10% of the raster's area (off centre, as a field in an orthophoto would be). The two
runs alternate, ``--repeats`` times each, on one machine in one process; the medians, their ratio and the
tiles each computed are printed, and the FLOPs of one run of each (torch.utils.flop_counter: exact, unlike
times on a loaded machine) with their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from bench_large import make_mosaic  # noqa: E402

from e2diffsr_core.raster import superresolve_raster  # noqa: E402


def square_mask(path: str, raster: str, fraction: float) -> str:
    """A GeoPackage with one square covering ``fraction`` of the raster, its corner at a third of the raster."""
    ds = gdal.Open(raster)
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    side = math.sqrt(fraction * w * h)
    x0, y0 = w / 3, h / 3
    ring = [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side), (x0, y0)]
    wkt = "POLYGON((" + ",".join(f"{gt[0] + x * gt[1]} {gt[3] + y * gt[5]}" for x, y in ring) + "))"
    out = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    layer = out.CreateLayer("area", srs, ogr.wkbPolygon)
    f = ogr.Feature(layer.GetLayerDefn())
    f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
    layer.CreateFeature(f)
    out = None
    return path


def inside_psnr(whole: str, masked: str) -> float:
    """PSNR (8-bit) of the masked output's valid pixels against the whole run's pixels under them."""
    w, m = gdal.Open(whole), gdal.Open(masked)
    gw, gm = w.GetGeoTransform(), m.GetGeoTransform()
    ox, oy = round((gm[0] - gw[0]) / gw[1]), round((gm[3] - gw[3]) / gw[5])
    a = m.ReadAsArray().astype(np.float64)
    b = w.ReadAsArray(ox, oy, m.RasterXSize, m.RasterYSize).astype(np.float64)
    ok = m.GetRasterBand(1).GetMaskBand().ReadAsArray() > 0
    mse = float(((a - b)[:, ok] ** 2).mean())
    return 10 * math.log10(255.0**2 / mse) if mse else math.inf


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model")
    args = p.parse_args()
    gdal.UseExceptions()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.tif")
        make_mosaic(Path(src), args.side)  # the sample itself, or tiled from it beyond its 400 px
        mask = square_mask(os.path.join(tmp, "mask.gpkg"), src, 0.10)
        times = {"whole": [], "masked": []}
        info = {}
        for _ in range(args.repeats):
            for kind in ("whole", "masked"):
                start = time.perf_counter()
                info[kind] = superresolve_raster(src, os.path.join(tmp, f"{kind}.tif"), args.scale, model=args.model,
                                                 device="cpu", overwrite=True, mask=mask if kind == "masked" else None)
                times[kind].append(round(time.perf_counter() - start, 2))
        flops = {}
        for kind in ("whole", "masked"):  # exact, whatever else the machine is doing
            with FlopCounterMode(display=False) as counter:
                superresolve_raster(src, os.path.join(tmp, f"{kind}.tif"), args.scale, model=args.model,
                                    device="cpu", overwrite=True, mask=mask if kind == "masked" else None)
            flops[kind] = counter.get_total_flops()
        med = {k: statistics.median(v) for k, v in times.items()}
        agreement = inside_psnr(os.path.join(tmp, "whole.tif"), os.path.join(tmp, "masked.tif"))
        print(json.dumps({"machine": machine(), "input": f"{args.side} x {args.side}", "scale": args.scale,
                          "mask_fraction": 0.10, "seconds": times, "median_s": med,
                          "ratio": round(med["masked"] / med["whole"], 3),
                          "gflops": {k: round(v / 1e9, 1) for k, v in flops.items()},
                          "flop_ratio": round(flops["masked"] / flops["whole"], 3),
                          "tiles": {k: [info[k]["tiles"], info[k]["tiles_skipped"]] for k in info},
                          "masked_output": f"{info['masked']['width']} x {info['masked']['height']}",
                          "psnr_inside_vs_whole_db": round(agreement, 2)}, indent=1))


if __name__ == "__main__":
    main()
