"""The time estimate's cost model: FLOPs per output pixel, a probe under a second, a cached rate that follows runs."""

import time

import pytest
import torch

from e2diffsr_core.api import build_model
from qgis_plugin import estimate


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "estimate.json"


def test_flops_per_pixel_follow_the_scale_as_counted(cache):
    model = build_model("tiny", seed=0)
    a, b = estimate.flop_terms(model, cache)
    assert a > 0 and b > 0
    # the two-term model predicts a third scale's count (done directly) within a few per cent
    direct = estimate._count(model, 3.0)
    assert abs((a + b / 9) - direct) / direct < 0.05
    start = time.perf_counter()
    assert estimate.flop_terms(model, cache) == (a, b)  # cached: no second count
    assert time.perf_counter() - start < 0.5


def test_the_probe_costs_under_a_second():
    model = build_model("tiny", seed=0)
    start = time.perf_counter()
    rate = estimate.probe_rate(model, torch.device("cpu"))
    assert time.perf_counter() - start < 1.0 and rate > 1e6


def test_the_pace_is_fitted_to_runs_and_follows_a_drift(cache):
    model, cpu = build_model("tiny", seed=0), torch.device("cpu")
    seconds, source = estimate.predict(1e10, model, cpu, cache)
    assert "probe" in source and seconds > 0
    # runs of 2 s + 1 s per 1e9 FLOPs: the fit finds both parts
    for gflops in (2, 5, 9):
        estimate.record(model, cpu, gflops * 1e9, 2.0 + gflops, 2.0 + gflops, cache)
    seconds, source = estimate.predict(20e9, model, cpu, cache)
    assert "earlier runs" in source and seconds == pytest.approx(22.0, rel=1e-6)
    # the machine got three times slower: the first run that shows it replaces the earlier runs
    assert estimate.record(model, cpu, 10e9, 36.0, 12.0, cache)
    assert estimate.predict(10e9, model, cpu, cache)[0] == pytest.approx(36.0, rel=0.01)


def test_one_slow_run_among_few_does_not_make_the_estimate_explode(cache):
    model, cpu = build_model("tiny", seed=0), torch.device("cpu")
    # measured: 5.8 s, then a run slowed by other work (12.1 s for 1.5x the FLOPs), then 13.8 s for 2.4x
    estimate.record(model, cpu, 556e9, 5.8, 6.2, cache)
    estimate.record(model, cpu, 861e9, 12.1, 8.2, cache)
    seconds, _ = estimate.predict(1345e9, model, cpu, cache)
    assert 0.6 * 13.8 <= seconds <= 1.4 * 13.8  # a straight line through the two would say 27.7 s


def test_time_left_moves_from_the_estimate_to_the_pace_seen(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: now[0])
    left = estimate.Remaining(60.0)
    assert left.seconds(0.0) == 60.0
    now[0] += 30.0  # at half-time of the estimate only a tenth is done: the run is slower than estimated
    assert left.seconds(0.1) > 60.0
    now[0] += 30.0
    w = 0.9 ** 0.5
    assert left.seconds(0.9) == pytest.approx((1 - w) * 60 + w * 60 / 0.9 - 60, rel=1e-6)


def test_one_pace_serves_every_scale_the_engine_s_shortcuts_counted(cache):
    """The engine's own arithmetic (counted while it runs) over the estimate's FLOPs is the same at x2, x3 and
    x4 within 10 %: the CSUM's last level the engine does not build at x2 and x4 is not counted there (without
    that the ratios spread by 25 %, so a pace learned at one scale was a quarter off at another)."""
    import numpy as np

    from e2diffsr_core.engine import superresolve_array
    from e2diffsr_core.tools.inspect_model import FlopCount

    model = build_model("tiny", seed=0)
    terms = estimate.flop_terms(model, cache)
    ratios = []
    for scale in (2.0, 3.0, 4.0):
        img = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
        with FlopCount() as counted, torch.no_grad():
            superresolve_array(model, img, scale, seed=0)
        plan = {"scale": scale, "width": int(64 * scale), "height": int(64 * scale), "groups": 1, "samples": 1}
        ratios.append(counted.total / estimate.run_flops(plan, terms, model))
    assert max(ratios) / min(ratios) < 1.1, ratios


def test_an_aligned_output_is_estimated_with_the_arithmetic_it_does(cache):
    """An output aligned to another grid (a processing area, --align-to) builds every CSUM level: at x2 its
    estimate counts them (the engine's own arithmetic over the estimate's is the default mapping's within
    10 %; with the shortcuts taken off as for the default mapping 1.43x for this model, 1.8x for the bundled one)."""
    import numpy as np

    from e2diffsr_core.engine import superresolve_array
    from e2diffsr_core.gridmap import AxisMap, GridMap
    from e2diffsr_core.tools.inspect_model import FlopCount

    model = build_model("tiny", seed=0)
    terms = estimate.flop_terms(model, cache)
    img = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    half = AxisMap(64, 128, 0.5, -0.125)  # half the pixel size, shifted by a quarter of an input pixel
    ratios = {}
    for shortcuts, grid in ((True, None), (False, GridMap(half, half))):
        with FlopCount() as counted, torch.no_grad():
            superresolve_array(model, img, 2.0, seed=0, grid=grid)
        plan = {"scale": 2.0, "width": 128, "height": 128, "groups": 1, "samples": 1, "shortcuts": shortcuts}
        ratios[shortcuts] = counted.total / estimate.run_flops(plan, terms, model)
    assert max(ratios.values()) / min(ratios.values()) < 1.1, ratios
