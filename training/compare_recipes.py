"""Short CPU runs at equal compute to choose the bundled recipe's stage time split and learning rate.

Stage 1 is trained once in slices (resumed), so the stage-1 runs of different lengths cost one run; each
stage-2 run then gets the rest of the same total. Every resulting model is scored on the validation
pictures at x4 (PSNR of a centre crop against bicubic's).

    python training/compare_recipes.py --data data/samples --config training/configs/tiny.toml \
        --total 40 --crop 64 --set data.scale_max=4 --set stage1.lr_patch=12 --set stage2.hr_crop=48 \
        --set stage1.disc_weight=0 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

SPLITS = (0.25, 0.5, 0.75)   # fraction of the total spent in stage 1


def train(config: str, stage: int, data: Path, out: Path, seconds: float, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "e2diffsr_core.train", "--config", config, "--stage", str(stage),
           "--data", str(data), "--split", str(data / "split.json"), "--out", str(out),
           "--max-minutes", f"{seconds / 60:.4f}", "--max-steps", "1000000", "--device", "cpu",
           "--set", "run.val_every=0", "--set", "run.ckpt_every=1000000", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def steps(run: Path) -> int:
    import torch

    return int(torch.load(run / "state.pt", map_location="cpu", weights_only=True)["step"])


def score(model: Path, data: Path, scale: float = 4.0, crop: int = 128) -> tuple[float, float]:
    from e2diffsr_core.api import open_model
    from e2diffsr_core.eval_protocol import bicubic_pil, make_lr, read_rgb
    from e2diffsr_core.evaluate import evaluator_output
    from e2diffsr_core.metrics import psnr

    net = open_model(str(model), "cpu")
    ours, bic = [], []
    for i, rel in enumerate(json.loads((data / "split.json").read_text())["val"]):
        hr = read_rgb(data / rel)
        h, w = hr.shape[:2]
        side = min(crop, h, w) // 8 * 8
        hr = np.ascontiguousarray(hr[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side])
        lr = make_lr(hr, scale)
        b = math.ceil(scale)
        ours.append(psnr(evaluator_output(net, lr, (side, side), i, "cpu"), hr, b))
        bic.append(psnr(bicubic_pil(lr, (side, side)), hr, b))
    return float(np.mean(ours)), float(np.mean(bic))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--config", default="training/configs/tiny.toml")
    p.add_argument("--total", type=float, default=120.0, help="seconds of training per recipe (both stages)")
    p.add_argument("--lr-factors", default="1,3", help="learning-rate multipliers tried at the middle split")
    p.add_argument("--crop", type=int, default=128, help="side of the centre crop scored on each picture")
    p.add_argument("--set", action="append", default=[], help="config override for every run (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    common = [f"--set={kv}" for kv in args.set]
    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for factor in [float(f) for f in args.lr_factors.split(",")]:
        extra = common + ([] if factor == 1 else [f"--set=stage1.base_lr={1e-4 * factor:g}",
                                                  f"--set=stage2.base_lr={1e-4 * factor:g}"])
        splits = SPLITS if factor == 1 else (0.5,)
        s1 = args.out / f"lr{factor:g}-s1"
        done = 0.0
        for frac in splits:
            t1 = frac * args.total
            train(args.config, 1, args.data, s1, t1 - done, extra + (["--resume"] if done else []))
            done = t1
            snap = args.out / f"lr{factor:g}-s1-{int(t1)}s"
            shutil.copytree(s1, snap)
            s2 = args.out / f"lr{factor:g}-s2-after{int(t1)}s"
            train(args.config, 2, args.data, s2, args.total - t1, extra + ["--stage1", str(snap)])
            psnr_sr, psnr_bic = score(s2 / "model.pt", args.data, crop=args.crop)
            rows.append({"lr_factor": factor, "stage1_s": t1, "stage2_s": args.total - t1,
                         "stage1_steps": steps(snap), "stage2_steps": steps(s2), "psnr_x4": psnr_sr,
                         "psnr_bicubic_x4": psnr_bic})
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
