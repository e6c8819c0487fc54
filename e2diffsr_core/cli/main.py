"""Command line: python -m e2diffsr_core {info,convert-official,export,superresolve,superresolve-batch} ...

The parser and the exit codes of every command; each command's options live beside it in this package."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import Cancelled, E2DiffSRError, Stopped


def _cmd_info(args) -> int:
    from ..api import build_model, open_model
    from ..tools.inspect_model import flops_per_output_pixel, parameter_counts

    model = open_model(args.model) if args.model else build_model(args.config, seed=0)
    report = {
        "source": args.model or f"preset:{args.config}",
        "config": model.cfg.to_dict(),
        "parameters": parameter_counts(model),
    }
    report["parameters_inference_total_M"] = round(report["parameters"]["inference_total"] / 1e6, 3)
    if args.flops:
        report["flops_per_output_pixel_x4"] = flops_per_output_pixel(model)
    if getattr(model, "meta", None):
        report["meta"] = model.meta
    print(json.dumps(report, indent=2))
    return 0


def _cmd_convert(args) -> int:
    from ..tools.convert_official import convert_official

    meta = convert_official(args.second_stage, args.out, args.first_stage, use_ema=not args.raw_unet)
    print(f"wrote {args.out} ({meta['weights']} UNet weights, scale_factor {meta['scale_factor']:.6g})")
    return 0


def _cmd_export(args) -> int:
    from ..checkpoint import load_model, save_model

    model = load_model(args.model)
    save_model(model, args.out, dict(getattr(model, "meta", {}) or {}), half=args.half)
    print(f"wrote {args.out}{' (fp16 weights)' if args.half else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2diffsr_core",
                                description="E2DiffSR continuous-scale super-resolution")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print parameter counts (JSON) of a preset or a model file")
    g = info.add_mutually_exclusive_group()
    g.add_argument("--config", default="paper", help="preset name: paper, lite or tiny (default paper)")
    g.add_argument("--model", help="a model file written by e2diffsr")
    info.add_argument("--flops", action="store_true", help="also measure FLOPs per output pixel at x4")
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser("convert-official", help="convert the authors' LDCSR checkpoints into one model file")
    conv.add_argument("--second-stage", required=True, help="second-stage Lightning checkpoint (.ckpt)")
    conv.add_argument("--first-stage", help="first-stage checkpoint (optional: checked against the second stage)")
    conv.add_argument("--out", required=True, help="model file to write")
    conv.add_argument("--raw-unet", action="store_true", help="use the raw UNet weights instead of the EMA ones")
    conv.set_defaults(func=_cmd_convert)

    exp = sub.add_parser("export", help="rewrite a model file, e.g. with fp16 weights for distribution")
    exp.add_argument("--model", required=True, help="model file written by e2diffsr (e.g. a run's model.pt)")
    exp.add_argument("--out", required=True, help="model file to write")
    exp.add_argument("--half", action="store_true", help="store floating-point weights as fp16 (loads as fp32)")
    exp.set_defaults(func=_cmd_export)

    from .batch import add_parser as add_batch  # the raster commands import GDAL only when they run
    from .superresolve import add_parser as add_sr

    add_sr(sub)
    add_batch(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (superresolve-batch --procs re-runs it)
    try:
        return args.func(args)
    except E2DiffSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 130 if isinstance(e, Cancelled) else 2
    except Stopped as e:
        print(f"error: stopped by {e.name}; no output was written", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
