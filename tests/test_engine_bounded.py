"""The bounded engine (engine_bounded): large rasters with statistics from a fixed sample of windows, every
value computed from the input by blocks and tiles, nothing stored at output or LR resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e2diffsr_core.api import build_model
from e2diffsr_core.engine import TiledSR
from e2diffsr_core.engine import bounded as engine_bounded
from e2diffsr_core.engine.bounded import prior_bytes
from e2diffsr_core.engine.device import parse_memory
from e2diffsr_core.errors import E2DiffSRError


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", seed=0).eval()


@pytest.fixture(scope="module")
def image(data_dir):
    rgb = np.asarray(Image.open(data_dir / "SOAP_031.png").convert("RGB"), np.float32) / 255
    return rgb[:136, :152].transpose(2, 0, 1).copy()


@pytest.fixture
def small_sample(monkeypatch):
    """Sample windows smaller than the test raster (the real ones, 256 px inside, cover a small raster whole)."""
    monkeypatch.setattr(engine_bounded, "SAMPLE_INTERIOR", 48)


def run(engine, image, scale, **kw):
    C, h, w = image.shape
    out = np.zeros((C, int(h * scale), int(w * scale)), np.float32)
    written = np.zeros(out.shape[1:], np.int32)

    def write(x, y, m, v, s):
        out[:, y:y + m.shape[1], x:x + m.shape[2]] = m
        written[y:y + m.shape[1], x:x + m.shape[2]] += 1

    engine.run(lambda x, y, ww, hh: (image[:, y:y + hh, x:x + ww], np.ones((hh, ww), bool)), write, (h, w), scale,
               **kw)
    return out, written


def psnr(a, b, border=0):
    if border:
        a, b = a[:, border:-border, border:-border], b[:, border:-border, border:-border]
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def engine(model, tile, bounded, **kw):
    return TiledSR(model, torch.device("cpu"), tile=tile, precision="fp32", bounded=bounded, **kw)


def test_the_sample_windows_depend_on_the_raster_alone():
    starts = engine_bounded.sample_windows(1000, 200, align=8)
    assert len(starts) == 3 and starts == sorted(starts)
    assert all(s % 8 == 0 and 0 <= s <= 800 for s in starts)
    assert engine_bounded.sample_windows(150, 200) == [0]  # a window larger than the raster: the whole raster


def test_bounded_agrees_with_exact_and_tiles_change_nothing(model, image, small_sample):
    """Statistics from 9 windows of 48 px inside: the output within 50 dB of the exact engine's away from the
    borders; every pixel written once; the tile size moves the bounded output only by float rounding."""
    scale = 2.0
    exact, _ = run(engine(model, 128, False), image, scale, seed=3)
    bounded, written = run(engine(model, 128, True), image, scale, seed=3)
    assert (written == 1).all()
    assert not np.array_equal(exact, bounded)  # the sample really is a sample here
    assert psnr(exact, bounded, border=16) >= 50
    other_tile, _ = run(engine(model, 64, True), image, scale, seed=3)
    assert psnr(bounded, other_tile) > 100


def test_split_rows_give_the_pixels_of_the_whole_bounded_run(model, image, small_sample):
    """Each rank of a split raster computes the same statistics and feature bands (a budget small enough for
    bands of 64 LR rows): its rows are those of one run, bit for bit."""
    whole, _ = run(engine(model, 64, True, ram_budget=10 << 20), image, 2.0, seed=5)
    bottom, written = run(engine(model, 64, True, ram_budget=10 << 20), image, 2.0, seed=5, out_rows=(128, 272))
    assert (written[128:] == 1).all() and not written[:128].any()
    assert np.array_equal(whole[:, 128:], bottom[:, 128:])


def test_the_bounded_engine_writes_no_temporary_files(model, image, small_sample, tmp_path, monkeypatch):
    from e2diffsr_core.engine import canvas as engine_canvas

    made = []
    real_init = engine_canvas.FileCanvas.__init__
    monkeypatch.setattr(engine_canvas.FileCanvas, "__init__",
                        lambda self, *a, **k: made.append(a) or real_init(self, *a, **k))
    eng = engine(model, 64, True, workdir=str(tmp_path), ram_budget=parse_memory("256M"))
    run(eng, image, 2.0, seed=1)
    assert made == [] and list(tmp_path.iterdir()) == []
    assert eng.temporary_bytes(eng.plan(image.shape[1:], 2.0)) == 0


def test_the_memory_budget_chooses_the_engine_and_sizes_temporary_files(model):
    """A 4000 x 4000 input at x2 does not fit 4G (bounded, nothing on disk) and fits 64G (exact); under 512M the
    statistics sample spills (a constant) and, beyond half the budget, the prior branch's maps on the latent
    grid (its exact statistics: 1/64 of the output's pixels); a 10000 x 10000 input at x4 (1.6 Gpx) needs its
    latent chains and prior maps on disk: tens of GiB, not the terabytes of its feature maps."""
    small, mid, large = (engine(model, 0, None, ram_budget=parse_memory(m)) for m in ("512M", "4G", "64G"))
    plan = mid.plan((4000, 4000), 2.0)
    assert mid.is_bounded(plan) and small.is_bounded(plan) and not large.is_bounded(large.plan((4000, 4000), 2.0))
    assert mid.temporary_bytes(plan) == 0
    two = small.plan((2000, 2000), 2.0)
    prior = prior_bytes(model, small.plan((4000, 4000), 2.0).bordered(small.border).out_size, 1, 4)
    assert 0 < small.temporary_bytes(two) < 1 << 30  # the sample; the prior maps (224 MiB) fit
    assert small.temporary_bytes(small.plan((4000, 4000), 2.0)) == small.temporary_bytes(two) + prior - (256 << 20)
    huge = mid.plan((10000, 10000), 4.0)
    need = mid.temporary_bytes(huge)
    out = huge.bordered(mid.border).out_size
    cells = (out[0] // 8) * (out[1] // 8)
    chains, prior = 2 * cells * 4 * 5, prior_bytes(model, out, 1, 4)
    assert need == chains + prior - (2 << 30) and 16 << 30 < need < 64 << 30


@pytest.mark.parametrize("text", ["lots", "10M", "-4G", "4X"])
def test_a_bad_memory_size_is_one_clear_error(text):
    with pytest.raises(E2DiffSRError, match=r"--memory .*at least 64M, e\.g\. 512M or 4G"):
        parse_memory(text)


def test_the_bundled_model_bounded_agrees_with_exact_where_the_sample_misses_the_edges(data_dir, small_sample):
    """The bundled model's latent is extreme in its outermost cells (its response to the raster's edge), which
    dominates the prior branch's statistics: a sample inside the raster put the output 44 dB from the exact
    engine's. With those statistics exact (one pass over the whole latent), the rest sampled from windows of
    48 px inside on a 320 x 320 picture at x2: at least 50 dB, everywhere (62 dB; 42 dB before)."""
    from e2diffsr_core.checkpoint import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "e2diffsr_core" / "weights" / "e2diffsr_lite.pt")
    rgb = np.asarray(Image.open(data_dir / "SOAP_031.png").convert("RGB"), np.float32) / 255
    crop = rgb[:320, :320].transpose(2, 0, 1).copy()
    exact, _ = run(engine(model, 128, False), crop, 2.0, seed=3)
    bounded, _ = run(engine(model, 128, True), crop, 2.0, seed=3)
    assert not np.array_equal(exact, bounded)
    assert psnr(exact, bounded) >= 50
