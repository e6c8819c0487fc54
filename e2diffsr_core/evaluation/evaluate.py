"""Evaluate models the way the paper's Tables I and II were made (the authors' test protocol).

    python -m e2diffsr_core.evaluation --model runs/paper-s2/model.pt --data AID \\
        --split training/splits/aid_split.json --subset test --scales 2,2.6,3,3.4,4,6,8,10 --out reports/aid

Protocol (reference README 1.1, 1.2): the HR image (uint8 RGB) is the target; LR = PIL bicubic to
(int(W/s), int(H/s)); the model outputs the HR size; PSNR and SSIM on RGB uint8 with a border of ceil(s)
removed. Each model gives two rows: its own output (raw, the authors' whole-image pass) and its output as the
raster tools make it by default (the input extended by ``--border`` pixels by reflection, ``--passes`` of
back-projection, within the ``--guard`` x ``--guard`` input range around each pixel); every row also says how
well its output,
reduced to the input grid the same way, reproduces the input. Also LPIPS and FID when their backbone
weights are on disk, a high-frequency energy ratio (SR/HR, 1.0 ideal) and seconds per image. A bicubic row
(PIL bicubic of the uint8 LR to the HR size) is always there.
Writes PREFIX.json and PREFIX.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.consistency import GUARD, PASSES, back_project
from ..errors import E2DiffSRError
from ..gridmap import GridMap, mirror
from ..model import Geometry
from ..rules import check_temperature
from .metrics import FIDMetric, LPIPSMetric, hf_ratio, psnr, ssim, to_uint8
from .protocol import bicubic_pil, find_images, make_lr, read_rgb, select_split, to_model

BICUBIC = "Bicubic"
CONSISTENT = " + consistency"


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise E2DiffSRError(f"--scales must be numbers separated by commas, got {text!r}") from None
    if not scales or any(not math.isfinite(s) or s <= 1 for s in scales):
        raise E2DiffSRError(f"--scales must be numbers greater than 1, got {text!r}")
    return scales


from ..engine.tiled import BORDER  # noqa: E402  (the raster tools' border, one home)


@torch.no_grad()
def sample_to(model, lr_u8: np.ndarray, hr_size: tuple[int, int], seed: int, device,
              temperature: float = 1.0, border: int = 0) -> torch.Tensor:
    """Model output [1, 3, H, W] in [-1, 1] at exactly the HR size (not int(h*s)), whole-image geometry;
    ``temperature`` multiplies the diffusion's noise (1: the authors' sampling, 0: the tools' default);
    ``border`` > 0 runs the model on the input extended by that many pixels by reflection and crops its output
    back, as the raster tools do (gridmap.GridMap.bordered)."""
    lr = to_model(lr_u8)[None].to(device)
    grid = GridMap.sized((lr.shape[2], lr.shape[3]), hr_size)
    big, (oy, ox) = grid.bordered(border)
    if border:
        rows, cols = (torch.from_numpy(mirror(np.arange(-border, n + border), n)).to(device) for n in lr.shape[2:])
        lr = lr.index_select(2, rows).index_select(3, cols)
    geo = Geometry.whole(big.lr_size, big.out_size, big if border else None)
    lr = lr.contiguous(memory_format=torch.channels_last)
    out = model.sample(lr, geo, generator=torch.Generator().manual_seed(seed), temperature=temperature)
    return out[:, :, oy:oy + hr_size[0], ox:ox + hr_size[1]]


def consistent(out: torch.Tensor, lr_u8: np.ndarray, passes: int = PASSES, guard: int = GUARD) -> torch.Tensor:
    """``out`` [1, 3, H, W] in [-1, 1] back-projected onto the LR (uint8 H x W x 3) within the local range of
    its ``guard`` x ``guard`` input pixels (0: no guard), as the raster tools do."""
    sr01 = (out[0].float().clamp(-1, 1) * 0.5 + 0.5).cpu().numpy()
    lr01 = lr_u8.transpose(2, 0, 1).astype(np.float32) / 255.0
    fixed, _ = back_project(sr01, lr01, passes=passes, device=out.device, guard=guard)
    return torch.from_numpy(fixed)[None] * 2 - 1


def evaluator_output(model, lr_u8: np.ndarray, hr_size: tuple[int, int], seed: int, device,
                     passes: int = 0, temperature: float = 1.0, *, guard: int = GUARD,
                     border: int = BORDER) -> np.ndarray:
    """uint8 output at the HR size: the model's own (``passes`` 0), or as the raster tools make it (the input
    extended by ``border`` pixels, ``passes`` of back-projection within the local range of ``guard``)."""
    if not passes:
        return to_uint8(sample_to(model, lr_u8, hr_size, seed, device, temperature))
    out = sample_to(model, lr_u8, hr_size, seed, device, temperature, border)
    return to_uint8(consistent(out, lr_u8, passes, guard))


def psnr_to_input(sr: np.ndarray, lr: np.ndarray) -> float:
    """How well the uint8 output reproduces the input: PSNR (dB) of its PIL bicubic reduction to the LR size."""
    return psnr(bicubic_pil(sr, (lr.shape[1], lr.shape[0])), lr)


def _names(paths: list[str]) -> list[str]:
    """Row labels: the file stem, with as many parent folders as it takes to tell the models apart."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-depth:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]


def _timed(device, fn, *args):
    """(fn(*args), seconds), waiting for the GPU so that the time is the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    result = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - t


def _model_outputs(nets, lr, hr_size, seed, device, run: EvalSettings):
    """(method, uint8 output, seconds) of each model: raw, then as the tools make it (bordered, corrected)."""
    rows = []
    for name, net in nets:
        out, sec = _timed(device, sample_to, net, lr, hr_size, seed, device, run.temperature)
        rows.append((name, to_uint8(out), sec))
        if run.passes:
            if run.border:
                out, sec = _timed(device, sample_to, net, lr, hr_size, seed, device, run.temperature, run.border)
            fixed, extra = _timed(device, consistent, out, lr, run.passes, run.guard)
            rows.append((name + CONSISTENT, to_uint8(fixed), sec + extra))
    return rows


@dataclass(frozen=True)
class EvalSettings:
    """What every picture is evaluated with: the scales, the device, the noise seed of picture 0 (picture i
    uses seed + i), the back-projection passes of the consistent rows (0: raw rows only), the sampling
    temperature (0, the command-line tools' default for one sample; 1, the authors' sampling), and the guard's
    neighbourhood and the border of the consistent rows (the tools' defaults)."""

    scales: list[float]
    device: torch.device
    seed: int = 0
    passes: int = PASSES
    temperature: float = 0.0
    guard: int = GUARD
    border: int = BORDER


def _finite_mean(values: list[float]) -> float | None:
    """Mean of the finite values (a flat HR picture has no high-frequency energy to compare with); None if none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


class Scores:
    """Per (method, scale): the metrics of every picture, and their means as report rows."""

    def __init__(self, methods: list[str], scales: list[float], lpips_m: LPIPSMetric, fid_m: FIDMetric):
        self.lpips_m, self.fid_m = lpips_m, fid_m
        self.acc = {(m, s): {"psnr": [], "ssim": [], "lpips": [], "hf_ratio": [], "seconds": [], "sr": [], "hr": [],
                             "psnr_lr": []} for m in methods for s in scales}

    def add(self, method: str, scale: float, sr: np.ndarray, seconds: float, hr: np.ndarray, lr: np.ndarray):
        a, border = self.acc[(method, scale)], math.ceil(scale)
        a["psnr"].append(psnr(sr, hr, border))
        a["psnr_lr"].append(psnr_to_input(sr, lr))
        a["ssim"].append(ssim(sr, hr, border))
        a["hf_ratio"].append(hf_ratio(sr, hr, border))
        a["seconds"].append(seconds)
        if self.lpips_m.available:
            a["lpips"].append(self.lpips_m(sr, hr))
        if self.fid_m.available:
            a["sr"].append(sr)
            a["hr"].append(hr)

    def rows(self) -> list[dict]:
        return [{
            "method": name, "scale": s, "images": len(a["psnr"]),
            "psnr": float(np.mean(a["psnr"])), "ssim": float(np.mean(a["ssim"])),
            "lpips": float(np.mean(a["lpips"])) if a["lpips"] else None,
            "fid": self.fid_m(a["sr"], a["hr"]) if self.fid_m.available else None,
            "hf_ratio": _finite_mean(a["hf_ratio"]),
            "psnr_lr": float(np.mean(a["psnr_lr"])), "psnr_lr_min": float(np.min(a["psnr_lr"])),
            "sec_per_image": float(np.mean(a["seconds"])),
        } for (name, s), a in self.acc.items() if a["psnr"]]


def _score_picture(scores: Scores, hr: np.ndarray, nets, seed: int, run: EvalSettings) -> list[str]:
    """Every method at every scale on one HR picture; returns the scales skipped (no LR pixels) as 'xS'."""
    h, w = hr.shape[:2]
    skipped = []
    for s in run.scales:
        if int(w / s) < 1 or int(h / s) < 1:
            skipped.append(f"x{s:g}")
            continue
        lr = make_lr(hr, s)
        t = time.perf_counter()
        outputs = [(BICUBIC, bicubic_pil(lr, (w, h)), time.perf_counter() - t)]
        outputs += _model_outputs(nets, lr, (h, w), seed, run.device, run)
        for name, sr, sec in outputs:
            scores.add(name, s, sr, sec, hr, lr)
    return skipped


def evaluate(models: list[str], data, scales: list[float], *, split=None, subset: str = "test", device="cpu",
             seed: int = 0, max_images: int | None = None, lpips_net: str = "alex", lpips_weights=None,
             inception_weights=None, progress: bool = False, passes: int = PASSES, temperature: float = 0.0,
             guard: int = GUARD, border: int = BORDER, bands: list[int] | None = None) -> dict:
    """The report of ``models`` on the pictures of ``data`` (one ``subset`` of ``split``) at ``scales``; each
    picture read as ``superresolve`` reads it, its ``bands`` (default: red, green, blue by colour)."""
    from ..api import open_model, resolve_device

    if guard not in (0, 2, 3) or int(border) != border or border < 0:
        raise E2DiffSRError(f"--guard is 0, 2 or 3 and --border a whole number >= 0, got {guard} and {border}")
    run = EvalSettings(scales, resolve_device(device), seed, passes, check_temperature(temperature), guard,
                       int(border))
    files = select_split(data, find_images(data), split, subset)[:max_images]
    names = _names(models)
    # channels last: the fast layout for convolutions, as the inference engine uses (1.3x on this CPU)
    nets = [(name, open_model(p, run.device).to(memory_format=torch.channels_last)) for name, p in zip(names, models)]
    lpips_m, fid_m = LPIPSMetric(lpips_net, lpips_weights, run.device), FIDMetric(inception_weights, run.device)
    methods = [BICUBIC] + [m for n, _ in nets for m in ([n, n + CONSISTENT] if passes else [n])]
    scores, skipped = Scores(methods, scales, lpips_m, fid_m), []
    for i, path in enumerate(files):
        skipped += [f"{path.name} at {x}" for x in _score_picture(scores, read_rgb(path, bands), nets, seed + i, run)]
        if progress:
            print(f"[{i + 1}/{len(files)}] {path.name}", file=sys.stderr)
    return {
        "protocol": "HR uint8 RGB; LR = PIL bicubic to (int(W/s), int(H/s)); output at the HR size; "
                    "PSNR/SSIM on RGB uint8 with a border of ceil(s) removed",
        "passes": passes, "temperature": run.temperature, "guard": run.guard, "border": run.border,
        "data": Path(data).name, "subset": subset if split else "all", "images": len(files),
        "scales": scales, "seed": seed, "device": str(run.device), "methods": methods,
        "models": {n: Path(p).name for n, p in zip(names, models)},
        "lpips": f"computed ({lpips_net})" if lpips_m.available else f"LPIPS: {lpips_m.reason}",
        "fid": f"computed ({fid_m.kind})" if fid_m.available else f"FID: {fid_m.reason}",
        "skipped": skipped, "rows": scores.rows(),
    }


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(report: dict) -> str:
    scales, methods = report["scales"], report["methods"]
    cell = {(r["method"], r["scale"]): r for r in report["rows"]}
    head = "| Method | " + " | ".join(f"x{s:g}" for s in scales) + " |"
    rule = "|---|" + "---|" * len(scales)

    def table(fn):
        lines = [head, rule]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(fn(cell.get((m, s))) for s in scales) + " |")
        return lines

    out = [f"# Evaluation on {report['data']} ({report['subset']}, {report['images']} images)", "",
           report["protocol"] + ".", "", "## PSNR (dB) / SSIM", ""]
    out += table(lambda r: "-" if r is None else f"{r['psnr']:.2f} / {r['ssim']:.4f}")
    out += ["", "## LPIPS / FID", ""]
    if report["lpips"].startswith("computed") or report["fid"].startswith("computed"):
        out += table(lambda r: "-" if r is None else f"{_fmt(r['lpips'], '.4f')} / {_fmt(r['fid'], '.2f')}")
        out.append("")
    out += [f"- LPIPS: {report['lpips']}" if report["lpips"].startswith("computed") else f"- {report['lpips']}",
            f"- FID: {report['fid']}" if report["fid"].startswith("computed") else f"- {report['fid']}",
            "", "## High-frequency energy ratio (SR / HR; 1.0 is ideal) and seconds per image", ""]
    out += table(lambda r: "-" if r is None else f"{_fmt(r['hf_ratio'], '.3f')} / {r['sec_per_image']:.3f} s")
    out += ["", "## Consistency with the input: PSNR (dB) of the output reduced to the input grid (PIL bicubic, "
            "uint8) against the input, mean / lowest picture", ""]
    out += table(lambda r: "-" if r is None else f"{r['psnr_lr']:.2f} / {r['psnr_lr_min']:.2f}")
    if report.get("passes"):
        guard, border = report.get("guard", 0), report.get("border", 0)
        out += ["", f"\"{CONSISTENT.strip()}\": the model's output as the raster tools make it: "
                + (f"the input extended by {border} px by reflection, " if border else "")
                + f"back-projected onto the input, {report['passes']} passes"
                + (f", within the range of the {guard} x {guard} input pixels around each pixel" if guard else "")
                + "."]
    if report["skipped"]:
        out += ["", f"Skipped (no LR pixels): {', '.join(report['skipped'])}"]
    out += ["", f"Device {report['device']}, seed {report['seed']}.", ""]
    return "\n".join(out)


def write_report(report: dict, prefix) -> tuple[Path, Path]:
    prefix = Path(prefix)
    if prefix.suffix.lower() in (".json", ".md"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    js, md = Path(f"{prefix}.json"), Path(f"{prefix}.md")
    js.write_text(json.dumps(report, indent=2))
    md.write_text(markdown(report))
    return js, md


def _bands(text: str) -> list[int]:
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands are numbers like 4,3,2, got {text!r}") from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"bands are numbers from 1, like 4,3,2, got {text!r}")
    return bands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m e2diffsr_core.evaluation", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model file (repeat for several models)")
    p.add_argument("--data", required=True, help="folder of HR test images (searched recursively)")
    p.add_argument("--split", help="JSON split file; --subset picks the list (default test)")
    p.add_argument("--subset", default="test", help="train, val or test (with --split)")
    p.add_argument("--scales", default="2,2.6,3,3.4,4,6,8,10", help="comma-separated scales")
    p.add_argument("--out", required=True, help="report prefix: writes PREFIX.json and PREFIX.md")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="noise seed (image i uses seed + i)")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--passes", type=int, default=PASSES,
                   help=f"back-projection passes of the consistent rows (default {PASSES}; 0: raw rows only)")
    p.add_argument("--guard", type=int, default=GUARD, choices=(0, 2, 3),
                   help=f"consistent rows: keep each pixel within the range of the N x N input pixels around it "
                        f"(default {GUARD}, as the raster tools; 0: off)")
    p.add_argument("--border", type=int, default=BORDER,
                   help=f"consistent rows: extend the input by N pixels by reflection for the model (default "
                        f"{BORDER}, as the raster tools; 0: off)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature, 0 to 1 (default 0, as the command-line tools for one sample; "
                        "1: the authors' sampling)")
    p.add_argument("--bands", type=_bands, metavar="B,B,B",
                   help="the three bands of every picture the model sees, e.g. 4,3,2 (default: the bands tagged "
                        "red, green, blue, as superresolve reads them)")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"),
                   help="LPIPS backbone (pyiqa's default: alex)")
    p.add_argument("--lpips-weights", help="torchvision weights file of that backbone (default: torch hub cache)")
    p.add_argument("--inception-weights", help="torchvision Inception-v3 weights for FID (default: torch hub cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(args.model, args.data, parse_scales(args.scales), split=args.split, subset=args.subset,
                          device=args.device, seed=args.seed, max_images=args.max_images, lpips_net=args.lpips_net,
                          lpips_weights=args.lpips_weights, inception_weights=args.inception_weights, progress=True,
                          passes=args.passes, temperature=args.temperature, guard=args.guard, border=args.border,
                          bands=args.bands)
        js, md = write_report(report, args.out)
    except E2DiffSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
