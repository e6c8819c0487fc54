"""The plan of a run and a rough time estimate, logged before the long part starts.

The estimate comes from one short pass of the model over a small random patch on the chosen device,
scaled by the number of output pixels the run computes (pixels x band groups x samples). Fixed per-pass
costs make a small patch slower per pixel than a large tile, so the estimate errs on the long side.
Imports torch and the engine: call it only from processAlgorithm.
"""

from __future__ import annotations

import math
import time

from osgeo import gdal

PROBE_OUTPUT = 128  # output pixels per side of the test pass


def plan(source: str, scale: float, bands: list[int] | None, samples: int, tile: int, model, device) -> dict:
    """Output size, band groups, tile size and tile count of the run (the engine's own planning)."""
    from e2diffsr_core.engine import TiledSR, tile_starts
    from e2diffsr_core.raster_io.bands import make_groups

    ds = gdal.Open(source)
    width, height, count = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    # the reader leaves an alpha band out unless it is chosen
    selected = list(bands) if bands else [b for b in range(1, count + 1)
                                          if ds.GetRasterBand(b).GetColorInterpretation() != gdal.GCI_AlphaBand]
    ds = None
    n_bands = len(selected) or count
    feeds = [[selected[i] for i in g] for g in make_groups(len(selected))]
    groups = max(1, math.ceil(n_bands / 3))
    out_w, out_h = int(width * scale), int(height * scale)
    engine = TiledSR(model, device, tile=tile)
    tile_px, _ = engine.plan_sizes(scale, groups * samples)
    tiles = len(tile_starts(out_w, tile_px)) * len(tile_starts(out_h, tile_px))
    return {"width": out_w, "height": out_h, "bands": n_bands, "groups": groups, "samples": samples,
            "tile": tile_px, "tiles": tiles, "feeds": feeds}


def measure(model, device, scale: float) -> tuple[float, int]:
    """Seconds of one pass over a PROBE_OUTPUT-sided output on ``device``, and the pixels it produced."""
    import numpy as np
    import torch

    from e2diffsr_core.engine import superresolve_array

    side = max(2, math.ceil(PROBE_OUTPUT / scale))
    image = np.random.default_rng(0).random((3, side, side), dtype=np.float32)
    passes = 2 if device.type == "cuda" else 1  # the first CUDA pass pays for kernel selection
    for _ in range(passes):
        start = time.perf_counter()
        out, _, _ = superresolve_array(model, image, scale, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, out.shape[1] * out.shape[2]


def _work(the_plan: dict) -> int:
    return the_plan["width"] * the_plan["height"] * the_plan["groups"] * the_plan["samples"]


def worth_measuring(the_plan: dict) -> bool:
    return _work(the_plan) > 4 * PROBE_OUTPUT * PROBE_OUTPUT


def estimate_seconds(the_plan: dict, probe_seconds: float, probe_pixels: int) -> float:
    return probe_seconds * _work(the_plan) / max(1, probe_pixels)


def duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 2.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def describe(the_plan: dict, device_label: str, seconds: float | None) -> str:
    text = (f"Plan: {the_plan['width']} x {the_plan['height']} px output, {the_plan['bands']} band(s) in "
            f"{the_plan['groups']} group(s) of three, {the_plan['samples']} sample(s), {the_plan['tiles']} "
            f"tile(s) of {the_plan['tile']} px, on {device_label}.")
    if the_plan.get("feeds"):  # the order changes the result: the model sees each group as an RGB image
        fed = "; ".join(", ".join(map(str, g)) for g in the_plan["feeds"])
        text += (f" Bands fed to the model as R, G, B: {fed} (in the order of 'Bands', else the file's; the "
                 "layer's renderer does not change it).")
    if seconds is not None:
        text += f" Estimated time: {duration(seconds)} (from a {PROBE_OUTPUT} x {PROBE_OUTPUT} px test pass)."
    else:
        text += " A small run: no time estimate."
    return text
