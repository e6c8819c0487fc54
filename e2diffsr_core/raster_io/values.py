"""Data types and value ranges: what the model's [0, 1] means in a band's own units, and back again."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array

from e2diffsr_core.errors import E2DiffSRError

#: GDAL data types the reader and writer handle.
SUPPORTED_TYPES = (
    gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32, gdal.GDT_Float32,
    gdal.GDT_Float64,
)
COMPLEX_TYPES = (gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64)
SUPPORTED_NAMES = ", ".join(gdal.GetDataTypeName(t) for t in SUPPORTED_TYPES)
#: Percentiles of the robust range for non-Byte data.
STATS_PERCENTILES = (0.5, 99.5)


def numpy_type(gdal_type: int) -> np.dtype:
    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type))


def type_limits(gdal_type: int) -> tuple[float, float] | None:
    """(min, max) of an integer GDAL type, None for floating point types."""
    dt = numpy_type(gdal_type)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return None


def is_float_type(gdal_type: int) -> bool:
    return type_limits(gdal_type) is None


@dataclass
class BandRange:
    """Values ``lo`` and ``hi`` of a band in its own units, mapped to 0.0 and 1.0 for the model."""

    lo: float
    hi: float

    @property
    def span(self) -> float:
        return self.hi - self.lo


def robust_range(values: np.ndarray, gdal_type: int) -> tuple[BandRange, float | None]:
    """Percentile range of a band's valid ``values`` and their mean (None when there are none).

    The range only sets the model's working contrast: values outside it are carried to the output by
    the raster front end (see :func:`outside_range`), so nothing is clipped away.
    """
    limits = type_limits(gdal_type)
    mean = None
    if values.size == 0:  # nothing valid: any range works, the output is all nodata
        lo, hi = 0.0, 1.0
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
    return BandRange(lo, hi), mean


def outside_range(data: np.ndarray) -> np.ndarray:
    """What lies outside the model's [0, 1] in normalised ``data`` (zero inside): added back after the model."""
    return data - np.clip(data, 0.0, 1.0)


def to_output(values: np.ndarray, gdal_type: int, nodata: float | None, valid: np.ndarray | None,
              guard: bool) -> np.ndarray:
    """Values in a band's units -> the output type: rounded and clipped for integers; invalid pixels get
    ``nodata`` (NaN for a floating-point band without one). With ``guard`` a valid pixel never equals nodata."""
    limits = type_limits(gdal_type)
    np_type = numpy_type(gdal_type)
    if limits is not None:
        out = np.clip(np.rint(values), limits[0], limits[1]).astype(np_type)
    else:
        if np_type == np.float32:
            big = float(np.finfo(np.float32).max)
            values = np.clip(values, -big, big)
        out = values.astype(np_type)
    if nodata is not None and guard and math.isfinite(nodata):
        _keep_off_nodata(out, nodata, limits, valid)
    if valid is not None and not valid.all():
        if nodata is not None and (limits is None or (limits[0] <= nodata <= limits[1] and nodata == round(nodata))):
            out[~valid] = np_type.type(nodata)
        elif nodata is None and limits is None:
            out[~valid] = np.nan  # as invalid as the input's NaN, in a band without a nodata value
    return out


def _keep_off_nodata(out: np.ndarray, nodata: float, limits, valid) -> None:
    """A valid pixel must not come out equal to nodata, or it would read back as missing."""
    nd_cast = out.dtype.type(nodata)
    if nd_cast != nodata:
        return
    clash = out == nd_cast
    if valid is not None:
        clash &= valid
    if clash.any():
        if limits is not None:
            out[clash] = out.dtype.type(nodata + 1 if nodata < limits[1] else nodata - 1)
        else:
            out[clash] = np.nextafter(nd_cast, out.dtype.type(np.inf if nodata <= 0 else -np.inf))


#: Magnitude from which a value is refused: the model works in float32 and a band's range (hi - lo) times its
#: values must stay finite; values this large are in practice fill values (Float32's -3.4e38) left unmarked.
HUGE = 1e30


def check_magnitude(values: np.ndarray, band: int, path: str, nodata: float | None) -> None:
    """Refuse a band whose valid values reach :data:`HUGE` (they would overflow to infinity or NaN, or smear a
    fill value over its neighbours), saying what to do."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    lo, hi = finite.min(), finite.max()
    worst = lo if abs(lo) >= abs(hi) else hi
    if abs(float(worst)) < HUGE:
        return
    shown = str(worst)  # the shortest text that reads back as this very value, as -a_nodata needs
    marked = "" if nodata is None else f" besides its nodata value {nodata:g}"
    raise E2DiffSRError(
        f"band {band} of {path} holds {shown}{marked}, too large to compute with (values of magnitude {HUGE:g} "
        f"or more overflow); if it marks missing pixels, declare it as nodata first (e.g. gdal_translate "
        f"-a_nodata {shown} IN OUT.vrt), otherwise rescale the band")


def check_range(lo: float, hi: float, band: int) -> None:
    """Refuse a value range (``--range``) whose ends or width overflow the model's arithmetic."""
    if max(abs(lo), abs(hi)) >= HUGE or not math.isfinite(hi - lo):
        raise E2DiffSRError(f"value range {lo:g},{hi:g} for band {band} is too wide to compute with (ends beyond "
                            f"+-{HUGE:g} overflow); give the values the band really takes, e.g. --range 0,10000")
