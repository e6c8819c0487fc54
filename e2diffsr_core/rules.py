"""The limits and rules every front end shares, in one place (no torch, no GDAL: the QGIS plugin's parameter
checks, the command line, the raster and array APIs, the trainer and the evaluator all call these)."""

from __future__ import annotations

import math
import warnings

from .errors import E2DiffSRError

#: The largest scale any model accepts (a model's own ``cfg.max_scale`` may be lower).
MAX_SCALE = 16.0
#: Scales the models were trained for; beyond, results get softer (a warning, not an error).
TRAINED_MAX_SCALE = 8.0
#: The authors' model needs at least this many output pixels a side (its latent is 1/8 of the output).
MIN_OUTPUT_SIDE = 16
#: Samples averaged for the mean and uncertainty.
MAX_SAMPLES = 64
#: Decoder tile sizes a user may ask for (0 = automatic).
TILE_RANGE = (64, 8192)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_scale(scale, max_scale: float = MAX_SCALE, warn: bool = True) -> float:
    """A scale factor as a float in (1, max_scale]; past the trained range a warning (unless ``warn`` is False)."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise E2DiffSRError(f"scale must be a number, got {scale!r}") from None
    if not math.isfinite(scale):
        raise E2DiffSRError(f"scale must be a finite number, got {scale}")
    if scale <= 1.0:
        raise E2DiffSRError(f"scale must be greater than 1 (got {scale:g}); this is a super-resolution model")
    if scale > max_scale:
        raise E2DiffSRError(f"scale {scale:g} is above the maximum of {max_scale:g} this model accepts")
    if warn and scale > TRAINED_MAX_SCALE:
        warnings.warn(beyond_trained(scale), stacklevel=3)
    return scale


def in_scale_range(scale: float, max_scale: float = MAX_SCALE) -> bool:
    """Whether ``scale`` is an enlargement the models accept: finite, above 1, at most ``max_scale``."""
    return math.isfinite(scale) and 1.0 < scale <= max_scale


def beyond_trained(scale: float) -> str:
    return f"scale {scale:g} is beyond the trained range 1..{TRAINED_MAX_SCALE:g}; expect softer results"


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(int(height * s), int(width * s)): truncation, as the authors' model computes its output size."""
    return int(height * scale), int(width * scale)


def check_samples(samples, uncertainty: bool = False) -> int:
    try:
        n = int(samples)
    except (TypeError, ValueError):
        raise E2DiffSRError(f"samples must be a whole number, got {samples!r}") from None
    if not 1 <= n <= MAX_SAMPLES:
        raise E2DiffSRError(f"samples must be between 1 and {MAX_SAMPLES}, got {n}")
    if uncertainty and n < 2:
        raise E2DiffSRError("an uncertainty raster needs at least 2 samples; ask for 2 or more (e.g. --samples 4)")
    return n


def check_temperature(temperature, samples: int = 1) -> float:
    """The sampling temperature of a run: how much of the diffusion's noise it draws (the starting latent and
    every step's noise are multiplied by it). None: 0 for one sample (the most faithful output: on the
    validation pictures it beats bicubic in PSNR at every scale while staying sharper), 1 for several (the
    authors' sampling: samples then differ, and their spread means something)."""
    if temperature is None:
        return 0.0 if int(samples) == 1 else 1.0
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise E2DiffSRError(f"temperature must be a number from 0 to 1, got {temperature!r}") from None
    if not 0.0 <= t <= 1.0:
        raise E2DiffSRError(f"temperature must be from 0 (the most faithful) to 1 (the authors' sampling), got {t:g}")
    if t == 0.0 and int(samples) > 1:
        raise E2DiffSRError("several samples differ only with a temperature above 0; leave the temperature "
                            "out (several samples then use 1) or set it above 0 (e.g. --temperature 1)")
    return t


def check_tile(tile) -> int:
    tile = int(tile or 0)
    if tile and not TILE_RANGE[0] <= tile <= TILE_RANGE[1]:
        raise E2DiffSRError(f"tile size must be 0 (automatic) or between {TILE_RANGE[0]} and {TILE_RANGE[1]} "
                            f"output pixels, got {tile}")
    return tile


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise E2DiffSRError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")
    return precision


def check_output_side(out_w: int, out_h: int) -> None:
    if min(out_w, out_h) < MIN_OUTPUT_SIDE:
        raise E2DiffSRError(f"the output would be {out_w} x {out_h} px; rasters must give at least "
                            f"{MIN_OUTPUT_SIDE} px a side; use a larger input or scale")
