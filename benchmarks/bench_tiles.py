"""Does the tile size change the result? Small tiles against one whole-image pass on real imagery (JSON).

    .venv/bin/python benchmarks/bench_tiles.py [--crop 160] [--scale 3.4] [--tile 128]

A centre crop of the bundled sample, the bundled model, the model's own output (no consistency correction,
so that the whole-image ``model.sample`` with the engine's noise field is the reference):
- fp32: ``--tile`` px tiles and a single tile against ``model.sample`` (the 55 dB criterion);
- bf16 (the default on CPUs with AMX): ``--tile`` px tiles against a single bf16 tile (same arithmetic, so
  only the tiling differs), and a single bf16 tile against the fp32 pass (what bf16 itself changes).
PSNR on [0, 1] images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2diffsr_core.api import open_model  # noqa: E402
from e2diffsr_core.engine import NoiseField, superresolve_array  # noqa: E402
from e2diffsr_core.engine.device import cpu_has_amx  # noqa: E402
from e2diffsr_core.model import Geometry  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return round(10 * np.log10(1.0 / mse), 2) if mse > 0 else float("inf")


def whole_pass(model, image: np.ndarray, scale: float, seed: int) -> np.ndarray:
    h, w = image.shape[1:]
    out = (int(h * scale), int(w * scale))
    win = NoiseField(seed, model.cfg.timesteps, model.cfg.embed_dim).window(0, out[0] // 8, 0, out[1] // 8)
    with torch.no_grad():
        sr = model.sample((torch.from_numpy(image)[None] - 0.5) / 0.5, Geometry.whole((h, w), out),
                          noises=[torch.from_numpy(n)[None] for n in win])
    return (sr.clamp(-1, 1) * 0.5 + 0.5)[0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--scale", type=float, default=3.4)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    from osgeo import gdal

    sample = Path(__file__).resolve().parents[1] / "e2diffsr_core" / "data" / "sample.tif"
    full = gdal.Open(str(sample)).ReadAsArray().astype(np.float32) / 255
    y0, x0 = (full.shape[1] - args.crop) // 2, (full.shape[2] - args.crop) // 2
    image = np.ascontiguousarray(full[:, y0:y0 + args.crop, x0:x0 + args.crop])
    model = open_model(None, "cpu")
    run = dict(seed=args.seed, consistency=False, temperature=1.0)  # the authors' sampling, as whole_pass
    whole = whole_pass(model, image, args.scale, args.seed)
    big = max(int(args.crop * args.scale) + 64, 2048)
    out = {}
    for precision in ("fp32", "bf16"):
        tiled, _, res = superresolve_array(model, image, args.scale, tile=args.tile, precision=precision, **run)
        one, _, _ = superresolve_array(model, image, args.scale, tile=big, precision=precision, **run)
        out[precision] = {"tiles": res.tiles, "tiled_vs_one_tile_db": psnr(tiled, one),
                          "tiled_vs_whole_fp32_db": psnr(tiled, whole), "one_tile_vs_whole_fp32_db": psnr(one, whole)}
    print(json.dumps({"image": f"bundled sample, centre {args.crop} x {args.crop} px", "scale": args.scale,
                      "tile": args.tile, "cpu_has_amx": cpu_has_amx(), **out}, indent=2))


if __name__ == "__main__":
    main()
