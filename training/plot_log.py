"""Plot a training run's log.csv (losses, learning rate) and val.csv (PSNR per validation scale).

    python training/plot_log.py runs/lite-s1                 # writes runs/lite-s1/curves.png
    python training/plot_log.py runs/lite-s1 --out curves.png --columns loss,l1

Needs matplotlib (pip install matplotlib); without it, prints the first and last value of each column instead.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_columns(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{column: [(step, value)]} of a run's CSV log; empty cells (a loss not computed yet) are left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"]))
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    out.setdefault(key, []).append((step, float(value)))
    return out


def summary(name: str, columns: dict) -> list[str]:
    return [f"{name} {key}: step {pts[0][0]} {pts[0][1]:.5g} -> step {pts[-1][0]} {pts[-1][1]:.5g}"
            for key, pts in columns.items() if pts]


def plot(train: dict, val: dict, chosen: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in chosen if k in train]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(12 if val else 6, 4), squeeze=False)
    for key in keys:
        steps, values = zip(*train[key])
        axes[0][0].plot(steps, values, label=key)
    axes[0][0].set(xlabel="step", title="training (log.csv)", yscale="log" if all(
        v > 0 for k in keys for _, v in train[k]) else "linear")
    axes[0][0].legend()
    if val:
        for key in [k for k in val if k.startswith("psnr")]:
            steps, values = zip(*val[key])
            axes[0][1].plot(steps, values, marker="o", label=key)
        axes[0][1].set(xlabel="step", ylabel="dB", title="validation PSNR (val.csv)")
        axes[0][1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="run folder (holds log.csv and maybe val.csv)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN/curves.png)")
    p.add_argument("--columns", default="loss,l1,l1_bicubic,diffusion,distill",
                   help="log.csv columns to plot (those present)")
    args = p.parse_args(argv)
    log = args.run / "log.csv"
    if not log.is_file():
        print(f"error: {log} not found; give a run folder written by python -m e2diffsr_core.train", file=sys.stderr)
        return 2
    train = read_columns(log)
    val = read_columns(args.run / "val.csv") if (args.run / "val.csv").is_file() else {}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is not installed (pip install matplotlib); first and last values instead:")
        print("\n".join(summary("train", train) + summary("val", val)))
        return 0
    out = args.out or args.run / "curves.png"
    plot(train, val, args.columns.split(","), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
