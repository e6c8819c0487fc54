"""The raster command line as a user runs it: georeferenced outputs, data types, and every kind of bad input."""

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from e2diffsr_core import raster_io
from e2diffsr_core.__main__ import main

gdal.UseExceptions()
SAMPLE = Path(__file__).resolve().parents[1] / "e2diffsr_core" / "data" / "sample.tif"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 40 x 36 crop of the bundled real sample (EPSG:32617)."""
    path = tmp_path_factory.mktemp("in") / "small.tif"
    gdal.Translate(str(path), str(SAMPLE), srcWin=[100, 120, 40, 36])
    return path


def make_raster(path, array, dtype, nodata=None, gt=(500000.0, 0.5, 0.0, 4000000.0, 0.0, -0.5), epsg=32633):
    bands, h, w = array.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, bands, dtype)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        b = ds.GetRasterBand(i + 1)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        b.WriteArray(array[i])
    ds = None
    return path


def run_cli(args, capsys):
    rc = main(["superresolve", *map(str, args), "--quiet"])
    err = capsys.readouterr().err
    return rc, err


def assert_clean_failure(rc, err, folder, expect):
    assert rc != 0
    # progress lines (device, tiles) may come first; the failure itself is one line
    lines = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]
    leftovers = [p.name for p in Path(folder).iterdir() if "partial" in p.name or p.name.startswith("out")]
    assert leftovers == []


def test_georeferenced_output_of_the_real_sample(small, tmp_path, tiny_model_file, capsys):
    out = tmp_path / "out.tif"
    rc, err = run_cli([small, out, "--scale", "2.6", "--model", tiny_model_file], capsys)
    assert rc == 0, err
    src, dst = gdal.Open(str(small)), gdal.Open(str(out))
    assert (dst.RasterXSize, dst.RasterYSize) == (int(40 * 2.6), int(36 * 2.6)) == (104, 93)
    assert dst.RasterCount == 3 and dst.GetRasterBand(1).DataType == gdal.GDT_Byte
    assert osr.SpatialReference(dst.GetProjection()).IsSame(osr.SpatialReference(src.GetProjection()))
    gs, gd = src.GetGeoTransform(), dst.GetGeoTransform()
    assert gd[0] == gs[0] and gd[3] == gs[3]
    assert gd[1] == pytest.approx(gs[1] * 40 / 104) and gd[5] == pytest.approx(gs[5] * 36 / 93)
    assert [dst.GetRasterBand(i + 1).GetColorInterpretation() for i in range(3)] == [
        gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand]
    # the footprint is the same
    assert gs[0] + 40 * gs[1] == pytest.approx(gd[0] + 104 * gd[1])
    from e2diffsr_core.engine.device import cpu_has_amx

    # the line names the arithmetic: bf16 on a CPU with AMX, fp32 on others
    assert f"device: cpu ({'bf16' if cpu_has_amx() else 'fp32'})" in err and "tile:" in err
    # the super-resolved image looks like the input: its downsampled version correlates with the input
    a = src.ReadAsArray().astype(float)
    b = gdal.Translate("/vsimem/down.tif", str(out), width=40, height=36, resampleAlg="average").ReadAsArray()
    assert np.corrcoef(a.ravel(), b.astype(float).ravel())[0, 1] > 0.8
    assert list(Path(tmp_path).iterdir()) == [out]


def test_compile_flag_where_the_unet_cannot_be_compiled(small, tmp_path, tiny_model_file, capsys, monkeypatch):
    """--compile on a machine where torch.compile fails (e.g. no C++ compiler): the output is written as
    without the flag and the command says that the UNet ran uncompiled."""
    import torch

    def broken_compile(module, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no working C++ compiler found")
        return call

    plain = tmp_path / "plain.tif"
    assert run_cli([small, plain, "--scale", "2", "--model", tiny_model_file], capsys)[0] == 0
    monkeypatch.setattr(torch, "compile", broken_compile)
    out = tmp_path / "out.tif"
    rc, err = run_cli([small, out, "--scale", "2", "--model", tiny_model_file, "--compile"], capsys)
    assert rc == 0, err
    assert "note: the UNet could not be compiled (RuntimeError: no working C++ compiler found)" in err
    assert np.array_equal(gdal.Open(str(out)).ReadAsArray(), gdal.Open(str(plain)).ReadAsArray())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "plain.tif"]


def test_uint16_with_nodata_and_rotation_keeps_units(tmp_path, tiny_model_file, capsys):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 30, 34)) * 10000).astype(np.uint16)
    arr[:, :5, :5] = 65535
    gt = (300000.0, 2.0, 0.5, 5000000.0, 0.3, -2.0)
    src = make_raster(tmp_path / "u16.tif", arr, gdal.GDT_UInt16, nodata=65535, gt=gt)
    out = tmp_path / "o16.tif"
    rc, err = run_cli([src, out, "--scale", "2", "--model", tiny_model_file], capsys)
    assert rc == 0, err
    ds = gdal.Open(str(out))
    b = ds.GetRasterBand(1)
    assert b.DataType == gdal.GDT_UInt16 and b.GetNoDataValue() == 65535
    data = ds.ReadAsArray()
    assert (data[:, :8, :8] == 65535).all()  # nodata stays where it was
    valid = data[:, 12:, 12:]
    assert valid.max() <= 10000 + 200 and valid.min() >= 0 and valid.mean() > 2000  # same units, not 0..255
    g = ds.GetGeoTransform()
    assert g == pytest.approx((300000.0, 1.0, 0.25, 5000000.0, 0.15, -1.0))


def test_single_band_float32_and_four_bands(tmp_path, tiny_model_file, capsys):
    arr = np.random.default_rng(1).normal(100.0, 20.0, (1, 24, 28)).astype(np.float32)
    src = make_raster(tmp_path / "f32.tif", arr, gdal.GDT_Float32)
    rc, err = run_cli([src, tmp_path / "of.tif", "--scale", "2", "--model", tiny_model_file], capsys)
    assert rc == 0, err
    ds = gdal.Open(str(tmp_path / "of.tif"))
    assert ds.RasterCount == 1 and ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    data = ds.ReadAsArray()
    assert 40 < data.mean() < 160
    arr4 = (np.random.default_rng(2).random((4, 24, 28)) * 255).astype(np.uint8)
    src4 = make_raster(tmp_path / "b4.tif", arr4, gdal.GDT_Byte)
    rc, err = run_cli([src4, tmp_path / "o4.tif", "--scale", "2", "--model", tiny_model_file, "--bands", "4,2"], capsys)
    assert rc == 0, err
    assert gdal.Open(str(tmp_path / "o4.tif")).RasterCount == 2


def test_uncertainty_raster(small, tmp_path, tiny_model_file, capsys):
    rc, err = run_cli([small, tmp_path / "m.tif", "--scale", "2", "--model", tiny_model_file, "--samples", "3",
                       "--uncertainty", tmp_path / "u.tif", "--cog"], capsys)
    assert rc == 0, err
    u = gdal.Open(str(tmp_path / "u.tif"))
    assert u.GetRasterBand(1).DataType == gdal.GDT_Float32 and (u.RasterXSize, u.RasterYSize) == (80, 72)
    std = u.ReadAsArray()
    assert (std >= 0).all() and std.max() > 0
    assert gdal.Open(str(tmp_path / "m.tif")).GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_temperature_default_explicit_and_wrong(small, tmp_path, tiny_model_file, capsys):
    """One sample draws no noise by default (the seed changes nothing, the log line says temperature 0);
    --temperature 1 is the authors' sampling (the seed matters); a temperature out of range, or several samples
    at temperature 0, stop with a one-line error and no output."""
    def run(name, *extra):
        rc, err = run_cli([small, tmp_path / name, "--scale", "2", "--model", tiny_model_file, *extra], capsys)
        assert rc == 0, err
        return gdal.Open(str(tmp_path / name)).ReadAsArray(), err

    a, err = run("a.tif", "--seed", "1")
    b, _ = run("b.tif", "--seed", "2")
    assert np.array_equal(a, b) and "temperature 0" in err
    c, err = run("c.tif", "--seed", "1", "--temperature", "1")
    d, _ = run("d.tif", "--seed", "2", "--temperature", "1")
    assert not np.array_equal(c, d) and not np.array_equal(a, c) and "temperature 1" in err
    _, err = run("m.tif", "--samples", "2")
    assert "temperature 1" in err  # several samples: the authors' sampling, so that they differ
    for extra, expect in ((["--temperature", "2"], "temperature must be from 0 (the most faithful) to 1"),
                          (["--temperature", "0", "--samples", "3"],
                           "several samples differ only with a temperature above 0")):
        rc, err = run_cli([small, tmp_path / "out.tif", "--scale", "2", "--model", tiny_model_file, *extra], capsys)
        assert_clean_failure(rc, err, tmp_path, expect)


@pytest.mark.parametrize("scale,expect", [("1", "greater than 1"), ("0.5", "greater than 1"),
                                          ("nan", "finite"), ("inf", "finite"), ("40", "maximum")])
def test_bad_scale(small, tmp_path, tiny_model_file, capsys, scale, expect):
    rc, err = run_cli([small, tmp_path / "out.tif", "--scale", scale, "--model", tiny_model_file], capsys)
    assert_clean_failure(rc, err, tmp_path, expect)


def test_bad_inputs_and_outputs(small, tmp_path, tiny_model_file, capsys):
    m = ["--model", tiny_model_file]
    cases = [
        ([tmp_path / "absent.tif", tmp_path / "out.tif", "--scale", "2", *m], "not found"),
        ([Path(__file__), tmp_path / "out.tif", "--scale", "2", *m], "GDAL"),
        ([small, small, "--scale", "2", *m], "input"),
        ([small, tmp_path / "nofolder" / "out.tif", "--scale", "2", *m], "folder"),
        ([small, tmp_path / "out.tif", "--scale", "2", "--bands", "1,5", *m], "band 5"),
        ([small, tmp_path / "out.tif", "--scale", "2", "--model", tmp_path / "none.pt"], "not found"),
        ([small, tmp_path / "out.tif", "--scale", "2", "--model", small], "checkpoint"),
        ([small, tmp_path / "out.tif", "--scale", "2", "--co", "NOPE", *m], "creation option"),
    ]
    for args, expect in cases:
        rc, err = run_cli(args, capsys)
        assert_clean_failure(rc, err, tmp_path, expect)
    assert gdal.Open(str(small)).RasterXSize == 40  # the input is untouched


def test_corrupt_model_file(small, tmp_path, tiny_model_file, capsys):
    data = Path(tiny_model_file).read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 3])
    rc, err = run_cli([small, tmp_path / "out.tif", "--scale", "2", "--model", bad], capsys)
    assert_clean_failure(rc, err, tmp_path, "corrupt")


def test_existing_output_needs_overwrite(small, tmp_path, tiny_model_file, capsys):
    out = tmp_path / "out.tif"
    make_raster(out, np.zeros((1, 5, 5), np.uint8), gdal.GDT_Byte)
    rc, err = run_cli([small, out, "--scale", "2", "--model", tiny_model_file], capsys)
    assert rc != 0 and "--overwrite" in err and gdal.Open(str(out)).RasterXSize == 5
    rc, err = run_cli([small, out, "--scale", "2", "--model", tiny_model_file, "--overwrite"], capsys)
    assert rc == 0 and gdal.Open(str(out)).RasterXSize == 80


def test_complex_data_type(tmp_path, tiny_model_file, capsys):
    src = make_raster(tmp_path / "c.tif", np.ones((1, 20, 20), np.complex64), gdal.GDT_CFloat32)
    rc, err = run_cli([src, tmp_path / "out.tif", "--scale", "2", "--model", tiny_model_file], capsys)
    assert_clean_failure(rc, err, tmp_path, "unsupported data type")


def test_output_folder_not_writable(small, tmp_path, tiny_model_file, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):
            rc, err = run_cli([small, ro / "out.tif", "--scale", "2", "--model", tiny_model_file], capsys)
            assert_clean_failure(rc, err, ro, "not writable")
            return
        # root may write anywhere: run the command line as an unprivileged user instead, where possible
        if os.getuid() != 0 or not _can_run_as_nobody():
            pytest.skip("this user can write to read-only folders and cannot switch to an unprivileged user")
        # a folder the unprivileged user can reach (pytest's own tmp folders are private to root)
        base = Path(tempfile.mkdtemp(prefix="e2diffsr-ro-"))
        try:
            base.chmod(0o755)
            for name, src in (("in.tif", small), ("model.pt", tiny_model_file)):
                (base / name).write_bytes(Path(src).read_bytes())
                (base / name).chmod(0o644)
            target = base / "ro"
            target.mkdir(mode=0o555)
            target.chmod(0o555)
            proc = subprocess.run([sys.executable, "-m", "e2diffsr_core", "superresolve", str(base / "in.tif"),
                                   str(target / "out.tif"), "--scale", "2", "--model", str(base / "model.pt"),
                                   "--quiet"], capture_output=True, text=True, preexec_fn=_as_nobody, cwd="/",
                                  env={**os.environ, "HOME": "/"})
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
            assert proc.returncode != 0 and len(errors) == 1 and "not writable" in errors[0], proc.stderr
            assert "Traceback" not in proc.stderr and list(target.iterdir()) == []
        finally:
            shutil.rmtree(base, ignore_errors=True)
    finally:
        ro.chmod(0o700)


def _as_nobody():
    os.setgid(65534)
    os.setuid(65534)


def _can_run_as_nobody() -> bool:
    try:
        probe = subprocess.run([sys.executable, "-c", "import e2diffsr_core.raster"], capture_output=True,
                               preexec_fn=_as_nobody, cwd="/", timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def test_disk_full_mid_write(small, tmp_path, tiny_model_file, capsys, monkeypatch):
    calls = {"n": 0}
    real = raster_io.writer._write_band_array

    def failing(band, array, x, y):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("Free disk space available is 0 bytes, whereas 4096 are at least necessary.")
        return real(band, array, x, y)

    monkeypatch.setattr(raster_io.writer, "_write_band_array", failing)
    rc, err = run_cli([small, tmp_path / "out.tif", "--scale", "4", "--tile", "64", "--model", tiny_model_file],
                      capsys)
    assert_clean_failure(rc, err, tmp_path, "could not write")
    assert calls["n"] > 2


def test_cancel_through_the_api_leaves_nothing(small, tmp_path, tiny_model_file):
    from e2diffsr_core.errors import Cancelled
    from e2diffsr_core.raster import superresolve_raster

    ticks = []
    with pytest.raises(Cancelled):
        superresolve_raster(str(small), str(tmp_path / "out.tif"), 4, model=str(tiny_model_file), tile=64,
                            progress=ticks.append, cancel=lambda: len(ticks) >= 2)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_leaves_no_output(tmp_path, tiny_model_file):
    big = tmp_path / "big.tif"
    gdal.Translate(str(big), str(SAMPLE), srcWin=[0, 0, 200, 200])
    out = tmp_path / "out.tif"
    proc = subprocess.Popen([sys.executable, "-m", "e2diffsr_core", "superresolve", str(big), str(out), "--scale",
                             "4", "--tile", "128", "--model", str(tiny_model_file)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    # wait until tiles are being computed, then interrupt
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".e2diffsr-run-") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "e2diffsr_core", "superresolve", "--help"], capture_output=True,
                         text=True).stdout
    for opt in ("--scale", "--model", "--device", "--seed", "--precision", "--bands", "--tile", "--samples",
                "--uncertainty", "--co", "--cog", "--overwrite", "--compile"):
        assert opt in out
    assert math.isfinite(1.0)
