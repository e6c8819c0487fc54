"""A processing area (--extent, --mask): the whole layer's output grid, only the area's tiles, clear refusals."""

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from raster_support import GT, make_raster

from e2diffsr_core import raster as raster_mod
from e2diffsr_core.__main__ import main
from e2diffsr_core.area_run import MARGIN_OUT
from e2diffsr_core.raster import superresolve_raster

gdal.UseExceptions()
SCALE = 2.0
H, W = 56, 160  # input pixels; the output is 112 x 320, tiles of 64


def pattern(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(110 + 60 * np.sin(xx / 6.0 + k) + 45 * np.cos(yy / 4.0 + 2 * k) + rng.normal(0, 12, (h, w)))
                     .clip(0, 255) for k in range(3)]).astype(np.uint8)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_file):
    """The input and its whole-layer output (the reference every area run is compared with)."""
    d = tmp_path_factory.mktemp("area")
    src = make_raster(d / "in.tif", pattern(H, W))
    out = str(d / "whole.tif")
    superresolve_raster(src, out, SCALE, model=str(tiny_model_file), tile=64)
    return src, out


def ground(px, py):
    """Map coordinates of output pixel edge (px, py) of the whole layer's output (pixels of 1 m)."""
    return GT[0] + px * GT[1] / SCALE, GT[3] + py * GT[5] / SCALE


def window_of(whole_path, part_path):
    """(part's pixels, the whole output's pixels under it, its offset); the part must lie on the whole's grid."""
    w, p = gdal.Open(whole_path), gdal.Open(part_path)
    gw, gp = w.GetGeoTransform(), p.GetGeoTransform()
    assert gp[1] == gw[1] and gp[5] == gw[5]
    ox, oy = (gp[0] - gw[0]) / gw[1], (gp[3] - gw[3]) / gw[5]
    assert ox == round(ox) and oy == round(oy), (ox, oy)  # on the grid exactly
    ox, oy = int(round(ox)), int(round(oy))
    a = p.ReadAsArray().astype(np.float64)
    b = w.ReadAsArray(ox, oy, p.RasterXSize, p.RasterYSize).astype(np.float64)
    return a, b, (ox, oy)


def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def test_an_extent_lies_on_the_whole_layer_grid_and_agrees_with_it(whole, tmp_path, tiny_model_file):
    src, ref = whole
    # edges between output pixels: GDAL -te rounds outwards to whole output pixels of the whole layer's grid
    x0, ymin = ground(140.3, 80.6)
    x1, ymax = ground(200.2, 20.1)
    out = str(tmp_path / "ext.tif")
    logs = []
    info = superresolve_raster(src, out, SCALE, model=str(tiny_model_file), tile=64, extent=(x0, ymin, x1, ymax),
                               log=logs.append)
    a, b, (ox, oy) = window_of(ref, out)
    assert (ox, oy, a.shape[2], a.shape[1]) == (140, 20, 61, 61)
    assert (info["width"], info["height"]) == (61, 61)
    # only the input the area needs was read: the area plus the margin, not the whole width
    line = next(m for m in logs if m.startswith("area:"))
    lo, hi = (int(v) for v in line.split("input pixels ")[1].split(" x ")[0].split(".."))
    assert lo > 0 and hi < W and hi - lo < W // 2 + 2 * MARGIN_OUT // 2
    assert psnr(a, b) >= 40, psnr(a, b)


def test_an_extent_of_the_whole_raster_gives_the_whole_run(whole, tmp_path, tiny_model_file):
    src, ref = whole
    x0, ymin = ground(0, 2 * H)
    x1, ymax = ground(2 * W, 0)
    out = str(tmp_path / "all.tif")
    superresolve_raster(src, out, SCALE, model=str(tiny_model_file), tile=64,
                        extent=(x0 - 5, ymin - 5, x1 + 5, ymax + 5))
    a, b, offset = window_of(ref, out)
    assert offset == (0, 0) and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def polygon_file(path, rings, epsg=32633, layer="fields", fields=None):
    """A GeoPackage of polygons (``rings``: lists of (x, y)); ``fields`` one dict of attributes per polygon."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    lyr = ds.CreateLayer(layer, srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("kind", ogr.OFTString))
    for i, ring in enumerate(rings):
        f = ogr.Feature(lyr.GetLayerDefn())
        wkt = "POLYGON((" + ",".join(f"{x} {y}" for x, y in list(ring) + [ring[0]]) + "))"
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        f.SetField("kind", (fields or [{}] * len(rings))[i].get("kind", "field"))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def test_a_mask_computes_only_tiles_that_touch_a_polygon(whole, tmp_path, tiny_model_file):
    src, ref = whole
    # an L over output pixels x 10..120, y 8..100: of the 2 x 2 tiles of 64 its box meets, the upper right
    # one (x 64..120, y 8..64) holds no part of it
    ell = [ground(x, y) for x, y in ((10, 8), (40, 8), (40, 70), (120, 70), (120, 100), (10, 100))]
    mask = polygon_file(tmp_path / "m.gpkg", [ell, [ground(300, 0), ground(310, 0), ground(310, 5)]],
                        fields=[{"kind": "field"}, {"kind": "road"}])
    out = str(tmp_path / "masked.tif")
    info = superresolve_raster(src, out, SCALE, model=str(tiny_model_file), tile=64, mask=mask,
                               mask_where="kind = 'field'")
    a, b, (ox, oy) = window_of(ref, out)
    assert (ox, oy) == (10, 8) and a.shape[1:] == (92, 110)
    assert (info["tiles"], info["tiles_skipped"]) == (3, 1)
    ds = gdal.Open(out)
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    assert nodata is not None  # the input has none: the mask gives the output one
    inside = _rasterize(mask, ds, "kind = 'field'")
    assert (a[:, ~inside] == nodata).all()
    assert not (a[:, inside] == nodata).any()
    assert psnr(a[:, inside], b[:, inside]) >= 40


def test_polygons_far_apart_are_computed_each_over_its_own_box(whole, tmp_path, tiny_model_file):
    src, ref = whole
    rings = [[ground(x, y) for x, y in box] for box in (
        ((8, 10), (40, 10), (40, 40), (8, 40)),            # a field near the left edge
        ((270, 70), (310, 70), (310, 100), (270, 100)))]   # another near the right one
    mask = polygon_file(tmp_path / "two.gpkg", rings)
    out, logs = str(tmp_path / "two.tif"), []
    superresolve_raster(src, out, SCALE, model=str(tiny_model_file), tile=64, mask=mask, log=logs.append)
    assert any("2 groups far apart" in m for m in logs), logs
    spans = [m.split("input pixels ")[1].split(" x ")[0] for m in logs if "computed from input pixels" in m]
    widths = [int(b) - int(a) for a, b in (s.split("..") for s in spans)]
    assert len(widths) == 2 and sum(widths) < 0.75 * W, spans  # not the whole width between them
    a, b, (ox, oy) = window_of(ref, out)
    assert (ox, oy) == (8, 10) and a.shape[1:] == (90, 302)  # the output is the box around both
    ds = gdal.Open(out)
    inside = _rasterize(mask, ds, None)
    assert (a[:, ~inside] == ds.GetRasterBand(1).GetNoDataValue()).all()
    assert psnr(a[:, inside], b[:, inside]) >= 40, psnr(a[:, inside], b[:, inside])


def _rasterize(mask, like, where):
    mem = gdal.GetDriverByName("MEM").Create("", like.RasterXSize, like.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(like.GetGeoTransform())
    mem.SetProjection(like.GetProjection())
    gdal.Rasterize(mem, mask, burnValues=[1], where=where)
    return mem.ReadAsArray() > 0


# -- refusals: one line, before the model is loaded, nothing written --------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the area was checked")

    monkeypatch.setattr(raster_mod, "open_model", refuse)


def _points(path):
    ds = ogr.GetDriverByName("GeoJSON").CreateDataSource(str(path))
    lyr = ds.CreateLayer("pts", None, ogr.wkbPoint)
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT({GT[0] + 10} {GT[3] - 10})"))
    lyr.CreateFeature(f)
    ds = None
    return str(path)


@pytest.mark.parametrize("case, expect", [
    ("outside", "lies outside the raster"),
    ("empty", "is empty"),
    ("no-crs", "has no CRS"),
    ("bad-crs", "not a CRS GDAL knows"),
    ("points", "holds no polygons"),
    ("far", "polygons (0,0,10,10) lies outside the raster"),
    ("layer", "has no layer 'nope'"),
    ("where", "holds no polygons matching"),
    ("layer-alone", "give --mask too"),
])
def test_bad_areas_are_refused_in_one_line_before_any_work(tmp_path, capsys, tiny_model_file, no_model, case,
                                                           expect):
    src = make_raster(tmp_path / "in.tif", pattern(40, 40), epsg=None if case == "no-crs" else 32633)
    near = polygon_file(tmp_path / "near.gpkg", [[ground(2, 2), ground(30, 2), ground(30, 30)]])
    args = {
        "outside": ["--extent", f"{GT[0] - 500},{GT[3] - 50},{GT[0] - 400},{GT[3]}"],
        "empty": ["--extent", f"{GT[0] + 40},{GT[3] - 10},{GT[0] + 10},{GT[3]}"],
        "no-crs": ["--extent", "10,50,11,51", "--extent-crs", "EPSG:4326"],
        "bad-crs": ["--extent", "10,50,11,51", "--extent-crs", "EPSG:999999"],
        "points": ["--mask", _points(tmp_path / "p.geojson")],
        "far": ["--mask", polygon_file(tmp_path / "far.gpkg", [[(0, 0), (10, 0), (10, 10)]])],
        "layer": ["--mask", near, "--mask-layer", "nope"],
        "where": ["--mask", near, "--mask-where", "kind = 'lake'"],
        "layer-alone": ["--mask-layer", "fields"],
    }[case]
    out = tmp_path / "out.tif"
    rc = main(["superresolve", src, str(out), "--scale", "2", "--model", str(tiny_model_file), "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_extent_in_another_crs_is_transformed(tmp_path, tiny_model_file):
    src = make_raster(tmp_path / "in.tif", pattern(40, 40))
    srs, wgs = osr.SpatialReference(), osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(srs, wgs)
    lon0, lat0, _ = ct.TransformPoint(GT[0] + 20.5, GT[3] - 60.5)
    lon1, lat1, _ = ct.TransformPoint(GT[0] + 50.5, GT[3] - 20.5)
    out = tmp_path / "out.tif"
    rc = main(["superresolve", src, str(out), "--scale", "2", "--model", str(tiny_model_file), "--quiet",
               "--extent", f"{lon0},{lat0},{lon1},{lat1}", "--extent-crs", "EPSG:4326"])
    assert rc == 0
    ds = gdal.Open(str(out))
    gt = ds.GetGeoTransform()
    # the box around the transformed extent, on the whole layer's grid of 1 m pixels
    assert abs(gt[0] - (GT[0] + 20)) <= 1 and abs(gt[3] - (GT[3] - 20)) <= 1
    assert gt[0] == round(gt[0]) and gt[3] == round(gt[3])
    assert 29 <= ds.RasterXSize <= 33 and 39 <= ds.RasterYSize <= 43


def test_batch_takes_the_area_options(tmp_path, capsys, tiny_model_file):
    src = make_raster(tmp_path / "a.tif", pattern(40, 40))
    x0, ymin = ground(10, 50)
    x1, ymax = ground(40, 20)
    rc = main(["superresolve-batch", src, "--out-dir", str(tmp_path / "sr"), "--scale", "2", "--model",
               str(tiny_model_file), "--quiet", "--extent", f"{x0},{ymin},{x1},{ymax}"])
    assert rc == 0, capsys.readouterr().err
    ds = gdal.Open(str(tmp_path / "sr" / "a.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (30, 30)


def test_split_with_an_extent_gives_the_pixels_of_a_single_run(tmp_path, capsys, tiny_model_file):
    src = make_raster(tmp_path / "a.tif", pattern(40, 48))
    x0, ymin = ground(6, 70)
    x1, ymax = ground(60, 4)
    extent = ["--extent", f"{x0},{ymin},{x1},{ymax}", "--scale", "2", "--model", str(tiny_model_file), "--tile",
              "64", "--quiet"]
    assert main(["superresolve", src, str(tmp_path / "one.tif"), *extent]) == 0
    rc = main(["superresolve-batch", src, "--out-dir", str(tmp_path / "sr"), "--split", "--cog", *extent])
    assert rc == 0, capsys.readouterr().err
    one, split = gdal.Open(str(tmp_path / "one.tif")), gdal.Open(str(tmp_path / "sr" / "a.tif"))
    assert split.GetGeoTransform() == one.GetGeoTransform() == (GT[0] + 6, 1.0, 0.0, GT[3] - 4, 0.0, -1.0)
    np.testing.assert_array_equal(split.ReadAsArray(), one.ReadAsArray())


@pytest.mark.parametrize("how", [["--align-to", "REF"], ["--resolution", "0.8"]])
def test_an_extent_keeps_the_grid_of_align_to_and_resolution(tmp_path, tiny_model_file, how):
    src = make_raster(tmp_path / "a.tif", pattern(40, 40))
    ref = make_raster(tmp_path / "ref.tif", np.zeros((4, 4)), gt=(GT[0] - 0.3, 0.7, 0, GT[3] + 0.2, 0, -0.7))
    how = [ref if v == "REF" else v for v in how]
    base = [src, "--model", str(tiny_model_file), "--quiet", *how]
    assert main(["superresolve", base[0], str(tmp_path / "whole.tif"), *base[1:]]) == 0
    whole = gdal.Open(str(tmp_path / "whole.tif"))
    gw = whole.GetGeoTransform()
    xmin, ymax = gw[0] + 10.2 * gw[1], gw[3] + 5.5 * gw[5]
    extent = f"{xmin},{ymax - 20},{xmin + 18},{ymax}"
    assert main(["superresolve", base[0], str(tmp_path / "part.tif"), *base[1:], "--extent", extent]) == 0
    a, b, (ox, oy) = window_of(str(tmp_path / "whole.tif"), str(tmp_path / "part.tif"))
    assert (ox, oy) == (10, 5)
    assert psnr(a, b) >= 40


def test_a_masked_run_writes_uncertainty_and_consistency_map_on_its_grid(tmp_path, tiny_model_file):
    src = make_raster(tmp_path / "a.tif", pattern(40, 40))
    mask = polygon_file(tmp_path / "m.gpkg", [[ground(8, 8), ground(50, 10), ground(30, 60)]])
    out, unc, cmap = (str(tmp_path / n) for n in ("out.tif", "unc.tif", "map.tif"))
    superresolve_raster(src, out, 2.0, model=str(tiny_model_file), samples=2, uncertainty=unc, mask=mask)
    superresolve_raster(src, str(tmp_path / "o2.tif"), 2.0, model=str(tiny_model_file), consistency_map=cmap,
                        mask=mask)
    ref = gdal.Open(out)
    inside = _rasterize(mask, ref, None)
    for path in (unc, cmap):
        ds = gdal.Open(path)
        assert ds.GetGeoTransform() == ref.GetGeoTransform()
        assert (ds.RasterXSize, ds.RasterYSize) == (ref.RasterXSize, ref.RasterYSize) == (42, 52)
        values = ds.ReadAsArray().reshape(-1, 52, 42)
        nodata = ds.GetRasterBand(1).GetNoDataValue()
        assert (values[:, ~inside] == nodata).all() and (values[:, inside] >= 0).all()


def test_samples_of_an_extent_draw_the_whole_runs_noise(tmp_path, tiny_model_file):
    src = make_raster(tmp_path / "a.tif", pattern(40, 120))
    whole, part = str(tmp_path / "whole.tif"), str(tmp_path / "part.tif")
    common = dict(model=str(tiny_model_file), samples=2, tile=64, raw=True)  # the model's own samples: no border
    superresolve_raster(src, whole, 2.0, **common)
    x0, ymin = ground(150, 80)
    x1, ymax = ground(230, 0)
    superresolve_raster(src, part, 2.0, extent=(x0, ymin, x1, ymax), **common)
    a, b, (ox, oy) = window_of(whole, part)
    assert (ox, oy) == (150, 0)
    assert psnr(a, b) >= 40, psnr(a, b)
