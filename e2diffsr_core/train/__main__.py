"""Train E2DiffSR in two stages (paper Sec. III-D).

    python -m e2diffsr_core.train --config training/configs/paper.toml --stage 1 --data AID \\
        --split training/splits/aid_split.json --out runs/paper-s1
    python -m e2diffsr_core.train --config training/configs/paper.toml --stage 2 --data AID \\
        --split training/splits/aid_split.json --out runs/paper-s2 --stage1 runs/paper-s1
    torchrun --nproc_per_node=8 -m e2diffsr_core.train --config ... (same arguments: one process per GPU)

Add --resume to continue a run where it stopped (same result as an uninterrupted run), or --init MODEL to
start a new run from a trained model's weights (warm start).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import E2DiffSRError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2diffsr_core.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML file (training/configs/paper.toml, lite.toml, tiny.toml)")
    p.add_argument("--stage", type=int, required=True, choices=(1, 2), help="1: autoencoder, 2: latent diffusion")
    p.add_argument("--data", required=True, help="folder of HR images (searched recursively)")
    p.add_argument("--split", help="JSON split file {\"train\": [...], \"val\": [...]} (default: every image)")
    p.add_argument("--out", required=True, help="run folder: model.pt, state.pt, log.csv, val/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its state.pt")
    p.add_argument("--stage1", help="stage 2: the stage-1 run folder or its model.pt")
    p.add_argument("--init", metavar="MODEL", help="warm start from a model file of the same configuration "
                   "(e.g. the bundled e2diffsr_lite.pt or the last exported run) instead of random weights")
    p.add_argument("--max-steps", type=int, help="override the stage's max_steps")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (and write model.pt) after this many minutes")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: [run] device)")
    p.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one config value, e.g. --set stage2.hr_crop=128 (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import load_config
    from .loop import train

    try:
        cfg = load_config(args.config, args.set)
        path = train(cfg, args.stage, args.data, args.out, split=args.split, resume=args.resume,
                     stage1=args.stage1, max_steps=args.max_steps, max_minutes=args.max_minutes, device=args.device,
                     init=args.init)
    except E2DiffSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint in the run folder is intact (--resume continues it)",
              file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
