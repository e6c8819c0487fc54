"""Super-resolve a georeferenced raster file: GDAL windows in, the tiled engine, GDAL windows out.

This is the one entry point the command line and the QGIS algorithm call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from osgeo import gdal

from .api import NO_MODEL, check_scale, default_model_path, open_model, resolve_device
from .engine import TiledSR
from .errors import E2DiffSRError
from .raster_io import RasterReader, RasterWriter, output_size


def _describe_model(model_arg, model) -> str:
    name = "bundled model" if model_arg is None else str(model_arg)
    preset = "custom"
    from .model import PRESETS

    for key, cfg in PRESETS.items():
        if cfg == model.cfg:
            preset = key
    return f"{name} ({preset})"


def superresolve_raster(
    input: str, output: str, scale: float, *, model: str | None = None, device: str = "auto", seed: int = 0,
    bands: list[int] | None = None, tile: int = 0, samples: int = 1, uncertainty: str | None = None,
    creation_options: list[str] | tuple = (), cog: bool = False, overwrite: bool = False,
    ranges: list[tuple[float, float]] | None = None, precision: str = "auto",
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None,
) -> dict:
    """Write ``output``: ``input`` super-resolved by ``scale`` (int(W*s) x int(H*s) pixels, same CRS and area).

    Raises E2DiffSRError with a one-line message for every problem a user can fix, and Cancelled when
    ``cancel()`` returns True; in every failure no output (and no temporary file) is left behind.
    """
    t0 = time.perf_counter()
    log = log or (lambda _msg: None)
    samples = int(samples)
    if samples < 1 or samples > 64:
        raise E2DiffSRError(f"samples must be between 1 and 64, got {samples}")
    if uncertainty and samples < 2:
        raise E2DiffSRError("an uncertainty raster needs at least 2 samples; ask for 2 or more (e.g. --samples 4)")
    if uncertainty and Path(uncertainty).resolve() == Path(output).resolve():
        raise E2DiffSRError("the uncertainty raster must be a different file from the output")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise E2DiffSRError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if tile and (tile < 64 or tile > 8192):
        raise E2DiffSRError(f"tile size must be 0 (automatic) or between 64 and 8192 output pixels, got {tile}")
    scale = check_scale(scale, 16.0)
    if model is None and default_model_path() is None:
        raise E2DiffSRError(NO_MODEL)

    writers: list[RasterWriter] = []
    with RasterReader(input, bands=bands, ranges=ranges) as reader:
        out_w, out_h = output_size(reader.width, reader.height, scale)
        if min(out_w, out_h) < 16:
            raise E2DiffSRError(f"the output would be {out_w} x {out_h} px; rasters must give at least 16 px a side")
        dev = resolve_device(device)
        net = open_model(model, dev)
        scale = check_scale(scale, net.cfg.max_scale)
        try:
            writers.append(RasterWriter(output, reader, out_w, out_h, creation_options=list(creation_options),
                                        cog=cog, overwrite=overwrite))
            if uncertainty:
                writers.append(RasterWriter(uncertainty, reader, out_w, out_h, creation_options=list(creation_options),
                                            cog=cog, overwrite=overwrite, dtype=gdal.GDT_Float32, nodata=-1.0))
            spans = np.array([r.span for r in reader.ranges], np.float32)[:, None, None]

            def read(x, y, w, h):
                data, valid = reader.read(x, y, w, h)
                return np.clip(data, 0.0, 1.0), valid

            def write(x, y, mean, valid, std):
                writers[0].write(x, y, mean, valid)
                if uncertainty and std is not None:
                    unc = (std * spans).astype(np.float32)
                    unc[:, ~valid] = -1.0
                    writers[1].write_raw(x, y, unc, valid)

            # large rasters keep their latents in temporary files beside the output
            engine = TiledSR(net, dev, tile=tile, precision=precision,
                             workdir=os.path.dirname(os.path.abspath(output)))
            model_desc = _describe_model(model if model is not None else None, net)
            plan_tile, plan_overlap = engine.plan_sizes(scale, len(reader.groups()) * samples)
            log(f"device: {dev}, model: {model_desc}, tile: {plan_tile} px (overlap {plan_overlap} px), "
                f"output {out_w} x {out_h} px, {len(reader.bands)} band(s)")
            result = engine.run(read, write, (reader.height, reader.width), scale, seed=seed, samples=samples,
                                groups=reader.groups(), combine=reader.ungroup, channels=len(reader.bands),
                                progress=progress, cancel=cancel, log=log)
            for w in writers:
                w.commit()
        except BaseException:
            for w in writers:
                w.abort()
            raise
    return {
        "output": str(output), "uncertainty": uncertainty, "width": out_w, "height": out_h,
        "device": str(dev), "model": model_desc, "tile": result.tile, "overlap": result.overlap,
        "tiles": result.tiles, "samples": samples, "seconds": round(time.perf_counter() - t0, 3),
    }
