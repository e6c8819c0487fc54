"""An output on another raster's grid (``--align-to``): that raster's pixel size and grid origin, over the
input's extent.

The output's pixel edges lie on the reference grid (x = x0 + k * px for whole k, the same for y), and the
output is the smallest such box that covers the input: it reaches beyond the input by less than one output
pixel on each side. Its pixels then sit a fraction of an input pixel off the input's own grid, with a scale
per axis (input pixel / reference pixel), which the returned :class:`~e2diffsr_core.gridmap.GridMap` tells
every part of the run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from osgeo import gdal, osr

from e2diffsr_core import rules
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.gridmap import AxisMap, GridMap

from .gdal_errors import one_line

SNAP = 1e-6  # input edges closer than this (in reference pixels) to a grid line lie on it


@dataclass(frozen=True)
class Alignment:
    """The output of an aligned run: its size, geotransform (on the reference grid) and pixel mapping."""

    out_w: int
    out_h: int
    geotransform: tuple
    grid: GridMap

    @property
    def scales(self) -> tuple[float, float]:
        """(x, y): output pixels per input pixel along each axis."""
        return self.grid.x.scale, self.grid.y.scale


def _reference(path: str):
    """(geotransform, projection WKT) of the reference raster, or a one-line error."""
    try:
        ds = gdal.OpenEx(os.fspath(path), gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError as exc:
        raise E2DiffSRError(f"cannot open the reference raster {path} ({one_line(exc)}); --align-to needs a raster "
                            "GDAL can read") from None
    if ds is None:
        raise E2DiffSRError(f"cannot open the reference raster {path}; --align-to needs a raster GDAL can read")
    gt = ds.GetGeoTransform(can_return_null=True)
    return (tuple(gt) if gt is not None else None), ds.GetProjection() or ""


def _north_up(gt, what: str) -> None:
    if gt is None:
        raise E2DiffSRError(f"{what} has no geotransform, so it has no pixel grid to align to; "
                            "use --scale or --resolution instead")
    if gt[2] or gt[4]:
        raise E2DiffSRError(f"{what} has a rotated pixel grid; --align-to needs north-up rasters, "
                            "use --scale instead")


def _same_crs(input_wkt: str, ref_wkt: str, path: str) -> None:
    if not input_wkt and not ref_wkt:
        return
    if not input_wkt or not ref_wkt:
        which = "the reference raster" if not ref_wkt else "the input"
        raise E2DiffSRError(f"{which} has no CRS while the other has one, so their grids cannot be compared; "
                            f"assign the CRS first (gdal_edit -a_srs) or use --resolution")
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(input_wkt)
    b.ImportFromWkt(ref_wkt)
    if not a.IsSame(b):
        raise E2DiffSRError(f"the reference raster {path} is in another CRS ({b.GetName()}) than the input "
                            f"({a.GetName()}); reproject one of them first (gdalwarp -t_srs)")


def _axis(origin: float, step: float, n: int, ref_origin: float, ref_step: float, name: str):
    """(first grid line index k0, output pixels, shift in input pixels) along one axis."""
    if (step > 0) != (ref_step > 0):
        raise E2DiffSRError(f"the reference raster's {name} axis runs the other way than the input's; "
                            "flip one of them first (gdalwarp)")
    if abs(ref_step) >= abs(step):
        raise E2DiffSRError(f"the reference pixels ({abs(ref_step):g} along {name}) are not finer than the input's "
                            f"({abs(step):g}); this tool only enlarges, down-sampling is GDAL's job (gdalwarp -tap "
                            "-tr)")
    scale = abs(step) / abs(ref_step)
    if not rules.in_scale_range(scale):
        raise E2DiffSRError(f"the reference pixels are {scale:.3g}x finer than the input's along {name}; the model "
                            f"works between 1x and {rules.MAX_SCALE:g}x, choose another reference (or --resolution)")
    lo = (origin - ref_origin) / ref_step
    hi = (origin + n * step - ref_origin) / ref_step
    k0 = round(lo) if abs(lo - round(lo)) < SNAP else math.floor(lo)
    k1 = round(hi) if abs(hi - round(hi)) < SNAP else math.ceil(hi)
    shift = (ref_origin + k0 * ref_step - origin) / step
    return k0, k1 - k0, shift


def align_to(path: str, width: int, height: int, gt, input_wkt: str) -> Alignment:
    """The output of a ``width`` x ``height`` input (geotransform ``gt`` or None, CRS ``input_wkt``) on the grid
    of the raster at ``path``; a one-line error for every raster this cannot apply to."""
    ref_gt, ref_wkt = _reference(path)
    _north_up(gt, "the input")
    _north_up(ref_gt, f"the reference raster {path}")
    _same_crs(input_wkt, ref_wkt, path)
    kx, out_w, sx = _axis(gt[0], gt[1], width, ref_gt[0], ref_gt[1], "x")
    ky, out_h, sy = _axis(gt[3], gt[5], height, ref_gt[3], ref_gt[5], "y")
    geotransform = (ref_gt[0] + kx * ref_gt[1], ref_gt[1], 0.0, ref_gt[3] + ky * ref_gt[5], 0.0, ref_gt[5])
    return Alignment(out_w, out_h, geotransform, GridMap(_map(height, out_h, gt[5], ref_gt[5], sy),
                                                         _map(width, out_w, gt[1], ref_gt[1], sx)))


def align_file(reference: str, input_path: str) -> Alignment:
    """:func:`align_to` for the raster file at ``input_path`` (for front ends that hold no reader)."""
    ds = gdal.OpenEx(os.fspath(input_path), gdal.OF_RASTER | gdal.OF_READONLY)
    gt = ds.GetGeoTransform(can_return_null=True)
    return align_to(reference, ds.RasterXSize, ds.RasterYSize, gt, ds.GetProjection() or "")


def _map(n_lr: int, n_out: int, step: float, ref_step: float, shift: float) -> AxisMap:
    """The axis mapping; the sizes' own (bit for bit the --scale path) when the grids coincide at that size."""
    ratio = ref_step / step
    if abs(shift) < SNAP * ratio and abs(n_lr / n_out - ratio) <= 1e-12 * ratio:
        return AxisMap(n_lr, n_out)
    return AxisMap(n_lr, n_out, ratio, shift)


__all__ = ["Alignment", "align_file", "align_to"]
