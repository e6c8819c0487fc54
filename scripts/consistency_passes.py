"""How many back-projection passes: fidelity to the input and to the truth for 0 (raw) to N passes.

    .venv/bin/python scripts/consistency_passes.py --data data/samples --split data/samples/split.json \\
        [--subset val] [--scales 2,3.4,4,8] [--max-passes 5] [--model FILE]

The evaluator's protocol (LR = PIL bicubic of the HR picture, output at the HR size, seed 0 + picture
index): the model samples each picture once and the same output is corrected with 1 .. N passes. Prints,
per scale and number of passes, the mean PSNR against the HR picture (border ceil(s)) and the mean and
lowest PSNR of the output reduced to the input grid against the input (8-bit).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from e2diffsr_core.api import open_model
from e2diffsr_core.evaluation.evaluate import consistent, parse_scales, psnr_to_input, sample_to
from e2diffsr_core.evaluation.metrics import psnr, to_uint8
from e2diffsr_core.evaluation.protocol import find_images, make_lr, read_rgb, select_split


def measure(model, files, scales, max_passes: int, seed: int = 0) -> dict:
    """{(scale, passes): ([PSNR vs HR], [PSNR to input])} over the pictures."""
    acc = {(s, p): ([], []) for s in scales for p in range(max_passes + 1)}
    for i, path in enumerate(files):
        hr = read_rgb(path)
        for s in scales:
            lr = make_lr(hr, s)
            out = sample_to(model, lr, hr.shape[:2], seed + i, "cpu")
            for p in range(max_passes + 1):
                sr = to_uint8(consistent(out, lr, p) if p else out)
                acc[(s, p)][0].append(psnr(sr, hr, math.ceil(s)))
                acc[(s, p)][1].append(psnr_to_input(sr, lr))
        print(f"[{i + 1}/{len(files)}] {path.name}", file=sys.stderr)
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split")
    ap.add_argument("--subset", default="val")
    ap.add_argument("--scales", default="2,3.4,4,8")
    ap.add_argument("--max-passes", type=int, default=5)
    ap.add_argument("--model", help="model file (default: the bundled model)")
    args = ap.parse_args()
    scales = parse_scales(args.scales)
    files = select_split(args.data, find_images(args.data), args.split, args.subset)
    acc = measure(open_model(args.model, "cpu"), files, scales, args.max_passes)
    print(f"{len(files)} pictures; PSNR vs HR (dB) | PSNR to the input, mean / lowest (dB)\n")
    print("| passes | " + " | ".join(f"x{s:g}" for s in scales) + " |")
    print("|---|" + "---|" * len(scales))
    for p in range(args.max_passes + 1):
        cells = [f"{np.mean(a):.2f} \\| {np.mean(b):.1f} / {np.min(b):.1f}" for a, b in
                 (acc[(s, p)] for s in scales)]
        print(f"| {p if p else '0 (raw)'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
