"""Where output pixels lie: output size, geotransform, GCPs and RPCs of the same area at more pixels, and the
input pixel each output pixel comes from (for masks and for values carried past the model)."""

from __future__ import annotations

import math

import numpy as np
from osgeo import gdal

from e2diffsr_core import rules
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.gridmap import AxisMap

#: The largest side GDAL can create (its sizes are C ints).
MAX_SIDE = 2**31 - 1


def size_for_gdal(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of the output at ``scale`` (rules.output_size, the one rule), checked against what GDAL
    can create."""
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise E2DiffSRError(f"scale must be a positive number, got {scale!r}; pass e.g. --scale 2")
    out_h, out_w = rules.output_size(height, width, scale)
    if out_w < 1 or out_h < 1:
        raise E2DiffSRError(f"scale {scale:g} turns a {width}x{height} raster into an empty output; use a larger scale")
    if max(out_w, out_h) > MAX_SIDE:
        raise E2DiffSRError(f"the output would be {out_w} x {out_h} px, more than GDAL can create "
                            f"({MAX_SIDE} px a side); use a smaller scale or split the input")
    return out_w, out_h


def resolution_size(width: int, height: int, gt, res: tuple[float, float]) -> tuple[int, int, str | None]:
    """Output size for a target pixel size ``res`` (x, y) in CRS units: the input's extent in whole pixels
    of that size. Returns (out_w, out_h, note); the note says when the extent is not a whole number of such
    pixels and the nearest size that covers it exactly was taken."""
    rx, ry = res
    if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in (rx, ry)):
        raise E2DiffSRError(f"--resolution must be positive numbers, got {rx!r},{ry!r}")
    if gt is None:
        raise E2DiffSRError("the input has no geotransform, so a target pixel size means nothing for it; "
                            "use --scale instead")
    if gt[2] or gt[4]:
        raise E2DiffSRError("the input's pixel grid is rotated; a target pixel size needs a north-up raster, "
                            "use --scale instead")
    px, py = abs(gt[1]), abs(gt[5])
    if rx >= px or ry >= py:
        raise E2DiffSRError(f"--resolution {rx:g},{ry:g} is not finer than the input's pixels ({px:g},{py:g}); "
                            "this tool only enlarges, down-sampling is GDAL's job (gdalwarp -tr)")
    out_w, out_h = max(1, round(width * px / rx)), max(1, round(height * py / ry))
    got = (width * px / out_w, height * py / out_h)
    note = None
    if abs(got[0] - rx) > 1e-9 * rx or abs(got[1] - ry) > 1e-9 * ry:
        note = (f"the input's extent is not a whole number of {rx:g} x {ry:g} pixels; the output has "
                f"{out_w} x {out_h} pixels of {got[0]:.9g} x {got[1]:.9g}, the nearest that cover it exactly")
    return out_w, out_h, note


def scaled_geotransform(gt, width: int, height: int, out_w: int, out_h: int) -> tuple:
    """Geotransform of the same area at ``out_w`` x ``out_h`` pixels.

    The origin stays; the column terms (``gt[1]``, ``gt[4]``) scale by ``width / out_w`` and the row terms
    (``gt[2]``, ``gt[5]``) by ``height / out_h``, so rotated/sheared rasters keep their footprint.
    """
    fx = width / out_w
    fy = height / out_h
    return (gt[0], gt[1] * fx, gt[2] * fy, gt[3], gt[4] * fx, gt[5] * fy)


def scaled_gcps(gcps, fx: float, fy: float, first_row: int = 0) -> list:
    """GCPs of the output (of its rows from ``first_row`` on): GDAL's GCP pixel/line are corner-based, so they
    scale directly."""
    return [gdal.GCP(g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel * fx, g.GCPLine * fy - first_row, g.Info, g.Id)
            for g in gcps]


def scaled_rpc(rpc: dict[str, str], fx: float, fy: float, shift: tuple[float, float] = (0.0, 0.0),
               first_row: int = 0) -> dict[str, str]:
    """RPC metadata of the output (of its rows from ``first_row`` on). RPC line/sample count from the first
    pixel's centre, so an input position l maps to (l + 0.5 - shift) * f - 0.5: the offsets shift and the
    scales grow by the factor (``shift`` (rows, columns): where the output's first pixel edge lies on the input
    grid, in input pixels)."""
    out = dict(rpc)
    for off, scale, f, d, first in (("LINE_OFF", "LINE_SCALE", fy, shift[0], first_row),
                                    ("SAMP_OFF", "SAMP_SCALE", fx, shift[1], 0)):
        if off in rpc and scale in rpc:
            at = (float(rpc[off]) + 0.5 - d) * f - 0.5 if d else (float(rpc[off]) + 0.5) * f - 0.5
            out[off] = repr(at - first if first else at)
            out[scale] = repr(float(rpc[scale]) * f)
    return out


def source_index(start: int, length: int, am: AxisMap) -> np.ndarray:
    """Input pixel whose area holds each output pixel's centre, for output pixels [start, start + length)."""
    g = np.arange(start, start + length, dtype=np.float64)
    return np.clip(np.floor(am.edge(g)).astype(np.int64), 0, am.n_lr - 1)


def source_position(start: int, length: int, am: AxisMap) -> np.ndarray:
    """Continuous input position (pixel-centre units) of each output pixel's centre."""
    g = np.arange(start, start + length, dtype=np.float64)
    return am.edge(g) - 0.5


def bilinear(lr: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample ``lr`` [C, h, w] at positions ``y`` (rows) x ``x`` (columns) relative to its first pixel,
    edges clamped. Returns [C, len(y), len(x)]."""
    def taps(p, n):
        p = np.clip(p, 0, n - 1)
        i0 = np.clip(np.floor(p).astype(np.int64), 0, max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (p - i0)

    y0, y1, wy = taps(y, lr.shape[1])
    x0, x1, wx = taps(x, lr.shape[2])
    top = lr[:, y0][:, :, x0] * (1 - wx) + lr[:, y0][:, :, x1] * wx
    bottom = lr[:, y1][:, :, x0] * (1 - wx) + lr[:, y1][:, :, x1] * wx
    return top * (1 - wy)[None, :, None] + bottom * wy[None, :, None]
