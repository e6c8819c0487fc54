"""GPU figures of the `paper` model (JSON): single-image latency, sustained raster throughput, bf16 vs fp32.

    python benchmarks/bench_gpu.py [--model FILE] [--side 1024] [--out report.json]

Needs CUDA. Everything runs through the tiled engine (reading from and writing to in-memory arrays, tiling
and blending included); GDAL is not needed. Random `paper` weights unless --model is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2diffsr_core.api import build_model, open_model  # noqa: E402
from e2diffsr_core.engine import superresolve_array  # noqa: E402


def run_engine(model, image: np.ndarray, scale: float, tile: int, precision: str = "auto") -> np.ndarray:
    return superresolve_array(model, image, scale, device=next(model.parameters()).device, tile=tile,
                              precision=precision)[0]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def psnr(a, b):
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def load_sample(npy: str | None) -> np.ndarray:
    """The bundled sample as [3, H, W] in [0, 1]; where GDAL is missing, pass it as a .npy array instead."""
    if npy:
        return np.load(npy)
    from osgeo import gdal

    root = Path(__file__).resolve().parents[1]
    return gdal.Open(str(root / "e2diffsr_core" / "data" / "sample.tif")).ReadAsArray().astype(np.float32) / 255


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="model file (default: random paper weights)")
    ap.add_argument("--side", type=int, default=1024, help="LR side of the large raster (x4 output)")
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and one tile size")
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script)")
    ap.add_argument("--sample-npy", help="the bundled sample as a [3, H, W] float array in [0, 1] (no GDAL needed)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = open_model(args.model, dev) if args.model else build_model("paper").to(dev)
    report = {"gpu": torch.cuda.get_device_name(0) if cuda else "none (cpu)", "torch": torch.__version__,
              "model": args.model or "paper (random weights)", "command": " ".join(sys.argv)}

    # 1. one 128 x 128 LR image at x4
    img = np.random.default_rng(0).random((3, 128, 128), dtype=np.float32)
    for prec in ("fp32", "bf16"):
        p = "fp32" if prec == "fp32" else "auto"
        run_engine(model, img, 4.0, 1024, p)
        med, runs = timed(lambda p=p: run_engine(model, img, 4.0, 1024, p), 5 if args.quick else 10)
        report[f"single_128_x4_{prec}_s"] = round(med, 4)

    # 2. sustained throughput on a large raster at x4 (tiling, blending and array I/O included)
    big = np.random.default_rng(1).random((3, args.side, args.side), dtype=np.float32)
    for tile in ((1024,) if args.quick else (512, 1024)):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        run_engine(model, big[:, :256, :256], 4.0, tile)
        med, runs = timed(lambda t=tile: run_engine(model, big, 4.0, t), 1 if args.quick else 2)
        mpx = (args.side * 4) ** 2 / 1e6
        report[f"raster_{args.side}_x4_tile{tile}"] = {
            "seconds": round(med, 3), "output_mpx": mpx, "output_mpx_per_s": round(mpx / med, 2),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}

        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    # 3. bf16 against fp32 on the real sample raster (x4)
    sample = load_sample(args.sample_npy)
    ref = run_engine(model, sample, 4.0, 1024, "fp32")
    low = run_engine(model, sample, 4.0, 1024, "auto")
    report["sample_x4_bf16_vs_fp32_psnr_db"] = round(psnr(ref, low), 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
