"""Where each output pixel lies on the input (LR) grid: the one mapping every part of a run samples with.

By default the output covers exactly the input's extent, so the mapping follows from the two sizes: output
pixel g is centred on LR coordinate (g + 0.5) * n_lr / n_out - 0.5. An output aligned to another raster's
grid (``--align-to``) has its own pixel size and starts a fraction of a pixel before the input: its
``step`` (LR pixels per output pixel) and ``shift`` (where its first pixel edge lies on the LR grid, in LR
pixels) are given. The model's resizes (model/geometry.py), the engine's tile and LR windows
(engine/decode.py, engine/tiled.py), the consistency correction (engine/consistency.py) and the raster reader's masks
all ask an :class:`AxisMap` rather than recomputing the ratio of the sizes; with the default mapping each of
them computes exactly what it computed before (same expressions, so the same floating-point results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisMap:
    """The mapping along one axis (rows or columns)."""

    n_lr: int
    n_out: int
    step: float | None = None  # LR pixels per output pixel; None: n_lr / n_out
    shift: float = 0.0  # LR position of the output's first pixel edge (0: the input's first edge)

    @property
    def sized(self) -> bool:
        """True for the default mapping (the output covers the input exactly)."""
        return self.step is None and self.shift == 0.0

    @property
    def ratio(self) -> float:
        """LR pixels per output pixel."""
        return self.n_lr / self.n_out if self.step is None else self.step

    @property
    def scale(self) -> float:
        """Output pixels per LR pixel: the true scale of this axis."""
        return self.n_out / self.n_lr if self.step is None else 1.0 / self.step

    def centre(self, g):
        """LR coordinate (pixel-centre units: 0 is the first LR pixel's centre) of output pixel(s) g."""
        c = (g + 0.5) * self.ratio - 0.5
        return c if self.shift == 0.0 else c + self.shift

    def edge(self, g):
        """LR position (pixel-edge units) of output pixel g's centre: its floor is the LR pixel under it."""
        if self.step is None:
            e = (g + 0.5) * self.n_lr / self.n_out
        else:
            e = (g + 0.5) * self.step
        return e if self.shift == 0.0 else e + self.shift

    def out_edge(self, i):
        """Output position (pixel-edge units) of LR pixel edge i (the inverse mapping)."""
        return (i - self.shift) / self.ratio

    def span(self, o0: int, o1: int, margin: int) -> tuple[int, int]:
        """LR pixels [lo, hi) that output pixels [o0, o1) sample, with ``margin`` pixels of taps each side,
        clipped to the LR image."""
        lo = math.floor(self.centre(o0)) - margin
        hi = math.floor(self.centre(o1 - 1)) + 1 + margin
        return max(0, lo), min(self.n_lr, hi)

    def window(self, o0: int, o1: int, l0: int, l1: int) -> AxisMap:
        """This mapping restricted to output pixels [o0, o1) over LR pixels [l0, l1) (itself when whole)."""
        if (o0, o1, l0, l1) == (0, self.n_out, 0, self.n_lr):
            return self
        return AxisMap(l1 - l0, o1 - o0, self.ratio, self.shift + o0 * self.ratio - l0)

    def to_lr(self) -> tuple[float | None, float]:
        """(output pixels per LR pixel, offset) of the reduction onto the LR grid: LR pixel j is centred on
        output position (j + 0.5) * ratio + offset (pixel-edge units); (None, 0.0) for the sizes' own ratio."""
        if self.sized:
            return None, 0.0
        return self.scale, -self.shift * self.scale

    def to_out(self) -> tuple[float | None, float]:
        """(LR pixels per output pixel, offset) of the enlargement onto the output grid, as :meth:`to_lr`."""
        if self.sized:
            return None, 0.0
        return self.ratio, self.shift

    def bordered(self, m: int) -> tuple[AxisMap, int]:
        """This mapping on the input extended by ``m`` LR pixels on both sides: (the mapping, M), where the
        output gains M = ceil(m / ratio) pixels a side and output pixel g becomes g + M at the same place on
        the ground. Where the margin is a whole number of output pixels on a sized mapping, the result is
        sized too (the model's plain resizes and the engine's x2/x4 shortcuts stay)."""
        if m <= 0:
            return self, 0
        M = math.ceil(m / self.ratio - 1e-9)
        n_lr, n_out = self.n_lr + 2 * m, self.n_out + 2 * M
        if self.sized and n_out * self.n_lr == n_lr * self.n_out:
            return AxisMap(n_lr, n_out), M
        return AxisMap(n_lr, n_out, self.ratio, self.shift + m - M * self.ratio), M


@dataclass(frozen=True)
class GridMap:
    """The mapping of both axes (rows, columns) of a run."""

    y: AxisMap
    x: AxisMap

    @classmethod
    def sized(cls, lr_size, out_size) -> GridMap:
        """The default mapping of an output of ``out_size`` (h, w) over exactly the input of ``lr_size``."""
        return cls(AxisMap(int(lr_size[0]), int(out_size[0])), AxisMap(int(lr_size[1]), int(out_size[1])))

    @classmethod
    def of(cls, grid: GridMap | None, lr_size, out_size) -> GridMap:
        """``grid`` itself, or the default mapping when it is None."""
        return grid if grid is not None else cls.sized(lr_size, out_size)

    @property
    def axes(self) -> tuple[AxisMap, AxisMap]:
        return self.y, self.x

    @property
    def aligned(self) -> bool:
        """True when the output grid is not the input's extent cut into n_out pixels (a step or a shift)."""
        return not (self.y.sized and self.x.sized)

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.y.n_lr, self.x.n_lr

    def bordered(self, m: int) -> tuple[GridMap, tuple[int, int]]:
        """The mapping on the input extended by ``m`` LR pixels on every side (:meth:`AxisMap.bordered`), and
        the output pixels (rows, columns) it adds on each side."""
        (y, my), (x, mx) = self.y.bordered(m), self.x.bordered(m)
        return GridMap(y, x), (my, mx)

    @property
    def out_size(self) -> tuple[int, int]:
        return self.y.n_out, self.x.n_out


def mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Indices ``i`` (any integers) folded into [0, n) by reflection about the image's edges (the edge pixel
    repeated: -1 -> 0, n -> n - 1), repeatedly for a margin wider than the image."""
    j = np.mod(np.asarray(i, np.int64), 2 * n)
    return np.where(j < n, j, 2 * n - 1 - j)


__all__ = ["AxisMap", "GridMap", "mirror"]
