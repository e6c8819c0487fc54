# ruff: noqa: F811 (pytest fixtures imported from qgis_support)
"""QGIS: the processing extent and the polygon mask, and the checks the dialog makes before the model loads."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingFeatureSourceDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis_support import ALG, Recorder, leftovers, provider, rasters, run  # noqa: F401


def corners(path):
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform()
    return gt, ds.RasterXSize, ds.RasterYSize


def test_the_area_parameters_are_there(provider):
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    extent, mask = alg.parameterDefinition("EXTENT"), alg.parameterDefinition("MASK")
    assert extent.type() == "extent" and extent.flags() & extent.FlagOptional
    assert mask.type() == "source" and mask.flags() & mask.FlagOptional
    assert mask.dataTypes() == [2]  # polygons
    assert {"resample", "resampling", "upsampling", "increase resolution"} <= set(alg.tags())


def test_an_extent_gives_the_whole_runs_pixels_on_its_grid(provider, rasters, tiny_model_file, tmp_path):
    src = rasters["c64"]
    gt, w, h = corners(src)
    whole, part = tmp_path / "whole.tif", tmp_path / "part.tif"
    base = {"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu"}
    run({**base, "OUTPUT": str(whole)})
    # QGIS's extent text: xmin,xmax,ymin,ymax [CRS]; output pixels of half the layer's size
    xmin, xmax = gt[0] + 10.2 * gt[1], gt[0] + 40.7 * gt[1]
    ymax, ymin = gt[3] + 5.0 * gt[5], gt[3] + 30.3 * gt[5]
    run({**base, "OUTPUT": str(part), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32617]"})
    wg, pg = gdal.Open(str(whole)).GetGeoTransform(), gdal.Open(str(part)).GetGeoTransform()
    ox, oy = (pg[0] - wg[0]) / wg[1], (pg[3] - wg[3]) / wg[5]
    assert (round(ox, 6), round(oy, 6)) == (20, 10) and pg[1] == wg[1] and pg[5] == wg[5]
    p = gdal.Open(str(part)).ReadAsArray().astype(float)
    assert p.shape[1:] == (61 - 10, 82 - 20)
    wpx = gdal.Open(str(whole)).ReadAsArray(20, 10, p.shape[2], p.shape[1]).astype(float)
    assert 10 * np.log10(255**2 / max(((p - wpx) ** 2).mean(), 1e-12)) >= 40
    assert leftovers(tmp_path) == ["part.tif", "whole.tif"]


def polygons(crs, rings):
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "fields", "memory")
    feats = []
    for ring in rings:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt("POLYGON((" + ",".join(f"{x} {y}" for x, y in ring + [ring[0]]) + "))"))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_a_mask_of_selected_features_limits_the_output(provider, rasters, tiny_model_file, tmp_path):
    src = rasters["c64"]
    gt, w, h = corners(src)

    def at(px, py):  # map coordinates of a point given in layer pixels
        return gt[0] + px * gt[1], gt[3] + py * gt[5]

    layer = polygons("EPSG:32617", [[at(5, 5), at(20, 5), at(20, 25)], [at(40, 40), at(60, 40), at(60, 60)]])
    layer.selectByIds([layer.getFeatures().__next__().id()])
    out = tmp_path / "masked.tif"
    feedback = Recorder()
    run({"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu", "OUTPUT": str(out),
         "MASK": QgsProcessingFeatureSourceDefinition(layer.id(), True)}, feedback)
    ds = gdal.Open(str(out))
    og = ds.GetGeoTransform()
    # the box of the selected triangle only (the second polygon is not selected), on the whole run's grid
    assert (ds.RasterXSize, ds.RasterYSize) == (30, 40)
    assert (og[0], og[3]) == pytest.approx(at(5, 5))
    data = ds.ReadAsArray()
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    assert nodata is not None and (data[:, -1, 0] == nodata).all()  # below the hypotenuse: outside
    assert (data[:, 1, -2] != nodata).all()  # inside the triangle
    QgsProject.instance().removeMapLayer(layer.id())


@pytest.mark.parametrize("extra, message", [
    ({"TARGET_RESOLUTION": 10.0}, "is coarser than the layer's pixels"),
    ({"TARGET_RESOLUTION": "SAME"}, "is the same as the layer's pixels"),
    ({"BANDS": "1,5"}, "band 5 does not exist; the layer 'c64' has 3 bands"),
    ({"OUTPUT": "out.png"}, "give it a .tif name"),
    ({"EXTENT": "0,10,0,10 [EPSG:32617]"}, "does not overlap the layer"),
    ({"MASK": "EMPTY"}, "has no features"),
])
def test_checks_before_the_model_loads(provider, rasters, tiny_model_file, tmp_path, extra, message):
    src = rasters["c64"]
    layer = QgsRasterLayer(str(src), "c64")
    if extra.get("TARGET_RESOLUTION") == "SAME":
        extra = {"TARGET_RESOLUTION": layer.rasterUnitsPerPixelX()}
    if extra.get("MASK") == "EMPTY":
        empty = polygons("EPSG:32617", [])
        extra = {"MASK": empty.id()}
    if "OUTPUT" in extra:
        extra = {"OUTPUT": str(tmp_path / extra["OUTPUT"])}
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    params = {"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": str(tmp_path / "o.tif"),
              **extra}
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, msg = alg.checkParameterValues(params, context)
    assert not ok and message in msg, msg
    assert "1 times finer" not in msg
    assert leftovers(tmp_path) == []
