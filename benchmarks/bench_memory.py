"""Peak memory does not grow with the raster's area: a raster and one of 4x the area, each in its own process.

    .venv/bin/python benchmarks/bench_memory.py [--side 300] [--scale 4] [--preset tiny] [--repeats 3]

Prints JSON with both peak RSS figures (MiB; the median of ``--repeats`` runs of each, alternately: a run's
peak varies by some 50-80 MiB on a busy machine) and their ratio (the larger may use at most 15% more).
The engine's working sets stop growing once the raster passes the diffusion window (2048 output px a side)
and the band size (tile x tile px): at the default sizes the larger raster crosses both, beyond them
(``--side 600``) memory is flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, json
from e2diffsr_core.raster import superresolve_raster
info = superresolve_raster(sys.argv[1], sys.argv[2], float(sys.argv[3]), model=sys.argv[4], tile=int(sys.argv[5]),
                           device="cpu")
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info}))
"""


def make_raster(path: Path, side_w: int, side_h: int) -> None:
    from osgeo import gdal

    sample = Path(__file__).resolve().parents[1] / "e2diffsr_core" / "data" / "sample.tif"
    src = gdal.Open(str(sample)).ReadAsArray()
    reps = (1, -(-side_h // src.shape[1]), -(-side_w // src.shape[2]))
    arr = np.tile(src, reps)[:, :side_h, :side_w]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), side_w, side_h, 3, gdal.GDT_Byte,
                                              options=["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
    for i in range(3):
        ds.GetRasterBand(i + 1).WriteArray(arr[i])
    ds = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=300)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each size (alternately); medians reported")
    args = ap.parse_args()
    from e2diffsr_core.api import build_model
    from e2diffsr_core.checkpoint import save_model

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_model(build_model(args.preset), d / "m.pt")
        runs: dict[str, dict] = {}
        sizes = (("base", 1), ("area_x4", 2))
        for name, factor in sizes:
            make_raster(d / f"{name}.tif", args.side * factor, args.side * factor)
        peaks: dict[str, list[float]] = {name: [] for name, _ in sizes}
        for k in range(max(1, args.repeats)):
            for name, factor in sizes:
                out = subprocess.run([sys.executable, "-c", CHILD, str(d / f"{name}.tif"), str(d / f"{name}_{k}.tif"),
                                      str(args.scale), str(d / "m.pt"), str(args.tile)],
                                     capture_output=True, text=True, check=True)
                runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
                runs[name]["lr_side"] = args.side * factor
                peaks[name].append(runs[name]["peak_rss_mib"])
        for name, _ in sizes:
            runs[name]["peak_rss_mib"] = statistics.median(peaks[name])
            runs[name]["peak_rss_mib_runs"] = [round(p, 1) for p in peaks[name]]
    ratio = runs["area_x4"]["peak_rss_mib"] / runs["base"]["peak_rss_mib"]
    keys = ("lr_side", "width", "height", "peak_rss_mib", "peak_rss_mib_runs", "seconds")
    print(json.dumps({"preset": args.preset, "scale": args.scale, "tile": args.tile, "repeats": args.repeats,
                      "base": {k: runs["base"][k] for k in keys},
                      "area_x4": {k: runs["area_x4"][k] for k in keys},
                      "ratio": round(ratio, 3), "within_15_percent": ratio <= 1.15,
                      "self_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=2))


if __name__ == "__main__":
    main()
