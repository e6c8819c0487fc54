"""The FLOP count the time estimate uses agrees with torch's own counter, without importing triton."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from e2diffsr_core.api import build_model
from e2diffsr_core.model import E2DiffSR, Geometry
from e2diffsr_core.tools.inspect_model import FlopCount


def sample_on_meta(cfg, lr: int, scale: float):
    with torch.device("meta"):
        meta = E2DiffSR(cfg).eval()
    out = (int(lr * scale),) * 2
    x = torch.zeros(1, 3, lr, lr, device="meta")
    noises = [torch.zeros(1, cfg.embed_dim, out[0] // 8, out[1] // 8, device="meta") for _ in range(cfg.timesteps)]
    return lambda: meta.sample(x, Geometry.whole((lr, lr), out), noises=noises)


@pytest.mark.parametrize("config,scale", [("tiny", 2.0), ("tiny", 3.4), ("lite", 4.0)])
def test_the_count_agrees_with_torchs_flop_counter(config, scale):
    from torch.utils.flop_counter import FlopCounterMode

    run = sample_on_meta(build_model(config).cfg, 24, scale)
    with FlopCount() as ours, torch.no_grad():
        run()
    with FlopCounterMode(display=False) as theirs, torch.no_grad():
        run()
    assert ours.total > 0
    assert ours.total == pytest.approx(theirs.get_total_flops(), rel=1e-3)


def test_counting_imports_no_triton():
    code = ("import sys; from e2diffsr_core.tools.inspect_model import FlopCount; "
            "print(any(m == 'triton' or m.startswith('triton.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
