"""CSUM (model/csum.py): LR-grid features to an RGB output of any size."""

import torch

from e2diffsr_core.model import Geometry
from e2diffsr_core.model.csum import CSUM


def test_csum_outputs_the_requested_size():
    csum = CSUM(64)
    out = csum(torch.zeros(1, 64, 10, 12), Geometry.whole((10, 12), (34, 40)))
    assert out.shape == (1, 3, 34, 40)
