"""Windowed, normalised reading of the selected bands of a raster, with every kind of invalid pixel.

Invalid pixels, per band: the band's nodata value; NaN or infinity (with or without a nodata value); GDAL
masks (a per-dataset mask such as a ``.msk`` file or an internal TIFF mask, or a per-band mask); an alpha
band's zero. An alpha band is not imagery: it is left out of the bands that are super-resolved and comes back
as the output's alpha band. A pixel invalid in one band stays valid in the others.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.gridmap import GridMap

from .bands import make_groups, ungroup
from .files import source_files
from .fill import fill_invalid
from .gdal_errors import one_line
from .georef import bilinear, source_index, source_position
from .values import (
    COMPLEX_TYPES,
    SUPPORTED_NAMES,
    SUPPORTED_TYPES,
    BandRange,
    check_magnitude,
    check_range,
    is_float_type,
    numpy_type,
    outside_range,
    robust_range,
    type_limits,
)

#: Upper bound of pixels read to estimate the band ranges.
STATS_MAX_PIXELS = 1_000_000
#: 8-bit bands whose percentile ranges together span less than this run on that range instead of 0..255.
BYTE_NARROW = 127.5


@dataclass
class OutputWindow:
    """An output window's share of the input: ``valid`` [n, h, w] per band (nodata, NaN, masks, alpha),
    ``beyond`` [n, h, w] what lay outside the band ranges (model units, zero inside), ``alpha`` [h, w] the
    alpha band's values or None, ``mask`` [h, w] the GDAL mask's validity or None."""

    valid: np.ndarray
    beyond: np.ndarray
    alpha: np.ndarray | None
    mask: np.ndarray | None


def _open(path: str):
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError as exc:
        if not os.path.exists(path) and not path.startswith("/vsi") and ":" not in path:
            raise E2DiffSRError(f"input raster not found: {path}") from None
        raise E2DiffSRError(f"GDAL cannot open {path} as a raster ({one_line(exc)}); "
                            "check that it is a raster file in a format GDAL reads") from None
    if ds is None:  # only when exceptions were switched off by someone else
        raise E2DiffSRError(f"GDAL cannot open {path} as a raster; check the file")
    return ds


class RasterReader:
    """Windowed, normalised reading of selected bands of a raster.

    Attributes: ``path``, ``width``, ``height``, ``bands`` (1-based numbers of the selected bands),
    ``band_count_total``, ``dtype`` (GDAL type code; the union type if the selected bands differ, see
    ``type_note``), ``nodata`` (per selected band, None where unset), ``geotransform``, ``projection``
    (WKT, may be empty), ``ranges`` (per selected band :class:`BandRange`), ``alpha`` (1-based alpha band
    or None), ``dataset_mask`` (True when a per-dataset or per-band GDAL mask marks pixels invalid),
    ``files`` (every file on disk GDAL reads for this input).
    """

    def __init__(self, path: str, bands: list[int] | None = None, ranges: list[tuple[float, float]] | None = None):
        self.path = os.fspath(path)
        self._last_window = None
        self._ds = _open(self.path)
        try:
            self._setup(bands, ranges)
        except BaseException:
            self.close()
            raise

    # -- set-up ------------------------------------------------------------------------------------
    def _setup(self, bands, ranges) -> None:
        ds = self._ds
        self.width, self.height = ds.RasterXSize, ds.RasterYSize
        self.band_count_total = ds.RasterCount
        if self.band_count_total == 0:
            subs = ds.GetSubDatasets()
            if subs:
                raise E2DiffSRError(f"{self.path} has no raster bands itself but {len(subs)} subdatasets; "
                                    f"open one of them instead, e.g. {subs[0][0]}")
            raise E2DiffSRError(f"{self.path} has no raster bands; choose a raster file")
        self.files = source_files(ds, self.path)
        alphas = [b for b in range(1, self.band_count_total + 1)
                  if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand]
        self.alpha = alphas[-1] if alphas else None
        self._alpha_is_data = False
        self.bands = self._select(bands)
        self._check_types()
        self._masks = self._mask_bands()
        self.dataset_mask = bool(self._masks)

        gt = ds.GetGeoTransform(can_return_null=True)
        self.has_geotransform = gt is not None
        self.geotransform = tuple(gt) if gt is not None else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        self.projection = ds.GetProjection() or ""
        self._default_fill = np.full(len(self.bands), 0.5)
        if is_float_type(self.dtype):  # before the ranges, which cannot be computed from such values
            self._check_magnitudes()
        self.ranges = self._ranges(ranges)

    def _select(self, bands) -> list[int]:
        if bands is None:
            chosen = [b for b in range(1, self.band_count_total + 1) if b != self.alpha]
            if not chosen:
                raise E2DiffSRError(f"{self.path} holds only an alpha (transparency) band; there is no imagery")
            return chosen
        bands = list(bands)
        if not bands:
            raise E2DiffSRError("no bands selected; select at least one band, e.g. --bands 1,2,3")
        seen = set()
        for b in bands:
            if isinstance(b, bool) or not isinstance(b, int | np.integer):
                raise E2DiffSRError(f"band numbers must be whole numbers, got {b!r}")
            if not 1 <= b <= self.band_count_total:
                hint = " (band numbers start at 1)" if b < 1 else ""
                n = self.band_count_total
                raise E2DiffSRError(f"band {b} does not exist: {self.path} has {n} band{'s' if n != 1 else ''}{hint}")
            if b in seen:
                raise E2DiffSRError(f"band {b} is selected twice; select each band once")
            seen.add(b)
        if self.alpha in seen:  # chosen by name: the user says it is imagery (e.g. NIR in a file tagged RGBA)
            self.alpha, self._alpha_is_data = None, True
        return [int(b) for b in bands]

    def _check_types(self) -> None:
        dtype, types = None, []
        self.nodata = []
        for b in self.bands:
            band = self._ds.GetRasterBand(b)
            t = band.DataType
            name = gdal.GetDataTypeName(t)
            if t in COMPLEX_TYPES:
                raise E2DiffSRError(f"unsupported data type {name} (complex) in band {b} of {self.path}; "
                                    "convert to a real type first, e.g. gdal_translate -ot Float32")
            if t not in SUPPORTED_TYPES:
                raise E2DiffSRError(f"unsupported data type {name} in band {b} of {self.path}; convert to one of "
                                    f"{SUPPORTED_NAMES} first, e.g. gdal_translate -ot Float32")
            # GDAL >= 3.7 has an Int8 type (not in SUPPORTED_TYPES, refused above); older GDAL marks signed bytes
            # with PIXELTYPE, which newer GDAL warns about when asked
            if t == gdal.GDT_Byte and not hasattr(gdal, "GDT_Int8") and \
                    band.GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE":
                raise E2DiffSRError(f"unsupported data type signed Byte in band {b} of {self.path}; "
                                    "convert it first, e.g. gdal_translate -ot Int16")
            if band.GetColorTable() is not None and band.GetColorInterpretation() == gdal.GCI_PaletteIndex:
                raise E2DiffSRError(f"band {b} of {self.path} holds palette indices (a colour table names its "
                                    "values), which cannot be interpolated; expand a picture to colours first "
                                    "(gdal_translate -expand rgb), or resample a thematic class map with nearest "
                                    "neighbour or the most common class: gdalwarp -r near (or -r mode) -tr XRES YRES")
            self._check_thematic(band, b)
            dtype = t if dtype is None else gdal.DataTypeUnion(dtype, t)
            types.append(name)
            self.nodata.append(band.GetNoDataValue())
        self.dtype = int(dtype)
        self._np_dtype = numpy_type(self.dtype)
        self.type_note = None
        if len(set(types)) > 1:  # a GeoTIFF has one type for all bands: the one that holds every value
            self.type_note = (f"the bands have different data types ({', '.join(types)}); the output stores all of "
                              f"them as {gdal.GetDataTypeName(self.dtype)}, which holds every value of each")

    def _check_thematic(self, band, b: int) -> None:
        """A class map (its values name classes) cannot be interpolated: 2.5 between class 2 and 3 is no class."""
        what = None
        if band.GetColorTable() is not None:
            what = "a colour table"
        elif band.GetDefaultRAT() is not None and band.GetDefaultRAT().GetRowCount() > 0:
            what = "a raster attribute table"
        elif band.GetCategoryNames():
            what = "category names"
        if what is not None:
            raise E2DiffSRError(f"band {b} of {self.path} is thematic ({what} names its values as classes), which "
                                "cannot be interpolated into new values; resample a class map with nearest neighbour "
                                "or the most common class instead, e.g. gdalwarp -r near (or -r mode) -tr XRES YRES")

    def _mask_bands(self) -> dict[int, object]:
        """{selected band index: GDAL mask band} for masks other than nodata, all-valid and the alpha band."""
        masks = {}
        for i, b in enumerate(self.bands):
            band = self._ds.GetRasterBand(b)
            flags = band.GetMaskFlags()
            if flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA):
                continue
            if flags & gdal.GMF_ALPHA and (self.alpha is not None or self._alpha_is_data):
                continue  # the alpha band is read as such, or it is imagery
            masks[i] = band.GetMaskBand()
        return masks

    def _ranges(self, ranges) -> list[BandRange]:
        n = len(self.bands)
        if ranges is None:
            if self.dtype == gdal.GDT_Byte:
                return self._byte_ranges()
            return self._robust_ranges()
        ranges = list(ranges)
        if len(ranges) != n:
            raise E2DiffSRError(f"{len(ranges)} value ranges given for {n} selected band{'s' if n != 1 else ''}; "
                                "give one LO,HI range per selected band")
        parsed = []
        for b, r in zip(self.bands, ranges, strict=True):
            try:
                lo, hi = (float(v) for v in r)
            except (TypeError, ValueError):
                raise E2DiffSRError(f"value range for band {b} must be two numbers LO,HI, got {r!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise E2DiffSRError(f"value range for band {b} must have LO < HI (finite numbers), got {lo:g},{hi:g}")
            check_range(lo, hi, b)
            parsed.append(BandRange(lo, hi))
        return parsed

    def _sample_band(self, b: int) -> np.ndarray:
        """At most about ``STATS_MAX_PIXELS`` values of band ``b`` spread over the whole raster.

        Small rasters are read whole; rasters with overviews are read decimated (GDAL serves that from an
        overview); large rasters without overviews are sampled as a grid of small full-resolution windows,
        so that only a few of the file's blocks have to be decompressed.
        """
        band = self._ds.GetRasterBand(b)
        w, h = self.width, self.height
        if w * h <= STATS_MAX_PIXELS:
            return band.ReadAsArray(0, 0, w, h)
        if band.GetOverviewCount() > 0 or w * h <= 4 * STATS_MAX_PIXELS:
            step = math.sqrt(w * h / STATS_MAX_PIXELS)
            return band.ReadAsArray(0, 0, w, h, buf_xsize=max(1, int(w / step)), buf_ysize=max(1, int(h / step)))
        grid = 8
        size = int(math.sqrt(STATS_MAX_PIXELS / grid**2))
        sw, sh = min(size, w), min(size, h)
        pieces = []
        for gy in range(grid):
            for gx in range(grid):
                x, y = int((w - sw) * (gx + 0.5) / grid), int((h - sh) * (gy + 0.5) / grid)
                pieces.append(band.ReadAsArray(x, y, sw, sh).ravel())
        return np.concatenate(pieces)

    def _check_magnitudes(self) -> None:
        """Floating-point bands: refuse values too large to compute with (unmarked fill values), from the same
        sample the ranges come from."""
        for i, b in enumerate(self.bands):
            try:
                sample = self._sample_band(b)
            except RuntimeError:
                continue  # the ranges' own read reports a damaged file
            check_magnitude(sample[~self._invalid_values(sample, i)], b, self.path, self.nodata[i])

    def _byte_ranges(self) -> list[BandRange]:
        """8-bit imagery: 0..255, the model's training range, unless the bands use a narrow part of it (their
        percentile ranges together span under half of 0..255: hazy, dark or low-contrast pictures); then that
        one shared range, so that the model's contrast follows the picture's and the colours keep their
        balance (scripts/working_range.py: +0.6 to +0.9 dB on the validation pictures squeezed into 33..64,
        +0.01 dB as they are; values outside the range are carried, not clipped)."""
        robust = self._robust_ranges()
        seen = [r for r, has in zip(robust, self._has_values, strict=True) if has] or [BandRange(0.0, 255.0)]
        lo, hi = min(r.lo for r in seen), max(r.hi for r in seen)
        chosen = BandRange(lo, hi) if hi - lo < BYTE_NARROW else BandRange(0.0, 255.0)
        for i, r in enumerate(robust):  # the fill values (the bands' means) on the chosen range
            self._default_fill[i] = (self._default_fill[i] * r.span + r.lo - chosen.lo) / chosen.span
        return [BandRange(chosen.lo, chosen.hi) for _ in self.bands]

    def _robust_ranges(self) -> list[BandRange]:
        """Percentile ranges (and fill values) from a sample of each selected band."""
        out, self._has_values = [], []
        for i, b in enumerate(self.bands):
            try:
                sample = self._sample_band(b)
            except RuntimeError as exc:
                raise E2DiffSRError(f"could not read band {b} of {self.path} ({one_line(exc)}); "
                                    "check that the file is intact") from None
            values = sample[~self._invalid_values(sample, i)].astype(np.float64)
            r, mean = robust_range(values, self.dtype)
            self._has_values.append(mean is not None)
            if mean is not None:
                self._default_fill[i] = (mean - r.lo) / r.span
            out.append(r)
        return out

    # -- validity ----------------------------------------------------------------------------------
    def _invalid_values(self, raw: np.ndarray, i: int) -> np.ndarray:
        """Pixels of selected band ``i`` whose value marks them invalid (nodata, NaN, infinity)."""
        nd = self.nodata[i]
        if np.issubdtype(raw.dtype, np.floating):
            bad = ~np.isfinite(raw)
            if nd is not None and math.isfinite(nd):
                bad |= raw == raw.dtype.type(nd)
            return bad
        if nd is None or not math.isfinite(nd) or nd != round(nd):
            return np.zeros(raw.shape, dtype=bool)
        info = np.iinfo(raw.dtype)
        if not info.min <= nd <= info.max:
            return np.zeros(raw.shape, dtype=bool)
        return raw == raw.dtype.type(int(nd))

    def _read_block(self, c0: int, r0: int, bw: int, bh: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw values [n, bh, bw] and per-band validity [n, bh, bw] of a window inside the raster."""
        n = len(self.bands)
        try:
            raw = self._ds.ReadAsArray(c0, r0, bw, bh, band_list=self.bands, buf_type=self.dtype).reshape(n, bh, bw)
            valid = np.stack([~self._invalid_values(raw[i], i) for i in range(n)])
            for i, mask in self._masks.items():
                valid[i] &= mask.ReadAsArray(c0, r0, bw, bh) > 0
            if self.alpha is not None:
                valid &= self._ds.GetRasterBand(self.alpha).ReadAsArray(c0, r0, bw, bh)[None] > 0
        except RuntimeError as exc:
            raise E2DiffSRError(f"could not read {self.path} at pixel {c0},{r0} ({one_line(exc)}); "
                                "check that the file is intact") from None
        return raw, valid

    def _clamped(self, x, y, w, h):
        cols = np.clip(np.arange(x, x + w), 0, self.width - 1)
        rows = np.clip(np.arange(y, y + h), 0, self.height - 1)
        return rows, cols

    # -- API ---------------------------------------------------------------------------------------
    def groups(self) -> list[list[int]]:
        """Indices into ``self.bands`` for each 3-channel model pass; see :mod:`.bands`."""
        return make_groups(len(self.bands))

    def ungroup(self, outputs) -> np.ndarray:
        """Model outputs (one ``[3, h, w]`` per group) back to ``[n_selected_bands, h, w]``."""
        return ungroup(outputs, self.groups(), len(self.bands))

    def read_bands(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window in pixel coordinates; it may extend beyond the raster.

        Returns ``(data, valid)``: ``data`` float32 ``[n, h, w]`` mapped with the band ranges (lo -> 0,
        hi -> 1, not clipped), ``valid`` bool ``[n, h, w]`` per band, False outside the raster. Each band's
        invalid pixels are filled from its own valid neighbours; outside pixels replicate the nearest edge.
        """
        if self._ds is None:
            raise RuntimeError("RasterReader is closed")
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w <= 0 or h <= 0:
            raise ValueError(f"window size must be positive, got {w}x{h}")
        rows, cols = self._clamped(x, y, w, h)
        r0, c0 = int(rows[0]), int(cols[0])
        raw, block_valid = self._read_block(c0, r0, int(cols[-1]) - c0 + 1, int(rows[-1]) - r0 + 1)
        data = raw.astype(np.float64)
        for i, r in enumerate(self.ranges):
            data[i] -= r.lo
            data[i] /= r.span
            fill_invalid(data[i:i + 1], block_valid[i], self._default_fill[i:i + 1])
        if x >= 0 and y >= 0 and x + w <= self.width and y + h <= self.height:
            return data.astype(np.float32), block_valid
        ri, ci = (rows - r0)[:, None], (cols - c0)[None, :]
        data, valid = data[:, ri, ci], block_valid[:, ri, ci]
        xs, ys = np.arange(x, x + w), np.arange(y, y + h)
        valid &= (((ys >= 0) & (ys < self.height))[:, None] & ((xs >= 0) & (xs < self.width))[None, :])[None]
        return data.astype(np.float32), valid

    def read(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_bands` with one validity ``[h, w]`` for the window: True where every band is valid."""
        data, valid = self.read_bands(x, y, w, h)
        return data, valid.all(axis=0)

    def output_window(self, x: int, y: int, w: int, h: int, out_w: int, out_h: int,
                      grid: GridMap | None = None) -> OutputWindow:
        """What the output window (x, y, w, h) of an ``out_w`` x ``out_h`` output takes straight from the input
        (see :class:`OutputWindow`): validity, mask and alpha from the input pixel under each output pixel's
        centre (placed by ``grid``, default the sizes' own mapping); the input's values outside the band
        ranges interpolated bilinearly. The last window is kept: the output, the uncertainty raster and the
        consistency map all ask for the same one in turn."""
        key = (x, y, w, h, GridMap.of(grid, (self.height, self.width), (out_h, out_w)))
        if self._last_window is None or self._last_window[0] != key:
            self._last_window = (key, self._output_window(*key))
        return self._last_window[1]

    def _output_window(self, x: int, y: int, w: int, h: int, grid: GridMap) -> OutputWindow:
        iy, ix = source_index(y, h, grid.y), source_index(x, w, grid.x)
        py, px = source_position(y, h, grid.y), source_position(x, w, grid.x)
        r0 = max(0, min(int(np.floor(py.min())), int(iy.min())))
        c0 = max(0, min(int(np.floor(px.min())), int(ix.min())))
        r1 = min(self.height, max(int(np.floor(py.max())) + 2, int(iy.max()) + 1))
        c1 = min(self.width, max(int(np.floor(px.max())) + 2, int(ix.max()) + 1))
        data, valid = self.read_bands(c0, r0, c1 - c0, r1 - r0)
        beyond = outside_range(data)
        beyond = bilinear(beyond, py - r0, px - c0) if beyond.any() else np.zeros((len(self.bands), h, w))
        alpha = mask = None
        try:
            if self.alpha is not None:
                alpha = self._ds.GetRasterBand(self.alpha).ReadAsArray(c0, r0, c1 - c0, r1 - r0)[iy - r0][:, ix - c0]
            if self._masks:
                m = np.logical_and.reduce([b.ReadAsArray(c0, r0, c1 - c0, r1 - r0) > 0 for b in self._masks.values()])
                mask = m[iy - r0][:, ix - c0]
        except RuntimeError as exc:
            raise E2DiffSRError(f"could not read {self.path} at pixel {c0},{r0} ({one_line(exc)}); "
                                "check that the file is intact") from None
        return OutputWindow(valid[:, iy - r0][:, :, ix - c0], beyond.astype(np.float32), alpha, mask)

    def band_info(self, i: int) -> dict:
        """Description, colour, unit, scale/offset and metadata of selected band ``i`` (for the writer)."""
        band = self._ds.GetRasterBand(self.bands[i])
        return {"description": band.GetDescription(), "colour": band.GetColorInterpretation(),
                "unit": band.GetUnitType(), "scale": band.GetScale(), "offset": band.GetOffset(),
                "metadata": band.GetMetadata() or {}}

    @property
    def alpha_type(self) -> int | None:
        return None if self.alpha is None else self._ds.GetRasterBand(self.alpha).DataType

    def limits(self) -> tuple[float, float] | None:
        return type_limits(self.dtype)

    def close(self) -> None:
        self._ds = None

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        self._ds = None
