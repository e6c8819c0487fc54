"""Raster input and output for super-resolution: windowed GDAL reads and writes, nothing else.

Pure GDAL + numpy (no torch, no Qt), so front ends and tests can use it without the model.

Reading (:class:`RasterReader`)
    Opens any raster GDAL reads, selects bands (1-based), and hands out windows as float32 arrays mapped
    to the model's [0, 1] range with a per-band :class:`BandRange` (Byte: 0..255; other types: robust
    0.5/99.5 percentiles from a subsampled read; or ranges the user gives). Values outside the range are
    *not* clipped, so mapping back restores them. Windows may extend beyond the raster: the border is
    replicated so the model sees no black frame. Pixels that are nodata (in ANY selected band) or
    non-finite are reported in the ``valid`` mask and filled from their valid surroundings so they do not
    bleed into neighbours.

Band groups (:meth:`RasterReader.groups`, :func:`ungroup`)
    The model takes three channels. Selected bands are split into consecutive groups of three; a short
    group is padded by repeating its last band (1 band -> ``[[0, 0, 0]]``, 2 -> ``[[0, 1, 1]]``,
    5 -> ``[[0, 1, 2], [3, 4, 4]]``). Each band belongs to exactly one group; its *primary* position is the
    first place it appears there. :func:`ungroup` turns the model's 3-channel outputs back into one array
    per selected band by averaging every position a band occupies in its group (a grey band replicated
    three times is averaged back; an unpadded band is just its primary position).

Writing (:class:`RasterWriter`)
    Validates the output path before any work, writes a tiled, compressed GeoTIFF to a hidden temporary
    file beside the target, copies georeferencing (geotransform scaled to the new size), band descriptions,
    colour interpretation, nodata and metadata, maps values back to the input's units and type, and moves
    the file into place only in :meth:`RasterWriter.commit` (optionally as a Cloud Optimized GeoTIFF).
    :meth:`RasterWriter.abort` removes every temporary file.

Every problem a user can fix raises :class:`~e2diffsr_core.errors.E2DiffSRError` with a one-line message.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array

from e2diffsr_core.errors import E2DiffSRError

gdal.UseExceptions()

__all__ = [
    "BandRange",
    "RasterReader",
    "RasterWriter",
    "output_size",
    "scaled_geotransform",
    "ungroup",
    "SUPPORTED_TYPES",
]

#: GDAL data types the reader and writer handle.
SUPPORTED_TYPES = (
    gdal.GDT_Byte,
    gdal.GDT_UInt16,
    gdal.GDT_Int16,
    gdal.GDT_UInt32,
    gdal.GDT_Int32,
    gdal.GDT_Float32,
    gdal.GDT_Float64,
)
_COMPLEX_TYPES = (gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64)
_SUPPORTED_NAMES = ", ".join(gdal.GetDataTypeName(t) for t in SUPPORTED_TYPES)

#: Upper bound of pixels read to estimate the band ranges.
STATS_MAX_PIXELS = 1_000_000
#: Percentiles of the robust range for non-Byte data.
STATS_PERCENTILES = (0.5, 99.5)

_TILE = 512
#: Codecs that take a PREDICTOR; with others (JPEG, WEBP, LERC, ...) the default predictor is dropped.
_PREDICTOR_CODECS = ("DEFLATE", "LZW", "ZSTD", "LZMA")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _numpy_type(gdal_type: int) -> np.dtype:
    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type))


def _type_limits(gdal_type: int) -> tuple[float, float] | None:
    """(min, max) of an integer GDAL type, None for floating point types."""
    dt = _numpy_type(gdal_type)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return None


def _is_float_type(gdal_type: int) -> bool:
    return _type_limits(gdal_type) is None


@dataclass
class BandRange:
    """Values ``lo`` and ``hi`` of a band in its own units, mapped to 0.0 and 1.0 for the model."""

    lo: float
    hi: float

    @property
    def span(self) -> float:
        return self.hi - self.lo


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Output size for ``scale``: ``(int(width * scale), int(height * scale))``, truncated as the model does."""
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise E2DiffSRError(f"scale must be a positive number, got {scale!r}; pass e.g. --scale 2")
    out_w, out_h = int(width * scale), int(height * scale)
    if out_w < 1 or out_h < 1:
        raise E2DiffSRError(f"scale {scale:g} turns a {width}x{height} raster into an empty output; use a larger scale")
    return out_w, out_h


def scaled_geotransform(gt, width: int, height: int, out_w: int, out_h: int) -> tuple:
    """Geotransform of the same area at ``out_w`` x ``out_h`` pixels.

    The origin stays; the column terms (``gt[1]``, ``gt[4]``) scale by ``width / out_w`` and the row terms
    (``gt[2]``, ``gt[5]``) by ``height / out_h``, so rotated/sheared rasters keep their footprint.
    """
    fx = width / out_w
    fy = height / out_h
    return (gt[0], gt[1] * fx, gt[2] * fy, gt[3], gt[4] * fx, gt[5] * fy)


# --------------------------------------------------------------------------------------------------
# Band groups
# --------------------------------------------------------------------------------------------------


def _make_groups(n: int) -> list[list[int]]:
    groups = []
    for start in range(0, n, 3):
        g = list(range(start, min(start + 3, n)))
        while len(g) < 3:
            g.append(g[-1])
        groups.append(g)
    return groups


def ungroup(outputs, groups: list[list[int]], n_bands: int) -> np.ndarray:
    """Combine per-group model outputs back into one array per selected band.

    ``outputs`` is a sequence (or array) of ``[3, h, w]`` arrays, one per group, in the order of ``groups``.
    Each band is the mean of all positions it occupies in its group (its primary position alone when
    it is not repeated). Returns ``[n_bands, h, w]`` float32.
    """
    outputs = [np.asarray(o) for o in outputs]
    if len(outputs) != len(groups):
        raise ValueError(f"got {len(outputs)} outputs for {len(groups)} band groups")
    h, w = outputs[0].shape[-2:]
    acc = np.zeros((n_bands, h, w), dtype=np.float64)
    cnt = np.zeros(n_bands, dtype=np.int64)
    for out, group in zip(outputs, groups, strict=True):
        for pos, band in enumerate(group):
            acc[band] += out[pos]
            cnt[band] += 1
    if (cnt == 0).any():
        missing = [int(i) for i in np.flatnonzero(cnt == 0)]
        raise ValueError(f"bands {missing} appear in no group")
    return (acc / cnt[:, None, None]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _fill_invalid(data: np.ndarray, valid: np.ndarray, default: np.ndarray) -> None:
    """Fill ``data[:, ~valid]`` in place from the valid surroundings (push-pull pyramid).

    Each hole gets the mean of the valid pixels of the finest pyramid cell around it that has any, so
    a hole's border takes values close to its valid neighbours. A window without any valid pixel gets
    ``default`` per band.
    """
    if valid.all():
        return
    if not valid.any():
        data[:] = default[:, None, None]
        return
    weight = valid.astype(np.float64)
    values = np.where(valid[None], data, 0.0)
    levels = [(values, weight)]
    while not (weight > 0).all() and max(weight.shape) > 1:
        h, w = weight.shape
        ph, pw = h % 2, w % 2
        if ph or pw:
            values = np.pad(values, ((0, 0), (0, ph), (0, pw)))
            weight = np.pad(weight, ((0, ph), (0, pw)))
        h2, w2 = weight.shape[0] // 2, weight.shape[1] // 2
        values = values.reshape(values.shape[0], h2, 2, w2, 2).sum(axis=(2, 4))
        weight = weight.reshape(h2, 2, w2, 2).sum(axis=(1, 3))
        levels.append((values, weight))
    values, weight = levels[-1]
    estimate = values / np.maximum(weight, 1e-12)[None]
    for values, weight in reversed(levels[:-1]):
        h, w = weight.shape
        up = np.repeat(np.repeat(estimate, 2, axis=1), 2, axis=2)[:, :h, :w]
        has = weight > 0
        estimate = np.where(has[None], values / np.maximum(weight, 1e-12)[None], up)
    holes = ~valid
    data[:, holes] = estimate[:, holes]


class RasterReader:
    """Windowed, normalised reading of selected bands of a raster.

    Attributes: ``path``, ``width``, ``height``, ``bands`` (1-based numbers of the selected bands),
    ``band_count_total``, ``dtype`` (GDAL type code; the union type if the selected bands differ),
    ``nodata`` (per selected band, None where unset), ``geotransform``, ``projection`` (WKT, may be
    empty), ``ranges`` (per selected band :class:`BandRange`).
    """

    def __init__(
        self,
        path: str,
        bands: list[int] | None = None,
        ranges: list[tuple[float, float]] | None = None,
    ):
        self.path = os.fspath(path)
        self._ds = None
        try:
            ds = gdal.OpenEx(self.path, gdal.OF_RASTER | gdal.OF_READONLY)
        except RuntimeError as exc:
            if not os.path.exists(self.path) and not self.path.startswith("/vsi"):
                raise E2DiffSRError(f"input raster not found: {self.path}") from None
            raise E2DiffSRError(
                f"GDAL cannot open {self.path} as a raster ({_one_line(exc)}); "
                "check that it is a raster file in a format GDAL reads"
            ) from None
        if ds is None:  # only when exceptions were switched off by someone else
            raise E2DiffSRError(f"GDAL cannot open {self.path} as a raster; check the file")
        self._ds = ds
        try:
            self._setup(bands, ranges)
        except BaseException:
            self.close()
            raise

    # -- set-up ------------------------------------------------------------------------------------

    def _setup(self, bands, ranges) -> None:
        ds = self._ds
        self.width = ds.RasterXSize
        self.height = ds.RasterYSize
        self.band_count_total = ds.RasterCount
        if self.band_count_total == 0:
            subs = ds.GetSubDatasets()
            if subs:
                raise E2DiffSRError(
                    f"{self.path} has no raster bands itself but {len(subs)} subdatasets; "
                    f"open one of them instead, e.g. {subs[0][0]}"
                )
            raise E2DiffSRError(f"{self.path} has no raster bands; choose a raster file")

        if bands is None:
            bands = list(range(1, self.band_count_total + 1))
        else:
            bands = list(bands)
            if not bands:
                raise E2DiffSRError("no bands selected; select at least one band, e.g. --bands 1,2,3")
            seen = set()
            for b in bands:
                if isinstance(b, bool) or not isinstance(b, int | np.integer):
                    raise E2DiffSRError(f"band numbers must be whole numbers, got {b!r}")
                if not 1 <= b <= self.band_count_total:
                    hint = " (band numbers start at 1)" if b < 1 else ""
                    raise E2DiffSRError(
                        f"band {b} does not exist: {self.path} has {self.band_count_total} "
                        f"band{'s' if self.band_count_total != 1 else ''}{hint}"
                    )
                if b in seen:
                    raise E2DiffSRError(f"band {b} is selected twice; select each band once")
                seen.add(b)
            bands = [int(b) for b in bands]
        self.bands = bands

        dtype = None
        self.nodata = []
        for b in bands:
            band = ds.GetRasterBand(b)
            t = band.DataType
            name = gdal.GetDataTypeName(t)
            if t in _COMPLEX_TYPES:
                raise E2DiffSRError(
                    f"unsupported data type {name} (complex) in band {b} of {self.path}; "
                    "convert to a real type first, e.g. gdal_translate -ot Float32"
                )
            if t not in SUPPORTED_TYPES:
                raise E2DiffSRError(
                    f"unsupported data type {name} in band {b} of {self.path}; convert to one of "
                    f"{_SUPPORTED_NAMES} first, e.g. gdal_translate -ot Float32"
                )
            if t == gdal.GDT_Byte and band.GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE":
                raise E2DiffSRError(
                    f"unsupported data type signed Byte in band {b} of {self.path}; "
                    "convert it first, e.g. gdal_translate -ot Int16"
                )
            if band.GetColorTable() is not None and band.GetColorInterpretation() == gdal.GCI_PaletteIndex:
                raise E2DiffSRError(
                    f"band {b} of {self.path} holds palette indices (classes), which cannot be "
                    "interpolated; expand it to colours first, e.g. gdal_translate -expand rgb"
                )
            dtype = t if dtype is None else gdal.DataTypeUnion(dtype, t)
            self.nodata.append(band.GetNoDataValue())
        self.dtype = int(dtype)
        self._np_dtype = _numpy_type(self.dtype)

        gt = ds.GetGeoTransform(can_return_null=True)
        self.has_geotransform = gt is not None
        self.geotransform = tuple(gt) if gt is not None else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        self.projection = ds.GetProjection() or ""

        n = len(bands)
        self._default_fill = np.full(n, 0.5)
        if ranges is not None:
            ranges = list(ranges)
            if len(ranges) != n:
                raise E2DiffSRError(
                    f"{len(ranges)} value ranges given for {n} selected band{'s' if n != 1 else ''}; "
                    "give one LO,HI range per selected band"
                )
            parsed = []
            for b, r in zip(bands, ranges, strict=True):
                try:
                    lo, hi = (float(v) for v in r)
                except (TypeError, ValueError):
                    raise E2DiffSRError(f"value range for band {b} must be two numbers LO,HI, got {r!r}") from None
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                    raise E2DiffSRError(
                        f"value range for band {b} must have LO < HI (finite numbers), got {lo:g},{hi:g}"
                    )
                parsed.append(BandRange(lo, hi))
            self.ranges = parsed
        elif self.dtype == gdal.GDT_Byte:
            self.ranges = [BandRange(0.0, 255.0) for _ in bands]
        else:
            self.ranges = self._robust_ranges()

    def _invalid_mask(self, raw: np.ndarray, i: int) -> np.ndarray:
        """Invalid pixels of selected band ``i`` in ``raw`` (its native values)."""
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
            bw, bh = max(1, int(w / step)), max(1, int(h / step))
            return band.ReadAsArray(0, 0, w, h, buf_xsize=bw, buf_ysize=bh)
        grid = 8
        size = int(math.sqrt(STATS_MAX_PIXELS / grid**2))
        sw, sh = min(size, w), min(size, h)
        pieces = []
        for gy in range(grid):
            for gx in range(grid):
                x = int((w - sw) * (gx + 0.5) / grid)
                y = int((h - sh) * (gy + 0.5) / grid)
                pieces.append(band.ReadAsArray(x, y, sw, sh).ravel())
        return np.concatenate(pieces)

    def _robust_ranges(self) -> list[BandRange]:
        """Percentile ranges (and fill values) from a sample of each selected band."""
        limits = _type_limits(self.dtype)
        out = []
        for i, b in enumerate(self.bands):
            try:
                sample = self._sample_band(b)
            except RuntimeError as exc:
                raise E2DiffSRError(
                    f"could not read band {b} of {self.path} ({_one_line(exc)}); check that the file is intact"
                ) from None
            values = sample[~self._invalid_mask(sample, i)].astype(np.float64)
            mean = None
            if values.size == 0:  # nothing valid: any range works, the output is all nodata
                lo, hi = (0.0, 1.0)
            else:
                lo, hi = (float(v) for v in np.percentile(values, STATS_PERCENTILES))
                mean = float(values.mean())
            if hi <= lo:  # constant band: widen so that mapping never divides by zero
                if limits is None:
                    pad = max(abs(lo), 1.0) * 1e-3
                    lo, hi = lo - pad, hi + pad
                else:
                    lo, hi = max(limits[0], lo - 1.0), min(limits[1], hi + 1.0)
            if limits is not None:
                lo, hi = max(lo, limits[0]), min(hi, limits[1])
            if mean is not None:
                self._default_fill[i] = (mean - lo) / (hi - lo)
            out.append(BandRange(lo, hi))
        return out

    # -- API ---------------------------------------------------------------------------------------

    def groups(self) -> list[list[int]]:
        """Indices into ``self.bands`` for each 3-channel model pass; see the module docstring."""
        return _make_groups(len(self.bands))

    def ungroup(self, outputs) -> np.ndarray:
        """Model outputs (one ``[3, h, w]`` per group) back to ``[n_selected_bands, h, w]``; see :func:`ungroup`."""
        return ungroup(outputs, self.groups(), len(self.bands))

    def read(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window in pixel coordinates; it may extend beyond the raster.

        Returns ``(data, valid)``: ``data`` float32 ``[n_selected_bands, h, w]`` mapped with the band
        ranges (lo -> 0, hi -> 1, not clipped), ``valid`` bool ``[h, w]``, False where any selected band
        is nodata or non-finite, and outside the raster. Invalid pixels are filled from valid neighbours;
        outside pixels replicate the nearest edge pixel.
        """
        if self._ds is None:
            raise RuntimeError("RasterReader is closed")
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w <= 0 or h <= 0:
            raise ValueError(f"window size must be positive, got {w}x{h}")
        cols = np.clip(np.arange(x, x + w), 0, self.width - 1)
        rows = np.clip(np.arange(y, y + h), 0, self.height - 1)
        c0, c1 = int(cols[0]), int(cols[-1])
        r0, r1 = int(rows[0]), int(rows[-1])
        bw, bh = c1 - c0 + 1, r1 - r0 + 1
        n = len(self.bands)
        try:
            raw = self._ds.ReadAsArray(c0, r0, bw, bh, band_list=self.bands, buf_type=self.dtype)
        except RuntimeError as exc:
            raise E2DiffSRError(
                f"could not read {self.path} at pixel {c0},{r0} ({_one_line(exc)}); check that the file is intact"
            ) from None
        raw = raw.reshape(n, bh, bw)

        invalid = np.zeros((bh, bw), dtype=bool)
        for i in range(n):
            invalid |= self._invalid_mask(raw[i], i)
        block_valid = ~invalid

        data = raw.astype(np.float64)
        for i, r in enumerate(self.ranges):
            data[i] -= r.lo
            data[i] /= r.span
        _fill_invalid(data, block_valid, self._default_fill)

        inside = x >= 0 and y >= 0 and x + w <= self.width and y + h <= self.height
        if inside:
            return data.astype(np.float32), block_valid
        ri = (rows - r0)[:, None]
        ci = (cols - c0)[None, :]
        data = data[:, ri, ci]
        valid = block_valid[ri, ci]
        xs = np.arange(x, x + w)
        ys = np.arange(y, y + h)
        valid &= ((ys >= 0) & (ys < self.height))[:, None] & ((xs >= 0) & (xs < self.width))[None, :]
        return data.astype(np.float32), valid

    def close(self) -> None:
        self._ds = None

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        self._ds = None


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

_OPTION_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)=(.*)$")
_BOOL_WORDS = {"YES", "NO", "TRUE", "FALSE", "ON", "OFF", "1", "0"}
_option_specs: dict[str, dict[str, tuple[str, set[str]]]] = {}
_DRIVER_LABEL = {"GTiff": "GeoTIFF", "COG": "COG"}
_DRIVER_DOC = {"GTiff": "https://gdal.org/drivers/raster/gtiff.html", "COG": "https://gdal.org/drivers/raster/cog.html"}


def _driver_options(driver_name: str) -> dict[str, tuple[str, set[str]]]:
    """{OPTION: (type, allowed values upper-cased or empty)} from the driver's creation option list."""
    if driver_name not in _option_specs:
        spec: dict[str, tuple[str, set[str]]] = {}
        xml = gdal.GetDriverByName(driver_name).GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            root = None
        if root is not None:
            for opt in root.iter("Option"):
                values = set()
                for v in opt.iter("Value"):
                    if v.text:
                        values.add(v.text.strip().upper())
                    if v.get("alias"):
                        values.add(v.get("alias").strip().upper())
                spec[opt.get("name", "").upper()] = (opt.get("type", "string"), values)
        _option_specs[driver_name] = spec
    return _option_specs[driver_name]


def _parse_creation_options(options, driver_name: str) -> dict[str, str]:
    """Validate KEY=VALUE creation options against the driver; returns {KEY: VALUE} (keys upper-cased)."""
    if isinstance(options, str):
        options = [options]
    spec = _driver_options(driver_name)
    label, doc = _DRIVER_LABEL[driver_name], _DRIVER_DOC[driver_name]
    parsed: dict[str, str] = {}
    for opt in options or ():
        m = _OPTION_RE.match(opt.strip()) if isinstance(opt, str) else None
        if m is None:
            raise E2DiffSRError(f"malformed creation option {opt!r}; write it as KEY=VALUE, e.g. ZLEVEL=9")
        key, value = m.group(1).upper(), m.group(2).strip()
        if spec:
            if key not in spec:
                raise E2DiffSRError(f"unknown {label} creation option {key}; see {doc} for the valid ones")
            kind, allowed = spec[key]
            if allowed and value.upper() not in allowed:
                raise E2DiffSRError(
                    f"invalid value {value!r} for creation option {key}; use one of {', '.join(sorted(allowed))}"
                )
            if kind == "int" and not re.fullmatch(r"[+-]?\d+", value):
                raise E2DiffSRError(f"creation option {key} needs a whole number, got {value!r}")
            if kind == "float":
                try:
                    float(value)
                except ValueError:
                    raise E2DiffSRError(f"creation option {key} needs a number, got {value!r}") from None
            if kind == "boolean" and value.upper() not in _BOOL_WORDS:
                raise E2DiffSRError(f"creation option {key} needs YES or NO, got {value!r}")
        parsed[key] = value
    return parsed


def _reserve_temp(target: str, suffix: str) -> str:
    """Create an empty, uniquely named hidden file beside ``target`` (``.NAME.partial-XXXXXXXX<suffix>``).

    Created with the usual permissions (0666 less the umask), unlike ``tempfile.mkstemp`` (0600), because
    this file becomes the user's output.
    """
    folder = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target)
    for _ in range(100):
        path = os.path.join(folder, f".{name}.partial-{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary file name in {folder}")


def _remove(path: str | None) -> None:
    if not path:
        return
    for p in (path, path + ".aux.xml"):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass


def _write_band_array(band, array: np.ndarray, x: int, y: int) -> None:
    """The one place the writer puts pixels into a file (tests replace it to simulate a full disk)."""
    band.WriteArray(array, x, y)


def _close_dataset(holder: list) -> list[str]:
    """Close the dataset held (only) in ``holder``; return the GDAL failure messages closing produced.

    Closing flushes cached blocks, so it can fail (e.g. disk full). The bindings cannot raise from a
    destructor; they would print "Exception ignored" instead, so exceptions are paused while closing and
    the messages are collected by an error handler.
    """
    errors: list[str] = []

    def handler(err_class, _err_no, message):
        if err_class >= gdal.CE_Failure:
            errors.append(_one_line(message))

    use_exceptions = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    gdal.PushErrorHandler(handler)
    try:
        holder.clear()
    finally:
        gdal.PopErrorHandler()
        gdal.ErrorReset()
        if use_exceptions:
            gdal.UseExceptions()
    return errors


_COPY_SKIP_BAND_METADATA = re.compile(r"^STATISTICS_")


class RasterWriter:
    """Tiled, compressed GeoTIFF (or COG) output written to a temporary file and moved into place on commit.

    ``dtype`` and ``band_count`` default to the reader's; ``nodata`` defaults (``...``) to the reader's
    per-band nodata; pass None for no nodata, a number for all bands, or a list per band.
    """

    def __init__(
        self,
        path: str,
        reader: RasterReader,
        out_w: int,
        out_h: int,
        *,
        creation_options: list[str] = (),
        cog: bool = False,
        overwrite: bool = False,
        dtype: int | None = None,
        band_count: int | None = None,
        nodata=...,
    ):
        self.path = os.fspath(path)
        self.reader = reader
        self.out_w, self.out_h = int(out_w), int(out_h)
        self.cog = bool(cog)
        self.temp_path: str | None = None
        self._cog_temp: str | None = None
        self._ds = None
        self._done = False

        if self.out_w < 1 or self.out_h < 1:
            raise E2DiffSRError(f"output size must be at least 1x1, got {self.out_w}x{self.out_h}")
        self.dtype = int(reader.dtype if dtype is None else dtype)
        if self.dtype not in SUPPORTED_TYPES:
            raise E2DiffSRError(f"unsupported output data type {gdal.GetDataTypeName(self.dtype)}")
        self.band_count = int(len(reader.bands) if band_count is None else band_count)
        if self.band_count < 1:
            raise E2DiffSRError("output needs at least one band")

        if nodata is ...:
            nd = [reader.nodata[i] if i < len(reader.nodata) else None for i in range(self.band_count)]
        elif nodata is None or isinstance(nodata, int | float):
            nd = [None if nodata is None else float(nodata)] * self.band_count
        else:
            nd = [None if v is None else float(v) for v in nodata]
            if len(nd) != self.band_count:
                raise ValueError(f"{len(nd)} nodata values for {self.band_count} bands")
        self.nodata = nd

        self._check_target(overwrite)
        user = _parse_creation_options(creation_options, "COG" if self.cog else "GTiff")
        self._cog_user_options = user if self.cog else {}
        options = self._gtiff_options({} if self.cog else user)

        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            self.temp_path = _reserve_temp(self.path, ".tif")
        except OSError as exc:
            raise E2DiffSRError(
                f"cannot create a file in {folder} ({exc.strerror}); choose a folder you can write to"
            ) from None
        error = None
        try:
            driver = gdal.GetDriverByName("GTiff")
            self._ds = driver.Create(
                self.temp_path, self.out_w, self.out_h, self.band_count, self.dtype, options=options
            )
            self._copy_info()
        except RuntimeError as exc:
            error = _one_line(exc)
        except BaseException:
            self.abort()
            raise
        if error is not None:  # outside the except block, so the traceback no longer holds the dataset
            self.abort()
            raise E2DiffSRError(
                f"could not create {self.path}: {error}; check the creation options, "
                "free disk space and write permission"
            )

    # -- set-up ------------------------------------------------------------------------------------

    def _check_target(self, overwrite: bool) -> None:
        target = os.path.realpath(self.path)
        source = self.reader.path
        same = target == os.path.realpath(source)
        if not same and os.path.exists(self.path) and os.path.exists(source):
            try:
                same = os.path.samefile(self.path, source)
            except OSError:
                pass
        if same:
            raise E2DiffSRError(f"output {self.path} is the input raster; choose a different output file")
        if os.path.isdir(self.path):
            raise E2DiffSRError(f"output {self.path} is a folder; give a file name such as out.tif")
        if os.path.lexists(self.path) and not overwrite:
            raise E2DiffSRError(f"output {self.path} exists; choose another name or allow overwriting (--overwrite)")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise E2DiffSRError(f"output folder does not exist: {folder}; create it first")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise E2DiffSRError(f"output folder is not writable: {folder}; choose another folder")

    def _gtiff_options(self, user: dict[str, str]) -> list[str]:
        opts = {
            "TILED": "YES",
            "BLOCKXSIZE": str(_TILE),
            "BLOCKYSIZE": str(_TILE),
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "3" if _is_float_type(self.dtype) else "2",
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": "ALL_CPUS",  # compress blocks on every core: with a GPU, writing is the bottleneck
        }
        # A photometric interpretation of RGB keeps R,G,B colour interpretation inside the TIFF itself.
        ci = self._colour_interps()
        if (
            self.band_count >= 3
            and ci[:3] == [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand]
            and self.dtype in (gdal.GDT_Byte, gdal.GDT_UInt16)
        ):
            opts["PHOTOMETRIC"] = "RGB"
        if user.get("COMPRESS", "DEFLATE").upper() not in _PREDICTOR_CODECS and "PREDICTOR" not in user:
            del opts["PREDICTOR"]
        opts.update(user)
        return [f"{k}={v}" for k, v in opts.items()]

    def _colour_interps(self) -> list[int]:
        ds = self.reader._ds
        out = []
        for i in range(self.band_count):
            if i < len(self.reader.bands) and ds is not None:
                out.append(ds.GetRasterBand(self.reader.bands[i]).GetColorInterpretation())
            else:
                out.append(gdal.GCI_Undefined)
        return out

    def _copy_info(self) -> None:
        src = self.reader._ds
        dst = self._ds
        r = self.reader
        if r.projection:
            dst.SetProjection(r.projection)
        if r.has_geotransform:
            dst.SetGeoTransform(scaled_geotransform(r.geotransform, r.width, r.height, self.out_w, self.out_h))
        elif src is not None and src.GetGCPCount():
            fx, fy = self.out_w / r.width, self.out_h / r.height
            gcps = [
                gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel * fx, g.GCPLine * fy, g.Info, g.Id) for g in src.GetGCPs()
            ]
            dst.SetGCPs(gcps, src.GetGCPProjection())
        if src is not None:
            md = src.GetMetadata() or {}
            if md:
                dst.SetMetadata(md)
        cis = self._colour_interps()
        for i in range(self.band_count):
            band = dst.GetRasterBand(i + 1)
            if src is not None and i < len(r.bands):
                sb = src.GetRasterBand(r.bands[i])
                desc = sb.GetDescription()
                if desc:
                    band.SetDescription(desc)
                bmd = {k: v for k, v in (sb.GetMetadata() or {}).items() if not _COPY_SKIP_BAND_METADATA.match(k)}
                if bmd:
                    band.SetMetadata(bmd)
                unit = sb.GetUnitType()
                if unit:
                    band.SetUnitType(unit)
                if cis[i] not in (gdal.GCI_Undefined, gdal.GCI_PaletteIndex):
                    try:
                        band.SetColorInterpretation(cis[i])
                    except RuntimeError:
                        pass
            if self.nodata[i] is not None:
                band.SetNoDataValue(self.nodata[i])

    # -- writing -----------------------------------------------------------------------------------

    def _crop(self, x: int, y: int, data: np.ndarray, valid):
        """Clip a block to the output extent; returns (x, y, data, valid) or None when nothing is inside."""
        _, h, w = data.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.out_w), min(y + h, self.out_h)
        if x1 <= x0 or y1 <= y0:
            return None
        sl = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        data = data[(slice(None),) + sl]
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)[sl]
        return x0, y0, data, valid

    def _check_open(self) -> None:
        if self._ds is None:
            raise RuntimeError("RasterWriter is closed (committed or aborted)")

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
                f"could not write {self.path}: the disk is full ({free / 2**20:.1f} MiB free in {folder}; "
                f"GDAL: {message}); free some space or choose another output folder"
            )
        return E2DiffSRError(
            f"could not write {self.path}: {message}; check free disk space and write permission in {folder}"
        )

    def _to_output(self, values: np.ndarray, band: int, apply_nodata_guard: bool, valid) -> np.ndarray:
        limits = _type_limits(self.dtype)
        nd = self.nodata[band]
        np_type = _numpy_type(self.dtype)
        if limits is not None:
            values = np.rint(values)
            values = np.clip(values, limits[0], limits[1])
            out = values.astype(np_type)
        else:
            if np_type == np.float32:
                big = float(np.finfo(np.float32).max)
                values = np.clip(values, -big, big)
            out = values.astype(np_type)
        if nd is not None:
            if apply_nodata_guard and math.isfinite(nd):
                # A valid pixel must not come out equal to nodata, or it would read back as missing.
                nd_cast = np_type.type(nd)
                if nd_cast == nd:
                    clash = out == nd_cast
                    if valid is not None:
                        clash &= valid
                    if clash.any():
                        if limits is not None:
                            repl = nd + 1 if nd < limits[1] else nd - 1
                            out[clash] = np_type.type(repl)
                        else:
                            away = np_type.type(np.inf if nd <= 0 else -np.inf)
                            out[clash] = np.nextafter(nd_cast, away)
            if valid is not None:
                if limits is None or (limits[0] <= nd <= limits[1] and nd == round(nd)):
                    out[~valid] = np_type.type(nd)
        return out

    def write(self, x: int, y: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write a ``[bands, h, w]`` block of model values in [0, 1] at output pixel (x, y).

        Values are mapped back to the input's units with the reader's ranges, rounded and clipped for
        integer types. Where ``valid`` is False, bands with a nodata value get it. Parts outside the output
        are ignored.
        """
        self._check_open()
        data = np.asarray(data)
        if data.ndim != 3 or data.shape[0] != self.band_count:
            raise ValueError(f"expected data [{self.band_count}, h, w], got shape {data.shape}")
        if self.band_count != len(self.reader.ranges):
            raise ValueError("write() maps with the reader's ranges; use write_raw() for other band counts")
        ranges = self.reader.ranges
        self._write_bands(x, y, data, valid, lambda i, v: v * ranges[i].span + ranges[i].lo, True)

    def write_raw(self, x: int, y: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write a ``[bands, h, w]`` block whose values are already in output units (e.g. uncertainty)."""
        self._check_open()
        data = np.asarray(data)
        if data.ndim != 3 or data.shape[0] != self.band_count:
            raise ValueError(f"expected data [{self.band_count}, h, w], got shape {data.shape}")
        self._write_bands(x, y, data, valid, lambda i, v: v, False)

    def _write_bands(self, x, y, data, valid, to_units, nodata_guard: bool) -> None:
        """Crop to the output, convert each band to output units and type, write; a GDAL failure aborts."""
        cropped = self._crop(int(x), int(y), data, valid)
        if cropped is None:
            return
        x, y, data, valid = cropped
        try:
            for i in range(self.band_count):
                out = self._to_output(to_units(i, data[i].astype(np.float64)), i, nodata_guard, valid)
                _write_band_array(self._ds.GetRasterBand(i + 1), out, x, y)
        except RuntimeError as exc:
            message = _one_line(exc)
        else:
            return
        raise self._fail(message)

    # -- finishing ---------------------------------------------------------------------------------

    def _finish_dataset(self) -> None:
        """Flush and close the temporary file; RuntimeError with GDAL's message when that fails."""
        if self._ds is None:
            return
        self._ds.FlushCache()  # raises on failure; the dataset stays for abort() to close quietly
        holder = [self._ds]
        self._ds = None
        errors = _close_dataset(holder)
        if errors:
            raise RuntimeError(errors[0])

    def commit(self) -> None:
        """Finish the file and move it into place (the target appears only now)."""
        if self._done:
            raise RuntimeError("RasterWriter is already committed or aborted")
        self._check_open()
        try:
            self._finish_dataset()
            final = self.temp_path
            if self.cog:
                final = self._translate_cog()
        except RuntimeError as exc:
            message = _one_line(exc)
        else:
            message = None
        if message is not None:
            raise self._fail(message)
        try:
            stale_aux = self.path + ".aux.xml"
            if os.path.exists(final + ".aux.xml"):
                os.replace(final + ".aux.xml", stale_aux)
            elif os.path.exists(stale_aux) and os.path.exists(self.path):
                os.remove(stale_aux)  # it described the file being replaced
            os.replace(final, self.path)
        except OSError as exc:
            self.abort()
            raise E2DiffSRError(
                f"could not move the finished output into place at {self.path} ({exc.strerror}); "
                "close it in other programs and try again"
            ) from None
        if final != self.temp_path:
            _remove(self.temp_path)
        self.temp_path = None
        self._cog_temp = None
        self._done = True

    def _translate_cog(self) -> str:
        try:
            self._cog_temp = _reserve_temp(self.path, ".cog.tif")
        except OSError as exc:
            raise RuntimeError(exc.strerror or str(exc)) from None
        opts = {
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "YES",
            "BIGTIFF": "IF_SAFER",
        }
        user = self._cog_user_options
        if user.get("COMPRESS", "DEFLATE").upper() not in _PREDICTOR_CODECS and "PREDICTOR" not in user:
            del opts["PREDICTOR"]
        opts.update(user)
        gdal.ErrorReset()
        out = gdal.Translate(
            self._cog_temp, self.temp_path, format="COG", creationOptions=[f"{k}={v}" for k, v in opts.items()]
        )
        if out is None:
            raise RuntimeError(gdal.GetLastErrorMsg() or "COG conversion failed")
        holder = [out]
        del out
        errors = _close_dataset(holder)
        if errors:
            raise RuntimeError(errors[0])
        _remove(self.temp_path)
        return self._cog_temp

    def abort(self) -> None:
        """Close and delete every temporary file; the target is left untouched. Safe to call twice."""
        if self._ds is not None:
            holder = [self._ds]
            self._ds = None
            _close_dataset(holder)  # a file being thrown away may fail to flush; that is not news
        _remove(self.temp_path)
        _remove(self._cog_temp)
        self.temp_path = None
        self._cog_temp = None
        self._done = True

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
