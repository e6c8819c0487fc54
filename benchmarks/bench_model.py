"""Seconds per image for `paper` and `lite` at LR 128 x 128, x4, against bicubic in the same run (JSON).

    .venv/bin/python benchmarks/bench_model.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, timed  # noqa: E402

from e2diffsr_core.api import build_model, resolve_device, superresolve_tensor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="lite,paper")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    sync = dev.type == "cuda"
    lr = torch.rand(1, 3, 128, 128, device=dev)
    bicubic = timed(lambda: F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False), 20, sync)
    report = {"machine": machine(), "device": str(dev), "input": "1x3x128x128 LR, x4 -> 512x512",
              "bicubic_s": bicubic["median_s"], "models": {}}
    for name in args.presets.split(","):
        model = build_model(name).to(dev)
        superresolve_tensor(model, lr, 4.0, seed=0)  # warm-up
        t = timed(lambda m=model: superresolve_tensor(m, lr, 4.0, seed=0), args.repeats, sync)
        t["ratio_to_bicubic"] = round(t["median_s"] / bicubic["median_s"], 1)
        report["models"][name] = t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
