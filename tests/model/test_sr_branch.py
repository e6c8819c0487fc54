"""The SR branch (model/sr_branch.py): an IMDB keeps the shape; an FRU is IMDBs, a 1 x 1 fusion, a 3 x 3 conv."""

import torch

from e2diffsr_core.model.sr_branch import FRU, IMDB


def test_imdb_keeps_the_shape_and_fru_has_its_parameters():
    assert IMDB(64)(torch.zeros(2, 64, 9, 7)).shape == (2, 64, 9, 7)
    fru = FRU(64, 12)
    assert sum(p.numel() for p in fru.parameters()) == 12 * sum(p.numel() for p in IMDB(64).parameters()) + (
        768 * 64 + 64) + (64 * 64 * 9 + 64)
