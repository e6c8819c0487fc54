"""Raster I/O as a user sees it: sizes, georeferencing, units, nodata, metadata, errors, no partial files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from raster_support import make_raster

from e2diffsr_core import raster_io as rio
from e2diffsr_core.errors import E2DiffSRError

SAMPLE = Path(rio.__file__).parents[1] / "data" / "sample.tif"


def read_back(path):
    ds = gdal.Open(str(path))
    return ds, ds.ReadAsArray()


def round_trip(src, dst, **writer_kw):
    """Read the whole raster, clip it to the model's [0, 1] as the model's output is, and write it back at the
    same size: the writer must restore what lay outside the band ranges."""
    with rio.RasterReader(src) as reader:
        data, valid = reader.read(0, 0, reader.width, reader.height)
        writer = rio.RasterWriter(dst, reader, reader.width, reader.height, **writer_kw)
        writer.write(0, 0, np.clip(data, 0, 1), valid)
        writer.commit()
    return read_back(dst)


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def test_size_for_gdal_truncates_like_the_model():
    assert rio.size_for_gdal(24, 20, 3.4) == (81, 68)
    assert rio.size_for_gdal(400, 400, 2) == (800, 800)
    assert rio.size_for_gdal(10, 7, 1.5) == (15, 10)


@pytest.mark.parametrize("scale", [0, -2, float("nan"), 0.01])
def test_size_for_gdal_rejects_empty_outputs(scale):
    with pytest.raises(E2DiffSRError):
        rio.size_for_gdal(24, 20, scale)


def test_scaled_geotransform_keeps_origin_and_footprint_including_rotation():
    gt = (100.0, 2.0, 0.5, 200.0, 0.3, -2.0)
    out = rio.scaled_geotransform(gt, 24, 20, 81, 68)
    assert out[0] == 100.0 and out[3] == 200.0
    assert out[1] == pytest.approx(2.0 * 24 / 81)
    assert out[4] == pytest.approx(0.3 * 24 / 81)
    assert out[2] == pytest.approx(0.5 * 20 / 68)
    assert out[5] == pytest.approx(-2.0 * 20 / 68)

    def corner(g, px, ln):
        return (g[0] + px * g[1] + ln * g[2], g[3] + px * g[4] + ln * g[5])

    assert corner(out, 81, 68) == pytest.approx(corner(gt, 24, 20))


# ----------------------------------------------------------------------------------------------
# Values, units, nodata, metadata
# ----------------------------------------------------------------------------------------------


def test_uint16_round_trip_keeps_units(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 10001, size=(3, 40, 50), dtype=np.uint16)
    arr[0, 0, 0] = 10000
    src = make_raster(tmp_path / "in.tif", arr, gdal.GDT_UInt16)
    with rio.RasterReader(src) as reader:
        for r in reader.ranges:
            assert 0 <= r.lo < r.hi <= 10000
    ds, out = round_trip(src, tmp_path / "out.tif")
    assert ds.GetRasterBand(1).DataType == gdal.GDT_UInt16
    assert np.abs(out.astype(np.int64) - arr).max() <= 1
    assert out.max() >= 9999


def test_byte_output_is_clipped_to_0_255(tmp_path):
    arr = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16), (3, 1, 1))  # the whole 0..255 in use
    src = make_raster(tmp_path / "in.tif", arr)
    with rio.RasterReader(src) as reader:
        assert [(r.lo, r.hi) for r in reader.ranges] == [(0.0, 255.0)] * 3
        data = np.full((3, 16, 16), 0.5, dtype=np.float32)
        data[:, :8] = -0.4
        data[:, 8:] = 1.6
        w = rio.RasterWriter(str(tmp_path / "out.tif"), reader, 16, 16)
        w.write(0, 0, data)
        w.commit()
    ds, out = read_back(tmp_path / "out.tif")
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 255).all()


def test_float32_values_preserved(tmp_path):
    rng = np.random.default_rng(1)
    arr = (rng.random((1, 30, 30)) * 2000 - 500).astype(np.float32)
    arr[0, 0, 0] = 1e6  # outlier beyond the robust range must survive too
    src = make_raster(tmp_path / "in.tif", arr, gdal.GDT_Float32)
    _, out = round_trip(src, tmp_path / "out.tif")
    np.testing.assert_allclose(out, arr[0], rtol=1e-4, atol=1e-3)


def test_nodata_value_and_location_kept(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.integers(100, 5000, size=(3, 32, 32), dtype=np.uint16)
    arr[:, 10:20, 5:15] = 0
    arr[1, 0, 0] = 0  # nodata in one band only makes the pixel invalid for all
    src = make_raster(tmp_path / "in.tif", arr, gdal.GDT_UInt16, nodata=0)
    with rio.RasterReader(src) as reader:
        assert reader.nodata == [0.0, 0.0, 0.0]
        data, valid = reader.read(0, 0, 32, 32)
        assert not valid[10:20, 5:15].any() and not valid[0, 0] and valid.sum() == 32 * 32 - 101
        # filled holes hold values like their surroundings, not the nodata value
        assert data[:, 10:20, 5:15].min() > (100 - reader.ranges[0].lo) / reader.ranges[0].span - 0.05
    ds, out = round_trip(src, tmp_path / "out.tif")
    assert all(ds.GetRasterBand(i + 1).GetNoDataValue() == 0 for i in range(3))
    assert ((out == 0).all(axis=0) == ~valid).all()
    assert (out[:, valid] > 0).all()


def test_valid_pixel_never_comes_out_as_nodata(tmp_path):
    arr = np.full((1, 8, 8), 50, dtype=np.uint8)
    arr[0, 0, 0] = 0
    src = make_raster(tmp_path / "in.tif", arr, nodata=0)
    with rio.RasterReader(src, ranges=[(0, 255)]) as reader:  # the model's 0 is the value 0
        w = rio.RasterWriter(str(tmp_path / "out.tif"), reader, 8, 8)
        valid = np.ones((8, 8), dtype=bool)
        valid[0, 0] = False
        w.write(0, 0, np.zeros((1, 8, 8), np.float32), valid)  # the model says "black" everywhere
        w.commit()
    _, out = read_back(tmp_path / "out.tif")
    assert out[0, 0] == 0 and (out.ravel()[1:] == 1).all()


def test_crs_descriptions_colour_and_metadata_kept(tmp_path):
    arr = np.arange(4 * 12 * 10, dtype=np.uint16).reshape(4, 12, 10)
    colour = [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_Undefined]
    src = make_raster(
        tmp_path / "in.tif",
        arr,
        gdal.GDT_UInt16,
        descriptions=["red", "green", "blue", "nir"],
        colour=colour,
        metadata={"SENSOR": "test camera", "ACQUIRED": "2021-06-01"},
        band_metadata=[{"WAVELENGTH": str(w), "STATISTICS_MEAN": "1"} for w in (665, 560, 490, 842)],
    )
    with rio.RasterReader(src) as reader:
        ow, oh = rio.size_for_gdal(reader.width, reader.height, 2.5)
        w = rio.RasterWriter(str(tmp_path / "out.tif"), reader, ow, oh)
        assert reader.groups() == [[0, 1, 2], [3, 3, 3]]
        data, valid = reader.read(0, 0, 10, 12)
        up = np.repeat(np.repeat(data, 3, axis=1), 3, axis=2)[:, :oh, :ow]
        w.write(0, 0, up)
        w.commit()
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif"]  # no .aux.xml side files
    src_ds, out_ds = gdal.Open(src), gdal.Open(str(tmp_path / "out.tif"))
    assert (out_ds.RasterXSize, out_ds.RasterYSize) == (25, 30)
    assert out_ds.GetSpatialRef().IsSame(src_ds.GetSpatialRef())
    assert out_ds.GetProjection() == src_ds.GetProjection()
    assert out_ds.GetGeoTransform() == pytest.approx((500000.0, 0.8, 0.0, 4100000.0, 0.0, -0.8))
    assert out_ds.GetMetadata() == src_ds.GetMetadata()
    for i in range(4):
        b = out_ds.GetRasterBand(i + 1)
        assert b.GetDescription() == ["red", "green", "blue", "nir"][i]
        assert b.GetColorInterpretation() == colour[i] or (i == 3 and b.GetColorInterpretation() == gdal.GCI_GrayIndex)
        assert b.GetMetadataItem("WAVELENGTH") == str((665, 560, 490, 842)[i])
        assert b.GetMetadataItem("STATISTICS_MEAN") is None  # statistics of the input would be wrong
        assert b.DataType == gdal.GDT_UInt16
    image = out_ds.GetMetadata("IMAGE_STRUCTURE")
    assert image.get("COMPRESSION") == "DEFLATE"
    assert out_ds.GetRasterBand(1).GetBlockSize() == [512, 512]


# ----------------------------------------------------------------------------------------------
# Bands and windows
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, groups",
    [
        (1, [[0, 0, 0]]),
        (2, [[0, 1, 1]]),
        (3, [[0, 1, 2]]),
        (4, [[0, 1, 2], [3, 3, 3]]),
        (5, [[0, 1, 2], [3, 4, 4]]),
        (7, [[0, 1, 2], [3, 4, 5], [6, 6, 6]]),
    ],
)
def test_band_groups(tmp_path, n, groups):
    src = make_raster(tmp_path / "in.tif", np.zeros((n, 4, 4), np.uint8))
    # bands named explicitly: GDAL tags the 4th band of a 4-band Byte GeoTIFF as alpha unless told otherwise
    with rio.RasterReader(src, bands=list(range(1, n + 1))) as reader:
        assert reader.groups() == groups
        outs = [np.stack([np.full((2, 2), 10.0 * g + p) for p in range(3)]) for g in range(len(groups))]
        merged = reader.ungroup(outs)
    assert merged.shape == (n, 2, 2)
    for band in range(n):
        g = next(i for i, grp in enumerate(groups) if band in grp)
        positions = [p for p, b in enumerate(groups[g]) if b == band]
        assert merged[band, 0, 0] == pytest.approx(np.mean([10.0 * g + p for p in positions]))


def test_one_band_grey_is_replicated_and_averaged_back(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(1, 8, 8) * 3
    src = make_raster(tmp_path / "in.tif", arr)
    with rio.RasterReader(src) as reader:
        assert reader.groups() == [[0, 0, 0]]
        data, valid = reader.read(0, 0, 8, 8)
        model_in = data[reader.groups()[0]]
        merged = reader.ungroup([model_in])
        w = rio.RasterWriter(str(tmp_path / "out.tif"), reader, 8, 8)
        w.write(0, 0, merged, valid)
        w.commit()
    _, out = read_back(tmp_path / "out.tif")
    assert (out == arr[0]).all()


def test_selected_bands_in_given_order(tmp_path):
    arr = np.stack([np.full((6, 6), v, np.uint8) for v in (10, 20, 30, 40)])
    src = make_raster(tmp_path / "in.tif", arr, descriptions=["a", "b", "c", "d"])
    with rio.RasterReader(src, bands=[4, 2], ranges=[(0, 255)] * 2) as reader:
        assert reader.bands == [4, 2] and reader.band_count_total == 4
        data, _ = reader.read(0, 0, 6, 6)
        assert data[:, 0, 0] * 255 == pytest.approx([40, 20])
        w = rio.RasterWriter(str(tmp_path / "out.tif"), reader, 6, 6)
        w.write(0, 0, data)
        w.commit()
    ds, out = read_back(tmp_path / "out.tif")
    assert ds.RasterCount == 2 and ds.GetRasterBand(1).GetDescription() == "d"
    assert out[:, 0, 0].tolist() == [40, 20]


def test_window_beyond_the_edge_replicates_border_and_is_invalid(tmp_path):
    arr = np.arange(5 * 7, dtype=np.uint8).reshape(1, 5, 7) * 7
    src = make_raster(tmp_path / "in.tif", arr)
    with rio.RasterReader(src) as reader:
        data, valid = reader.read(-3, -2, 7 + 6, 5 + 4)
        inner = data[0, 2:7, 3:10] * 255
        assert inner == pytest.approx(arr[0], abs=1e-3)
        assert valid[2:7, 3:10].all() and valid.sum() == 35
        assert data[0, 0, 0] * 255 == pytest.approx(arr[0, 0, 0], abs=1e-3)  # top-left corner replicated
        assert data[0, -1, -1] * 255 == pytest.approx(arr[0, -1, -1], abs=1e-3)
        assert data[0, 4, 0] * 255 == pytest.approx(arr[0, 2, 0], abs=1e-3)  # left edge replicated
        # a window entirely outside still returns the nearest edge, all invalid
        data, valid = reader.read(20, 1, 4, 2)
        assert not valid.any() and data[0] * 255 == pytest.approx(np.tile(arr[0, 1:3, -1:], (1, 4)), abs=1e-3)


def test_robust_range_ignores_outliers_and_nodata(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.normal(1000, 50, size=(1, 100, 100)).astype(np.int16)
    arr[0, :3, :3] = 30000  # a few spikes
    arr[0, 50:, :] = -32768  # nodata half
    src = make_raster(tmp_path / "in.tif", arr, gdal.GDT_Int16, nodata=-32768)
    with rio.RasterReader(src) as reader:
        r = reader.ranges[0]
        assert 800 < r.lo < 1000 < r.hi < 1200
    const = make_raster(tmp_path / "c.tif", np.full((1, 10, 10), 7, np.uint16), gdal.GDT_UInt16)
    with rio.RasterReader(const) as reader:
        assert reader.ranges[0].lo < 7 < reader.ranges[0].hi
    with rio.RasterReader(src, ranges=[(0, 2000)]) as reader:
        assert (reader.ranges[0].lo, reader.ranges[0].hi) == (0, 2000)
        data, valid = reader.read(0, 0, 100, 100)
        assert np.isfinite(data).all() and not valid[50:].any()


def test_robust_range_of_a_large_raster_without_overviews(tmp_path):
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp_path / "big.tif"), 2100, 2100, 1, gdal.GDT_UInt16, ["TILED=YES", "COMPRESS=DEFLATE"]
    )
    band = ds.GetRasterBand(1)
    band.Fill(500)
    band.WriteArray(np.arange(1000 * 1000, dtype=np.uint16).reshape(1000, 1000) % 3000, 500, 500)
    band = ds = None
    with rio.RasterReader(str(tmp_path / "big.tif")) as reader:
        r = reader.ranges[0]
        assert 0 <= r.lo <= 500 < r.hi <= 3000


def test_uncertainty_writer_writes_float32_raw(tmp_path):
    src = make_raster(tmp_path / "in.tif", np.zeros((3, 8, 8), np.uint8))
    with rio.RasterReader(src) as reader:
        w = rio.RasterWriter(str(tmp_path / "unc.tif"), reader, 16, 16, dtype=gdal.GDT_Float32, nodata=None)
        w.write_raw(0, 0, np.full((3, 16, 16), 0.125, np.float32))
        w.commit()
    ds, out = read_back(tmp_path / "unc.tif")
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Float32 and (out == 0.125).all()


def test_bundled_sample_is_small_georeferenced_rgb():
    assert SAMPLE.stat().st_size < 1_000_000
    with rio.RasterReader(str(SAMPLE)) as reader:
        assert (reader.width, reader.height, reader.bands) == (400, 400, [1, 2, 3])
        assert reader.dtype == gdal.GDT_Byte and reader.nodata == [None] * 3
        srs = osr.SpatialReference(wkt=reader.projection)
        assert srs.GetAuthorityCode(None) == "32617"
        assert reader.geotransform[1] == pytest.approx(0.1)
    ds = gdal.Open(str(SAMPLE))
    assert [ds.GetRasterBand(i).GetColorInterpretation() for i in (1, 2, 3)] == [
        gdal.GCI_RedBand,
        gdal.GCI_GreenBand,
        gdal.GCI_BlueBand,
    ]


# ----------------------------------------------------------------------------------------------
# Errors a user can fix
# ----------------------------------------------------------------------------------------------


def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for f in fragments:
        assert f in message, message


def test_missing_input(tmp_path):
    with pytest.raises(E2DiffSRError) as e:
        rio.RasterReader(str(tmp_path / "nope.tif"))
    one_line_error(e, "input raster not found", "nope.tif")


def test_not_a_raster(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("this is not a raster\n")
    with pytest.raises(E2DiffSRError) as e:
        rio.RasterReader(str(p))
    one_line_error(e, "cannot open", "notes.tif")


def test_complex_type_rejected(tmp_path):
    src = make_raster(tmp_path / "c.tif", np.zeros((1, 4, 4), np.complex64), gdal.GDT_CFloat32)
    with pytest.raises(E2DiffSRError) as e:
        rio.RasterReader(src)
    one_line_error(e, "unsupported data type CFloat32", "gdal_translate -ot Float32")


def test_band_out_of_range_and_bad_ranges(tmp_path):
    src = make_raster(tmp_path / "in.tif", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(E2DiffSRError) as e:
        rio.RasterReader(src, bands=[1, 5])
    one_line_error(e, "band 5 does not exist", "has 3 bands")
    with pytest.raises(E2DiffSRError):
        rio.RasterReader(src, bands=[0])
    with pytest.raises(E2DiffSRError) as e:
        rio.RasterReader(src, ranges=[(0, 1), (0, 1)])
    one_line_error(e, "2 value ranges given for 3 selected bands")
    with pytest.raises(E2DiffSRError):
        rio.RasterReader(src, bands=[1], ranges=[(5, 5)])


def test_output_path_problems(tmp_path):
    src = make_raster(tmp_path / "in.tif", np.zeros((1, 4, 4), np.uint8))
    with rio.RasterReader(src) as reader:
        with pytest.raises(E2DiffSRError) as e:
            rio.RasterWriter(str(tmp_path / "." / "in.tif"), reader, 8, 8)
        one_line_error(e, "is the input raster")

        existing = tmp_path / "old.tif"
        existing.write_bytes(b"old")
        with pytest.raises(E2DiffSRError) as e:
            rio.RasterWriter(str(existing), reader, 8, 8)
        one_line_error(e, "exists; choose another name or allow overwriting (--overwrite)")
        with pytest.raises(E2DiffSRError) as e:  # --overwrite replaces a GeoTIFF, never any other file
            rio.RasterWriter(str(existing), reader, 8, 8, overwrite=True)
        one_line_error(e, "exists and is not a GeoTIFF")
        assert existing.read_bytes() == b"old"
        old_tif = make_raster(tmp_path / "old_raster.tif", np.zeros((1, 3, 3), np.uint8))
        w = rio.RasterWriter(old_tif, reader, 8, 8, overwrite=True)
        assert gdal.Open(old_tif).RasterXSize == 3  # replaced only on commit
        w.write(0, 0, np.zeros((1, 8, 8), np.float32))
        w.commit()
        assert gdal.Open(old_tif).RasterXSize == 8

        with pytest.raises(E2DiffSRError) as e:
            rio.RasterWriter(str(tmp_path / "missing" / "out.tif"), reader, 8, 8)
        one_line_error(e, "output folder does not exist")

        for bad in (["ZLEVEL9"], ["=3"], ["NO_SUCH_OPTION=1"], ["COMPRESS=MAGIC"], ["ZLEVEL=high"]):
            with pytest.raises(E2DiffSRError) as e:
                rio.RasterWriter(str(tmp_path / "out.tif"), reader, 8, 8, creation_options=bad)
            one_line_error(e, bad[0].split("=")[0] if "=" in bad[0] and bad[0][0] != "=" else bad[0])
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "old.tif", "old_raster.tif"]


def test_output_folder_not_writable(tmp_path):
    src = make_raster(tmp_path / "in.tif", np.zeros((1, 4, 4), np.uint8))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write to read-only folders (root)")
        with rio.RasterReader(src) as reader, pytest.raises(E2DiffSRError) as e:
            rio.RasterWriter(str(locked / "out.tif"), reader, 8, 8)
        one_line_error(e, "not writable")
    finally:
        locked.chmod(0o755)


# ----------------------------------------------------------------------------------------------
# Atomic output
# ----------------------------------------------------------------------------------------------


def test_abort_leaves_nothing_and_commit_makes_exactly_the_target(tmp_path):
    src = make_raster(tmp_path / "in.tif", np.zeros((3, 20, 20), np.uint8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with rio.RasterReader(src, ranges=[(0, 255)] * 3) as reader:
        w = rio.RasterWriter(str(out_dir / "a.tif"), reader, 40, 40)
        # everything unfinished lives in one hidden run folder beside the target
        assert len(os.listdir(out_dir)) == 1 and os.listdir(out_dir)[0].startswith(".e2diffsr-run-")
        w.write(0, 0, np.zeros((3, 20, 20), np.float32))
        w.abort()
        w.abort()
        assert os.listdir(out_dir) == []

        with pytest.raises(KeyError), rio.RasterWriter(str(out_dir / "b.tif"), reader, 40, 40) as w:
            w.write(0, 0, np.zeros((3, 40, 40), np.float32))
            raise KeyError("user cancelled")
        assert os.listdir(out_dir) == []

        w = rio.RasterWriter(str(out_dir / "c.tif"), reader, 40, 40)
        w.write(30, 30, np.ones((3, 20, 20), np.float32))  # partly beyond the output: cropped
        assert not (out_dir / "c.tif").exists()
        w.commit()
    assert os.listdir(out_dir) == ["c.tif"]
    _, out = read_back(out_dir / "c.tif")
    assert (out[:, 30:, 30:] == 255).all() and (out[:, :30, :30] == 0).all()


def test_cog_output(tmp_path):
    with rio.RasterReader(str(SAMPLE)) as reader:
        data, valid = reader.read(100, 100, 64, 64)
        w = rio.RasterWriter(str(tmp_path / "cog.tif"), reader, 128, 128, cog=True, creation_options=["LEVEL=1"])
        w.write(0, 0, np.repeat(np.repeat(data, 2, axis=1), 2, axis=2), None)
        w.commit()
    assert os.listdir(tmp_path) == ["cog.tif"]
    ds = gdal.Open(str(tmp_path / "cog.tif"))
    assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
    assert ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "DEFLATE"
    assert ds.GetRasterBand(3).GetColorInterpretation() == gdal.GCI_BlueBand
    assert ds.GetGeoTransform()[1] == pytest.approx(0.1 * 400 / 128)


def test_disk_full_during_write_leaves_no_file(tmp_path, monkeypatch):
    src = make_raster(tmp_path / "in.tif", np.zeros((3, 16, 16), np.uint8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with rio.RasterReader(src) as reader:
        w = rio.RasterWriter(str(out_dir / "o.tif"), reader, 32, 32)
        w.write(0, 0, np.zeros((3, 16, 16), np.float32))

        def no_space(band, array, x, y):
            raise RuntimeError("No space left on device")

        # gdal.Band.WriteArray itself cannot be patched reliably (CPython keeps serving the cached
        # method of the SWIG class), so the writer's single write call is replaced instead.
        monkeypatch.setattr(rio.writer, "_write_band_array", no_space)
        with pytest.raises(E2DiffSRError) as e:
            w.write(16, 16, np.zeros((3, 16, 16), np.float32))
        one_line_error(e, "could not write", "o.tif", "No space left on device")
    assert os.listdir(out_dir) == []
