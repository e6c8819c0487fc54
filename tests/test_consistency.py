"""Consistency with the input (iterative back-projection): the reduction is PIL's, the corrected output
reproduces the input, tiles equal the whole image, nodata never moves valid pixels."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from e2diffsr_core.engine.consistency import Placement, back_project, halo, psnr_to_input, reduce
from e2diffsr_core.errors import E2DiffSRError


@pytest.fixture(scope="module")
def hr(data_dir):
    """A real aerial picture, [3, H, W] in [0, 1]."""
    return np.asarray(Image.open(data_dir / "SOAP_031.png").convert("RGB"), np.float32).transpose(2, 0, 1) / 255


def pil_float(band: np.ndarray, size_wh) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(band, np.float32), mode="F").resize(size_wh, Image.BICUBIC))


def nearest_up(lr: np.ndarray, size_hw) -> np.ndarray:
    """A blocky, very inconsistent enlargement to correct."""
    return np.stack([np.asarray(Image.fromarray(b, mode="F").resize(size_hw[::-1], Image.NEAREST)) for b in lr])


@pytest.mark.parametrize("hr_hw,lr_hw", [((68, 81), (20, 24)), ((81, 68), (24, 20)), ((97, 55), (12, 7))])
def test_reduction_is_pils_antialiased_bicubic(hr, hr_hw, lr_hw):
    img = hr[:, :hr_hw[0], :hr_hw[1]] * 255  # uint8 range, non-integer factors (x3.4, x8.1)
    ours = reduce(img, lr_hw)
    pil = np.stack([pil_float(b, lr_hw[::-1]) for b in img])
    assert ours.shape == (3, *lr_hw)
    assert np.abs(ours - pil).max() < 1e-3
    # the 8-bit pipeline rounds between its two passes: within one grey level
    u8 = np.asarray(Image.fromarray(np.round(img).astype(np.uint8).transpose(1, 2, 0)).resize(lr_hw[::-1],
                                                                                             Image.BICUBIC))
    assert np.abs(ours - u8.transpose(2, 0, 1)).max() < 1.0
    # torch's antialiased bicubic agrees too (same kernel, a = -0.5); its non-antialiased one does not
    t = torch.from_numpy(img)[None]
    assert (F.interpolate(t, size=lr_hw, mode="bicubic", antialias=True)[0].numpy() - pil).__abs__().max() < 1e-3
    assert (F.interpolate(t, size=lr_hw, mode="bicubic", antialias=False)[0].numpy() - pil).__abs__().max() > 10


@pytest.mark.parametrize("scale", [2.0, 3.4, 8.0])
def test_passes_make_the_output_reproduce_the_input(hr, scale):
    H, W = hr.shape[1:]
    lr = reduce(hr, (int(H / scale), int(W / scale)))
    up = nearest_up(lr, (H, W))
    quality = [psnr_to_input(back_project(up, lr, passes=p)[0], lr) for p in range(4)]
    assert quality[0] < 40 and quality[3] > 52  # measured: 35-39 dB raw, 53-57 dB after 3 passes
    assert quality == sorted(quality)
    corrected, correction = back_project(up, lr)
    assert corrected.shape == up.shape and corrected.dtype == np.float32
    assert np.array_equal(corrected, up + correction) or np.abs(corrected - up - correction).max() < 1e-6
    assert corrected.min() >= 0 and corrected.max() <= 1
    assert psnr_to_input(corrected, lr) == pytest.approx(quality[3])


def test_the_true_picture_is_left_alone(hr):
    """The HR picture is consistent with its own reduction: nothing to correct."""
    _, correction = back_project(hr, reduce(hr, (117, 117)))
    assert np.abs(correction).max() < 1e-5


def windows(n: int, parts: int, margin: int):
    """Split [0, n) into ``parts`` kept ranges, each with its computed window ``margin`` wider."""
    cuts = np.linspace(0, n, parts + 1).astype(int)
    return [(a, b, max(0, a - margin), min(n, b + margin)) for a, b in zip(cuts, cuts[1:])]


def lr_window(o0, o1, lr_n, out_n):
    return max(0, math.floor(o0 * lr_n / out_n) - 3), min(lr_n, math.ceil(o1 * lr_n / out_n) + 3)


def tiled(sr, lr, valid, margin, parts=3, passes=3):
    out = np.full_like(sr, np.nan)
    (H, W), (h, w) = sr.shape[-2:], lr.shape[-2:]
    for ya, yb, y0, y1 in windows(H, parts, margin):
        for xa, xb, x0, x1 in windows(W, parts, margin):
            (ly0, ly1), (lx0, lx1) = lr_window(y0, y1, h, H), lr_window(x0, x1, w, W)
            where = Placement((h, w), (H, W), (ly0, lx0), (y0, x0))
            c, _ = back_project(sr[..., y0:y1, x0:x1], lr[..., ly0:ly1, lx0:lx1],
                                None if valid is None else valid[ly0:ly1, lx0:lx1], passes, where)
            out[..., ya:yb, xa:xb] = c[..., ya - y0:yb - y0, xa - x0:xb - x0]
    return out


@pytest.mark.parametrize("scale", [2.0, 3.4, 8.0])
def test_tiles_with_the_halo_equal_the_whole_image(hr, scale):
    H, W = hr.shape[1:]
    lr = reduce(hr, (int(H / scale), int(W / scale)))
    up = nearest_up(lr, (H, W))
    valid = np.ones(lr.shape[1:], bool)
    valid[10:18, 5:30] = False
    whole, _ = back_project(up, lr, valid)
    margin = halo(lr.shape[1:], (H, W))
    assert np.abs(tiled(up, lr, valid, margin) - whole).max() < 1e-4
    # too small a margin does show at the tile edges
    assert np.abs(tiled(up, lr, valid, margin // 4) - whole).max() > 1e-3


def test_nodata_never_moves_valid_pixels(hr):
    lr = reduce(hr, (200, 200))
    up = nearest_up(lr, (400, 400))
    valid = np.ones((200, 200), bool)
    valid[60:120, 80:140] = False
    dark, bright = lr.copy(), lr.copy()
    dark[:, ~valid], bright[:, ~valid] = 0.0, 1.0
    a, _ = back_project(up, dark, valid)
    b, _ = back_project(up, bright, valid)
    assert np.array_equal(a, b)  # the fill values never enter the arithmetic
    inner = valid.copy()
    inner[50:130, 70:150] = False  # valid LR pixels a few pixels away from the hole
    red = reduce(a, (200, 200))
    mse = np.mean((red[:, inner] - lr[:, inner]) ** 2)
    assert 10 * np.log10(1 / mse) > 50
    # an unmasked zero fill pulls its valid neighbours towards black
    c, _ = back_project(up, dark)
    assert np.abs(c[:, 115:120, 160:280] - a[:, 115:120, 160:280]).max() > 0.02


def test_every_sample_is_corrected_on_its_own(hr):
    lr = reduce(hr, (100, 100))
    ups = np.stack([nearest_up(lr, (400, 400)), np.clip(nearest_up(lr, (400, 400)) + 0.1, 0, 1)])
    both, _ = back_project(ups, np.stack([lr, lr]))
    for k in range(2):
        assert np.abs(both[k] - back_project(ups[k], lr)[0]).max() < 1e-6


def test_bad_arguments_are_clear_errors(hr):
    lr = reduce(hr, (100, 100))
    with pytest.raises(E2DiffSRError, match="same leading shape"):
        back_project(hr, lr[:2])
    with pytest.raises(E2DiffSRError, match="validity mask"):
        back_project(hr, lr, np.ones((50, 50), bool))
    with pytest.raises(E2DiffSRError, match="passes"):
        back_project(hr, lr, passes=-1)
    with pytest.raises(E2DiffSRError, match="outside the image"):
        back_project(hr, lr, where=Placement((100, 100), (400, 400), (10, 0), (0, 0)))


# -- in the engine: every decoded tile, every sample ------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from e2diffsr_core.api import build_model

    return build_model("tiny", seed=0)


def run(model, image, scale, **kw):
    from e2diffsr_core.engine import superresolve_array

    return superresolve_array(model, image, scale, seed=3, **kw)


def test_engine_output_is_consistent_by_default_and_raw_on_request(model, hr):
    from e2diffsr_core.engine import BORDER

    image = hr[:, :88, :104]
    # the model's own output on the input extended as a corrected run extends it, and no correction at all
    raw, _, _ = run(model, image, 3.4, consistency=False, border=BORDER)
    none, _, _ = run(model, image, 3.4, passes=0, guard=0)
    default, _, res = run(model, image, 3.4, correction_map=True)
    assert np.array_equal(raw, none)
    assert psnr_to_input(raw, image) < 40 < 50 < psnr_to_input(default, image)  # measured: 36 and 59 dB
    assert res.correction.shape == raw.shape and (res.correction >= 0).all()
    assert np.abs(res.correction - np.abs(default - raw)).max() < 1e-5  # one tile: exactly the change made


def test_engine_tiles_stay_seamless_with_the_correction(model, hr, scale=3.4):
    from test_engine import seam_score

    image = hr[:, :88, :104]
    whole, _, r1 = run(model, image, scale, tile=2048)
    tiled, _, r2 = run(model, image, scale, tile=96, overlap=24)
    assert r1.tiles == 1 and r2.tiles > 4
    mse = np.mean((whole - tiled) ** 2)
    assert 10 * np.log10(1 / mse) > 45
    assert seam_score(tiled, r2.row_starts, r2.col_starts) < 1.1
    assert psnr_to_input(tiled, image) > 50  # measured: 58 dB


def test_engine_corrects_every_sample(model, hr):
    image = hr[:, :48, :48]
    raw, raw_std, _ = run(model, image, 2.0, samples=3, consistency=False)
    mean, std, res = run(model, image, 2.0, samples=3, correction_map=True)
    alone, _, _ = run(model, image, 2.0, samples=3, guard=0)  # the correction without the guard
    assert std is not None and std.shape == mean.shape
    # measured: raw 35 dB, the correction alone 56, the default (the guard has the last word) 48
    assert psnr_to_input(alone, image) > psnr_to_input(raw, image) + 15
    assert psnr_to_input(mean, image) > psnr_to_input(raw, image) + 10
    assert std.mean() < raw_std.mean()  # consistent samples agree where the input decides
    assert res.correction.max() > 0
