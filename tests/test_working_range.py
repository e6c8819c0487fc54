"""The working range of 8-bit imagery: 0..255 for ordinary pictures, the bands' own range for narrow ones."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from raster_support import make_raster

from e2diffsr_core.raster import superresolve_raster
from e2diffsr_core.raster_io import RasterReader


def picture(lo, hi, h=40, w=48, seed=0):
    """Three bands of texture spanning ``lo``..``hi`` (a hazy or dark picture when the span is narrow)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 3.0) + np.cos(yy / 4.0) + 2) / 4
    bands = [np.clip(base + rng.normal(0, 0.05, (h, w)), 0, 1) for _ in range(3)]
    return np.stack([np.rint(lo + b * (hi - lo)) for b in bands]).astype(np.uint8)


def ranges_of(path, **kw):
    with RasterReader(path, **kw) as r:
        return [(r_.lo, r_.hi) for r_ in r.ranges]


def test_ordinary_8_bit_pictures_keep_the_training_range(tmp_path):
    src = make_raster(tmp_path / "in.tif", picture(20, 230))
    assert ranges_of(src) == [(0.0, 255.0)] * 3


def test_narrow_8_bit_bands_share_one_range_that_fits_them(tmp_path):
    data = picture(33, 64)
    data[2] = np.clip(data[2].astype(int) + 10, 0, 255)  # blue a little brighter: one range keeps the balance
    src = make_raster(tmp_path / "in.tif", data)
    got = ranges_of(src)
    assert len(set(got)) == 1  # one range for every band
    lo, hi = got[0]
    assert 33 <= lo <= 36 and 70 <= hi <= 74, got  # the bands' 0.5th and 99.5th percentiles together
    # a band of nodata does not drag the range down to 0
    nodata = make_raster(tmp_path / "nd.tif", np.concatenate([data, np.zeros_like(data[:1])]), nodata=0)
    assert ranges_of(nodata, bands=[1, 2, 3, 4])[0] == got[0]


def test_a_narrow_band_is_not_sharpened_beyond_its_values_and_outliers_are_kept(tmp_path, tiny_model_file):
    data = picture(33, 64)
    data[:, 18:22, 20:24] = 250  # a few bright pixels outside the percentile range: carried, never clipped
    src = make_raster(tmp_path / "in.tif", data)
    out = tmp_path / "out.tif"
    superresolve_raster(src, str(out), 4, model=str(tiny_model_file))
    sr = gdal.Open(str(out)).ReadAsArray()
    assert sr.shape == (3, 160, 192)
    assert sr[:, 76:84, 84:92].min() >= 240  # the bright block's inside keeps its value
    quiet = np.ones(sr.shape[1:], bool)
    quiet[60:100, 68:108] = False
    assert sr[:, quiet].min() >= 33 and sr[:, quiet].max() <= 64  # within the band's own values elsewhere


@pytest.mark.parametrize("lo,hi", [(33, 64), (0, 255)])
def test_an_explicit_range_still_decides(tmp_path, lo, hi):
    src = make_raster(tmp_path / "in.tif", picture(33, 64))
    assert ranges_of(src, ranges=[(lo, hi)] * 3) == [(float(lo), float(hi))] * 3
