"""A processing area: an extent (``--extent``, GDAL's ``-te`` convention) and a polygon mask (``--mask``).

The area never moves the output grid: it picks the box of whole output pixels of the whole-layer run that
covers the extent (and the mask's polygons), so results of pieces line up with each other and with a later
whole run pixel for pixel. Geometry only (GDAL/OGR and numpy): which output pixels, which output tiles touch a
polygon, which pixels lie inside one. The run itself is in ``e2diffsr_core/area_run.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr, osr

from e2diffsr_core.errors import E2DiffSRError

from .gdal_errors import one_line

SNAP = 1e-6  # extent edges closer than this (in output pixels) to a pixel edge lie on it


@dataclass(frozen=True)
class AreaOptions:
    """What the user asked for: an extent (in ``extent_crs``, default the raster's) and/or a mask source."""

    extent: tuple[float, float, float, float] | None = None
    extent_crs: str | None = None
    mask: str | None = None
    mask_layer: str | None = None
    mask_where: str | None = None

    @property
    def given(self) -> bool:
        return self.extent is not None or self.mask is not None


def fmt(box) -> str:
    """A box as the user would type it back."""
    return ",".join(f"{v:.10g}" for v in box)


def parse_extent(text: str) -> tuple[float, float, float, float]:
    """``XMIN,YMIN,XMAX,YMAX`` -> four numbers, or a one-line error."""
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise E2DiffSRError(f"--extent is XMIN,YMIN,XMAX,YMAX (four numbers, as gdalwarp -te), got {text!r}")
    return values  # type: ignore[return-value]


def check_options(opts: AreaOptions) -> None:
    """The rules that need no file: an extent with width and height, a mask's options only with a mask."""
    if opts.extent is not None:
        xmin, ymin, xmax, ymax = opts.extent
        if not (xmax > xmin and ymax > ymin):
            raise E2DiffSRError(f"--extent {fmt(opts.extent)} is empty: it is XMIN,YMIN,XMAX,YMAX "
                                "with XMIN < XMAX and YMIN < YMAX")
    if opts.extent_crs is not None and opts.extent is None:
        raise E2DiffSRError("--extent-crs says in which CRS --extent is given; give --extent too or leave it out")
    if opts.mask is None and (opts.mask_layer is not None or opts.mask_where is not None):
        raise E2DiffSRError("--mask-layer and --mask-where choose polygons of --mask; give --mask too")


def _srs(text: str, what: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    try:
        failed = srs.SetFromUserInput(text)
    except RuntimeError as exc:
        failed = one_line(exc)
    if failed:
        raise E2DiffSRError(f"{what} {text!r} is not a CRS GDAL knows; give it as EPSG:NNNN or WKT")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _transform(src: osr.SpatialReference | None, raster_wkt: str, what: str):
    """A transform from ``src`` into the raster's CRS, or None when none is needed."""
    if src is None:
        return None
    if not raster_wkt:
        raise E2DiffSRError(f"{what} is in {src.GetName()} but the raster has no CRS, so there is no transform "
                            "between them; assign the raster's CRS first (gdal_edit -a_srs) or give the area in "
                            "its pixel coordinates' CRS")
    dst = osr.SpatialReference()
    dst.ImportFromWkt(raster_wkt)
    dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if src.IsSame(dst):
        return None
    try:
        ct = osr.CoordinateTransformation(src, dst)
    except RuntimeError:
        ct = None
    if ct is None or ct.this is None:
        raise E2DiffSRError(f"{what} is in {src.GetName()}, which cannot be transformed into the raster's "
                            f"{dst.GetName()}; reproject it first")
    return ct


def extent_bounds(opts: AreaOptions, raster_wkt: str) -> tuple[float, float, float, float] | None:
    """The extent in the raster's CRS (the box around it, its edges densified, when it is given in another)."""
    if opts.extent is None:
        return None
    crs = _srs(opts.extent_crs, "--extent-crs") if opts.extent_crs else None
    ct = _transform(crs, raster_wkt, "--extent")
    if ct is None:
        return tuple(opts.extent)  # type: ignore[return-value]
    xmin, ymin, xmax, ymax = opts.extent
    try:
        bounds = ct.TransformBounds(xmin, ymin, xmax, ymax, 21)
    except RuntimeError as exc:
        raise E2DiffSRError(f"--extent cannot be transformed into the raster's CRS ({one_line(exc)}); check "
                            "--extent-crs and the order of the numbers (XMIN,YMIN,XMAX,YMAX)") from None
    return tuple(float(v) for v in bounds)  # type: ignore[return-value]


class Polygons:
    """The mask's polygons in the raster's CRS, in an in-memory layer (for spatial filters and rasterizing)."""

    def __init__(self, opts: AreaOptions, raster_wkt: str):
        self._mem = ogr.GetDriverByName("Memory").CreateDataSource("mask")
        srs = None
        if raster_wkt:  # the raster's CRS, so rasterizing needs no transform
            srs = osr.SpatialReference()
            srs.ImportFromWkt(raster_wkt)
        self.layer = self._mem.CreateLayer("mask", srs, geom_type=ogr.wkbMultiPolygon)
        src_ds = _open_vector(opts.mask)
        src = _layer(src_ds, opts)
        ct = _transform(src.GetSpatialRef() and _with_order(src.GetSpatialRef()), raster_wkt,
                        f"the mask {opts.mask}")
        kept = 0
        for feature in src:
            geom = feature.GetGeometryRef()
            if geom is None:
                continue
            if ogr.GT_Flatten(geom.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon,
                                                              ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
                continue
            geom = geom.Clone()
            if ct is not None:
                geom.Transform(ct)
            out = ogr.Feature(self.layer.GetLayerDefn())
            out.SetGeometry(ogr.ForceToMultiPolygon(geom))
            self.layer.CreateFeature(out)
            kept += 1
        if not kept:
            where = f" matching --mask-where {opts.mask_where!r}" if opts.mask_where else ""
            raise E2DiffSRError(f"the mask {opts.mask} holds no polygons{where}; choose a polygon layer "
                                "(--mask-layer) or other features")
        self.count = kept
        xmin, xmax, ymin, ymax = self.layer.GetExtent()
        self.bounds = (xmin, ymin, xmax, ymax)

    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Each polygon's bounding box (xmin, ymin, xmax, ymax)."""
        out = []
        for f in self.layer:
            xmin, xmax, ymin, ymax = f.GetGeometryRef().GetEnvelope()
            out.append((xmin, ymin, xmax, ymax))
        self.layer.ResetReading()
        return out

    def touches(self, xmin: float, ymin: float, xmax: float, ymax: float) -> bool:
        """True when a polygon meets the rectangle (an output tile's ground)."""
        rect = ogr.CreateGeometryFromWkt(f"POLYGON(({xmin} {ymin},{xmax} {ymin},{xmax} {ymax},{xmin} {ymax},"
                                         f"{xmin} {ymin}))")
        self.layer.SetSpatialFilter(rect)
        try:
            return any(f.GetGeometryRef().Intersects(rect) for f in self.layer)
        finally:
            self.layer.SetSpatialFilter(None)

    def inside(self, gt: tuple, w: int, h: int) -> np.ndarray:
        """[h, w] True for the pixels (of a window with geotransform ``gt``) whose centre lies in a polygon."""
        ds = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
        ds.SetGeoTransform(gt)
        gdal.RasterizeLayer(ds, [1], self.layer, burn_values=[1])
        return ds.GetRasterBand(1).ReadAsArray() > 0


def _with_order(srs: osr.SpatialReference) -> osr.SpatialReference:
    srs = srs.Clone()
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _open_vector(path: str):
    try:
        ds = gdal.OpenEx(os.fspath(path), gdal.OF_VECTOR | gdal.OF_READONLY)
    except RuntimeError as exc:
        ds, why = None, f" ({one_line(exc)})"
    else:
        why = ""
    if ds is None:
        missing = not os.path.exists(path) and ":" not in str(path) and not str(path).startswith("/vsi")
        raise E2DiffSRError(f"mask not found: {path}" if missing else
                            f"GDAL cannot open the mask {path} as vector data{why}; give a polygon file OGR "
                            "reads (GeoPackage, Shapefile, GeoJSON, ...)")
    return ds


def _layer(ds, opts: AreaOptions):
    if opts.mask_layer is not None:
        layer = ds.GetLayerByName(opts.mask_layer)
        if layer is None:
            names = ", ".join(ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount()))
            raise E2DiffSRError(f"the mask {opts.mask} has no layer {opts.mask_layer!r}; its layers: {names}")
    else:
        if ds.GetLayerCount() < 1:
            raise E2DiffSRError(f"the mask {opts.mask} has no layers; give a polygon file")
        layer = ds.GetLayerByIndex(0)
    if opts.mask_where:
        try:
            failed = layer.SetAttributeFilter(opts.mask_where)
        except RuntimeError as exc:
            failed = one_line(exc)
        if failed:
            raise E2DiffSRError(f"--mask-where {opts.mask_where!r} is not a filter the mask's layer accepts "
                                f"({failed}); write an SQL WHERE clause such as \"class = 'field'\"")
    return layer


def _span(lo: float, hi: float, origin: float, step: float, n: int) -> tuple[int, int]:
    """Whole output pixels [a, b) along one axis that cover ground [lo, hi] (GDAL -te: edges on the grid
    snap, others round outwards), cut to the output."""
    p0, p1 = sorted(((lo - origin) / step, (hi - origin) / step))
    a = round(p0) if abs(p0 - round(p0)) < SNAP else math.floor(p0)
    b = round(p1) if abs(p1 - round(p1)) < SNAP else math.ceil(p1)
    return max(0, a), min(n, b)


def output_box(bounds, gt: tuple, out_w: int, out_h: int, what: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the whole-layer output's pixels that cover ``bounds`` (xmin, ymin, xmax, ymax), or a
    one-line error when the bounds lie outside the raster."""
    xmin, ymin, xmax, ymax = bounds
    x0, x1 = _span(xmin, xmax, gt[0], gt[1], out_w)
    y0, y1 = _span(ymin, ymax, gt[3], gt[5], out_h)
    if x1 <= x0 or y1 <= y0:
        right, bottom = gt[0] + out_w * gt[1], gt[3] + out_h * gt[5]
        raster = (min(gt[0], right), min(gt[3], bottom), max(gt[0], right), max(gt[3], bottom))
        raise E2DiffSRError(f"{what} ({fmt(bounds)}) lies outside the raster ({fmt(raster)} in its CRS); "
                            "choose an area that overlaps it")
    return x0, y0, x1, y1


def north_up(has_gt: bool, gt: tuple) -> None:
    if not has_gt:
        raise E2DiffSRError("the input has no geotransform, so an extent or a mask in map coordinates means nothing "
                            "for it; georeference it first or leave out --extent/--mask")
    if gt[2] or gt[4]:
        raise E2DiffSRError("the input's pixel grid is rotated; --extent and --mask need a north-up raster "
                            "(gdalwarp it first)")


def intersect(a, b):
    """The intersection of two (xmin, ymin, xmax, ymax) boxes (either may be None), or None when empty."""
    if a is None or b is None:
        return a if b is None else b
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


__all__ = ["AreaOptions", "Polygons", "check_options", "extent_bounds", "intersect", "north_up", "output_box",
           "parse_extent"]
