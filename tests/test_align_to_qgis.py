# ruff: noqa: F811 (pytest fixtures imported from qgis_support)
"""'Align to the grid of' (ALIGN_TO) in QGIS: the output on a reference raster's grid, and what is refused.

Skipped where QGIS is not installed; the model is a tiny random one.
"""

from __future__ import annotations

import pytest

pytest.importorskip("qgis.core")

from osgeo import gdal, osr  # noqa: E402
from qgis.core import QgsProcessingException, QgsProject  # noqa: E402
from qgis_support import ALG, Recorder, provider, rasters, run  # noqa: E402, F401

REF_X0, REF_Y0 = 404200.013, 3285150.007  # a grid origin off the sample's own grid


def reference(path, px, epsg=32617):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((REF_X0, px, 0.0, REF_Y0, 0.0, -px))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    return str(path)


def test_align_to_puts_the_output_on_the_reference_grid(provider, rasters, tiny_model_file, tmp_path,
                                                        qgis_new_project):
    import processing

    ref = reference(tmp_path / "ref.tif", 0.04)
    processing.runAndLoadResults(ALG, {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "ALIGN_TO": ref,
                                       "MODEL": str(tiny_model_file), "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayersByName("a48 on the ref grid")[0]
    ds = gdal.Open(layer.source())
    gt = ds.GetGeoTransform()
    assert gt[1] == 0.04 and gt[5] == -0.04  # the reference's pixels, not the x2 of SCALE
    assert abs((gt[0] - REF_X0) / 0.04 - round((gt[0] - REF_X0) / 0.04)) < 1e-6
    assert abs((gt[3] - REF_Y0) / 0.04 - round((gt[3] - REF_Y0) / 0.04)) < 1e-6
    assert ds.RasterXSize in (120, 121) and ds.RasterYSize in (120, 121)  # 4.8 m, plus the part of a pixel


@pytest.mark.parametrize("case, expect", [
    ("both", "not both"),
    ("coarser", "down-sampling is GDAL's job"),
    ("other crs", "another CRS"),
])
def test_references_that_cannot_be_followed_are_refused(provider, rasters, tiny_model_file, tmp_path, case, expect):
    out = tmp_path / "o.tif"
    params = {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": str(out),
              "ALIGN_TO": reference(tmp_path / "ref.tif", 0.2 if case == "coarser" else 0.04,
                                    32618 if case == "other crs" else 32617)}
    if case == "both":
        params["TARGET_RESOLUTION"] = 0.05
    feedback = Recorder()
    with pytest.raises(QgsProcessingException):
        run(params, feedback)
    errors = [text for kind, text in feedback.lines if kind == "error"]
    assert any(expect in e for e in errors), feedback.lines
    assert not any("--" in e for e in errors), errors  # QGIS words, not command-line flags
    assert not out.exists()
