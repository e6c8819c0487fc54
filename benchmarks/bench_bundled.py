"""The README's main job timed: the bundled model on the bundled 400 x 400 sample at x4, on this CPU (JSON).

    .venv/bin/python benchmarks/bench_bundled.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from e2diffsr_core.raster import superresolve_raster  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "e2diffsr_core" / "data" / "sample.tif"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=4.0)
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):
            t = time.perf_counter()
            info = superresolve_raster(str(SAMPLE), str(Path(d) / f"out{i}.tif"), args.scale, device="cpu")
            runs.append(time.perf_counter() - t)
    print(json.dumps({"machine": machine(), "input": "bundled sample 400x400, x4 -> 1600x1600",
                      "model": info["model"], "tile": info["tile"], "tiles": info["tiles"],
                      "median_s": round(statistics.median(runs), 2), "runs_s": [round(r, 2) for r in runs]},
                     indent=2))


if __name__ == "__main__":
    main()
