"""GPU figures of the `paper` model (JSON), needing only torch and numpy (no GDAL, PIL or lpips).

    python benchmarks/bench_gpu.py [--side 1024] [--out report.json] [--tiny]

1. latency of one 128 x 128 LR image at x4, fp32 and bf16 (median of repeats, after a warm-up);
2. sustained x4 throughput on a side x side LR raster (4096 x 4096 output px by default), bf16, through the
   tiled engine with in-memory arrays, and its peak GPU memory;
3. bf16 against fp32 (PSNR) on a 256 x 256 LR image with structure at every scale;
4. achieved TFLOP/s: the FLOPs of one whole-image pass of the raster (counted on the meta device) over the
   engine's time, against the card's dense bf16 peak where known;
5. trainer samples/s for `paper`: stage 1 at batch 4 with 48 px LR crops (x4), stage 2 at batch 8 with
   256 px HR crops (x4), bf16 autocast, perceptual loss off (no VGG weights needed), random data;
6. (last, so that a slow compiler costs no other figure) the sustained raster again with the UNet compiled
   (``compile=True``: CUDA graphs on a GPU): the first run (compiling) and a second one on the same engine,
   and its agreement with the uncompiled output; ``--no-compile`` leaves it out.
``--tiny`` runs every step with the tiny preset at small sizes (on the CPU when there is no GPU): a check that
the script works, not a measurement.
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

from e2diffsr_core.api import build_model  # noqa: E402
from e2diffsr_core.engine import superresolve_array  # noqa: E402

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                    "L40": 181.0, "RTX 4090": 165.0, "A10": 125.0, "L4": 121.0}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, repeats: int, dev: torch.device) -> float:
    times = []
    for _ in range(repeats):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-20)))


def structured_image(side: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients, edges and fine texture in [0, 1]: a stand-in for imagery without any file reader."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (3 * x + k * y)) for k in (1, 2, 3)])
    img += 0.2 * (((x * 16).astype(int) + (y * 16).astype(int)) % 2)[None]
    img += 0.05 * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img / 1.3, 0, 1).astype(np.float32)


def sr(model, image, dev, tile, precision):
    return superresolve_array(model, image, 4.0, device=dev, tile=tile, precision=precision)[0]


def latency(report, model, dev, side, repeats):
    img = structured_image(side)
    for prec in ("fp32", "bf16"):
        sr(model, img, dev, 1024, prec)
        report[f"latency_{side}_x4_{prec}_ms"] = round(1000 * timed(lambda p=prec: sr(model, img, dev, 1024, p),
                                                                     repeats, dev), 1)


def throughput(report, model, dev, side):
    from bench_flops import whole_pass_flops

    big = structured_image(side, 1)
    sr(model, big[:, :128, :128], dev, 1024, "bf16")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    seconds = timed(lambda: sr(model, big, dev, 1024, "bf16"), 1, dev)
    mpx = (side * 4) ** 2 / 1e6
    flops = whole_pass_flops(model, side, 4.0)
    entry = {"output_px": f"{side * 4} x {side * 4}", "seconds": round(seconds, 3),
             "output_mpx_per_s": round(mpx / seconds, 2), "model_tflops_per_s": round(flops / seconds / 1e12, 2),
             "peak_gpu_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    entry["bf16_peak_tflops"] = peak
    entry["fraction_of_bf16_peak"] = round(entry["model_tflops_per_s"] / peak, 4) if peak else None
    report["sustained_x4_bf16"] = entry


def compiled(report, model, dev, side):
    """The sustained raster with the UNet compiled: one engine, run twice (the first compiles)."""
    from e2diffsr_core.engine import TiledSR

    big = structured_image(side, 1)
    engine = TiledSR(model, dev, tile=1024, precision="bf16", compile=True)
    out = np.zeros((3, side * 4, side * 4), np.float32)

    def write(x, y, mean, valid, s):
        out[:, y:y + mean.shape[1], x:x + mean.shape[2]] = mean

    def run():
        engine.run(lambda x, y, w, h: (big[:, y:y + h, x:x + w], np.ones((h, w), bool)), write, (side, side), 4.0)

    first = timed(run, 1, dev)
    seconds = timed(run, 1, dev)
    plain = sr(model, big, dev, 1024, "bf16")
    report["sustained_x4_bf16_compiled"] = {
        "first_run_with_compilation_s": round(first, 3), "seconds": round(seconds, 3),
        "output_mpx_per_s": round((side * 4) ** 2 / 1e6 / seconds, 2), "compile_failed": engine.unet.failed,
        "psnr_vs_uncompiled_db": round(psnr(out, plain), 2)}


def trainer(report, preset, dev, steps, lr_crop, hr_crop, batches=(4, 8)):
    from e2diffsr_core.train.config import parse_config
    from e2diffsr_core.train.runtime import Dist
    from e2diffsr_core.train.stage1 import Stage1
    from e2diffsr_core.train.stage2 import Stage2

    cfg = parse_config({"model": {"preset": preset}, "stage1": {"perceptual_weight": 0.0},
                        "run": {"amp": "bf16" if dev.type == "cuda" else "none"}})
    rt = Dist(str(dev))
    gen = torch.Generator().manual_seed(0)
    for stage, cls, batch, hr_side in ((1, Stage1, batches[0], lr_crop * 4), (2, Stage2, batches[1], hr_crop)):
        model = build_model(preset).to(dev)
        st = cls(cfg, model, rt)
        data = {"hr": torch.rand(batch, 3, hr_side, hr_side) * 2 - 1,
                "lr": torch.rand(batch, 3, hr_side // 4, hr_side // 4) * 2 - 1}
        st.prepare(data, gen)
        st.step(data, 0, gen)
        seconds = timed(lambda st=st, data=data: st.step(data, 1, gen), steps, dev)
        report[f"train_stage{stage}_samples_per_s"] = round(batch / seconds, 2)
        report[f"train_stage{stage}_batch"] = f"{batch} x {hr_side} px HR ({hr_side // 4} px LR)"
        del st, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=1024, help="LR side of the sustained raster (x4 output)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--tiny", action="store_true", help="tiny preset and sizes: checks the script runs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true", help="leave out step 6 (the compiled UNet)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else \
        torch.device(args.device)
    preset = "tiny" if args.tiny else "paper"
    side, lat_side, repeats = (32, 24, 1) if args.tiny else (args.side, 128, 10)
    torch.manual_seed(0)
    model = build_model(preset).to(dev)
    report = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "model": f"{preset} (random weights)", "command": " ".join(sys.argv)}

    def save():
        print(f"{time.strftime('%H:%M:%S')} {list(report)[-1]}", file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))

    latency(report, model, dev, lat_side, repeats)
    save()
    throughput(report, model, dev, side)
    save()
    img = structured_image(24 if args.tiny else 256, 2)
    report["bf16_vs_fp32_psnr_db"] = round(psnr(sr(model, img, dev, 1024, "fp32"), sr(model, img, dev, 1024, "bf16")),
                                           2)
    save()
    if args.tiny:
        trainer(report, preset, dev, 1, 8, 32, (1, 1))
    else:
        trainer(report, preset, dev, 10, 48, 256)
    save()
    if not args.no_compile:
        compiled(report, model, dev, side)
        save()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
