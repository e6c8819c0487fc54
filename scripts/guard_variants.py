"""How the guard was chosen: its variants on the validation pictures, one model run per picture and scale.

    python scripts/guard_variants.py [BORDER] [SCALES]      # e.g. 8 2,3.4,4,8 (data/samples, the 'val' list)

Rows (PSNR over RGB uint8 with a border of ceil(s), and the high-frequency ratio, as the evaluator): bicubic;
the model's own output without and with the border (``rawb``); ``today``, the correction without border or
guard; ``nb``, the border and the correction without guard; ``g:SIDE:FIRST:ROUNDS``, the border and ROUNDS
rounds of one back-projection pass then a clamp to the range of the SIDE x SIDE input pixels nearest to each
output pixel, with (``c``) or without (``n``) a clamp of the model's output first. Computed with the engine in
fp32 at temperature 0 (the tools' default sampling).
"""

import math
import sys

import numpy as np
import torch

from e2diffsr_core.api import open_model
from e2diffsr_core.engine import superresolve_array
from e2diffsr_core.engine.consistency import Placement, back_project, local_bounds
from e2diffsr_core.evaluation.metrics import hf_ratio, psnr
from e2diffsr_core.evaluation.protocol import bicubic_pil, find_images, make_lr, read_rgb, select_split
from e2diffsr_core.gridmap import GridMap

NAMES = ["today", "nb", "g:3:c:3", "g:3:n:3", "g:2:c:3", "g:2:n:3", "g:3:c:5", "g:2:c:5"]


def u8(x01):
    return np.clip(np.rint(x01 * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def variant(raw, lr01, name):
    if name in ("today", "nb"):
        return back_project(raw, lr01, passes=3)[0]
    _, side, first, rounds = name.split(":")
    where = Placement.whole(lr01.shape[-2:], raw.shape[-2:])
    lo, hi = (b.numpy() for b in local_bounds(torch.from_numpy(lr01), None, where, raw.shape[-2:], int(side)))
    x = np.clip(raw, lo, hi) if first == "c" else raw
    for _ in range(int(rounds)):
        x = np.clip(back_project(x, lr01, passes=1)[0], lo, hi)
    return x


def main(border: int, scales: list[float]) -> None:
    files = select_split("data/samples", find_images("data/samples"), "data/samples/split.json", "val")
    model = open_model(None, "cpu")
    acc = {}
    for s in scales:
        for p in files:
            hr = read_rgb(p)
            h, w = hr.shape[:2]
            lr = make_lr(hr, s)
            lr01 = lr.transpose(2, 0, 1).astype(np.float32) / 255
            grid = GridMap.sized(lr01.shape[-2:], (h, w))
            run = dict(grid=grid, consistency=False, guard=0, precision="fp32", temperature=0)
            raw, _, _ = superresolve_array(model, lr01, s, border=0, **run)
            rawb, _, _ = superresolve_array(model, lr01, s, border=border, **run)
            res = {"bicubic": bicubic_pil(lr, (w, h)), "raw": u8(raw), "rawb": u8(rawb)}
            res.update({n: u8(variant(raw if n == "today" else rawb, lr01, n)) for n in NAMES})
            for n, o in res.items():
                acc.setdefault((n, s), []).append((psnr(o, hr, math.ceil(s)), hf_ratio(o, hr, math.ceil(s))))
        print(f"x{s:g}", flush=True)
        for n in ["bicubic", "raw", "rawb", *NAMES]:
            a = np.array(acc[(n, s)])
            print(f"  {n:10s} psnr {a[:, 0].mean():.3f}  hf {np.nanmean(a[:, 1]):.4f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8,
         [float(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "2,3.4,4,8").split(",")])
