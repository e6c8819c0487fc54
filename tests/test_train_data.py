"""Training on real GeoTIFFs made here: the trainer reads them as superresolve does, draws valid crops only,
checks the data and the run folder before any work, and keeps its runs trustworthy (best.pt, numbered
checkpoints, a saved state on SIGTERM / SIGINT)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal
from raster_support import make_raster
from test_train import flat_tensors

from e2diffsr_core.checkpoint import load_model
from e2diffsr_core.raster_io import RasterReader
from e2diffsr_core.raster_io.training_read import read_picture
from e2diffsr_core.train import main
from e2diffsr_core.train.data import PairDataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny.toml"
QUICK = ["--set", "data.scale_max=4", "--set", "run.log_every=1", "--set", "run.val_every=0",
         "--set", "run.ckpt_every=0"]
SIZE = 160
ALPHA_FROM = 106   # columns from here on are transparent


def texture(seed: int, lo: float, hi: float, size: int = SIZE) -> np.ndarray:
    """A smooth random picture with values from lo to hi."""
    rng = np.random.default_rng(seed)
    x = rng.random((size // 8 + 2, size // 8 + 2))
    x = np.kron(x, np.ones((8, 8)))[:size, :size]
    x = (x + np.roll(x, 3, 0) + np.roll(x, 3, 1)) / 3
    return lo + (x - x.min()) / (x.max() - x.min()) * (hi - lo)


def collar_raster(path, nodata_width: int = 40) -> str:
    """UInt16 RGB with a nodata (0) collar on the left and top, as a Landsat scene's edge."""
    bands = np.stack([texture(s, 800, 5000) for s in (1, 2, 3)]).astype(np.uint16)
    bands[:, :nodata_width, :] = 0
    bands[:, :, :nodata_width] = 0
    colours = [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand]
    return make_raster(path, bands, gdal.GDT_UInt16, nodata=0, colour=colours, options=["PHOTOMETRIC=RGB"])


def alpha_raster(path) -> str:
    """RGBA Byte: the right third transparent (and black), as a mosaic's empty part."""
    bands = np.stack([texture(s, 60, 200) for s in (4, 5, 6)] + [np.full((SIZE, SIZE), 255.0)]).astype(np.uint8)
    bands[:, :, ALPHA_FROM:] = 0
    colours = [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_AlphaBand]
    return make_raster(path, bands, colour=colours, options=["PHOTOMETRIC=RGB", "ALPHA=YES"])


def bgr_raster(path) -> str:
    """UInt16 stored B, G, R (by colour interpretation): red rises left to right, blue top to bottom."""
    ramp = np.linspace(1000, 9000, SIZE)
    blue = np.repeat(ramp[:, None], SIZE, axis=1)
    red = np.repeat(ramp[None, :], SIZE, axis=0)
    green = texture(7, 1000, 9000)
    colours = [gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand]
    return make_raster(path, np.stack([blue, green, red]).astype(np.uint16), gdal.GDT_UInt16, colour=colours)


def truncated_tiff(path) -> str:
    """A TIFF cut off at 60 %: its header is whole, its pixels are not."""
    make_raster(path, np.stack([texture(s, 0, 255) for s in (8, 9, 10)]).astype(np.uint8))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * 0.6)])
    return str(path)


@pytest.fixture
def rasters(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    collar_raster(folder / "collar.tif")
    alpha_raster(folder / "alpha.tif")
    bgr_raster(folder / "bgr.tif")
    return folder


def train(data, *args, quick=True) -> int:
    return main(["--config", str(TINY), "--data", str(data), *(QUICK if quick else []), *map(str, args)])


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# -- one way to read rasters ------------------------------------------------------------------------------------
def test_a_collar_raster_has_the_inference_range_and_only_valid_crops(tmp_path):
    path = collar_raster(tmp_path / "collar.tif")
    pic = read_picture(path)
    with RasterReader(path, [1, 2, 3]) as reader:   # what superresolve uses for this file
        assert pic.ranges == [(r.lo, r.hi) for r in reader.ranges]
    ds = gdal.Open(path)
    valid_values = ds.GetRasterBand(1).ReadAsArray()[40:, 40:]
    lo, hi = np.percentile(valid_values, [0.5, 99.5])     # the valid values only: the collar does not count
    assert pic.ranges[0] == pytest.approx((lo, hi))
    assert pic.valid_fraction == pytest.approx((SIZE - 40) ** 2 / SIZE ** 2)
    inside = pic.rgb[40:, 40:, 0]
    assert inside.min() == 0 and inside.max() == 255     # the valid pixels span the whole range, not 48..255
    dataset = PairDataset([Path(path)], 2, hr_crop=64)
    shares = [float(dataset[(0, 3.0, seed)][2].float().mean()) for seed in range(40)]
    assert min(shares) >= 0.99


def test_an_alpha_raster_never_gives_black_crops(tmp_path):
    dataset = PairDataset([Path(alpha_raster(tmp_path / "alpha.tif"))], 2, hr_crop=64)
    for seed in range(40):
        hr, _, valid = dataset[(0, 2.0, seed)]
        assert float(valid.float().mean()) >= 0.99
        black = (hr == -1).all(dim=0).float().mean()      # the transparent half's black pixels
        assert float(black) == 0.0


def test_bands_by_colour_interpretation_and_by_choice(tmp_path):
    path = bgr_raster(tmp_path / "bgr.tif")
    pic = read_picture(path)
    assert pic.bands == [(3, "Red"), (2, "Green"), (1, "Blue")]
    red_row = pic.rgb[SIZE // 2, :, 0].astype(int)
    assert red_row[-1] - red_row[0] > 200 and np.all(np.diff(red_row) >= 0)   # red rises left to right
    blue_col = pic.rgb[:, SIZE // 2, 2].astype(int)
    assert blue_col[-1] - blue_col[0] > 200                                    # blue rises top to bottom
    chosen = read_picture(path, [1, 2, 3])
    assert chosen.bands[0] == (1, "Blue")
    assert np.array_equal(chosen.rgb[..., 0], pic.rgb[..., 2])


# -- the data check --------------------------------------------------------------------------------------------
def test_a_training_run_records_data_json_with_valid_crops(rasters, tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["collar.tif", "alpha.tif"], "val": ["bgr.tif"]}))
    out = tmp_path / "run"
    assert train(rasters, "--stage", 2, "--out", out, "--split", split, "--max-steps", 4, "--stage1",
                 _random_stage1(tmp_path), "--set", "stage2.batch_size=4") == 0
    report = json.loads((out / "data.json").read_text())
    by_path = {im["path"]: im for im in report["images"]}
    assert set(by_path) == {"collar.tif", "alpha.tif", "bgr.tif"}
    assert by_path["alpha.tif"]["valid_fraction"] == pytest.approx(ALPHA_FROM / SIZE)
    assert by_path["collar.tif"]["data_type"] == "UInt16"
    assert [b["colour"] for b in by_path["bgr.tif"]["bands"]] == ["Red", "Green", "Blue"]
    assert [b["band"] for b in by_path["bgr.tif"]["bands"]] == [3, 2, 1]
    assert by_path["bgr.tif"]["role"] == "val" and len(by_path["collar.tif"]["working_range"]) == 3
    assert report["crops_drawn"] == 16 and report["crop_invalid_fraction"] < 0.01


def _random_stage1(tmp_path) -> Path:
    from e2diffsr_core.checkpoint import save_model
    from e2diffsr_core.model import E2DiffSR
    from e2diffsr_core.train import load_config

    path = tmp_path / "stage1.pt"
    save_model(E2DiffSR(load_config(TINY).model), path)
    return path


def test_a_truncated_tiff_is_refused_before_any_work(rasters, tmp_path, capsys):
    truncated_tiff(rasters / "cut.tif")
    out = tmp_path / "run"
    assert train(rasters, "--stage", 1, "--out", out, "--max-steps", 1) == 2
    line = one_error(capsys)
    assert "cut.tif" in line and "intact" in line
    assert not out.exists()                                   # no half-written run folder
    report_dir = tmp_path / "check"
    assert train(rasters, "--stage", 1, "--check-data", "--out", report_dir) == 2
    assert "cut.tif" in one_error(capsys)
    report = json.loads((report_dir / "data_check.json").read_text())
    assert len(report["problems"]) == 1 and report["train_images"] == 4


def test_too_little_valid_area_is_refused_with_the_figures(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    collar_raster(folder / "edge.tif", nodata_width=110)     # 50 x 50 valid pixels, crops of 96 px
    assert train(folder, "--stage", 1, "--check-data") == 2
    line = one_error(capsys)
    assert "edge.tif" in line and "160 x 160 px" in line and "9.8% valid" in line and "96 px crop" in line


def test_bad_splits_give_one_line_per_problem(rasters, tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["collar.tif", "alpha.tif", "missing.tif"], "val": ["alpha.tif"]}))
    assert train(rasters, "--stage", 1, "--check-data", "--split", split) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 2
    assert "missing.tif" in err[0] and "'train'" in err[0]
    assert "alpha.tif" in err[1] and "both in 'train' and 'val'" in err[1]
    split.write_text(json.dumps({"train": ["collar.tif"]}))
    assert train(rasters, "--stage", 1, "--out", tmp_path / "o", "--split", split, "--set", "run.val_every=5") == 2
    assert "no 'val' list" in one_error(capsys)
    assert not (tmp_path / "o").exists()
    split.write_text(json.dumps({"train": ["collar.tif", "bgr.tif"], "val": ["alpha.tif"]}))
    assert train(rasters, "--stage", 1, "--check-data", "--split", split) == 0
    assert "data ok: 2 training and 1 validation images" in capsys.readouterr().out


# -- the run folder --------------------------------------------------------------------------------------------
@pytest.fixture
def locked(tmp_path):
    """A folder nobody may write into (immutable for root, read-only for anyone else)."""
    folders = []

    def lock(folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
                pytest.skip("cannot make a folder unwritable for root here")
        else:
            folder.chmod(0o555)
        folders.append(folder)
        return folder

    yield lock
    for folder in folders:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)])
        folder.chmod(0o755)


def test_unwritable_run_folders_are_refused_first(rasters, tmp_path, capsys, locked, monkeypatch):
    import e2diffsr_core.train.loop as loop

    def no_work(*a, **k):
        raise AssertionError("the data was checked before the run folder")

    monkeypatch.setattr(loop, "check_data", no_work)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert train(rasters, "--stage", 1, "--out", afile) == 2
    assert "is a file, not a folder" in one_error(capsys)
    assert afile.read_text() == "x"
    parent = locked(tmp_path / "locked")  # empty
    assert train(rasters, "--stage", 1, "--out", parent / "run") == 2
    assert "cannot create the run folder" in one_error(capsys)
    run = tmp_path / "old"
    run.mkdir()
    (run / "state.pt").write_bytes(b"not really")
    locked(run)
    assert train(rasters, "--stage", 1, "--out", run, "--resume") == 2
    line = one_error(capsys)
    assert "cannot continue the run in" in line and "not writable" in line


# -- trustworthy runs -----------------------------------------------------------------------------------------
def test_best_model_numbered_checkpoints_and_finite_validation(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    collar_raster(folder / "a.tif")
    make_raster(folder / "flat.tif", np.full((3, 128, 128), 90, np.uint8))   # a flat validation picture
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a.tif"], "val": ["flat.tif"]}))
    out = tmp_path / "run"
    assert train(folder, "--stage", 1, "--out", out, "--split", split, "--max-steps", 4,
                 "--set", "run.val_every=1", "--set", "run.ckpt_every=1", "--set", "run.keep_checkpoints=2") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["state_0000003.pt", "state_0000004.pt"]
    with (out / "val.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert set(rows[0]) >= {"psnr_x2", "psnr_x3.4", "psnr_x4"}
    values = np.array([[float(r[k]) for k in ("psnr", "psnr_bicubic", "psnr_x2", "psnr_x3.4", "psnr_x4")]
                       for r in rows])
    assert np.isfinite(values).all()
    best = load_model(out / "best.pt")
    k = int(np.argmax(values[:, 0]))
    assert best.meta["step"] == int(rows[k]["step"]) and best.meta["val_psnr"] == pytest.approx(values[k, 0], 1e-5)
    assert load_model(out / "model.pt").meta["step"] == 4


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_state_that_resumes_exactly(rasters, tmp_path, signame):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    cmd = [sys.executable, "-m", "e2diffsr_core.train", "--config", str(TINY), "--data", str(rasters), "--stage",
           "1", "--out", str(stopped), "--max-steps", "200", "--set", "stage1.disc_start=2", *QUICK]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        log = stopped / "log.csv"
        deadline = time.time() + 240
        while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 3):
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + getattr(signal, signame), err[-2000:]
    assert f"stopped by {signame} at step" in err
    step = torch.load(stopped / "state.pt", weights_only=True)["step"]
    assert 2 <= step < 200
    extra = ["--set", "stage1.disc_start=2"]   # the same threads as the stopped process: the same arithmetic
    assert train(rasters, "--stage", 1, "--out", stopped, "--max-steps", step + 2, "--resume", *extra) == 0
    if signame == "SIGINT":   # the same path as SIGTERM: that it resumes is enough here
        return
    assert train(rasters, "--stage", 1, "--out", straight, "--max-steps", step + 2, *extra) == 0
    a = torch.load(stopped / "state.pt", weights_only=True)["state"]
    b = torch.load(straight / "state.pt", weights_only=True)["state"]
    for part in ("model", "disc", "opt"):
        flat_a, flat_b = flat_tensors(a[part]), flat_tensors(b[part])
        assert flat_a.keys() == flat_b.keys()
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), part


def test_plot_log_draws_a_run_or_prints_its_ends(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "training"))
    import plot_log

    (tmp_path / "log.csv").write_text("step,time_s,lr,loss,l1\n1,0.5,0.001,2.0,0.5\n2,1.0,0.001,1.5,0.4\n")
    (tmp_path / "val.csv").write_text("step,psnr,psnr_bicubic,psnr_x2,images\n2,25.0,24.0,25.0,2\n")
    pytest.importorskip("matplotlib")
    assert plot_log.main([str(tmp_path)]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "curves.png").size == (1200, 400)
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # as where matplotlib is not installed
    assert plot_log.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and "train loss: step 1 2 -> step 2 1.5" in out
    assert plot_log.main([str(tmp_path / "none")]) == 2
