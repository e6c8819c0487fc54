"""Nothing lost, nothing overwritten: inputs a careless or hostile user gives, and what must never happen to them.

Every case writes real GDAL files in the test and runs the command line (or the raster API) on them with a tiny
model. Classes: runs that would write nothing, inputs reached through other names, invalid pixels, values and
meaning, races and signals, late or misleading failures.
"""

import fcntl
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from raster_support import make_raster

from e2diffsr_core.__main__ import main
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.raster import superresolve_raster
from e2diffsr_core.raster_io import files

gdal.UseExceptions()
GT = (500000.0, 2.0, 0.0, 4000000.0, 0.0, -2.0)
make = functools.partial(make_raster, gt=GT)   # make(path, array[, dtype], nodata=..., options=[...])


def texture(n=3, h=20, w=24, lo=20, hi=230, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 3.0) + np.cos(yy / 4.0) + 2) / 4
    return np.stack([lo + (hi - lo) * np.clip(base + 0.05 * rng.standard_normal((h, w)), 0, 1) for _ in range(n)])


def cli(args, capsys, model):
    rc = main(["superresolve", *map(str, args), "--model", str(model), "--quiet"])
    return rc, capsys.readouterr().err


def one_error(rc, err, *expect):
    assert rc != 0, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for e in expect:
        assert e in lines[0], lines[0]
    return lines[0]


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def read(path):
    ds = gdal.Open(str(path))
    return ds, ds.ReadAsArray()


# -- 1. a "successful" run that wrote nothing ---------------------------------------------------------------
@pytest.mark.parametrize("dtype, bands, options, extra", [
    (gdal.GDT_Byte, 2, ["COMPRESS=WEBP"], []),          # WEBP takes 3 or 4 bands only
    (gdal.GDT_UInt16, 3, ["COMPRESS=JPEG"], []),        # JPEG takes 8-bit data only
    (gdal.GDT_UInt16, 3, ["COMPRESS=JPEG"], ["--cog"]),  # the same through the COG driver
    (gdal.GDT_Int16, 1, ["COMPRESS=WEBP"], []),
])
def test_a_codec_that_cannot_store_the_data_is_refused_before_any_work(
        tmp_path, capsys, tiny_model_file, dtype, bands, options, extra):
    src = make(tmp_path / "in.tif", texture(bands).astype(np.uint16 if dtype != gdal.GDT_Byte else np.uint8), dtype)
    args = [src, tmp_path / "out.tif", "--scale", "2", *[f"--co={o}" for o in options], *extra]
    rc, err = cli(args, capsys, tiny_model_file)
    line = one_error(rc, err, "cannot store", "COMPRESS")
    assert "device:" not in err  # refused before the model was even loaded
    assert "disk space" not in line
    assert listing(tmp_path) == ["in.tif"]


def test_the_uncertainty_raster_is_checked_the_same_way(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    # JPEG suits the Byte output but not the Float32 uncertainty raster
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--samples", "2", "--uncertainty",
                   tmp_path / "unc.tif", "--co", "COMPRESS=JPEG"], capsys, tiny_model_file)
    one_error(rc, err, "uncertainty raster", "cannot store", "Float32")
    assert listing(tmp_path) == ["in.tif"]


def test_any_gdal_failure_while_writing_fails_the_run(tmp_path, monkeypatch):
    """A failure GDAL reports only through its error handler (as a codec does while flushing) is not ignored."""
    from e2diffsr_core.raster_io import writer

    src = make(tmp_path / "in.tif", texture().astype(np.uint8))

    def reported_only(band, array, x, y):
        gdal.Error(gdal.CE_Failure, 1, "TIFFWriteEncodedTile: compression failed")

    monkeypatch.setattr(writer, "_write_band_array", reported_only)
    with writer.RasterReader(src) as reader:
        w = writer.RasterWriter(str(tmp_path / "out.tif"), reader, 48, 40)
        with pytest.raises(E2DiffSRError, match="compression failed"):
            w.write(0, 0, np.zeros((3, 40, 48), np.float32))
    assert listing(tmp_path) == ["in.tif"]


# -- 2. the input reached through another name, and what --overwrite may replace ----------------------------
def test_a_vrt_input_never_overwrites_the_file_it_reads(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    vrt = str(tmp_path / "in.vrt")
    gdal.Translate(vrt, src, format="VRT")
    before = Path(src).read_bytes()
    rc, err = cli([vrt, src, "--scale", "2", "--overwrite"], capsys, tiny_model_file)
    one_error(rc, err, "a file the input reads")
    assert Path(src).read_bytes() == before
    rc, err = cli([vrt, tmp_path / "o.tif", "--scale", "2", "--samples", "2", "--uncertainty", src, "--overwrite"],
                  capsys, tiny_model_file)
    one_error(rc, err, "uncertainty raster", "a file the input reads")
    assert Path(src).read_bytes() == before and listing(tmp_path) == ["in.tif", "in.vrt"]


@pytest.mark.parametrize("connection", ["GTIFF_DIR:1:{p}", "/vsisubfile/0_-1,{p}"])
def test_gdal_connection_syntax_never_overwrites_the_input(tmp_path, capsys, tiny_model_file, connection):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    before = Path(src).read_bytes()
    rc, err = cli([connection.format(p=src), src, "--scale", "2", "--overwrite"], capsys, tiny_model_file)
    one_error(rc, err, "input")
    assert Path(src).read_bytes() == before and listing(tmp_path) == ["in.tif"]


def test_overwrite_replaces_only_a_geotiff(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    model_copy = tmp_path / "model.tif"  # a model checkpoint under a raster's name
    model_copy.write_bytes(Path(tiny_model_file).read_bytes())
    folder = tmp_path / "folder.tif"
    folder.mkdir()
    device = tmp_path / "null.tif"
    device.symlink_to("/dev/null")
    for target, expect in ((model_copy, "not a GeoTIFF"), (folder, "is a folder"), (device, "not a regular file")):
        rc, err = cli([src, target, "--scale", "2", "--overwrite"], capsys, tiny_model_file)
        one_error(rc, err, expect)
    assert model_copy.read_bytes() == Path(tiny_model_file).read_bytes() and folder.is_dir()
    assert os.readlink(device) == "/dev/null"
    assert listing(tmp_path) == ["folder.tif", "in.tif", "model.tif", "null.tif"]


# -- 3. invalid pixels never become data --------------------------------------------------------------------
def test_nan_without_nodata_stays_invalid(tmp_path, tiny_model_file):
    arr = texture(1, lo=100.0, hi=900.0).astype(np.float32)
    arr[0, 5:9, 6:10] = np.nan
    src = make(tmp_path / "in.tif", arr, gdal.GDT_Float32)
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    ds, out = read(tmp_path / "out.tif")
    assert ds.GetRasterBand(1).GetNoDataValue() is None  # as the input: NaN marks invalid pixels
    expected = np.isnan(np.repeat(np.repeat(arr[0], 2, 0), 2, 1))
    assert (np.isnan(out) == expected).all()


def test_one_bands_nodata_does_not_erase_the_other_bands(tmp_path, tiny_model_file):
    arr = texture().astype(np.uint16) * 10 + 100
    arr[0, 4:8, 4:8] = 0  # nodata in band 1 only
    src = make(tmp_path / "in.tif", arr, gdal.GDT_UInt16, nodata=0)
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    _, out = read(tmp_path / "out.tif")
    assert (out[0, 8:16, 8:16] == 0).all()
    assert (out[1:, 8:16, 8:16] > 0).all() and (out[1:] != 0).all()
    assert (out[0] == 0).sum() == 64


def test_a_dataset_mask_comes_back_as_a_mask(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    ds = gdal.Open(src, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((20, 24), 255, np.uint8)
    mask[:, :6] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    ds = gdal.Open(str(tmp_path / "out.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetMaskFlags() == gdal.GMF_PER_DATASET
    out_mask = band.GetMaskBand().ReadAsArray()
    assert (out_mask[:, :12] == 0).all() and (out_mask[:, 12:] == 255).all()


def test_alpha_is_a_mask_not_imagery(tmp_path, tiny_model_file):
    arr = texture(4).astype(np.uint8)
    arr[3] = 255
    arr[3, :, 18:] = 0  # transparent right edge
    arr[3, 0, 0] = 128  # partly transparent pixel: kept as it is
    src = make(tmp_path / "in.tif", arr, options=["ALPHA=YES"])
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    ds, out = read(tmp_path / "out.tif")
    assert ds.RasterCount == 4 and ds.GetRasterBand(4).GetColorInterpretation() == gdal.GCI_AlphaBand
    assert (out[3] == np.repeat(np.repeat(arr[3], 2, 0), 2, 1)).all()  # nearest neighbour, never invented
    # the alpha band is not fed to the model as imagery, and its zeros mark pixels the model must not use
    from e2diffsr_core.raster_io import RasterReader

    with RasterReader(src) as reader:
        assert reader.bands == [1, 2, 3] and reader.alpha == 4 and reader.groups() == [[0, 1, 2]]
        _, valid = reader.read(0, 0, 24, 20)
        assert not valid[:, 18:].any() and valid[1:, :18].all()


# -- 4. values and meaning ----------------------------------------------------------------------------------
def test_a_dems_peaks_and_pits_survive(tmp_path, tiny_model_file):
    yy, xx = np.mgrid[0:32, 0:32]
    dem = 500 + 3 * xx + 2 * yy + 400 * np.exp(-((xx - 10) ** 2 + (yy - 12) ** 2) / 8.0)
    dem -= 300 * np.exp(-((xx - 24) ** 2 + (yy - 22) ** 2) / 8.0)
    src = make(tmp_path / "dem.tif", dem[None].astype(np.float32), gdal.GDT_Float32)
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    _, out = read(tmp_path / "out.tif")
    span = dem.max() - dem.min()
    # the 0.5 / 99.5 % working range would have cut the peak and the pit
    assert out.max() > dem.max() - 0.05 * span and out.min() < dem.min() + 0.05 * span
    assert out.max() <= dem.max() + 0.05 * span and out.min() >= dem.min() - 0.05 * span


def test_the_brightest_uint16_pixels_are_not_clipped(tmp_path, tiny_model_file):
    arr = (texture(3, 32, 32, 1000, 3000)).astype(np.uint16)
    arr[:, 10:12, 10:12] = 60000  # a bright roof: 0.4 % of the pixels, above the 99.5 % working range
    src = make(tmp_path / "in.tif", arr, gdal.GDT_UInt16)
    from e2diffsr_core.raster_io import RasterReader

    with RasterReader(src) as reader:
        assert all(r.hi < 4000 for r in reader.ranges)
    superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
    _, out = read(tmp_path / "out.tif")
    assert (out[:, 21:23, 21:23] > 55000).all()  # the output pixels whose centres lie on the roof


def test_scale_offset_rpc_and_mixed_types_are_kept_and_said(tmp_path, tiny_model_file):
    arr = texture().astype(np.uint16)
    src = make(tmp_path / "in.tif", arr, gdal.GDT_UInt16)
    ds = gdal.Open(src, gdal.GA_Update)
    rpc = {"LINE_OFF": "10", "SAMP_OFF": "12", "LAT_OFF": "45", "LONG_OFF": "7", "HEIGHT_OFF": "0",
           "LINE_SCALE": "10", "SAMP_SCALE": "12", "LAT_SCALE": "0.01", "LONG_SCALE": "0.012", "HEIGHT_SCALE": "100",
           "LINE_NUM_COEFF": " ".join(["0", "0", "-1"] + ["0"] * 17), "LINE_DEN_COEFF": " ".join(["1"] + ["0"] * 19),
           "SAMP_NUM_COEFF": " ".join(["0", "1", "0"] + ["0"] * 17), "SAMP_DEN_COEFF": " ".join(["1"] + ["0"] * 19)}
    ds.SetMetadata(rpc, "RPC")
    for i in range(3):
        ds.GetRasterBand(i + 1).SetScale(0.0001)
        ds.GetRasterBand(i + 1).SetOffset(-0.1)
    ds = None
    superresolve_raster(src, str(tmp_path / "out.tif"), 2.5, model=str(tiny_model_file), samples=2,
                        uncertainty=str(tmp_path / "unc.tif"))
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert out.GetRasterBand(2).GetScale() == pytest.approx(0.0001)
    assert out.GetRasterBand(2).GetOffset() == pytest.approx(-0.1)
    unc = gdal.Open(str(tmp_path / "unc.tif"))  # a spread: scaled like the data, no offset
    assert unc.GetRasterBand(1).GetScale() == pytest.approx(0.0001) and unc.GetRasterBand(1).GetOffset() == 0
    # the RPCs of the output put every ground point at 2.5x its input pixel position
    t_in = gdal.Transformer(gdal.Open(src), None, ["METHOD=RPC"])
    t_out = gdal.Transformer(out, None, ["METHOD=RPC"])
    for px, ln in ((0, 0), (7.5, 3.25), (24, 20)):
        _, ground = t_in.TransformPoint(0, px, ln, 0)
        _, back = t_out.TransformPoint(1, ground[0], ground[1], 0)
        assert back[0] == pytest.approx(2.5 * px, abs=1e-6) and back[1] == pytest.approx(2.5 * ln, abs=1e-6)

    byte = make(tmp_path / "b.tif", texture(1).astype(np.uint8))
    gdal.BuildVRT(str(tmp_path / "mixed.vrt"), [byte, src], separate=True, bandList=[1]).FlushCache()
    logs = []
    superresolve_raster(str(tmp_path / "mixed.vrt"), str(tmp_path / "mixed.tif"), 2, model=str(tiny_model_file),
                        log=logs.append)
    assert any("different data types (Byte, UInt16)" in m and "UInt16" in m for m in logs)
    assert gdal.Open(str(tmp_path / "mixed.tif")).GetRasterBand(1).DataType == gdal.GDT_UInt16


# -- 5. races and signals -----------------------------------------------------------------------------------
def test_a_file_that_appears_during_the_run_is_not_replaced(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    out = tmp_path / "out.tif"

    def meanwhile(_fraction):
        if not out.exists():
            out.write_bytes(b"written by another program")

    with pytest.raises(E2DiffSRError, match="created by something else"):
        superresolve_raster(src, str(out), 2, model=str(tiny_model_file), progress=meanwhile)
    assert out.read_bytes() == b"written by another program" and listing(tmp_path) == ["in.tif", "out.tif"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_leave_nothing_behind(tmp_path, tiny_model_file, sig):
    src = make(tmp_path / "in.tif", texture(3, 160, 160).astype(np.uint8))
    proc = subprocess.Popen([sys.executable, "-m", "e2diffsr_core", "superresolve", src, str(tmp_path / "out.tif"),
                             "--scale", "4", "--tile", "128", "--model", str(tiny_model_file), "--quiet"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    stop_once_running(proc, tmp_path, sig)
    assert listing(tmp_path) == ["in.tif"]


def stop_once_running(proc, folder, sig):
    """Send ``sig`` to ``proc`` a second after a run folder appeared in ``folder``; it must stop in one line."""
    deadline = time.time() + 120
    while time.time() < deadline and not (folder.is_dir() and any(n.startswith(files.RUN_PREFIX)
                                                                  for n in listing(folder))):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err


def test_leftovers_of_dead_runs_are_removed_and_live_runs_kept(tmp_path, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    dead = tmp_path / (files.RUN_PREFIX + "deadbeef")
    dead.mkdir()
    (dead / files.LOCK_NAME).write_text("")
    (dead / "output.tif").write_bytes(b"\0" * 4096)
    live = tmp_path / (files.RUN_PREFIX + "0badcafe")
    live.mkdir()
    fd = os.open(live / files.LOCK_NAME, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running process holds it
    old = tmp_path / ".out.tif.partial-1234abcd.tif"  # an older version's partial file, two days old
    old.write_bytes(b"\0" * 10)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    try:
        superresolve_raster(src, str(tmp_path / "out.tif"), 2, model=str(tiny_model_file))
        assert listing(tmp_path) == [live.name, "in.tif", "out.tif"]
    finally:
        os.close(fd)


# -- 6. late and misleading failures ------------------------------------------------------------------------
def test_output_name_problems_are_found_before_any_work(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    cases = [
        (f"{tmp_path}/out.tif/", "is a folder"),
        (tmp_path / "out.png", "does not end in .tif"),
        (tmp_path / "out", "does not end in .tif"),
        (tmp_path / ("x" * 300 + ".tif"), "this file system allows at most"),
    ]
    for target, expect in cases:
        rc, err = cli([src, target, "--scale", "2"], capsys, tiny_model_file)
        one_error(rc, err, expect)
        assert "device:" not in err
    assert listing(tmp_path) == ["in.tif"]


def test_a_long_name_that_the_file_system_allows_works(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture().astype(np.uint8))
    name = "a" * 245 + ".tif"  # 249 bytes: temporary files must not need a longer name
    rc, err = cli([src, tmp_path / name, "--scale", "2"], capsys, tiny_model_file)
    assert rc == 0, err
    assert listing(tmp_path) == [name, "in.tif"]


def test_impossible_sizes_are_clear_errors_and_reserve_nothing(tmp_path, capsys, tiny_model_file):
    def huge_vrt(name, w, h):
        path = tmp_path / name
        path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">'
                        '<VRTRasterBand dataType="Byte" band="1"></VRTRasterBand></VRTDataset>')
        return path

    rc, err = cli([huge_vrt("wide.vrt", 300_000_000, 20), tmp_path / "o.tif", "--scale", "8"], capsys,
                  tiny_model_file)
    one_error(rc, err, "more than GDAL can create")
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    side = int((free * 4) ** 0.5) // 8 + 1000  # latents alone would need more than the free space
    rc, err = cli([huge_vrt("big.vrt", side, side), tmp_path / "o.tif", "--scale", "8"], capsys, tiny_model_file)
    one_error(rc, err, "temporary space", "free disk space")
    assert listing(tmp_path) == ["big.vrt", "wide.vrt"]
