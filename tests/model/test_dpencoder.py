"""DPEncoder (model/dpencoder.py): the HR/LR difference to a latent an eighth of the size."""

import torch

from e2diffsr_core.model.dpencoder import DPEncoder


def test_dpencoder_halves_the_size_three_times():
    enc = DPEncoder(32, (1, 1, 1, 1), 1)
    assert enc(torch.zeros(1, 6, 82, 70)).shape == (1, 8, 10, 8)  # floor-halved three times
