"""Train E2DiffSR in two stages (paper Sec. III-D).

    python -m e2diffsr_core.train --config training/configs/paper.toml --stage 1 --data AID \\
        --split training/splits/aid_split.json --out runs/paper-s1
    python -m e2diffsr_core.train --config training/configs/paper.toml --stage 2 --data AID \\
        --split training/splits/aid_split.json --out runs/paper-s2 --stage1 runs/paper-s1
    torchrun --nproc_per_node=8 -m e2diffsr_core.train --config ... (same arguments: one process per GPU)

Add --resume to continue a run where it stopped (same result as an uninterrupted run; SIGTERM or Ctrl+C save
the state first), or --init MODEL to start a new run from a trained model's weights (warm start).
--check-data reads every image of the split and reports every problem without training (OUT/data_check.json).
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
    p.add_argument("--out", help="run folder: model.pt, best.pt, state.pt, checkpoints/, log.csv, val.csv, "
                   "data.json, val/ (required to train)")
    p.add_argument("--check-data", action="store_true", help="only check the data (every image read in full) "
                   "and write OUT/data_check.json when --out is given")
    p.add_argument("--bands", help="bands for the model's red, green, blue, e.g. 3,2,1 (default: by colour "
                   "interpretation; the same as --set data.bands=[3,2,1])")
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


def _bands(text: str | None) -> list[str]:
    """--bands 3,2,1 as a --set override of data.bands."""
    if text is None:
        return []
    try:
        bands = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise E2DiffSRError(f"--bands must be band numbers separated by commas, e.g. 3,2,1; got {text!r}") from None
    return [f"data.bands={bands}"]


def _check_only(cfg, args) -> int:
    from pathlib import Path

    from .check import DataProblems, check_data, write_report

    try:
        plan = check_data(cfg, args.stage, args.data, args.split)
        report, problems = plan.report, []
    except DataProblems as e:
        report, problems = e.report, e.lines
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_report(report, out / "data_check.json")
        except OSError as e:
            raise E2DiffSRError(f"cannot write the report in {out} ({e.strerror or e}); choose another --out") from None
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"data ok: {report['train_images']} training and {report['val_images']} validation images, "
          f"{report['crop_px']} px crops at least {report['min_valid']:.0%} valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import load_config
    from .loop import train
    from .runfolder import RunStopped

    try:
        cfg = load_config(args.config, [*args.set, *_bands(args.bands)])
        if args.check_data:
            return _check_only(cfg, args)
        if not args.out:
            raise E2DiffSRError("--out is required to train: give the run folder")
        path = train(cfg, args.stage, args.data, args.out, split=args.split, resume=args.resume,
                     stage1=args.stage1, max_steps=args.max_steps, max_minutes=args.max_minutes, device=args.device,
                     init=args.init)
    except E2DiffSRError as e:
        for line in str(e).splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"stopped by {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint in the run folder is intact (--resume continues it)",
              file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
