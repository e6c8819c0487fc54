"""The consistency correction as a raster user meets it: on by default, --raw, and the consistency map."""

import numpy as np
import pytest
from osgeo import gdal

from e2diffsr_core.__main__ import main
from e2diffsr_core.raster import superresolve_raster

gdal.UseExceptions()


@pytest.fixture()
def src(tmp_path):
    path = tmp_path / "in.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 32, 28, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform((500000, 1.0, 0, 4000000, 0, -1.0))
    yy, xx = np.mgrid[0:28, 0:32]
    rng = np.random.default_rng(1)
    ds.WriteArray(np.stack([1000 + 40 * xx + 30 * yy + rng.integers(0, 300, (28, 32)) for _ in range(3)]))
    ds = None
    return str(path)


def reduce_to_input(path, w, h):
    """The output reduced to the input grid by GDAL's averaging (what an analyst would check with gdalwarp)."""
    ds = gdal.Translate("", str(path), format="MEM", width=w, height=h, resampleAlg="average")
    return ds.ReadAsArray().astype(np.float64)


def test_default_output_agrees_with_the_input_better_than_raw(tmp_path, src, tiny_model_file):
    superresolve_raster(src, str(tmp_path / "c.tif"), 4, model=str(tiny_model_file),
                        consistency_map=str(tmp_path / "map.tif"))
    superresolve_raster(src, str(tmp_path / "r.tif"), 4, model=str(tiny_model_file), raw=True)
    lr = gdal.Open(src).ReadAsArray().astype(np.float64)
    err_c = np.abs(reduce_to_input(tmp_path / "c.tif", 32, 28) - lr).mean()
    err_r = np.abs(reduce_to_input(tmp_path / "r.tif", 32, 28) - lr).mean()
    assert err_c < 0.5 * err_r  # random weights: the raw output is far from the input, the corrected one close
    m = gdal.Open(str(tmp_path / "map.tif"))
    assert m.RasterCount == 1 and m.GetRasterBand(1).DataType == gdal.GDT_Float32
    assert (m.RasterXSize, m.RasterYSize) == (128, 112) and m.GetGeoTransform()[1] == 0.25
    size = m.ReadAsArray()
    corrected, raw = gdal.Open(str(tmp_path / "c.tif")).ReadAsArray(), gdal.Open(str(tmp_path / "r.tif")).ReadAsArray()
    # the map is the largest change over the bands, in the input's units (same seed, so raw is the uncorrected)
    diff = np.abs(corrected.astype(np.float64) - raw).max(axis=0)
    assert size.min() >= 0 and np.abs(size - diff).max() <= 1.0 + 1e-3 * diff.max()


def test_raw_with_a_consistency_map_is_refused(tmp_path, src, capsys, tiny_model_file):
    rc = main(["superresolve", src, str(tmp_path / "o.tif"), "--scale", "2", "--raw", "--consistency-map",
               str(tmp_path / "m.tif"), "--model", str(tiny_model_file), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--raw" in err and "--consistency-map" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
