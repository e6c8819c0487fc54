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
