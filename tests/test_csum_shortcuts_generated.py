"""Generated cases for the engine's exact CSUM shortcuts at x2 and x4: on any raster size, any tile and any
window of the default mapping (a processing area's), the levels the engine does not build, computed from the
level on the output grid, equal the model's own levels built and resized.

CI runs a fixed set of 40 examples; ``make fuzz`` (``E2DIFFSR_FUZZ_EXAMPLES``, default 300) draws fresh ones.
Hypothesis shrinks a failure to the smallest raster and tile.
"""

from __future__ import annotations

import os
import types

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2diffsr_core.api import build_model
from e2diffsr_core.engine import decode
from e2diffsr_core.gridmap import AxisMap, GridMap

FUZZ = int(os.environ.get("E2DIFFSR_FUZZ_EXAMPLES", "0"))
SUITE = settings(max_examples=FUZZ or 40, derandomize=not FUZZ, deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def csum():
    torch.manual_seed(0)
    module = build_model("tiny", seed=0).first_stage_model.decoder.upsampler
    with torch.no_grad():  # biases too, so that the edge taps' constant terms count
        for up in module.UPNet_x2_list:
            up[0].bias.normal_()
    return module


@st.composite
def cases(draw):
    scale = draw(st.sampled_from([2, 4]))
    n_lr = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))  # the LR canvas (the area's input window)
    # the output window: whole LR pixels into the canvas, lying over it
    start = [draw(st.integers(0, n - 1)) for n in n_lr]
    stop = [draw(st.integers(s + 1, n)) for s, n in zip(start, n_lr)]
    out = [(b - a) * scale for a, b in zip(start, stop)]
    oy0 = draw(st.integers(0, out[0] - 1))
    ox0 = draw(st.integers(0, out[1] - 1))
    tile = (oy0, draw(st.integers(oy0 + 1, out[0])), ox0, draw(st.integers(ox0 + 1, out[1])))
    return scale, n_lr, tuple(start), tuple(out), tile


@SUITE
@given(case=cases())
def test_the_shortcuts_give_the_model_s_levels(csum, case):
    scale, n_lr, start, out, tile = case
    grid = GridMap(*(AxisMap(n, o, 1.0 / scale, float(s)) if (s, o) != (0, n * scale) else AxisMap(n, o)
                     for n, o, s in zip(n_lr, out, start)))
    assert decode.exact_shift(grid, scale) == start and decode.shortcut_grid(grid)
    k = 1 if scale == 2 else 2  # the level on the output grid
    f = 2 ** k
    st_ = types.SimpleNamespace(autocast=torch.no_grad, store=types.SimpleNamespace(dtype=torch.float32),
                                conv=lambda conv, x: conv(x))
    level = torch.randn(1, csum.UPNet_x2_list[0][0].in_channels, n_lr[0] * f, n_lr[1] * f,
                        generator=torch.Generator().manual_seed(sum(n_lr) + sum(tile)))
    with torch.no_grad():
        levels = [level]
        for up in csum.UPNet_x2_list[k:]:
            levels.append(up(levels[-1]))
        full = [F.interpolate(lv, size=level.shape[2:], mode="bilinear", align_corners=False) for lv in levels[1:]]
        oy0, oy1, ox0, ox1 = tile
        sy, sx = start[0] * f, start[1] * f
        # the region of the level the tile is given, in LR units: what it reads and two output pixels more
        region = ((max(0, (oy0 + sy - 2) // f), min(n_lr[0], -(-(oy1 + sy + 2) // f))),
                  (max(0, (ox0 + sx - 2) // f), min(n_lr[1], -(-(ox1 + sx + 2) // f))))
        (y0, y1), (x0, x1) = region
        crop = level[:, :, y0 * f:y1 * f, x0 * f:x1 * f]
        if scale == 2:
            got = [decode._averaged_level(st_, csum.UPNet_x2_list[-2], crop, region, tile, f, start),
                   decode._composed_level(st_, csum, crop, region, tile, f, start, n_lr)]
        else:
            got = [decode._averaged_level(st_, csum.UPNet_x2_list[-1], crop, region, tile, f, start)]
    for g, ref in zip(got, full[-len(got):]):
        ref = ref[:, :, oy0 + sy:oy1 + sy, ox0 + sx:ox1 + sx]
        assert g.shape == ref.shape
        assert (g - ref).abs().max() <= 1e-4 * (1 + ref.abs().max()), (g - ref).abs().max()
