"""The time estimate against the actual time of real runs (JSON), as the QGIS plugin computes and caches it.

    .venv/bin/python benchmarks/bench_estimate.py [--sides 40,56,80,112,160] [--scale 2] [--model FILE]
                                                  [--device cpu]

Squares cut from the bundled sample, or tiled from it beyond its 400 px (sides in input pixels; the default
sizes take 5 to 40 s each on a 2-core CPU at x2), are super-resolved by ``superresolve_raster`` in order,
with a fresh estimate cache: the first estimate comes from the probe alone, every later one from the rate
the runs before it left in the cache (replaced when a run drifts by more than a quarter), exactly as
consecutive runs in QGIS. Printed per run: estimate, actual seconds, their ratio and where the rate came
from; the summary gives the ratios of the runs estimated from earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from bench_large import make_mosaic  # noqa: E402

from e2diffsr_core.api import open_model, resolve_device  # noqa: E402
from e2diffsr_core.raster import superresolve_raster  # noqa: E402
from qgis_plugin import estimate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sides", default="450,560,700,900,1200")
    p.add_argument("--scale", type=float, default=2.0)
    p.add_argument("--model")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    gdal.UseExceptions()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "estimate.json"
        device = resolve_device(args.device)
        net = open_model(args.model, device)
        rows = []
        for side in (int(s) for s in args.sides.split(",")):
            src = os.path.join(tmp, f"in{side}.tif")
            make_mosaic(Path(src), side)  # the sample itself, or tiled from it beyond its 400 px
            plan = estimate.plan(src, args.scale, None, 1, 0, net, device)
            seconds, flops, source = estimate.estimate_seconds(plan, net, device, cache)
            info = superresolve_raster(src, os.path.join(tmp, f"out{side}.tif"), args.scale, model=args.model,
                                       device=args.device)
            estimate.record(net, device, flops, info["seconds"], seconds, cache)
            rows.append({"side": side, "output": f"{plan['width']} x {plan['height']}", "gflops": round(flops / 1e9, 1),
                         "estimate_s": round(seconds, 1), "actual_s": info["seconds"],
                         "ratio": round(seconds / info["seconds"], 2), "rate_from": source})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    later = [r["ratio"] for r in rows if r["rate_from"].startswith("measured on earlier runs")]
    print(json.dumps({"machine": machine(), "scale": args.scale, "runs": rows,
                      "all_runs_within_40_percent": sum(0.6 <= r["ratio"] <= 1.4 for r in rows),
                      "from_earlier_runs": {"ratios": later, "median": statistics.median(later) if later else None,
                                            "within_40_percent": sum(0.6 <= r <= 1.4 for r in later)}}, indent=1))


if __name__ == "__main__":
    main()
