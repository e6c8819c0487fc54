"""Throughput of the tiled engine (output megapixels per second) for tiny, lite and paper (JSON).

    .venv/bin/python benchmarks/bench_engine.py [--side 200] [--scale 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, timed  # noqa: E402

from e2diffsr_core.api import build_model, resolve_device  # noqa: E402
from e2diffsr_core.engine import superresolve_array  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=200, help="LR side in pixels")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="tiny,lite,paper")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tile", type=int, default=0)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    img = np.random.default_rng(0).random((3, args.side, args.side), dtype=np.float32)
    out_mpx = int(args.side * args.scale) ** 2 / 1e6
    report = {"machine": machine(), "device": str(dev), "lr_side": args.side, "scale": args.scale,
              "output_mpx": out_mpx, "models": {}}
    for name in args.presets.split(","):
        model = build_model(name).to(dev)
        plan = {}

        def go(m=model, plan=plan):
            plan["res"] = superresolve_array(m, img, args.scale, device=dev, tile=args.tile)[2]

        t = timed(go, args.repeats, sync=dev.type == "cuda")
        t["output_mpx_per_s"] = round(out_mpx / t["median_s"], 4)
        t["tile"] = plan["res"].tile
        t["tiles"] = plan["res"].tiles
        report["models"][name] = t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
