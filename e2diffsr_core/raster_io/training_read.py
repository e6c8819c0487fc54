"""Whole pictures for training and evaluation, read exactly as ``superresolve`` reads rasters.

The trainer, ``training/prepare_samples.py`` and the evaluator go through :class:`~.reader.RasterReader`, so a
model sees in training the radiometry it sees in use: the same working range (Byte 0..255; other types the
0.5 / 99.5 percentiles of each band's valid values), the same invalid pixels (nodata, NaN, GDAL masks, alpha 0)
filled from their valid neighbours. The model's three channels are the bands tagged red, green and blue (in that
order, wherever the file stores them) unless ``bands`` names others; a file without those tags gives its
non-alpha bands in file order when it has at most three (one grey band fills all three channels).

The working range is mapped to 0..255 and rounded to uint8 because the authors' degradation (PIL bicubic) and
metrics work on 8-bit pictures; values beyond the range are clipped for training only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError

from .bands import make_groups
from .reader import RasterReader

_RGB = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)


@dataclass
class TrainingPicture:
    """``rgb`` H x W x 3 uint8 (the model's channels), ``valid`` H x W bool (every band used is valid there),
    and what was read: ``bands`` [(number, colour interpretation)], ``ranges`` [(lo, hi)] per band."""

    path: str
    rgb: np.ndarray
    valid: np.ndarray
    bands: list[tuple[int, str]] = field(default_factory=list)
    ranges: list[tuple[float, float]] = field(default_factory=list)
    dtype: str = "Byte"

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if self.valid.size else 0.0

    def describe(self) -> dict:
        """What ``data.json`` records about this picture."""
        h, w = self.valid.shape
        return {"path": self.path, "width": w, "height": h, "data_type": self.dtype,
                "bands": [{"band": b, "colour": c} for b, c in self.bands],
                "working_range": [[lo, hi] for lo, hi in self.ranges],
                "valid_fraction": round(self.valid_fraction, 6)}


def _open(path: str):
    gdal.UseExceptions()
    try:
        return gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise E2DiffSRError(f"cannot read {os.path.basename(path)}: {first}; check that the file is intact") from None


def choose_bands(path: str, bands: list[int] | None = None) -> list[int]:
    """The 1-based bands that become the model's channels (see the module's description)."""
    ds = _open(path)
    n = ds.RasterCount
    if bands:
        if len(bands) > 3:
            raise E2DiffSRError(f"{len(bands)} bands given; the model takes three: choose at most three, e.g. 1,2,3")
        return [int(b) for b in bands]
    colours = [ds.GetRasterBand(b).GetColorInterpretation() for b in range(1, n + 1)]
    rgb = [[b for b in range(1, n + 1) if colours[b - 1] == c] for c in _RGB]
    if all(len(found) == 1 for found in rgb):
        return [found[0] for found in rgb]
    imagery = [b for b in range(1, n + 1) if colours[b - 1] != gdal.GCI_AlphaBand]
    if 0 < len(imagery) <= 3:
        return imagery
    if not imagery:
        raise E2DiffSRError(f"{os.path.basename(path)} holds only an alpha (transparency) band; there is no imagery")
    raise E2DiffSRError(f"{os.path.basename(path)} has {len(imagery)} bands and none tagged red, green and blue; "
                        "choose the three the model should see with --bands (data.bands), e.g. 1,2,3")


def read_picture(path, bands: list[int] | None = None) -> TrainingPicture:
    """The whole picture through the shared reader: uint8 RGB (working range -> 0..255) and its validity."""
    path = os.fspath(path)
    chosen = choose_bands(path, bands)
    with RasterReader(path, chosen) as reader:
        data, valid = reader.read_bands(0, 0, reader.width, reader.height)
        colours = [gdal.GetColorInterpretationName(reader.band_info(i)["colour"]) for i in range(len(chosen))]
        ranges = [(float(r.lo), float(r.hi)) for r in reader.ranges]
        dtype = gdal.GetDataTypeName(reader.dtype)
    channels = make_groups(len(chosen))[0]
    u8 = np.empty(data.shape[1:] + (3,), dtype=np.uint8)
    for c, i in enumerate(channels):
        u8[..., c] = np.clip(np.rint(data[i] * 255.0), 0, 255).astype(np.uint8)
    return TrainingPicture(path, u8, valid.all(axis=0), list(zip(chosen, colours, strict=True)), ranges, dtype)


def picture_size(path) -> tuple[int, int]:
    """(width, height) from the header."""
    ds = _open(os.fspath(path))
    return ds.RasterXSize, ds.RasterYSize


def crop_share_map(valid: np.ndarray, side: int, stride: int = 1) -> np.ndarray:
    """Valid share of every ``side`` x ``side`` crop whose corner lies on a ``stride`` grid: [rows, cols]."""
    h, w = valid.shape
    if side > h or side > w:
        return np.zeros((0, 0))
    ii = np.zeros((h + 1, w + 1), dtype=np.int64)
    ii[1:, 1:] = valid.cumsum(0, dtype=np.int64).cumsum(1)
    ys, xs = np.arange(0, h - side + 1, stride), np.arange(0, w - side + 1, stride)
    y0, x0 = ys[:, None], xs[None, :]
    total = ii[y0 + side, x0 + side] - ii[y0, x0 + side] - ii[y0 + side, x0] + ii[y0, x0]
    return total / float(side * side)


def best_crop_share(valid: np.ndarray, side: int) -> float:
    """The largest valid share of any ``side`` px crop (corners on a grid fine enough for a good estimate)."""
    h, w = valid.shape
    if valid.all() and side <= min(h, w):
        return 1.0
    stride = max(1, int(math.sqrt((h - side + 1) * (w - side + 1) / 250_000))) if side <= min(h, w) else 1
    shares = crop_share_map(valid, side, stride)
    return float(shares.max()) if shares.size else 0.0
