"""The bounded engine against the exact one on the same raster, same version (JSON): PSNR and seconds.

    .venv/bin/python benchmarks/bench_bounded.py [--side 2000] [--scale 2] [--bounded-memory 256M]
                                                 [--exact-memory 12G] [--scrambled]

A ``--side`` x ``--side`` mosaic of the bundled sample (``--scrambled``: blocks of it in random
orientations, so that no period can line up with the statistics' sample windows) is super-resolved twice
with the default settings: with ``--exact-memory`` (the whole-image maps fit: the exact engine) and with
``--bounded-memory`` (they do not: the bounded engine, statistics from a sample). Printed: both times, the
PSNR of one against the other (peak 255) over everything and 64 px away from the borders, and the largest
difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from bench_large import SAMPLE, make_mosaic, write_like_sample  # noqa: E402

from e2diffsr_core.raster import superresolve_raster  # noqa: E402


def scrambled_mosaic(path: Path, side: int, block: int = 200, seed: int = 7) -> None:
    """A side x side raster of ``block`` px pieces of the sample, each cut at random and turned or flipped."""
    src = gdal.Open(str(SAMPLE))
    arr = src.ReadAsArray()
    rng = np.random.default_rng(seed)
    out = np.zeros((arr.shape[0], side, side), arr.dtype)
    for y in range(0, side, block):
        for x in range(0, side, block):
            oy, ox = rng.integers(0, min(arr.shape[1:]) - block + 1, 2)
            turn = int(rng.integers(0, 8))  # a quarter turn 0-3 times, then (4-7) a flip
            piece = np.rot90(arr[:, oy:oy + block, ox:ox + block], turn % 4, axes=(1, 2))
            if turn >= 4:
                piece = piece[:, :, ::-1]
            h, w = min(block, side - y), min(block, side - x)
            out[:, y:y + h, x:x + w] = piece[:, :h, :w]
    write_like_sample(path, out, src)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=2000)
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--bounded-memory", default="256M")
    ap.add_argument("--exact-memory", default="12G")
    ap.add_argument("--scrambled", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / "in.tif"
        (scrambled_mosaic if args.scrambled else make_mosaic)(src, args.side)
        seconds, outs = {}, {}
        for name, memory in (("exact", args.exact_memory), ("bounded", args.bounded_memory)):
            logs: list[str] = []
            t = time.perf_counter()
            superresolve_raster(str(src), str(d / f"{name}.tif"), args.scale, memory=memory, log=logs.append)
            seconds[name] = round(time.perf_counter() - t, 1)
            engine = "bounded" if any("bounded engine" in m for m in logs) else "exact"
            if engine != name:
                raise SystemExit(f"--{name}-memory {memory} ran the {engine} engine; choose another budget")
            outs[name] = gdal.Open(str(d / f"{name}.tif")).ReadAsArray().astype(np.float64)
    a, b = outs["exact"], outs["bounded"]
    print(json.dumps({"machine": machine(), "side": args.side, "scale": args.scale, "scrambled": args.scrambled,
                      "seconds": seconds, "psnr_db": round(psnr(a, b), 2),
                      "psnr_db_64px_inside": round(psnr(a[:, 64:-64, 64:-64], b[:, 64:-64, 64:-64]), 2),
                      "largest_difference": float(np.abs(a - b).max())}, indent=1))


if __name__ == "__main__":
    main()
