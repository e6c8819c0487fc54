"""The input as the layer shows it in QGIS, not only as its file says.

QGIS lets the analyst assign a CRS to a layer, add nodata values, switch off the file's own nodata value,
and open a file with GDAL open options (a source ``path|option:KEY=VALUE``). The engine reads files, so when
the layer says something its file does not, the engine is handed an in-memory VRT over the file that says it
(the CRS, each band's nodata value, the open options recorded on the source). What a GeoTIFF cannot carry
(a range of nodata values, several nodata values on one band) is refused in QGIS words.
"""

from __future__ import annotations

import secrets

from osgeo import gdal, osr
from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException

VSIMEM_PREFIX = "/vsimem/e2diffsr-layer-"


def split_source(uri: str) -> tuple[str, list[str]]:
    """(file, GDAL open options) of a GDAL layer's source (``path|option:KEY=VALUE|...``)."""
    path, *parts = uri.split("|")
    return path, [p[len("option:"):] for p in parts if p.startswith("option:")]


def _band_nodata(provider, band: int, file_value: float | None, layer_name: str) -> float | None:
    """The one nodata value QGIS uses for ``band``: the file's (when 'use source nodata' is on) and the
    layer's own values."""
    values = [file_value] if file_value is not None and provider.useSourceNoDataValue(band) else []
    for r in provider.userNoDataValues(band):
        if r.min() != r.max():
            raise QgsProcessingException(
                f"Band {band} of layer '{layer_name}' has a range of nodata values ({r.min():g} to {r.max():g}); "
                "E2DiffSR keeps one nodata value per band. Set a single value in the layer's Properties > "
                "Transparency, or mark the pixels with Raster Calculator first.")
        if r.min() not in values:
            values.append(r.min())
    if len(values) > 1:
        raise QgsProcessingException(
            f"Band {band} of layer '{layer_name}' has several nodata values ({', '.join(f'{v:g}' for v in values)}); "
            "a GeoTIFF keeps one per band. Keep one in the layer's Properties > Transparency (or switch off "
            "'No data value' of the source), or give the band one value first with Warp (reproject).")
    return values[0] if values else None


def _layer_wkt(layer, file_wkt: str) -> str | None:
    """The layer's CRS as WKT when it differs from the file's (assigned or overridden in QGIS), else None."""
    crs = layer.crs()
    if not crs.isValid():
        return None
    if file_wkt and crs == QgsCoordinateReferenceSystem.fromWkt(file_wkt):
        return None
    wkt = crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
    if file_wkt and osr.SpatialReference(wkt).IsSame(osr.SpatialReference(file_wkt)):
        return None
    return wkt


def engine_source(layer) -> str:
    """The layer's file, or an in-memory VRT over it carrying what the layer says and the file does not."""
    path, options = split_source(layer.source())
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY, open_options=options)
    except RuntimeError as exc:
        raise QgsProcessingException(f"Could not open the layer '{layer.name()}' ({path}): {exc}") from None
    wkt = _layer_wkt(layer, ds.GetProjection() or "")
    provider = layer.dataProvider()
    nodata = []
    for b in range(1, ds.RasterCount + 1):
        file_value = ds.GetRasterBand(b).GetNoDataValue()
        nodata.append((file_value, _band_nodata(provider, b, file_value, layer.name())))
    if not options and wkt is None and all(f == q for f, q in nodata):
        return path
    vrt_path = f"{VSIMEM_PREFIX}{secrets.token_hex(4)}.vrt"
    vrt = gdal.Translate(vrt_path, ds, format="VRT", outputSRS=wkt)
    for b, (file_value, value) in enumerate(nodata, start=1):
        band = vrt.GetRasterBand(b)
        if value is None and file_value is not None:
            band.DeleteNoDataValue()
        elif value is not None and value != file_value:
            band.SetNoDataValue(value)
    vrt = None
    return vrt_path


def release(source: str) -> None:
    """Drop an in-memory VRT made by :func:`engine_source`."""
    if source.startswith(VSIMEM_PREFIX):
        gdal.Unlink(source)
