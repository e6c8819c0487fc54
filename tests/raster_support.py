"""Small GeoTIFFs written by the raster tests (imported as ``raster_support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()

GT = (500000.0, 2.0, 0.0, 4100000.0, 0.0, -2.0)


def make_raster(
    path,
    array,
    dtype=gdal.GDT_Byte,
    *,
    nodata=None,
    gt=GT,
    epsg=32633,
    descriptions=None,
    colour=None,
    metadata=None,
    band_metadata=None,
    options=(),
):
    """Write ``array`` ([bands, h, w] or [h, w]) as a GeoTIFF and return its path as str."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    n, h, w = array.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, n, dtype, options=list(options))
    if gt is not None:
        ds.SetGeoTransform(gt)
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    if metadata:
        ds.SetMetadata(metadata)
    for i in range(n):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(array[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[i])
        if colour:
            band.SetColorInterpretation(colour[i])
        if band_metadata:
            band.SetMetadata(band_metadata[i])
    ds = None
    return str(path)
