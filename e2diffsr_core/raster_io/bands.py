"""Band groups: the model takes three channels, rasters have any number of bands.

Selected bands are split into consecutive groups of three; a short group is padded by repeating its last band
(1 band -> ``[[0, 0, 0]]``, 2 -> ``[[0, 1, 1]]``, 5 -> ``[[0, 1, 2], [3, 4, 4]]``). :func:`ungroup` turns the
model's 3-channel outputs back into one array per selected band by averaging every position a band occupies
in its group (a grey band replicated three times is averaged back).
"""

from __future__ import annotations

import numpy as np


def make_groups(n: int) -> list[list[int]]:
    groups = []
    for start in range(0, n, 3):
        g = list(range(start, min(start + 3, n)))
        while len(g) < 3:
            g.append(g[-1])
        groups.append(g)
    return groups


def ungroup(outputs, groups: list[list[int]], n_bands: int) -> np.ndarray:
    """Combine per-group model outputs back into one array per selected band.

    ``outputs`` is a sequence (or array) of ``[3, h, w]`` arrays, one per group, in the order of ``groups``.
    Each band is the mean of all positions it occupies in its group (its primary position alone when
    it is not repeated). Returns ``[n_bands, h, w]`` float32.
    """
    outputs = [np.asarray(o) for o in outputs]
    if len(outputs) != len(groups):
        raise ValueError(f"got {len(outputs)} outputs for {len(groups)} band groups")
    h, w = outputs[0].shape[-2:]
    acc = np.zeros((n_bands, h, w), dtype=np.float64)
    cnt = np.zeros(n_bands, dtype=np.int64)
    for out, group in zip(outputs, groups, strict=True):
        for pos, band in enumerate(group):
            acc[band] += out[pos]
            cnt[band] += 1
    if (cnt == 0).any():
        missing = [int(i) for i in np.flatnonzero(cnt == 0)]
        raise ValueError(f"bands {missing} appear in no group")
    return (acc / cnt[:, None, None]).astype(np.float32)
