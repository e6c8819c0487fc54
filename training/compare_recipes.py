"""Short CPU runs at equal compute to choose the bundled recipe's stage split and learning-rate schedule.

Each recipe trains stage 1 for a share of a fixed number of seconds and stage 2 for the rest, warm-started
(``--init``) from a model as every GPU window is (training/train_bundled.sh), and is scored on the validation
pictures (PSNR of a centre crop, the authors' border) beside bicubic and the model it started from. Recipes:
the constant rate at every stage split, then at the middle split the cosine schedule (with a short warm-up)
and each other rate factor. Prints one JSON line per recipe and writes OUT/compare.json and OUT/compare.md.

    python training/compare_recipes.py --data data/samples --config training/configs/lite.toml \
        --init e2diffsr_core/weights/e2diffsr_lite.pt --total 420 --out runs/compare \
        --set stage1.batch_size=4 --set stage2.batch_size=4 --set stage2.hr_crop=96 \
        --set data.scale_max=4 --set data.num_workers=0
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPLITS = (0.25, 0.5, 0.75)   # share of the total spent in stage 1


@dataclass(frozen=True)
class Recipe:
    split: float           # share of the seconds given to stage 1
    schedule: str = "constant"
    lr_factor: float = 1.0
    warmup: int = 0

    @property
    def name(self) -> str:
        return f"{self.schedule}-lr{self.lr_factor:g}-split{self.split:g}"

    def overrides(self, base_lr: dict[str, float]) -> list[str]:
        out = []
        for stage in ("stage1", "stage2"):
            out += [f"--set={stage}.lr_schedule=\"{self.schedule}\"", f"--set={stage}.warmup_steps={self.warmup}"]
            if self.lr_factor != 1:
                out.append(f"--set={stage}.base_lr={base_lr[stage] * self.lr_factor:g}")
        return out


def recipes(factors: list[float], warmup: int) -> list[Recipe]:
    out = [Recipe(split) for split in SPLITS]
    out.append(Recipe(0.5, "cosine", 1.0, warmup))
    out += [Recipe(0.5, "constant", f) for f in factors if f != 1]
    return out


def train(config: str, stage: int, data: Path, out: Path, seconds: float, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "e2diffsr_core.train", "--config", config, "--stage", str(stage),
           "--data", str(data), "--split", str(data / "split.json"), "--out", str(out),
           "--max-minutes", f"{seconds / 60:.4f}", "--max-steps", "1000000", "--device", "cpu",
           "--set", "run.val_every=0", "--set", "run.ckpt_every=1000000", "--set", "run.progress=false", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def steps(run: Path) -> int:
    import torch

    return int(torch.load(run / "state.pt", map_location="cpu", weights_only=True)["step"])


def score(model: Path, data: Path, scale: float, crop: int) -> tuple[float, float]:
    """Mean PSNR of ``model`` and of bicubic on the centre crops of the validation pictures at ``scale``."""
    from e2diffsr_core.api import open_model
    from e2diffsr_core.evaluation.evaluate import evaluator_output
    from e2diffsr_core.evaluation.metrics import psnr
    from e2diffsr_core.evaluation.protocol import bicubic_pil, make_lr, read_rgb

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


def scores(model: Path, data: Path, scales: list[float], crop: int) -> dict:
    out = {}
    for s in scales:
        ours, bic = score(model, data, s, crop)
        out[f"x{s:g}"] = {"psnr": round(ours, 3), "bicubic": round(bic, 3)}
    return out


def run_recipe(r: Recipe, args, common: list[str], base_lr: dict[str, float]) -> dict:
    extra = common + r.overrides(base_lr) + ([f"--init={args.init}"] if args.init else [])
    s1, s2 = args.out / f"{r.name}-s1", args.out / f"{r.name}-s2"
    t1 = r.split * args.total
    train(args.config, 1, args.data, s1, t1, extra)
    train(args.config, 2, args.data, s2, args.total - t1, extra + ["--stage1", str(s1)])
    row = {**asdict(r), "stage1_s": t1, "stage2_s": args.total - t1, "stage1_steps": steps(s1),
           "stage2_steps": steps(s2), "scores": scores(s2 / "model.pt", args.data, args.scales, args.crop)}
    if not args.keep:
        shutil.rmtree(s1)
    return row


def table(start: dict | None, rows: list[dict], scales: list[float]) -> str:
    head = "| recipe | stage 1 (s, steps) | stage 2 (s, steps) | " + " | ".join(f"PSNR x{s:g}" for s in scales) + " |"
    out = [head, "|" + " --- |" * (3 + len(scales))]
    first = rows[0]["scores"] if rows else start
    out.append("| bicubic | | | " + " | ".join(f"{first[f'x{s:g}']['bicubic']:.3f}" for s in scales) + " |")
    if start:
        out.append("| starting model | | | " + " | ".join(f"{start[f'x{s:g}']['psnr']:.3f}" for s in scales) + " |")
    for r in rows:
        name = f"{r['schedule']}, lr x{r['lr_factor']:g}" + (f", warm-up {r['warmup']}" if r["warmup"] else "")
        out.append(f"| {name} | {r['stage1_s']:.0f}, {r['stage1_steps']} | {r['stage2_s']:.0f}, {r['stage2_steps']} | "
                   + " | ".join(f"{r['scores'][f'x{s:g}']['psnr']:.3f}" for s in scales) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--config", default="training/configs/lite.toml")
    p.add_argument("--init", help="model file every recipe starts from (as a GPU window does); none: random")
    p.add_argument("--total", type=float, default=420.0, help="seconds of training per recipe (both stages)")
    p.add_argument("--lr-factors", default="1,3", help="learning-rate multipliers tried at the middle split")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps of the cosine recipe")
    p.add_argument("--scales", default="2,4", help="scales scored")
    p.add_argument("--crop", type=int, default=128, help="side of the centre crop scored on each picture")
    p.add_argument("--set", action="append", default=[], help="config override for every run (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the stage-1 runs")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.scales = [float(s) for s in args.scales.split(",")]
    from e2diffsr_core.train.config import load_config

    cfg = load_config(args.config, args.set)
    base_lr = {"stage1": cfg.stage1.base_lr, "stage2": cfg.stage2.base_lr}
    common = [f"--set={kv}" for kv in args.set]
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    start = scores(Path(args.init), args.data, args.scales, args.crop) if args.init else None
    print(json.dumps({"starting_model": start}), flush=True)
    rows = []
    for r in recipes([float(f) for f in args.lr_factors.split(",")], args.warmup):
        rows.append(run_recipe(r, args, common, base_lr))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "compare.json").write_text(json.dumps({"starting_model": start, "recipes": rows}, indent=2) + "\n")
        (args.out / "compare.md").write_text(table(start, rows, args.scales))
    return 0


if __name__ == "__main__":
    sys.exit(main())
