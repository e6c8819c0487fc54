"""An output on another raster's grid (--align-to): its pixel size and grid origin, over the input's extent."""

import math

import numpy as np
import pytest
import torch
from osgeo import gdal, osr
from PIL import Image

from e2diffsr_core.__main__ import main
from e2diffsr_core.engine import NoiseField, superresolve_array
from e2diffsr_core.engine.consistency import psnr_to_input
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.gridmap import AxisMap, GridMap
from e2diffsr_core.raster import superresolve_raster
from e2diffsr_core.raster_io.align import align_to

gdal.UseExceptions()

X0, Y0 = 404211.9, 3285142.9  # the input's upper-left corner; pixels of 0.1 m


def utm(zone: int = 11) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32600 + zone)
    return srs.ExportToWkt()


def make(path, w, h, gt=(X0, 0.1, 0.0, Y0, 0.0, -0.1), wkt=None, data=None):
    """A Byte RGB raster (a smooth pattern, or ``data`` [3, h, w])."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 3, gdal.GDT_Byte)
    if gt is not None:
        ds.SetGeoTransform(gt)
    if wkt is not None:
        ds.SetProjection(wkt)
    if data is None:
        yy, xx = np.mgrid[0:h, 0:w]
        data = np.stack([(40 + 3 * xx + 2 * yy + 30 * k) % 250 for k in range(3)])
    ds.WriteArray(np.asarray(data).astype(np.uint8))
    ds = None
    return str(path)


def reference(path, px, py, x0=404200.013, y0=3285150.007, wkt="utm", rotated=False):
    """A small raster whose grid (origin x0, y0; pixels px x py) the output is to follow."""
    gt = None if px is None else (x0, px, 0.01 if rotated else 0.0, y0, 0.0, -py)
    return make(path, 4, 4, gt=gt, wkt=utm() if wkt == "utm" else wkt)


def run_cli(src, out, ref, model, *extra):
    return main(["superresolve", src, str(out), "--align-to", str(ref), "--model", str(model), "--quiet", *extra])


# -- the grid ---------------------------------------------------------------------------------------------
def test_output_pixels_lie_on_the_reference_grid_and_cover_the_input(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", 40, 36, wkt=utm())
    ref = reference(tmp_path / "ref.tif", 0.035, 0.04)  # not square, origin off the input's grid
    assert run_cli(src, tmp_path / "out.tif", ref, tiny_model_file) == 0, capsys.readouterr().err
    ds = gdal.Open(str(tmp_path / "out.tif"))
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    assert gt[1] == 0.035 and gt[5] == -0.04 and gt[2] == gt[4] == 0  # exactly the reference's pixel size
    for origin, ref0, step in ((gt[0], 404200.013, 0.035), (gt[3], 3285150.007, -0.04)):
        k = (origin - ref0) / step
        assert abs(k - round(k)) < 1e-6  # on the reference grid
    left, right, top, bottom = gt[0], gt[0] + w * gt[1], gt[3], gt[3] + h * gt[5]
    for beyond, step in ((X0 - left, 0.035), (right - (X0 + 4.0), 0.035),
                         (top - Y0, 0.04), ((Y0 - 3.6) - bottom, 0.04)):
        assert -1e-9 <= beyond < step  # covers the input, by less than one output pixel more on each side
    assert osr.SpatialReference(ds.GetProjection()).IsSame(osr.SpatialReference(utm()))
    assert ds.ReadAsArray().std() > 5  # a picture, not a fill


def test_a_grid_that_coincides_with_the_input_gives_the_scale_output(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", 40, 36, wkt=utm())
    ref = reference(tmp_path / "ref.tif", 0.05, 0.05, x0=X0 - 3 * 0.05, y0=Y0 + 7 * 0.05)
    same = dict(model=str(tiny_model_file), precision="fp32")  # auto may pick bf16 on a timing, run by run
    superresolve_raster(src, str(tmp_path / "a.tif"), align_to=ref, **same)
    superresolve_raster(src, str(tmp_path / "s.tif"), 2, **same)
    a, s = gdal.Open(str(tmp_path / "a.tif")), gdal.Open(str(tmp_path / "s.tif"))
    assert (a.RasterXSize, a.RasterYSize) == (s.RasterXSize, s.RasterYSize) == (80, 72)
    assert np.array_equal(a.ReadAsArray(), s.ReadAsArray())
    assert a.GetGeoTransform() == pytest.approx(s.GetGeoTransform(), abs=1e-9)


def test_nodata_stays_where_the_input_had_it(tmp_path, tiny_model_file):
    yy, xx = np.mgrid[0:36, 0:40]
    data = np.stack([1 + (3 * xx + 2 * yy + 30 * k) % 250 for k in range(3)])
    data[0, 10:20, 5:15] = 0  # missing in band 1 only
    src = make(tmp_path / "in.tif", 40, 36, wkt=utm(), data=data)
    ds = gdal.Open(src, gdal.GA_Update)
    ds.GetRasterBand(1).SetNoDataValue(0)  # a GeoTIFF has one nodata value for every band
    ds = None
    ref = reference(tmp_path / "ref.tif", 0.035, 0.04)
    superresolve_raster(src, str(tmp_path / "out.tif"), align_to=ref, model=str(tiny_model_file))
    ds = gdal.Open(str(tmp_path / "out.tif"))
    gt, out = ds.GetGeoTransform(), ds.ReadAsArray()
    # the input pixel under each output pixel's centre, from the two geotransforms alone
    cols = np.clip(np.floor((gt[0] + (np.arange(ds.RasterXSize) + 0.5) * gt[1] - X0) / 0.1), 0, 39).astype(int)
    rows = np.clip(np.floor((Y0 - gt[3] - (np.arange(ds.RasterYSize) + 0.5) * gt[5]) / 0.1), 0, 35).astype(int)
    expected = (data[0] == 0)[np.ix_(rows, cols)]
    assert expected.any() and np.array_equal(out[0] == 0, expected)
    assert (out[1:] > 0).all()  # the other bands keep their values there


def test_superresolve_batch_aligns_every_raster(tmp_path, capsys, tiny_model_file):
    srcs = [make(tmp_path / "a.tif", 24, 20, wkt=utm()),
            make(tmp_path / "b.tif", 16, 16, gt=(X0 + 1.23, 0.1, 0.0, Y0 - 0.77, 0.0, -0.1), wkt=utm())]
    ref = reference(tmp_path / "ref.tif", 0.035, 0.04)
    rc = main(["superresolve-batch", *srcs, "--out-dir", str(tmp_path / "sr"), "--align-to", ref,
               "--model", str(tiny_model_file), "--quiet"])
    assert rc == 0, capsys.readouterr()
    for name in ("a.tif", "b.tif"):
        gt = gdal.Open(str(tmp_path / "sr" / name)).GetGeoTransform()
        assert (gt[1], gt[5]) == (0.035, -0.04)
        assert abs((gt[0] - 404200.013) / 0.035 - round((gt[0] - 404200.013) / 0.035)) < 1e-6


@pytest.fixture(scope="module")
def crop(data_dir):
    """A real aerial picture, [3, 48, 56] in [0, 1]."""
    rgb = np.asarray(Image.open(data_dir / "SOAP_031.png").convert("RGB"), np.float32) / 255
    return rgb[:48, :56].transpose(2, 0, 1).copy()


def test_the_aligned_output_reproduces_the_input_along_its_grid(tmp_path, crop, tiny_model_file):
    src = make(tmp_path / "in.tif", 56, 48, wkt=utm(), data=np.round(crop * 255))
    ref = reference(tmp_path / "ref.tif", 0.03, 0.035)
    superresolve_raster(src, str(tmp_path / "c.tif"), align_to=ref, model=str(tiny_model_file))
    superresolve_raster(src, str(tmp_path / "r.tif"), align_to=ref, model=str(tiny_model_file), raw=True)
    superresolve_raster(src, str(tmp_path / "n.tif"), align_to=ref, model=str(tiny_model_file), guard=False)
    lr = gdal.Open(src).ReadAsArray() / 255.0
    grid = align_to(ref, 56, 48, (X0, 0.1, 0.0, Y0, 0.0, -0.1), utm()).grid
    assert grid.aligned and grid.x.shift < 0 and grid.y.shift < 0
    c, r, n = (gdal.Open(str(tmp_path / f)).ReadAsArray() / 255.0 for f in ("c.tif", "r.tif", "n.tif"))
    assert c.shape == n.shape == (3, *grid.out_size)
    # the correction alone (no guard), measured: 61 dB along the output's grid, 40 dB as if it covered
    # exactly the input; raw 35 dB; the default (the guard has the last word) 48 dB along its grid
    assert psnr_to_input(n, lr, grid=grid) > psnr_to_input(n, lr) + 15
    assert psnr_to_input(c, lr, grid=grid) >= 45 and psnr_to_input(n, lr, grid=grid) >= 55
    assert psnr_to_input(r, lr, grid=grid) < 40


# -- tiles against the whole image ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from e2diffsr_core.api import build_model

    return build_model("tiny", seed=0)


def offset_grid(n_lr, step, shift) -> AxisMap:
    return AxisMap(n_lr, math.ceil((n_lr - shift) / step - 1e-9), step, shift)


def whole_pass(model, image, grid, seed):
    """model.sample on the whole image, sampling along ``grid``, with the engine's noise field."""
    from e2diffsr_core.model import Geometry

    out = grid.out_size
    win = NoiseField(seed, model.cfg.timesteps, model.cfg.embed_dim).window(0, out[0] // 8, 0, out[1] // 8)
    noises = [torch.from_numpy(n)[None] for n in win]
    with torch.no_grad():
        lr = (torch.from_numpy(image)[None] - 0.5) / 0.5
        sr = model.sample(lr, Geometry.whole(image.shape[1:], out, grid), noises=noises)
    return (sr.clamp(-1, 1) * 0.5 + 0.5)[0].numpy()


def test_tiles_on_an_offset_grid_give_the_whole_image_pass(model, crop):
    from test_engine import psnr, seam_score

    grid = GridMap(offset_grid(48, 0.3, -0.17), offset_grid(56, 0.35, -0.08))
    whole = whole_pass(model, crop, grid, seed=3)
    raw = dict(seed=3, precision="fp32", grid=grid, consistency=False, temperature=1)
    tiled, _, r = superresolve_array(model, crop, 3, tile=64, **raw)
    assert r.tiles > 4 and tiled.shape == whole.shape == (3, 161, 161)
    assert psnr(whole, tiled) > 90  # measured: 136 dB (float rounding only)
    assert seam_score(tiled, r.row_starts, r.col_starts) < 1.1  # measured: 0.83
    big_c, _, _ = superresolve_array(model, crop, 3, tile=2048, seed=3, precision="fp32", grid=grid)
    tiled_c, _, rc = superresolve_array(model, crop, 3, tile=64, seed=3, precision="fp32", grid=grid)
    assert psnr(big_c, tiled_c) > 80 and seam_score(tiled_c, rc.row_starts, rc.col_starts) < 1.1  # 136 dB, 0.85


# -- what cannot be aligned ------------------------------------------------------------------------------------
def _bad_reference(tmp_path, case):
    folder = tmp_path / "refs"
    folder.mkdir()
    if case == "coarser":
        return reference(folder / "r.tif", 0.2, 0.2)
    if case == "same":
        return reference(folder / "r.tif", 0.1, 0.05)
    if case == "too fine":
        return reference(folder / "r.tif", 0.005, 0.005)
    if case == "other crs":
        return reference(folder / "r.tif", 0.05, 0.05, wkt=utm(12))
    if case == "no crs":
        return reference(folder / "r.tif", 0.05, 0.05, wkt=None)
    if case == "no geotransform":
        return reference(folder / "r.tif", None, None)
    if case == "rotated":
        return reference(folder / "r.tif", 0.05, 0.05, rotated=True)
    (folder / "notes.txt").write_text("not a raster")
    return str(folder / "notes.txt")


@pytest.mark.parametrize("case, expect", [
    ("coarser", "down-sampling is GDAL's job"),
    ("same", "not finer"),
    ("too fine", "between 1x and 16x"),
    ("other crs", "another CRS"),
    ("no crs", "has no CRS"),
    ("no geotransform", "no geotransform"),
    ("rotated", "rotated"),
    ("unreadable", "cannot open the reference raster"),
])
def test_references_that_cannot_be_followed_are_one_line_errors(tmp_path, capsys, tiny_model_file, case, expect):
    src = make(tmp_path / "in.tif", 40, 36, wkt=utm())
    ref = _bad_reference(tmp_path, case)
    rc = run_cli(src, tmp_path / "out.tif", ref, tiny_model_file)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert rc != 0 and len(lines) == 1 and expect in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "refs"]  # no output, no run folder


@pytest.mark.parametrize("gt, expect", [(None, "the input has no geotransform"),
                                        ((X0, 0.1, 0.02, Y0, 0.0, -0.1), "the input has a rotated")])
def test_inputs_without_a_north_up_grid_are_refused(tmp_path, capsys, tiny_model_file, gt, expect):
    src = make(tmp_path / "in.tif", 40, 36, gt=gt, wkt=utm())
    ref = reference(tmp_path / "ref.tif", 0.05, 0.05)
    rc = run_cli(src, tmp_path / "out.tif", ref, tiny_model_file)
    err = capsys.readouterr().err
    assert rc != 0 and expect in err and "--scale" in err
    assert not (tmp_path / "out.tif").exists()


def test_scale_resolution_and_align_to_are_alternatives(tmp_path, capsys, tiny_model_file):
    with pytest.raises(SystemExit) as e:
        main(["superresolve", "in.tif", "out.tif", "--scale", "2", "--align-to", "ref.tif"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    src = make(tmp_path / "in.tif", 40, 36, wkt=utm())
    with pytest.raises(E2DiffSRError, match="exactly one of .*--align-to"):
        superresolve_raster(src, str(tmp_path / "o.tif"), resolution=(0.05, 0.05), align_to=src,
                            model=str(tiny_model_file))
    assert not (tmp_path / "o.tif").exists()


def test_help_says_what_align_to_does(capsys):
    with pytest.raises(SystemExit):
        main(["superresolve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--align-to RASTER" in text and "pixel size and grid origin" in text
