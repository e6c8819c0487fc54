"""The one safe writer: a tiled, compressed GeoTIFF (or COG) built in the run folder, moved into place whole.

Before any pixel is computed the target is checked (:func:`.files.check_output`) and the creation options
are tried out on a small in-memory file (:func:`.options.probe`). Every GDAL failure while writing, flushing
or closing fails the run; :meth:`RasterWriter.abort` removes everything; :meth:`RasterWriter.commit` moves
the finished file into place without replacing a file that appeared meanwhile.

What the output carries over from the input: CRS, geotransform (or GCPs, or RPCs) for the same area, dataset
and band metadata, band descriptions, colour interpretation, units, scale/offset, nodata; a per-dataset
mask when the input had a GDAL mask; the alpha band (resampled by nearest neighbour, never super-resolved).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError

from .align import Alignment
from .colours import apply_colours
from .describe import carry_lost_metadata, check_one_nodata, copy_metadata
from .files import RunFolder, check_output, publish_with_sides
from .gdal_errors import close_dataset, collect_failures, internal_masks, one_line
from .georef import scaled_gcps, scaled_geotransform, scaled_rpc
from .options import as_list, check_lossy, check_meaning, cog_options, gtiff_options, parse_creation_options, probe
from .reader import RasterReader
from .values import SUPPORTED_TYPES, is_float_type, to_output


def _write_band_array(band, array: np.ndarray, x: int, y: int) -> None:
    """The one place the writer puts pixels into a file (tests replace it to simulate a full disk)."""
    band.WriteArray(array, x, y)


class RasterWriter:
    """Tiled, compressed GeoTIFF (or COG) output written in a run folder and moved into place on commit.

    ``dtype`` and ``band_count`` default to the reader's; ``nodata`` defaults (``...``) to the reader's
    per-band nodata; pass None for no nodata, a number for all bands, or a list per band. ``spread`` marks an
    output of spreads in the data's units (the uncertainty raster): it keeps the bands' scale but no offset,
    and carries no alpha band. ``label`` and ``flag`` name the output and its overwrite switch in messages.
    ``rows`` (first, stop): the file holds only these rows of the ``out_w`` x ``out_h`` output (one part of a
    raster split across ranks), georeferenced where they lie; ``write`` takes whole-output coordinates.
    ``alignment`` puts the output on another raster's grid (its geotransform, and where each output pixel
    lies on the input for masks and carried values); default: the input's extent cut into out_w x out_h.
    """

    def __init__(self, path: str, reader: RasterReader, out_w: int, out_h: int, *, creation_options=(),
                 cog: bool = False, overwrite: bool = False, dtype: int | None = None, band_count: int | None = None,
                 nodata=..., spread: bool = False, label: str = "output", flag: str = "--overwrite",
                 alignment: Alignment | None = None, rows: tuple[int, int] | None = None):
        self.path, self.reader, self.label = os.fspath(path), reader, label
        self.alignment = alignment
        self.out_w, self.out_h = int(out_w), int(out_h)
        self.rows = (0, self.out_h) if rows is None else (int(rows[0]), int(rows[1]))
        self.cog, self.overwrite, self.spread = bool(cog), bool(overwrite), bool(spread)
        self.temp_path: str | None = None
        self._ds = None
        self._run: RunFolder | None = None
        self._done = False
        self._final: str | None = None
        if self.out_w < 1 or self.out_h < 1:
            raise E2DiffSRError(f"output size must be at least 1x1, got {self.out_w}x{self.out_h}")
        if not 0 <= self.rows[0] < self.rows[1] <= self.out_h:
            raise ValueError(f"rows {self.rows} are not within the output's {self.out_h} rows")
        self.dtype = int(reader.dtype if dtype is None else dtype)
        if self.dtype not in SUPPORTED_TYPES:
            raise E2DiffSRError(f"unsupported output data type {gdal.GetDataTypeName(self.dtype)}")
        self.band_count = int(len(reader.bands) if band_count is None else band_count)
        if self.band_count < 1:
            raise E2DiffSRError("output needs at least one band")
        self.nodata = self._nodata(nodata)
        if nodata is ... and self.band_count == len(reader.bands):
            check_one_nodata(self.nodata, reader.bands, is_float_type(self.dtype), reader.path)
        self.alpha = reader.alpha is not None and not spread
        self.mask = reader.dataset_mask

        check_output(self.path, reader.files, overwrite, label, flag, getattr(reader, "reference_files", ()))
        user = parse_creation_options(creation_options, "COG" if self.cog else "GTiff")
        self.colours = self._colours() + [gdal.GCI_AlphaBand] * self.alpha
        self._gtiff = gtiff_options(self.dtype, {} if self.cog else user, self.colours)
        self._cog = cog_options(user) if self.cog else None
        check_meaning(user, self.cog, self.dtype, self._data_max(user))
        probe(self.dtype, self.colours, self._gtiff, self._cog, self.mask, label, self.path)
        check_lossy(user, self._validity())
        self._create()

    # -- set-up ------------------------------------------------------------------------------------
    def _nodata(self, nodata) -> list[float | None]:
        if nodata is ...:
            return [self.reader.nodata[i] if i < len(self.reader.nodata) else None for i in range(self.band_count)]
        if nodata is None or isinstance(nodata, int | float):
            return [None if nodata is None else float(nodata)] * self.band_count
        nd = [None if v is None else float(v) for v in nodata]
        if len(nd) != self.band_count:
            raise ValueError(f"{len(nd)} nodata values for {self.band_count} bands")
        return nd

    def _validity(self) -> str | None:
        """What in this output tells invalid pixels apart by value (a lossy codec must not touch it)."""
        held = [f"band {i + 1}'s nodata value {v:g}" for i, v in enumerate(self.nodata) if v is not None]
        if self.alpha:
            held.append("the alpha band")
        return None if not held else ", ".join(held[:2]) + (" ..." if len(held) > 2 else "")

    def _data_max(self, user: dict[str, str]) -> float | None:
        """The largest value the output holds before the model adds detail (the input's and its nodata
        values), only asked for when NBITS limits the bit depth."""
        r = self.reader
        if "NBITS" not in user or self.band_count != len(r.bands) or self.spread:
            return None
        values = [m for m in (_band_max(r._ds.GetRasterBand(b)) for b in r.bands) if m is not None]
        return max(values + [v for v in self.nodata if v is not None], default=None)

    def _colours(self) -> list[int]:
        """The input's colour interpretation of each band (an alpha band chosen as imagery is Undefined); an
        output of another band count (a correction map) has none."""
        r = self.reader
        if self.band_count != len(r.bands):
            return [gdal.GCI_Undefined] * self.band_count
        return [gdal.GCI_Undefined if c in (gdal.GCI_AlphaBand, gdal.GCI_PaletteIndex) else c
                for c in (r.band_info(i)["colour"] for i in range(self.band_count))]

    def _create(self) -> None:
        self._run = RunFolder(os.path.dirname(os.path.abspath(self.path)))
        self.temp_path = self._run.file("output.tif")
        error = None
        try:
            with collect_failures():
                self._ds = gdal.GetDriverByName("GTiff").Create(
                    self.temp_path, self.out_w, self.rows[1] - self.rows[0], self.band_count + self.alpha, self.dtype,
                    options=as_list(self._gtiff))
                self._copy_georeferencing()
                self._copy_bands()
                if self.mask:
                    with internal_masks():
                        self._ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        except RuntimeError as exc:
            error = one_line(exc)
        except BaseException:
            self.abort()
            raise
        if error is not None:  # outside the except block, so the traceback no longer holds the dataset
            self.abort()
            raise E2DiffSRError(f"could not create {self.label} {self.path}: {error}; check free disk space "
                                f"and write permission in {os.path.dirname(os.path.abspath(self.path))}")

    def _copy_georeferencing(self) -> None:
        r, src, dst = self.reader, self.reader._ds, self._ds
        fx, fy = self.out_w / r.width, self.out_h / r.height
        if r.projection:
            dst.SetProjection(r.projection)
        first = self.rows[0]
        grid, shift = self.alignment and self.alignment.grid, (0.0, 0.0)
        gt = None
        if grid is not None:  # exactly the reference's pixel size, origin on its grid
            gt = self.alignment.geotransform
            fx, fy, shift = grid.x.scale, grid.y.scale, (grid.y.shift, grid.x.shift)
        elif r.has_geotransform:
            gt = scaled_geotransform(r.geotransform, r.width, r.height, self.out_w, self.out_h)
        if gt is not None:  # a part of the rows starts lower
            dst.SetGeoTransform((gt[0] + first * gt[2], gt[1], gt[2], gt[3] + first * gt[5], gt[4], gt[5]))
        elif src.GetGCPCount():
            dst.SetGCPs(scaled_gcps(src.GetGCPs(), fx, fy, first), src.GetGCPProjection())
        rpc = src.GetMetadata("RPC")
        if rpc:
            dst.SetMetadata(scaled_rpc(rpc, fx, fy, shift, first), "RPC")
        copy_metadata(src, dst)

    def _copy_bands(self) -> None:
        r = self.reader
        same_bands = self.band_count == len(r.bands)  # a one-band summary (e.g. a correction map) takes none
        for i in range(self.band_count):
            band = self._ds.GetRasterBand(i + 1)
            if same_bands:
                info = r.band_info(i)
                if info["description"]:
                    band.SetDescription(info["description"])
                copy_metadata(r._ds.GetRasterBand(r.bands[i]), band)
                if info["unit"]:
                    band.SetUnitType(info["unit"])
                if info["scale"] not in (None, 1.0):
                    band.SetScale(info["scale"])
                if info["offset"] not in (None, 0.0) and not self.spread:
                    band.SetOffset(info["offset"])
            if self.nodata[i] is not None:
                band.SetNoDataValue(self.nodata[i])
        apply_colours(self._ds, self.colours)

    # -- writing -----------------------------------------------------------------------------------
    def _crop(self, x: int, y: int, data: np.ndarray, valid):
        """Clip a block to the rows this file holds; returns (x, y, data, valid) or None when nothing is inside."""
        _, h, w = data.shape
        x0, y0 = max(x, 0), max(y, self.rows[0])
        x1, y1 = min(x + w, self.out_w), min(y + h, self.rows[1])
        if x1 <= x0 or y1 <= y0:
            return None
        sl = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        return x0, y0, data[(slice(None),) + sl], None if valid is None else np.asarray(valid, dtype=bool)[sl]

    def _check_open(self, data: np.ndarray) -> None:
        if self._ds is None:
            raise RuntimeError("RasterWriter is closed (committed or aborted)")
        if data.ndim != 3 or data.shape[0] != self.band_count:
            raise ValueError(f"expected data [{self.band_count}, h, w], got shape {data.shape}")

    def write(self, x: int, y: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write a ``[bands, h, w]`` block of model values in [0, 1] at output pixel (x, y).

        Values are mapped back to the input's units with the reader's ranges (what the input held outside
        those ranges is added back), rounded and clipped for integer types. Each band's invalid pixels (from
        the input, and where ``valid`` is False) get its nodata value. Parts outside the output are ignored.
        """
        data = np.asarray(data)
        self._check_open(data)
        if self.band_count != len(self.reader.ranges):
            raise ValueError("write() maps with the reader's ranges; use write_raw() for other band counts")
        ranges = self.reader.ranges
        self._write_bands(x, y, data, valid, lambda i, v: v * ranges[i].span + ranges[i].lo, True)

    def write_raw(self, x: int, y: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write a ``[bands, h, w]`` block whose values are already in output units (e.g. uncertainty)."""
        data = np.asarray(data)
        self._check_open(data)
        self._write_bands(x, y, data, valid, lambda i, v: v, False)

    def _write_bands(self, x, y, data, valid, to_units, model_units: bool) -> None:
        """Crop to the output, add the input's masks, convert to output units and type, write; a GDAL failure
        (reported by exception or only through GDAL's error handler) aborts the run."""
        cropped = self._crop(int(x), int(y), data, valid)
        if cropped is None:
            return
        x, y, data, valid = cropped
        h, w = data.shape[1:]
        src = self.reader.output_window(x, y, w, h, self.out_w, self.out_h,
                                        self.alignment.grid if self.alignment else None)
        per_band, beyond = src.valid, src.beyond
        if valid is not None:
            per_band = per_band & valid[None]
        y -= self.rows[0]  # the file's own row
        try:
            with collect_failures():
                for i in range(self.band_count):
                    v = data[i].astype(np.float64) + (beyond[i] if model_units and i < len(beyond) else 0.0)
                    ok = per_band[min(i, len(per_band) - 1)]
                    _write_band_array(self._ds.GetRasterBand(i + 1),
                                      to_output(to_units(i, v), self.dtype, self.nodata[i], ok, model_units), x, y)
                if self.alpha:
                    _write_band_array(self._ds.GetRasterBand(self.band_count + 1), src.alpha, x, y)
                if self.mask:
                    _write_band_array(self._ds.GetRasterBand(1).GetMaskBand(), src.mask.astype(np.uint8) * 255, x, y)
        except RuntimeError as exc:
            message = one_line(exc)
        else:
            return
        raise self._fail(message)

    def _fail(self, message: str) -> E2DiffSRError:
        # Called after the ``except`` block has ended, so the GDAL traceback (which keeps the dataset alive
        # through its band objects) is gone and abort() really closes and deletes the file.
        folder = os.path.dirname(os.path.abspath(self.path))
        try:  # measured before the partial file is deleted, which frees its space again
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        self.abort()
        if free is not None and free < 64 * 2**20:
            return E2DiffSRError(
                f"could not write {self.label} {self.path}: the disk is full ({free / 2**20:.1f} MiB free in "
                f"{folder}; GDAL: {message}); free some space or choose another output folder")
        return E2DiffSRError(f"could not write {self.label} {self.path} (GDAL: {message}); nothing was written")

    # -- finishing ---------------------------------------------------------------------------------
    def _finish(self) -> str:
        """Flush and close the temporary file (and make the COG); the finished file's path. RuntimeError with
        GDAL's message when anything fails."""
        with collect_failures():
            self._ds.FlushCache()
        holder = [self._ds]
        self._ds = None
        errors = close_dataset(holder)
        if errors:
            raise RuntimeError(errors[0])
        if not self.cog:
            return self.temp_path
        cog_path = self._run.file("output.cog.tif")
        holder = []
        with collect_failures():
            holder.append(gdal.Translate(cog_path, self.temp_path, format="COG", creationOptions=as_list(self._cog)))
        errors = close_dataset(holder)
        if errors:
            raise RuntimeError(errors[0])
        with collect_failures():
            carry_lost_metadata(self.temp_path, cog_path)
        return cog_path

    def commit(self) -> None:
        """Finish the file and move it into place (the target appears only now)."""
        commit_all([self])

    def prepare(self) -> None:
        """Finish the file in the run folder (flushed, closed, made a COG); the target is not touched yet."""
        if self._done:
            raise RuntimeError("RasterWriter is already committed or aborted")
        if self._ds is None:
            raise RuntimeError("RasterWriter is closed (committed or aborted)")
        try:
            self._final = self._finish()
            _read_back(self._final)
        except RuntimeError as exc:
            message = one_line(exc)
        else:
            return
        raise self._fail(message)

    def check_free(self) -> None:
        """Without overwriting, refuse (and abort) when a file appeared at the target during the run."""
        if not self.overwrite and os.path.lexists(self.path):
            self.abort()
            raise E2DiffSRError(
                f"{self.label} {self.path} was created by something else while this run was working; it was left "
                "as it is and nothing was written; choose another name or allow overwriting")

    def publish(self) -> None:
        """Move the prepared file (and its side files) into place and remove the run folder."""
        try:
            publish_with_sides(self._final, self.path, self.overwrite, self.label)
        except OSError as exc:
            self.abort()
            raise E2DiffSRError(f"could not move the finished {self.label} into place at {self.path} "
                                f"({exc.strerror}); close it in other programs and try again") from None
        except BaseException:
            self.abort()
            raise
        self.abort()  # removes the run folder and what is left in it
        self._done = True

    def unpublish(self) -> None:
        """Take back a published output that replaced nothing (another output of the run failed)."""
        if not self.overwrite and os.path.isfile(self.path):
            os.remove(self.path)

    def abort(self) -> None:
        """Close and delete every temporary file; the target is left untouched. Safe to call twice."""
        if self._ds is not None:
            holder = [self._ds]
            self._ds = None
            close_dataset(holder)  # a file being thrown away may fail to flush; that is not news
        if self._run is not None:
            self._run.close()
            self._run = None
        self.temp_path = None
        self._done = True

    @property
    def run_folder(self) -> str | None:
        """The run's own hidden folder beside the output (other temporary files of the run belong there)."""
        return None if self._run is None else self._run.path

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def __del__(self):  # pragma: no cover - an abandoned writer leaves no partial file
        try:
            if not self._done:
                self.abort()
        except Exception:  # noqa: BLE001
            pass


def commit_all(writers: list[RasterWriter]) -> None:
    """Publish the outputs of one run together or none of them: every file is finished first, every target
    checked, and only then are they moved into place (one that still fails takes back those it follows)."""
    for w in writers:
        w.prepare()
    for w in writers:
        w.check_free()
    published = []
    try:
        for w in writers:
            w.publish()
            published.append(w)
    except BaseException:
        for w in published:
            w.unpublish()
        raise


def _read_back(path: str) -> None:
    """Read every block of the finished file (each band and mask) before it is published: a codec that wrote
    blocks it cannot read back (GDAL 3.6's LERC on pixel-interleaved tiles with a mask did) is a failed
    run, never an output. RuntimeError with GDAL's message."""
    with collect_failures():
        ds = gdal.Open(path)
        try:
            for b in range(1, ds.RasterCount + 1):
                band = ds.GetRasterBand(b)
                band.Checksum()
                if band.GetMaskFlags() & gdal.GMF_PER_DATASET and b == 1:
                    band.GetMaskBand().Checksum()
        finally:
            ds = None


def _band_max(band) -> float | None:
    """The largest value of ``band`` that is not its nodata value (None when there is none), read in strips of
    rows. Not GDAL's ComputeRasterMinMax: on a VRT that stores statistics into the VRT file itself, and the
    input must never change."""
    nodata, best = band.GetNoDataValue(), None
    step = max(1, (1 << 22) // max(1, band.XSize))
    for y in range(0, band.YSize, step):
        rows = band.ReadAsArray(0, y, band.XSize, min(step, band.YSize - y))
        if rows is None:
            continue
        rows = rows[np.isfinite(rows)] if rows.dtype.kind == "f" else rows.ravel()
        if nodata is not None and np.isfinite(nodata):
            rows = rows[rows.astype(np.float64) != nodata]
        if rows.size:
            m = float(rows.max())
            best = m if best is None else max(best, m)
    return best
