"""Super-resolve a georeferenced raster file: GDAL windows in, the tiled engine, GDAL windows out.

This is the one entry point the command line and the QGIS algorithm call.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from osgeo import gdal

from .api import open_model, resolve_device
from .area_run import area_nodata, plan_area, plan_tiles, skipped
from .engine import RunIO, TiledSR
from .engine.tiled import BORDER
from .errors import E2DiffSRError
from .raster_io import RasterReader, RasterWriter, size_for_gdal
from .raster_io.align import Alignment
from .raster_io.align import align_to as reference_grid
from .raster_io.area import AreaOptions
from .raster_io.files import reference_files
from .raster_io.georef import resolution_size
from .raster_io.writer import commit_all
from .request import Request
from .rules import MAX_SCALE, check_output_side, check_scale, in_scale_range


def _describe_model(model_arg, model) -> str:
    name = "bundled model" if model_arg is None else str(model_arg)
    preset = "custom"
    from .model import PRESETS

    for key, cfg in PRESETS.items():
        if cfg == model.cfg:
            preset = key
    return f"{name} ({preset})"


def _space_error(out_w: int, out_h: int, need: float, folder: str, free: float) -> E2DiffSRError:
    return E2DiffSRError(f"this output ({out_w} x {out_h} px) needs about {need / 2**30:.2f} GiB of temporary "
                         f"space in {folder} but only {free / 2**30:.2f} GiB are free; free disk space, write "
                         "the output elsewhere, give more --memory or use a smaller scale")


def _free(folder: str) -> float | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _check_latent_space(output: str, out_w: int, out_h: int, maps: int) -> None:
    """Refuse at once, before any file is created, a run whose latents alone cannot fit on the output's disk
    (a conditioning latent and two chains of latents per band group and sample, 4 channels, 1/8 of the output
    a side, float32); :func:`_check_temporary_space` then counts every temporary file."""
    cells = (out_w // 8) * (out_h // 8)
    need = cells * 4 * 4 * (3 * maps) + cells * 4 * 3
    folder = os.path.dirname(os.path.abspath(output))
    free = _free(folder) if need >= 256 << 20 else None
    if free is not None and need > free:
        raise _space_error(out_w, out_h, need, folder, free)


def _check_temporary_space(engine: TiledSR, plan, folder: str, log) -> None:
    """Refuse, before any work, a run whose temporary files (every one it will write: latents, and feature
    maps beyond the memory budget) cannot fit in its run folder; say how much and where in one line."""
    need = engine.temporary_bytes(plan)
    if need <= 0:
        return
    free = _free(folder)
    if free is not None and need > free:
        raise _space_error(plan.out_size[1], plan.out_size[0], need, folder, free)
    log(f"temporary files: up to {need / 2**20:.0f} MiB in {folder}"
        + ("" if free is None else f" ({free / 2**30:.1f} GiB free)"))


def _resolution_grid(reader, resolution, log) -> tuple[int, int, float]:
    """(out_w, out_h, scale) for a target pixel size; the scale is the height ratio, the model's input."""
    gt = reader.geotransform if reader.has_geotransform else None
    out_w, out_h, note = resolution_size(reader.width, reader.height, gt, tuple(resolution))
    if note:
        log(f"note: {note}")
    for axis, ratio in (("x", out_w / reader.width), ("y", out_h / reader.height)):
        if not in_scale_range(ratio):  # the limits of --scale, per axis
            raise E2DiffSRError(
                f"--resolution {resolution[0]:g},{resolution[1]:g} enlarges the input {ratio:.3g}x along "
                f"{axis}; the model works between 1x and {MAX_SCALE:g}x, choose a pixel size in that range")
    return out_w, out_h, out_h / reader.height


def output_grid(reader, scale, resolution, align, log) -> tuple[int, int, float, Alignment | None]:
    """(out_w, out_h, scale, alignment or None) from exactly one of a scale, a pixel size, a reference grid;
    the output's sides checked."""
    if align is not None:
        a = reference_grid(align, reader.width, reader.height,
                           reader.geotransform if reader.has_geotransform else None, reader.projection)
        log(f"aligned to {align}: {a.out_w} x {a.out_h} px of {abs(a.geotransform[1]):g} x "
            f"{abs(a.geotransform[5]):g}, x{a.scales[0]:.4g} / x{a.scales[1]:.4g} (x / y)")
        out = a.out_w, a.out_h, a.grid.y.scale, a
    elif resolution is not None:
        out = (*_resolution_grid(reader, resolution, log), None)
    else:
        out = (*size_for_gdal(reader.width, reader.height, scale), scale, None)
    check_output_side(out[0], out[1])
    return out


def superresolve_raster(
    input: str, output: str, scale: float | None = None, *, resolution: tuple[float, float] | None = None,
    align_to: str | None = None, model: str | None = None, device: str = "auto", seed: int = 0,
    bands: list[int] | None = None, tile: int = 0, samples: int = 1, uncertainty: str | None = None,
    creation_options: list[str] | tuple = (), cog: bool = False, overwrite: bool = False,
    ranges: list[tuple[float, float]] | None = None, precision: str = "auto", raw: bool = False, guard: bool = True,
    consistency_map: str | None = None, progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None,
    rows: tuple[int, int] | None = None, compile: bool = False, temperature: float | None = None,
    extent: tuple[float, float, float, float] | None = None, extent_crs: str | None = None, mask: str | None = None,
    mask_layer: str | None = None, mask_where: str | None = None, memory: int | str | None = None,
) -> dict:
    """Write ``output``: ``input`` super-resolved by ``scale`` (int(W*s) x int(H*s) pixels, same CRS and area),
    or to the target pixel size ``resolution`` (x, y in CRS units; the same area in whole pixels of that size),
    or on the grid of the raster ``align_to`` (its pixel size and grid origin, covering the input's extent).

    By default the output is made consistent with the input (reduced to the input grid it reproduces the input)
    and kept within the range of the input pixels around each output pixel (``guard``; no ringing, no invented
    extrema), the model seeing the input extended beyond its edges; ``raw`` returns the model's own output.
    ``consistency_map`` writes the size of that correction (input units).
    ``rows`` (first, stop): write only these rows of the output, georeferenced where they lie (one part of a
    raster split across ranks, see scale_out/split.py); they have the pixels of the whole output's rows. ``temperature``
    (0 to 1) multiplies the diffusion's noise: None gives 0 for one sample (the most faithful output) and 1 for
    several (rules.check_temperature). ``memory`` (bytes, or a size such as '4G'): the run's memory budget
    (default: half the memory available); beyond it the engine runs bounded (docs/design.md, "Large rasters").

    ``extent`` (xmin, ymin, xmax, ymax in the raster's CRS or ``extent_crs``) and ``mask`` (an OGR source; its
    layer ``mask_layer``, features ``mask_where``) limit the run to an area: the output holds the whole-layer
    output's pixels that cover it (same grid), pixels outside the mask's polygons are nodata and output tiles
    that touch none are not computed (area_run.py).

    Raises E2DiffSRError with a one-line message for every problem a user can fix, and Cancelled when
    ``cancel()`` returns True; in every failure no output (and no temporary file) is left behind.
    """
    req = Request.check(input, output, scale, resolution=resolution, align_to=align_to, model=model, device=device,
                        seed=seed, bands=bands, tile=tile, samples=samples, uncertainty=uncertainty,
                        creation_options=creation_options, cog=cog, overwrite=overwrite, ranges=ranges,
                        precision=precision, raw=raw, guard=guard, consistency_map=consistency_map, rows=rows,
                        compile=compile, temperature=temperature, memory=memory,
                        area=AreaOptions(extent, extent_crs, mask, mask_layer, mask_where))
    return run_request(req, progress=progress, cancel=cancel, log=log)


def run_request(req: Request, *, progress=None, cancel=None, log=None) -> dict:
    """Carry out a checked request: every output checked before the model is loaded, then the engine."""
    t0 = time.perf_counter()
    log = log or (lambda _msg: None)
    with RasterReader(req.input, bands=req.bands, ranges=req.ranges) as reader:
        if req.align_to is not None:  # the reference is read too: no output may replace it
            reader.reference_files = reference_files(req.align_to)
        out_w, out_h, scale, alignment = output_grid(reader, req.scale, req.resolution, req.align_to, log)
        area = plan_area(reader, req.area, out_w, out_h, alignment, log) if req.area is not None else None
        if reader.type_note:
            log(f"note: {reader.type_note}")
        size = area.size if area is not None else (out_w, out_h)
        _check_latent_space(req.output, *(area.computed_size if area is not None else size),
                            len(reader.groups()) * req.samples)
        writers: dict[str, RasterWriter] = {}
        try:
            writers = _open_writers(req, reader, size, area.alignment if area is not None else alignment,
                                    area_nodata(reader) if area is not None and area.polygons else None)
            dev = resolve_device(req.device)
            net = open_model(req.model, dev)
            for ratio in {scale, alignment.scales[0] if alignment else out_w / reader.width}:
                check_scale(ratio, net.cfg.max_scale)
            # the run's temporary latents live in the output's run folder, removed however the run ends
            engine = TiledSR(net, dev, tile=req.tile, precision=req.precision, ram_budget=req.memory,
                             workdir=writers["output"].run_folder, consistency=not req.raw, compile=req.compile,
                             guard=None if req.guard else 0,
                             # the model sees the input extended beyond its edges, raw runs too; an area's
                             # computed box lies on that extended grid already (area_run.py)
                             border=0 if area is not None else BORDER)
            pieces = list(area.parts or (area,)) if area is not None else [None]
            plans = [_plan(engine, req, reader, scale, (out_w, out_h, alignment), piece) for piece in pieces]
            for plan in plans:
                _check_temporary_space(engine, plan, writers["output"].run_folder, log)
            model_desc = _describe_model(req.model, net)
            log(f"device: {dev} ({engine.arithmetic}), model: {model_desc}, tile: {plans[0].tile} px, "
                f"output {size[0]} x {size[1]} px, {len(reader.bands)} band(s), "
                f"temperature {plans[0].temperature:g}")
            result = _run_pieces(engine, plans, pieces, (reader, writers), (progress, cancel, log))
            commit_all(list(writers.values()))  # all outputs appear together, or none
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
    return {
        "output": req.output, "uncertainty": req.uncertainty, "consistency_map": req.consistency_map,
        "width": size[0], "height": size[1], "device": str(dev), "model": model_desc, "tile": result.tile,
        "overlap": result.overlap, "tiles": result.tiles, "samples": req.samples,
        "tiles_skipped": sum(skipped(plan) for plan in plans) if area is not None else 0,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _run_pieces(engine: TiledSR, plans, pieces, files, report):
    """Run each plan (the whole output, an area, or the pieces of an area one after the other, the progress
    shared out by their computed pixels); the engine's result, its tile counts summed over the pieces."""
    progress, cancel, log = report
    weights = [p.out_size[0] * p.out_size[1] for p in plans]
    result, done = None, 0.0
    for plan, piece, weight in zip(plans, pieces, weights, strict=True):
        share, start = weight / sum(weights), done

        def step(f, share=share, start=start):
            if progress is not None:
                progress(start + share * f)

        res = engine.run_plan(plan, _engine_io(*files, (step, cancel, log), piece))
        result = res if result is None else replace(res, tiles=result.tiles + res.tiles)
        done += share
    return result


def _plan(engine: TiledSR, req: Request, reader: RasterReader, scale: float, whole, area):
    """The engine's plan: the whole output, or the area's computed box with only its tiles decoded."""
    out_w, out_h, alignment = whole
    common = dict(groups=reader.groups(), channels=len(reader.bands), samples=req.samples, seed=req.seed,
                  temperature=req.temperature)
    if area is not None:
        return plan_tiles(engine, area, scale, req.rows, **common)
    return engine.plan((reader.height, reader.width), scale, out_size=(out_h, out_w),
                       grid=alignment.grid if alignment is not None else None, out_rows=req.rows, **common)


def _open_writers(req: Request, reader: RasterReader, size, alignment, nodata=None) -> dict[str, RasterWriter]:
    """The output and the optional Float32 outputs, each checked (name, overwriting, creation options) now;
    those already opened are aborted when a later one is refused. ``nodata``: the output's, where the input's
    will not do (a masked output of an input without one)."""
    common = dict(creation_options=list(req.creation_options), cog=req.cog, overwrite=req.overwrite,
                  alignment=alignment, rows=req.rows)
    writers = {"output": RasterWriter(req.output, reader, *size, **common,
                                      **({"nodata": nodata} if nodata is not None else {}))}
    try:
        for label, path in req.extra_outputs().items():
            bands_out = len(reader.bands) if label == "uncertainty raster" else 1
            writers[label] = RasterWriter(path, reader, *size, dtype=gdal.GDT_Float32, nodata=-1.0, spread=True,
                                          label=label, band_count=bands_out, **common)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return writers


def _engine_io(reader: RasterReader, writers: dict[str, RasterWriter], report, area=None) -> RunIO:
    """The engine's callbacks: windows of the input in, output windows to each writer; with an ``area`` the
    engine's pixels are the area's computed box (placed into the output, masked by its polygons)."""
    progress, cancel, log = report
    spans = np.array([r.span for r in reader.ranges], np.float32)[:, None, None]
    unc_writer, map_writer = writers.get("uncertainty raster"), writers.get("consistency map")

    def read(x, y, w, h):
        data, valid = reader.read(x, y, w, h)
        return np.clip(data, 0.0, 1.0), valid  # the writer adds back what lies outside [0, 1]

    def place(x, y, block):
        if area is None:
            return x, y, None
        x, y = area.to_box(x, y)
        return x, y, area.inside(x, y, block.shape[2], block.shape[1])

    def write(x, y, mean, _valid, std):
        # the writer takes validity per band from the input itself (nodata in one band keeps the others)
        x, y, inside = place(x, y, mean)
        writers["output"].write(x, y, mean, inside)
        if unc_writer is not None and std is not None:
            unc_writer.write_raw(x, y, (std * spans).astype(np.float32), inside)

    def write_correction(x, y, size, _valid, _std):
        # the largest correction over the bands, in the input's units
        x, y, inside = place(x, y, size)
        map_writer.write_raw(x, y, (size * spans).max(axis=0, keepdims=True).astype(np.float32), inside)

    return RunIO(read if area is None else area.read(read), write, reader.ungroup,
                 write_correction if map_writer is not None else None, progress, cancel, log)
