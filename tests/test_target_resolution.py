"""A target pixel size instead of a scale (--resolution): GIS users think in pixel sizes, not factors."""

import numpy as np
import pytest
from osgeo import gdal

from e2diffsr_core.__main__ import main
from e2diffsr_core.raster import superresolve_raster

gdal.UseExceptions()


def make(path, w, h, gt=(404211.9, 0.1, 0.0, 3285142.9, 0.0, -0.1)):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 3, gdal.GDT_Byte)
    if gt is not None:
        ds.SetGeoTransform(gt)
    yy, xx = np.mgrid[0:h, 0:w]
    ds.WriteArray(np.stack([(40 + 3 * xx + 2 * yy + 30 * k) % 250 for k in range(3)]).astype(np.uint8))
    ds = None
    return str(path)


def test_a_pixel_size_gives_that_size_over_the_same_extent(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", 40, 36)
    superresolve_raster(src, str(tmp_path / "out.tif"), resolution=(0.04, 0.04), model=str(tiny_model_file))
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (100, 90)
    gt = ds.GetGeoTransform()
    assert gt[1] == pytest.approx(0.04, abs=1e-12) and gt[5] == pytest.approx(-0.04, abs=1e-12)
    assert gt[0] == 404211.9 and gt[3] == 3285142.9  # same origin, same extent


def test_non_square_pixels_scale_each_axis(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", 40, 36)
    rc = main(["superresolve", src, str(tmp_path / "out.tif"), "--resolution", "0.05,0.04",
               "--model", str(tiny_model_file), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 90)
    assert ds.GetGeoTransform()[1] == pytest.approx(0.05) and ds.GetGeoTransform()[5] == pytest.approx(-0.04)


def test_an_extent_that_is_not_whole_pixels_is_said(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", 41, 36)  # 4.1 m is not a whole number of 0.03 m pixels
    logs = []
    superresolve_raster(src, str(tmp_path / "out.tif"), resolution=(0.03, 0.03), model=str(tiny_model_file),
                        log=logs.append)
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert ds.RasterXSize == 137 and ds.RasterXSize * ds.GetGeoTransform()[1] == pytest.approx(4.1)
    assert any("not a whole number of 0.03 x 0.03 pixels" in m for m in logs)


@pytest.mark.parametrize("args, expect", [
    (["--resolution", "0.2"], "down-sampling is GDAL's job"),
    (["--resolution", "0.1"], "not finer"),
    (["--resolution", "0.001"], "between 1x and 16x"),
    (["--resolution", "0,0.05"], "positive"),
])
def test_bad_resolutions_are_one_line_errors(tmp_path, capsys, tiny_model_file, args, expect):
    src = make(tmp_path / "in.tif", 40, 36)
    rc = main(["superresolve", src, str(tmp_path / "out.tif"), *args, "--model", str(tiny_model_file), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert rc != 0 and len(lines) == 1 and expect in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_rasters_a_pixel_size_cannot_apply_to(tmp_path, capsys, tiny_model_file):
    for name, gt, expect in (("plain.tif", None, "no geotransform"),
                             ("rotated.tif", (0, 0.1, 0.02, 0, 0.02, -0.1), "rotated")):
        src = make(tmp_path / name, 40, 36, gt=gt)
        rc = main(["superresolve", src, str(tmp_path / "out.tif"), "--resolution", "0.04",
                   "--model", str(tiny_model_file), "--quiet"])
        err = capsys.readouterr().err
        assert rc != 0 and expect in err and "--scale" in err


def test_scale_and_resolution_are_alternatives(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["superresolve", "in.tif", "out.tif", "--scale", "2", "--resolution", "0.04"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
