"""`superresolve-batch --split`: one raster split across torchrun ranks in bands of tile rows, joined as a VRT
(or one COG), with the pixels of a one-process run."""

import shutil

import numpy as np
import pytest
import torch
from osgeo import gdal
from test_batch import SAMPLE, pixels, torchrun

from e2diffsr_core.__main__ import main

gdal.UseExceptions()
# 40 x 72 px at x2 with 64 px tiles: 80 x 144 px output, tile rows 0, 64, 128; two ranks take rows 0-64, 64-144
TILE = "64"


def make_input(path, dtype=gdal.GDT_Float32, **extra):
    gdal.Translate(str(path), str(SAMPLE), srcWin=[150, 200, 40, 72], outputType=dtype, **extra)
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.GetRasterBand(1).SetDescription("red")
    ds = None
    return path


def options(model, seed=7):
    return ["--scale", "2", "--seed", str(seed), "--model", str(model), "--tile", TILE]


def one_process(src, out, model, seed=7):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums depend on the thread count: the ranks' one
    try:
        assert main(["superresolve", str(src), str(out), *options(model, seed), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)


def seam_score(img: np.ndarray, boundary: int, period: int = 2, reach: int = 4) -> float:
    """The engine tests' seam score for one boundary row: mean |difference| across it over the same across
    the rows at the same place on the input's pixel grid nearby (every ``period`` rows at x2: rows that
    cross an input pixel's edge differ more than rows inside one)."""
    d_rows = np.abs(np.diff(img.astype(np.float64), axis=1)).mean(axis=(0, 2))
    near = [d_rows[boundary - 1 + period * k] for k in range(-reach, reach + 1) if k]
    return float(d_rows[boundary - 1] / np.mean(near))


def test_two_ranks_give_the_pixels_of_one_process_and_a_restart_redoes_only_missing_parts(
        tmp_path, tiny_model_file):
    src = make_input(tmp_path / "big.tif")
    one_process(src, tmp_path / "single.tif", tiny_model_file)
    args = [src, "--out-dir", "sr", *options(tiny_model_file), "--split", "--threads", "1"]

    proc = torchrun(args, cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "rows 0-64: done" in log and "rows 64-144: done" in log and "[rank 1]" in log, log
    assert "1 done, 0 skipped, 0 failed" in log, log
    parts = tmp_path / "sr" / "big_parts"
    assert sorted(p.name for p in parts.glob("*.tif")) == ["big.rows-0-64.tif", "big.rows-64-144.tif"]
    assert gdal.Open(str(parts / "big.rows-64-144.tif")).RasterYSize == 80

    # the folder can be moved: the VRT names its parts relative to itself
    shutil.move(tmp_path / "sr", tmp_path / "moved")
    out, ref = gdal.Open(str(tmp_path / "moved" / "big.vrt")), gdal.Open(str(tmp_path / "single.tif"))
    assert (out.RasterXSize, out.RasterYSize) == (ref.RasterXSize, ref.RasterYSize) == (80, 144)
    assert out.GetGeoTransform() == ref.GetGeoTransform()
    assert out.GetSpatialRef().IsSame(ref.GetSpatialRef())
    assert out.GetRasterBand(1).GetDescription() == "red"
    split, single = out.ReadAsArray(), ref.ReadAsArray()
    assert split.dtype == np.float32
    np.testing.assert_array_equal(split, single)  # not merely close: the parts are exact
    assert seam_score(split, 64) < 1.1
    out = ref = None

    # a restart after rank 1 died: rank 0's part is kept as it is, rank 1's is made, the VRT written last
    shutil.move(tmp_path / "moved", tmp_path / "sr")
    (parts / "big.rows-64-144.tif").unlink()
    (tmp_path / "sr" / "big.vrt").unlink()
    kept = (parts / "big.rows-0-64.tif").stat().st_mtime_ns
    proc = torchrun(args, cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "rows 0-64: skipped" in log and "rows 64-144: done" in log, log
    assert (parts / "big.rows-0-64.tif").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(pixels(tmp_path / "sr" / "big.vrt"), single)


def test_a_failing_rank_fails_the_command_and_leaves_no_output(tmp_path, tiny_model_file):
    src = make_input(tmp_path / "big.tif")
    blocked = tmp_path / "sr" / "big_parts" / "big.rows-64-144.tif"
    blocked.mkdir(parents=True)  # rank 1 cannot write its part there
    proc = torchrun([src, "--out-dir", "sr", *options(tiny_model_file), "--split", "--threads", "1"], cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, log
    assert "rows 0-64: done" in log, log
    assert "FAILED: rank 1 (rows 64-144): output" in log and "is a folder" in log, log
    assert "0 done, 0 skipped, 1 failed" in log, log
    assert not (tmp_path / "sr" / "big.vrt").exists()
    assert not list((tmp_path / "sr").glob(".*partial*"))


def test_one_process_cog_output_and_options_that_change_redo_the_parts(tmp_path, tiny_model_file, capsys):
    src = make_input(tmp_path / "big.tif", gdal.GDT_Byte)
    base = ["superresolve-batch", str(src), "--out-dir", str(tmp_path / "sr"), "--split", "--cog"]
    args = base + options(tiny_model_file)
    assert main(args) == 0, capsys.readouterr()
    out = tmp_path / "sr" / "big.tif"
    ds = gdal.Open(str(out))
    assert ds.GetDriver().ShortName == "GTiff" and "COG" in (ds.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT", ""))
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 144)
    ds = None
    assert not (tmp_path / "sr" / "big_parts").exists()  # the parts went into the COG
    assert main(args) == 0
    assert "1 skipped" in capsys.readouterr().out
    # another sampling is another result: refused without --overwrite, redone with it
    assert main(base + options(tiny_model_file, seed=8) + ["--temperature", "1"]) == 1
    assert "exists; choose another name or allow overwriting (--overwrite)" in capsys.readouterr().out
    before = pixels(out)
    assert main(base + options(tiny_model_file, seed=8) + ["--temperature", "1", "--overwrite"]) == 0
    assert not np.array_equal(pixels(out), before)


def test_side_files_of_an_earlier_vrt_never_attach_to_the_new_one(tmp_path, tiny_model_file, capsys):
    src = make_input(tmp_path / "big.tif", gdal.GDT_Byte)
    sr = tmp_path / "sr"
    sr.mkdir()
    # an earlier mosaic's overviews and PAM file (a CRS of its own) under the name the new VRT will have
    gdal.Translate(str(sr / "big.vrt.ovr"), str(src), format="GTiff", width=20, height=36)
    (sr / "big.vrt.aux.xml").write_text('<PAMDataset><SRS dataAxisToSRSAxisMapping="2,1">EPSG:4326</SRS>'
                                        "</PAMDataset>")
    args = ["superresolve-batch", str(src), "--out-dir", str(sr), "--split", *options(tiny_model_file)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "big.vrt.aux.xml (left from an earlier file) lies beside it" in out or "big.vrt.ovr (left" in out, out
    assert not (sr / "big.vrt").exists() and (sr / "big.vrt.ovr").exists()
    assert main(args + ["--overwrite"]) == 0, capsys.readouterr()
    assert sorted(p.name for p in sr.iterdir() if not p.name.startswith(".")) == ["big.vrt", "big_parts"]
    ds = gdal.Open(str(sr / "big.vrt"))
    assert ds.GetRasterBand(1).GetOverviewCount() == 0
    assert ds.GetSpatialRef().GetAuthorityCode(None) == gdal.Open(str(src)).GetSpatialRef().GetAuthorityCode(None)
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 144)


@pytest.mark.parametrize("how, message", [
    ("rotated", "has no north-up geotransform (rotated, GCPs or none), which a VRT of parts needs; run it "
                "without --split"),
    ("map", "--consistency-map is not available with --split yet"),
])
def test_what_split_cannot_do_is_refused_before_any_work(tmp_path, tiny_model_file, capsys, how, message):
    src = make_input(tmp_path / "big.tif")
    extra = []
    if how == "rotated":
        ds = gdal.Open(str(src), gdal.GA_Update)
        ds.SetGeoTransform((0.0, 1.0, 0.2, 0.0, 0.2, -1.0))
        ds = None
    else:
        extra = ["--consistency-map", str(tmp_path / "map.tif")]
    rc = main(["superresolve-batch", str(src), "--out-dir", str(tmp_path / "sr"), *options(tiny_model_file),
               "--split", *extra])
    out = capsys.readouterr()
    assert rc != 0
    assert message in out.out + out.err
    assert not (tmp_path / "sr" / "big.vrt").exists()


def test_bands_are_whole_tile_rows_as_equal_as_possible():
    from e2diffsr_core.scale_out.split import part_rows

    assert part_rows(144, 64, 2) == [(0, 64), (64, 144)]
    assert part_rows(1000, 64, 3) == [(0, 320), (320, 640), (640, 1000)]
    assert part_rows(100, 64, 4) == [(0, 64), (64, 100)]  # two tile rows: two ranks wait
    assert part_rows(50, 64, 2) == [(0, 50)]
    for height, tile, ranks in [(4096, 448, 8), (1601, 64, 5), (513, 96, 3)]:
        bands = part_rows(height, tile, ranks)
        assert len(bands) == ranks and bands[0][0] == 0 and bands[-1][1] == height
        assert all(a[1] == b[0] and b[0] % tile == 0 for a, b in zip(bands, bands[1:]))
        heights = [b - a for a, b in bands]
        assert max(heights) - min(heights) <= tile + height % tile
