"""The processing area in QGIS (EXTENT, MASK) and every check that can be made before the model loads.

EXTENT is QGIS's extent parameter (layer, canvas or drawn; in any CRS, transformed to the layer's); MASK is a
polygon layer, "selected features only" included: processing hands over a GDAL-readable copy when the layer
is not one already. Both become the engine's ``extent`` / ``mask`` / ``mask_layer`` keywords
(e2diffsr_core/area_run.py). The checks run in checkParameterValues, so the dialog answers at once.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
)
from qgis.PyQt.QtCore import QCoreApplication

from .wording import LABELS, label

EXTENT, MASK = "EXTENT", "MASK"


def tr(text: str) -> str:
    return QCoreApplication.translate("E2DiffSR", text)


def parameters() -> list:
    """The two optional parameters, in the order the dialog shows them."""
    return [
        QgsProcessingParameterExtent(EXTENT, tr(f"{LABELS['EXTENT']} (empty: the whole layer)"),
                                     optional=True),
        QgsProcessingParameterFeatureSource(MASK, tr(LABELS["MASK"]),
                                            [QgsProcessing.TypeVectorPolygon], optional=True),
    ]


def _given(parameters, name) -> bool:
    value = parameters.get(name)
    return value is not None and str(value).strip() != ""


def extent_in_layer_crs(alg, parameters, context, layer):
    """The EXTENT as a QgsRectangle in the layer's CRS, or None when it is empty."""
    if not _given(parameters, EXTENT):
        return None
    rect = alg.parameterAsExtent(parameters, EXTENT, context, layer.crs())
    return None if rect is None or rect.isEmpty() else rect


def problems(alg, parameters, context, layer) -> str | None:
    """Why the area cannot be used with ``layer``, in QGIS's words; None when it can (or none is given)."""
    rect = extent_in_layer_crs(alg, parameters, context, layer)
    if _given(parameters, EXTENT) and rect is None:
        return tr(f"{label('EXTENT')} is empty: draw or choose an area with a width and a height, or leave it "
                  "empty for the whole layer.")
    if rect is not None and not rect.intersects(layer.extent()):
        return tr(f"{label('EXTENT')} does not overlap the layer '{layer.name()}': choose an area over it (e.g. "
                  "Use Canvas Extent while looking at the layer) or leave it empty.")
    if _given(parameters, MASK):
        source = alg.parameterAsSource(parameters, MASK, context)
        if source is None:
            return tr(f"Could not open {label('MASK')}; choose a polygon layer.")
        if source.featureCount() == 0:
            return tr(f"{label('MASK')} has no features (or none selected with 'Selected features only'); select "
                      "polygons or leave it empty.")
        bounds = source.sourceExtent()
        if source.sourceCrs().isValid() and layer.crs().isValid() and source.sourceCrs() != layer.crs():
            bounds = QgsCoordinateTransform(source.sourceCrs(), layer.crs(), context.transformContext()) \
                .transformBoundingBox(bounds)
        if not bounds.intersects(layer.extent()):
            return tr(f"The polygons of {label('MASK')} do not overlap the layer '{layer.name()}': choose polygons "
                      "over it or leave it empty.")
    return None


def engine_keywords(alg, parameters, context, layer, feedback) -> dict:
    """The engine's keywords for the area (main thread: a selection is copied to a file here)."""
    out = {}
    rect = extent_in_layer_crs(alg, parameters, context, layer)
    if rect is not None:
        out["extent"] = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
    if _given(parameters, MASK):
        path, name = alg.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, MASK, context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
        if not path:
            raise QgsProcessingException(tr(f"Could not read {label('MASK')}; choose a polygon layer."))
        out["mask"] = path.split("|")[0]
        if name:
            out["mask_layer"] = name
    return out


# -- checks before the model loads ------------------------------------------------------------------------------
def bands_problem(bands: list[int] | None, layer) -> str | None:
    if not bands:
        return None
    count = layer.bandCount()
    for b in bands:
        if b < 1 or b > count:
            return tr(f"{label('BANDS')}: band {b} does not exist; the layer '{layer.name()}' has {count} "
                      f"band{'s' if count != 1 else ''} (numbered from 1).")
    if len(set(bands)) != len(bands):
        return tr(f"{label('BANDS')}: each band may be chosen once.")
    return None


def pixel_size_problem(resolution: float, layer, max_scale: float) -> str | None:
    """Why a target pixel size cannot be made from this layer (coarser, equal, or too fine), or None."""
    px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    if resolution >= min(px, py) * (1 - 1e-9):
        same = abs(resolution - min(px, py)) <= 1e-9 * min(px, py)
        what = "the same as" if same else "coarser than"
        return tr(f"{label('TARGET_RESOLUTION')} {resolution:g} is {what} the layer's pixels ({px:g} x {py:g}); "
                  "this algorithm only makes pixels finer. Choose a smaller size (down-sampling is GDAL's job: "
                  "Raster > Projections > Warp).")
    finer = max(px, py) / resolution
    if finer > max_scale:
        return tr(f"{label('TARGET_RESOLUTION')} {resolution:g} makes pixels {finer:.3g} times finer than the "
                  f"layer's ({px:g} x {py:g}); the model works up to {max_scale:g} times finer: choose "
                  f"{max(px, py) / max_scale:.3g} or more.")
    return None


def output_problem(path: str | None) -> str | None:
    if not path or path.startswith(("memory:", "ogr:", "postgres")) or path == "TEMPORARY_OUTPUT":
        return None
    if os.path.splitext(path)[1].lower() not in (".tif", ".tiff"):
        return tr(f"{label('OUTPUT')} is written as a GeoTIFF: give it a .tif name (got "
                  f"'{os.path.basename(path)}'); convert afterwards with Raster > Conversion > Translate.")
    return None


__all__ = ["EXTENT", "MASK", "bands_problem", "engine_keywords", "output_problem", "parameters",
           "pixel_size_problem", "problems"]
