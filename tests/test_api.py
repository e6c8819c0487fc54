"""superresolve_tensor (api.py) on tensors: output sizes and range, scale checks, tiny inputs the authors' code
cannot run."""

import pytest
import torch

from e2diffsr_core.api import build_model, superresolve_tensor
from e2diffsr_core.errors import E2DiffSRError


@pytest.mark.parametrize("lr_hw,scale,out_hw", [((24, 20), 3.4, (81, 68)), ((16, 16), 2.0, (32, 32)),
                                                 ((4, 5), 2.0, (8, 10)), ((30, 17), 1.5, (45, 25))])
def test_output_size_and_range(lr_hw, scale, out_hw):
    model = build_model("tiny")
    out = superresolve_tensor(model, torch.rand(2, 3, *lr_hw), scale, seed=1)
    assert out.shape == (2, 3, *out_hw)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [1.0, 0.5, -2, float("nan"), float("inf"), 17.0, "x"])
def test_bad_scales_are_refused(bad):
    with pytest.raises(E2DiffSRError, match="scale"):
        superresolve_tensor(build_model("tiny"), torch.rand(1, 3, 16, 16), bad)


def test_scale_beyond_trained_range_warns():
    with pytest.warns(UserWarning, match="beyond the trained range"):
        out = superresolve_tensor(build_model("tiny"), torch.rand(1, 3, 8, 8), 10.0)
    assert out.shape == (1, 3, 80, 80)
