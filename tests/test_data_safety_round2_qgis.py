"""Nothing lost, round two, in QGIS: the algorithm refuses what the command line refuses, in QGIS words."""

import pytest
from qgis.core import QgsProcessingException
from qgis_support import leftovers, provider, run  # noqa: F401
from test_data_safety_round2 import _class_map


def test_thematic_rasters_are_refused_in_qgis_too(provider, tmp_path, tiny_model_file):  # noqa: F811
    src = _class_map(tmp_path / "classes.tif", "rat")
    with pytest.raises(QgsProcessingException, match="thematic.*raster attribute table.*gdalwarp -r near"):
        run({"INPUT": src, "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": str(tmp_path / "out.tif")})
    assert leftovers(tmp_path, keep=("classes.tif", "classes.tif.aux.xml")) == []


# -- 11. the layer as QGIS shows it ------------------------------------------------------------------------------
import numpy as np  # noqa: E402
from osgeo import gdal, osr  # noqa: E402
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRasterRange  # noqa: E402


def _layer(source: str, name: str) -> QgsRasterLayer:
    """A layer the project owns, as a layer in QGIS is: deleted by QGIS itself at exit, not after it."""
    layer = QgsRasterLayer(source, name, "gdal")
    QgsProject.instance().addMapLayer(layer, False)
    return layer
from qgis_support import Recorder  # noqa: E402
from test_data_safety_round2 import make, texture  # noqa: E402


def _run_layer(layer, tmp_path, tiny_model_file, feedback=None):
    out = tmp_path / "out.tif"
    run({"INPUT": layer, "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": str(out)}, feedback)
    return gdal.Open(str(out))


def test_a_crs_assigned_in_qgis_reaches_the_output(provider, tmp_path, tiny_model_file):  # noqa: F811
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8), epsg=None)  # a file without a CRS
    layer = _layer(src, "no crs")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
    ds = _run_layer(layer, tmp_path, tiny_model_file)
    srs = osr.SpatialReference(ds.GetProjection())
    assert srs.GetAuthorityCode(None) == "32633"
    assert gdal.Open(src).GetProjection() == ""  # the file itself is left as it was
    assert leftovers(tmp_path) == ["in.tif", "out.tif"]


def test_nodata_as_the_layer_says(provider, tmp_path, tiny_model_file):  # noqa: F811
    data = texture(1).astype(np.uint8)
    data[0, 3:6, 4:9] = 7
    src = make(tmp_path / "in.tif", data, nodata=0)
    layer = _layer(src, "nodata")
    layer.dataProvider().setUseSourceNoDataValue(1, False)  # the file's 0 is data to the analyst...
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(7, 7)])  # ...and 7 marks holes
    ds = _run_layer(layer, tmp_path, tiny_model_file)
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 7
    holes = band.ReadAsArray() == 7
    assert np.array_equal(holes, np.kron(data[0] == 7, np.ones((2, 2), bool)))


def test_several_nodata_values_on_a_band_are_refused_in_qgis_words(provider, tmp_path, tiny_model_file):  # noqa: F811
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8), nodata=0)
    layer = _layer(src, "two")
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(7, 7)])
    feedback = Recorder()
    with pytest.raises(QgsProcessingException):
        _run_layer(layer, tmp_path, tiny_model_file, feedback)
    errors = [text for kind, text in feedback.lines if kind == "error"]
    assert any("several nodata values (0, 7)" in e and "Transparency" in e for e in errors), feedback.lines
    assert leftovers(tmp_path) == ["in.tif"]


def test_a_layer_with_open_options_and_the_bands_fed_as_rgb(provider, tmp_path, tiny_model_file):  # noqa: F811
    src = make(tmp_path / "in.tif", texture(4).astype(np.uint8), options=["PHOTOMETRIC=MINISBLACK"])
    layer = _layer(f"{src}|option:NUM_THREADS=1", "with options")
    assert layer.isValid()
    feedback = Recorder()
    ds = _run_layer(layer, tmp_path, tiny_model_file, feedback)
    assert ds.RasterCount == 4 and (ds.RasterXSize, ds.RasterYSize) == (40, 32)
    assert any("fed to the model as R, G, B: 1, 2, 3; 4, 4, 4" in line for line in feedback.infos), feedback.infos
    assert leftovers(tmp_path) == ["in.tif", "out.tif"]
