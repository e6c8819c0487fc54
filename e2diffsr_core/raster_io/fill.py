"""Filling invalid pixels so that they do not pollute their valid neighbours in the model."""

from __future__ import annotations

import numpy as np


def fill_invalid(data: np.ndarray, valid: np.ndarray, default: np.ndarray) -> None:
    """Fill ``data[:, ~valid]`` in place from the valid surroundings (push-pull pyramid).

    Each hole gets the mean of the valid pixels of the finest pyramid cell around it that has any, so
    a hole's border takes values close to its valid neighbours. A window without any valid pixel gets
    ``default`` per band.
    """
    if valid.all():
        return
    if not valid.any():
        data[:] = default[:, None, None]
        return
    weight = valid.astype(np.float64)
    values = np.where(valid[None], data, 0.0)
    levels = [(values, weight)]
    while not (weight > 0).all() and max(weight.shape) > 1:
        h, w = weight.shape
        ph, pw = h % 2, w % 2
        if ph or pw:
            values = np.pad(values, ((0, 0), (0, ph), (0, pw)))
            weight = np.pad(weight, ((0, ph), (0, pw)))
        h2, w2 = weight.shape[0] // 2, weight.shape[1] // 2
        values = values.reshape(values.shape[0], h2, 2, w2, 2).sum(axis=(2, 4))
        weight = weight.reshape(h2, 2, w2, 2).sum(axis=(1, 3))
        levels.append((values, weight))
    values, weight = levels[-1]
    estimate = values / np.maximum(weight, 1e-12)[None]
    for values, weight in reversed(levels[:-1]):
        h, w = weight.shape
        up = np.repeat(np.repeat(estimate, 2, axis=1), 2, axis=2)[:, :h, :w]
        has = weight > 0
        estimate = np.where(has[None], values / np.maximum(weight, 1e-12)[None], up)
    holes = ~valid
    data[:, holes] = estimate[:, holes]
