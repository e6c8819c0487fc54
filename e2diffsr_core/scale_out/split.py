"""`superresolve-batch --split`: each raster split across all the ranks in bands of output tile rows.

    torchrun --nproc_per_node=4 -m e2diffsr_core superresolve-batch BIG.tif --out-dir sr --scale 4 --split

Every rank runs the engine's whole-image passes (conditioning encoder, the diffusion with the global noise
field, the decoder's LR-grid features): they are deterministic, so every rank holds the same maps. Only the
last step, the decoder's upsampler on exact output tiles, is divided: each rank decodes its band of tile rows
into a part GeoTIFF (``DIR/NAME_parts/NAME.rows-Y0-Y1.tif``, georeferenced where the rows lie), and rank 0
joins the parts as ``DIR/NAME.vrt`` (or, with ``--cog``, one Cloud Optimized ``DIR/NAME.tif`` and no parts).
Output tiles are exact, so the joined raster has the pixels of a one-process run and no seam.

A part is published atomically with a record of what it was made from (plan); a restarted run skips
the parts that are complete for the same options. The output itself is written last, atomically.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from osgeo import gdal

from ..engine.device import default_memory
from ..errors import Cancelled, E2DiffSRError
from . import plan

PARTS = "_parts"


def parts_folder(output: str) -> str:
    return os.path.splitext(output)[0] + PARTS


def part_path(output: str, rows) -> str:
    return os.path.join(parts_folder(output), f"{Path(output).stem}.rows-{rows[0]}-{rows[1]}.tif")


def part_rows(height: int, tile: int, ranks: int) -> list[tuple[int, int]]:
    """Bands of whole tile rows, one per rank, as equal in height as the tile rows allow (fewer bands than
    ranks when the output has fewer tile rows)."""
    n_tiles = -(-height // tile)
    n = max(1, min(ranks, n_tiles))
    cuts = sorted({min(n_tiles - 1, max(1, round(k * height / n / tile))) for k in range(1, n)})
    bounds = [0] + [c * tile for c in cuts] + [height]
    return list(zip(bounds[:-1], bounds[1:]))


# -- rank 0: what each rank does ----------------------------------------------------------------------------
def plan_raster(job: dict, options: dict, model: dict, ranks, overwrite: bool) -> dict:
    """{"skip": True} when the output is complete, {"error": reason}, or the parts: tile rows per rank."""
    src, out = job["input"], job["output"]
    try:
        fp = plan.fingerprint(src, options, model)
    except OSError as exc:
        return {"error": f"cannot read {src} ({exc.strerror}); check the path"}
    if plan.is_complete(out, fp) and _intact(out):
        return {"skip": True}
    try:
        height, tile = _check_and_size(src, out, options, ranks.device, overwrite)
        os.makedirs(parts_folder(out), exist_ok=True)
    except E2DiffSRError as exc:
        return {"error": str(exc)}
    except OSError as exc:
        return {"error": f"cannot create {parts_folder(out)} ({exc.strerror}); choose another --out-dir"}
    # one memory budget for every rank (the default resolved here and divided between the ranks), so that all
    # ranks choose the same engine (exact or bounded) and compute the same pixels
    memory = options.get("memory") or default_memory() // max(1, ranks.world)
    return {"fp": fp, "tile": tile, "memory": memory, "parts": part_rows(height, tile, ranks.world)}


def _intact(output: str) -> bool:
    """Every file the output reads (a VRT's parts) is still there."""
    try:
        ds = gdal.Open(output)
        return ds is not None and all(os.path.exists(f) for f in ds.GetFileList() or [])
    except RuntimeError:
        return False


def _check_and_size(src: str, out: str, options: dict, device: str, overwrite: bool) -> tuple[int, int]:
    """Check the input and the output before any work; (output height, tile size every rank uses)."""
    from ..api import open_model, resolve_device
    from ..engine import TiledSR
    from ..raster import output_grid
    from ..raster_io import RasterReader, RasterWriter
    from ..rules import check_tile

    with RasterReader(src, bands=options["bands"], ranges=options["ranges"]) as reader:
        gt = reader.geotransform if reader.has_geotransform else None
        if gt is None or gt[2] or gt[4]:
            raise E2DiffSRError(f"{src} has no north-up geotransform (rotated, GCPs or none), which a VRT of "
                                "parts needs; run it without --split")
        out_w, out_h, scale, alignment = output_grid(reader, options["scale"], options["resolution"],
                                                     options.get("align_to"), lambda _m: None)
        out_w, out_h, alignment = _area_size(reader, options, (out_w, out_h, alignment))
        if options["cog"]:  # every check of the final COG (name, overwriting, creation options) up front
            RasterWriter(out, reader, out_w, out_h, creation_options=options["creation_options"], cog=True,
                         overwrite=overwrite, alignment=alignment, rows=(0, 1)).abort()
        else:
            _check_vrt_output(out, reader.files, overwrite)
        groups = len(reader.groups())
    dev = resolve_device(device)
    engine = TiledSR(open_model(options["model"], dev), dev, tile=check_tile(options["tile"]), precision="fp32",
                     ram_budget=options.get("memory"))
    from ..engine.decode import shortcut_grid

    shortcuts = alignment is None or shortcut_grid(alignment.grid)
    return out_h, engine.plan_sizes(scale, groups * options["samples"], shortcuts)[0]


def _area_size(reader, options: dict, whole):
    """(out_w, out_h, alignment) of the output: the whole layer's, or the processing area's (area_run.py)."""
    from ..area_run import plan_area
    from ..raster_io.area import AreaOptions, check_options

    area = AreaOptions(*(options.get(k) for k in ("extent", "extent_crs", "mask", "mask_layer", "mask_where")))
    if not area.given:
        return whole
    check_options(area)
    a = plan_area(reader, area, whole[0], whole[1], whole[2], lambda _m: None)
    return a.size[0], a.size[1], a.alignment


def _check_vrt_output(out: str, inputs: list[str], overwrite: bool) -> None:
    if any(os.path.realpath(out) == os.path.realpath(f) for f in inputs):
        raise E2DiffSRError(f"output {out} is the input or a file it reads; choose another --out-dir")
    if os.path.lexists(out):
        if not overwrite:
            raise E2DiffSRError(f"output {out} exists and is not a complete result of these options; "
                                "allow overwriting (--overwrite) or delete it")
        if not (os.path.isfile(out) and Path(out).read_bytes()[:64].lstrip().startswith(b"<VRTDataset")):
            raise E2DiffSRError(f"output {out} exists and is not a VRT; it is never replaced, remove it yourself")
    from ..raster_io.files import check_side_files

    # an earlier VRT's overviews, mask or .aux.xml would be applied to the new one: removed when it is written
    check_side_files(out, inputs, overwrite, "output", "--overwrite", after_stem=False)


# -- every rank: its part -----------------------------------------------------------------------------------
def run_part(job: dict, todo: dict, options: dict, ranks, log) -> dict:
    """Decode this rank's rows of the raster into its part file; a failure is returned, not raised."""
    result = {"rank": ranks.rank, "status": "idle", "reason": None, "rows": None}
    if ranks.rank >= len(todo["parts"]):
        return result  # more ranks than tile rows
    rows = tuple(todo["parts"][ranks.rank])
    path = part_path(job["output"], rows)
    fp = {**todo["fp"], "part": {"rows": list(rows), "tile": todo["tile"]}}
    result["rows"] = list(rows)
    if plan.is_complete(path, fp):
        return {**result, "status": "skipped"}
    from ..raster import superresolve_raster

    # parts of a COG are plain GeoTIFFs: the creation options are the COG's, used when rank 0 joins them
    part_options = {**options, "tile": todo["tile"], "memory": todo["memory"], "cog": False,
                    "overwrite": True,  # only ever a part
                    "creation_options": [] if options["cog"] else options["creation_options"]}
    try:
        info = superresolve_raster(job["input"], path, device=ranks.device, log=log, rows=rows, **part_options)
        plan.write_record(path, fp, info)
    except (Cancelled, KeyboardInterrupt):
        raise
    except E2DiffSRError as exc:
        return {**result, "status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported by rank 0 like any failure
        return {**result, "status": "failed", "reason": " ".join(f"{type(exc).__name__}: {exc}".split())}
    return {**result, "status": "done"}


# -- rank 0: the output ---------------------------------------------------------------------------------------
def join_parts(job: dict, todo: dict, results: list[dict], options: dict, overwrite: bool) -> tuple[str | None, str]:
    """Join the parts into the output once every rank has finished; (reason of a failure or None, text)."""
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        reason = "; ".join(f"rank {r['rank']} (rows {r['rows'][0]}-{r['rows'][1]}): {r['reason']}" for r in failed)
        return reason, f"FAILED: {reason}"
    out = job["output"]
    paths = [part_path(out, rows) for rows in todo["parts"]]
    try:
        if options["cog"]:
            _write_cog(out, paths, options, overwrite)
        else:
            _write_vrt(out, paths, overwrite)
    except E2DiffSRError as exc:
        return str(exc), f"FAILED: {exc}"
    ds = gdal.Open(out)
    info = {"width": ds.RasterXSize, "height": ds.RasterYSize, "tiles": len(paths)}
    ds = None
    plan.write_record(out, todo["fp"], info)
    if options["cog"]:
        shutil.rmtree(parts_folder(out), ignore_errors=True)
    else:
        _remove_other_parts(out, paths)
    return None, f"done, {out} ({info['width']} x {info['height']} px, {len(paths)} part(s))"


def _gdal_step(what: str, step) -> None:
    """Run ``step(holder)``, which leaves the datasets it made in ``holder``, and close them; every GDAL
    failure (raised, or only reported while flushing) becomes one line naming what was being written."""
    from ..raster_io.gdal_errors import close_dataset, collect_failures, one_line

    holder: list = []
    try:
        with collect_failures():
            step(holder)
    except RuntimeError as exc:
        close_dataset(holder)
        errors = [one_line(exc)]
    else:
        errors = close_dataset(holder)
    if errors:
        raise E2DiffSRError(f"could not write {what} (GDAL: {errors[0]}); check free disk space and that the "
                            "parts are readable, then run the same command again")


def _build_vrt(path: str, parts: list[str], what: str) -> None:
    """The mosaic of the parts, with what BuildVRT leaves out (metadata, descriptions, units, scale and
    offset, RPCs) taken from the first part, whose rows start where the output's do."""

    def build(holder):
        holder.append(gdal.BuildVRT(path, parts))
        holder.append(gdal.Open(parts[0]))
        vrt, first = holder
        for domain in ("", "RPC"):
            if first.GetMetadata(domain):
                vrt.SetMetadata(first.GetMetadata(domain), domain)
        for i in range(1, first.RasterCount + 1):
            src, dst = first.GetRasterBand(i), vrt.GetRasterBand(i)
            dst.SetDescription(src.GetDescription())
            dst.SetMetadata(src.GetMetadata())
            if src.GetUnitType():
                dst.SetUnitType(src.GetUnitType())
            dst.SetScale(src.GetScale() or 1.0)
            dst.SetOffset(src.GetOffset() or 0.0)

    _gdal_step(what, build)


def _write_vrt(out: str, parts: list[str], overwrite: bool) -> None:
    # built beside the output, so that its paths to the parts are relative to where it will lie
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{Path(out).name}.partial-{os.getpid()}")
    try:
        from ..raster_io.files import side_files

        _build_vrt(tmp, parts, out)
        stale = side_files(out, after_stem=False)  # checked before the run: only with overwrite
        if overwrite:
            os.replace(tmp, out)
        else:
            os.link(tmp, out)  # never replaces a file that appeared meanwhile
        for side in stale:
            os.remove(side)
    except FileExistsError:
        raise E2DiffSRError(f"output {out} was created by something else meanwhile; it was left as it is "
                            "(--overwrite replaces it)") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_cog(out: str, parts: list[str], options: dict, overwrite: bool) -> None:
    from ..raster_io.files import RunFolder, publish
    from ..raster_io.options import as_list, cog_options, parse_creation_options

    run = RunFolder(os.path.dirname(os.path.abspath(out)))
    try:
        vrt, cog = run.file("parts.vrt"), run.file("output.tif")
        _build_vrt(vrt, [os.path.abspath(p) for p in parts], out)
        opts = as_list(cog_options(parse_creation_options(options["creation_options"], "COG")))
        _gdal_step(out, lambda holder: holder.append(gdal.Translate(cog, vrt, format="COG", creationOptions=opts)))
        publish(cog, out, overwrite)
    finally:
        run.close()


def _remove_other_parts(out: str, keep: list[str]) -> None:
    """Parts an earlier run with other options (or another number of ranks) left, and their records."""
    folder = Path(parts_folder(out))
    keep_names = {Path(p).name for p in keep}
    for path in folder.glob(f"{Path(out).stem}.rows-*.tif"):
        if path.name not in keep_names:
            path.unlink(missing_ok=True)
            plan.record_path(str(path)).unlink(missing_ok=True)


# -- all ranks, raster after raster -----------------------------------------------------------------------
def run_split(ranks, jobs: list[dict], options: dict, model: dict, worker) -> list[dict]:
    """Every raster in turn, split across all the ranks; the per-raster results (on rank 0). ``worker``
    (batch._Worker) prints the lines and knows whether --overwrite was given."""
    results = []
    for index, job in enumerate(jobs):
        t0 = time.perf_counter()
        status, reason, text = _one_raster(ranks, index, job, options, model, worker)
        if ranks.is_main:
            seconds = round(time.perf_counter() - t0, 3)
            worker.say(f"{index + 1}/{len(jobs)} {job['input']}: {text}"
                       + (f" in {seconds:.1f} s" if status == "done" else ""))
            results.append({"index": index, "input": job["input"], "rank": 0, "status": status, "reason": reason,
                            "seconds": seconds})
    return results


def _one_raster(ranks, index: int, job: dict, options: dict, model: dict, worker) -> tuple[str, str | None, str]:
    """(status, reason of a failure, text of the status line) on rank 0; every rank does its part."""
    overwrite = worker.args.overwrite
    todo = ranks.share(f"split/{index}", plan_raster(job, options, model, ranks, overwrite) if ranks.is_main else None)
    if "skip" in todo:
        return "skipped", None, f"skipped, {job['output']} is complete"
    if "error" in todo:
        return "failed", todo["error"], f"FAILED: {todo['error']}"
    mine = run_part(job, todo, options, ranks, worker.log)
    worker.first = False  # the device and tile lines once per rank
    if mine["rows"] is not None:
        worker.say(f"{job['input']} rows {mine['rows'][0]}-{mine['rows'][1]}: {mine['status']}"
                   + (f": {mine['reason']}" if mine["reason"] else ""))
    gathered = ranks.gather(f"split/{index}/parts", mine)
    if not ranks.is_main:
        return "", None, ""
    reason, text = join_parts(job, todo, gathered, options, overwrite)
    return ("failed" if reason else "done"), reason, text
