"""`python -m e2diffsr_core superresolve INPUT OUTPUT --scale S ...`: the raster front end."""

from __future__ import annotations

import argparse
import signal
import sys


def _bands(text: str) -> list[int]:
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bands must be a comma-separated list of numbers like 1,2,3, got {text!r}") from None
    if not bands:
        raise argparse.ArgumentTypeError("no band numbers given")
    return bands


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a range is LO,HI like 0,10000, got {text!r}") from None
    return lo, hi


def _resolution(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a resolution is RES or X,Y like 0.04 or 0.04,0.05, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"a resolution is RES or X,Y like 0.04 or 0.04,0.05, got {text!r}")
    return (values[0], values[-1])


def _extent(text: str) -> tuple[float, float, float, float]:
    from ..errors import E2DiffSRError
    from ..raster_io.area import parse_extent

    try:
        return parse_extent(text)
    except E2DiffSRError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--extent ")) from None


def _add_area(p) -> None:
    area = p.add_argument_group("processing area (the output keeps the whole layer's grid)")
    area.add_argument("--extent", type=_extent, metavar="XMIN,YMIN,XMAX,YMAX",
                      help="only this extent (as gdalwarp -te, in the raster's CRS or --extent-crs): the output is "
                           "the whole-layer output's pixels that cover it, so pieces line up with a whole run")
    area.add_argument("--extent-crs", metavar="CRS", help="CRS of --extent, e.g. EPSG:4326 (default the raster's)")
    area.add_argument("--mask", metavar="VECTOR",
                      help="only inside these polygons (any OGR source): pixels outside are nodata and output "
                           "tiles that touch no polygon are not computed")
    area.add_argument("--mask-layer", metavar="NAME", help="the layer of --mask (default its first)")
    area.add_argument("--mask-where", metavar="SQL", help="only the features of --mask matching this WHERE clause")


def _memory(text: str) -> int:
    from ..engine.device import parse_memory
    from ..errors import E2DiffSRError

    try:
        return parse_memory(text)
    except E2DiffSRError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--memory {text}: ")) from None


def add_parser(sub) -> None:
    p = sub.add_parser("superresolve", help="super-resolve a raster (GeoTIFF or anything GDAL reads)",
                       description="Super-resolve a raster by a continuous scale factor; the output keeps the "
                                   "CRS, area, data type, bands and nodata of the input.")
    p.add_argument("input", help="input raster")
    p.add_argument("output", help="output GeoTIFF, .tif or .tiff (built in a hidden folder beside it, moved into "
                                  "place when complete)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=float, help="scale factor > 1, e.g. 2, 2.6, 3.4, 4 (max 16)")
    size.add_argument("--resolution", type=_resolution, metavar="RES|X,Y",
                      help="target pixel size in the CRS's units instead of a scale, e.g. 0.04 or 0.04,0.05: the "
                           "same area in whole pixels of that size (north-up rasters; 1x to 16x finer)")
    size.add_argument("--align-to", metavar="RASTER",
                      help="snap the output to the pixel grid of RASTER (same CRS, finer pixels): it takes that "
                           "raster's pixel size and grid origin and covers the input's extent, so the two line "
                           "up pixel for pixel (e.g. to stack with or compare against it)")
    _add_area(p)
    p.add_argument("--model", help="model file (default: the bundled lite model, e2diffsr_core/weights)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="arithmetic (default auto: bf16 on CUDA and on CPUs with AMX, where it is faster; fp32 "
                        "on other CPUs; a seed gives the same pixels every time on one machine); fp32/bf16 force "
                        "either (bf16 and fp32 agree to about 59 dB on 8-bit output); fp16 is CUDA only")
    p.add_argument("--temperature", type=float, default=None,
                   help="how much of the diffusion's noise to draw, 0 to 1 (default: 0 for one sample, the most "
                        "faithful output; 1 with --samples 2 or more, so that samples differ); 1 is the authors' "
                        "sampling: more invented detail, further from the truth")
    p.add_argument("--compile", action="store_true",
                   help="compile the diffusion UNet with torch.compile (CUDA graphs on a GPU) for large rasters; "
                        "the first run spends a minute or more compiling; the pixels agree with an uncompiled run "
                        "to within rounding")
    p.add_argument("--bands", type=_bands, help="bands to process, e.g. 1,2,3 (default all)")
    p.add_argument("--range", dest="ranges", type=_range, action="append",
                   help="value range LO,HI mapped to the model's 0..1, once per selected band "
                        "(default: robust percentiles of each band; Byte: 0,255 unless the bands span under "
                        "half of it)")
    p.add_argument("--tile", type=int, default=0, help="tile size in output pixels (default 0: automatic)")
    p.add_argument("--memory", type=_memory, metavar="SIZE",
                   help="memory the run may use, e.g. 512M or 4G (default: half the memory available); large "
                        "rasters whose feature maps do not fit half of it run the bounded engine, whose "
                        "normalisation statistics come from a sample of the raster")
    p.add_argument("--samples", type=int, default=1, help="average K samples with different seeds")
    p.add_argument("--uncertainty", help="write the per-pixel standard deviation of the samples here")
    p.add_argument("--raw", action="store_true",
                   help="the model's own output, without the correction that makes the result, reduced back to the "
                        "input's pixels, reproduce the input (on by default)")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="let the corrected output leave the range of the input pixels around each output pixel "
                        "(by default it stays within it: flat areas stay flat, edges do not ring, a lake stays "
                        "level; --raw has no guard either)")
    p.add_argument("--consistency-map", metavar="FILE",
                   help="also write one Float32 band: how much the correction changed each pixel, in the input's "
                        "units (where the model's detail disagreed with the input)")
    p.add_argument("--co", action="append", default=[], metavar="KEY=VALUE", help="GeoTIFF creation option")
    p.add_argument("--cog", action="store_true", help="write a Cloud Optimized GeoTIFF")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (only ever a GeoTIFF)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: every temporary file is removed, no output is left."""
    from ..errors import raise_stopped

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, raise_stopped)


class LogStream:
    """stderr for the log and progress bar that goes quiet, instead of failing the run, once its reader has gone
    away (``... 2>&1 | head`` closes the pipe): a finished run is never thrown away for its log."""

    def __init__(self, stream):
        self.stream, self.gone = stream, False

    def _call(self, method, *args) -> None:
        if not self.gone:
            try:
                getattr(self.stream, method)(*args)
            except (BrokenPipeError, ConnectionResetError, ValueError):  # ValueError: the stream was closed
                self.gone = True

    def write(self, text: str) -> int:
        self._call("write", text)
        return len(text)

    def flush(self) -> None:
        self._call("flush")

    def isatty(self) -> bool:
        return not self.gone and self.stream.isatty()


def run(args) -> int:
    from tqdm import tqdm

    stop_on_signals()

    from ..raster import superresolve_raster

    bar = None
    err = LogStream(sys.stderr)

    def log(msg: str) -> None:
        (bar.write if bar is not None else print)(msg, file=err)

    bar = tqdm(total=100, unit="%", desc="super-resolving", disable=args.quiet, file=err,
               bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]")

    def progress(frac: float) -> None:
        bar.n = round(100 * frac, 1)
        bar.refresh()

    try:
        info = superresolve_raster(
            args.input, args.output, args.scale, resolution=args.resolution, align_to=args.align_to, model=args.model,
            device=args.device, seed=args.seed,
            bands=args.bands, tile=args.tile, samples=args.samples, uncertainty=args.uncertainty,
            creation_options=args.co, cog=args.cog, overwrite=args.overwrite, ranges=args.ranges,
            precision=args.precision, raw=args.raw, guard=args.guard, consistency_map=args.consistency_map,
            progress=progress, log=log, compile=args.compile, temperature=args.temperature, extent=args.extent,
            extent_crs=args.extent_crs, mask=args.mask, mask_layer=args.mask_layer, mask_where=args.mask_where,
            memory=args.memory)
    finally:
        bar.close()
    extra = "".join(f" and {info[k]}" for k in ("uncertainty", "consistency_map") if info[k])
    skipped = f", {info['tiles_skipped']} outside the mask skipped" if info.get("tiles_skipped") else ""
    print(f"wrote {info['output']}{extra}: {info['width']} x {info['height']} px in {info['seconds']:.1f} s "
          f"({info['tiles']} tiles on {info['device']}{skipped})", file=err)
    return 0

