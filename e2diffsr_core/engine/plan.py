"""What one engine run does, decided and checked once: the frozen :class:`RunPlan`, and the run's callbacks.

Everything after :meth:`TiledSR.plan` (tiled) reads its sizes, bands, samples, tiles and windows from the
plan rather than from loose arguments, so a rule (the output size, the minimum side, the sample limit) is
applied in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .. import rules
from ..errors import E2DiffSRError
from ..gridmap import GridMap
from .latent import LATENT

#: read(x, y, w, h) -> (data [C, h, w] float32 in [0, 1], valid [h, w] bool): the LR image.
Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
#: write(x, y, values [C, h, w], valid [h, w], std [C, h, w] | None): output pixels, each written once.
Writer = Callable[[int, int, np.ndarray, np.ndarray, "np.ndarray | None"], None]


def tile_starts(size: int, tile: int) -> list[int]:
    """Starts of output tiles of ``tile`` pixels (the last one may be narrower)."""
    return list(range(0, size, tile))


def row_spans(height: int, tile: int, rows: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """The output tiles' row ranges [y0, y1) of ``tile`` pixels, cut to ``rows`` (first, stop) when given.
    Tiles are exact, so a range cut anywhere still gives the pixels of the whole run."""
    first, stop = (0, height) if rows is None else (max(0, int(rows[0])), min(height, int(rows[1])))
    spans = [(max(y0, first), min(y0 + tile, height, stop)) for y0 in tile_starts(height, tile)]
    return [(a, b) for a, b in spans if a < b]


@dataclass(frozen=True)
class RunPlan:
    """One run: where output pixels lie (``grid``), the bands, the samples, the seed and the tiling."""

    grid: GridMap
    groups: tuple[tuple[int, int, int], ...]  # the channel triples the model runs on, e.g. ((0, 1, 2),)
    channels: int                               # bands handed to the writer
    samples: int
    seed: int
    tile: int                                   # output tile side (pixels, a multiple of 8)
    window: int                                 # UNet window side (output pixels)
    out_rows: tuple[int, int] | None = None     # decode only these output rows (one rank's part)
    temperature: float = 1.0                    # multiplies the diffusion's noise (rules.check_temperature)
    # On an input extended beyond its edges (:meth:`bordered`): the image's own mapping, and where the image
    # lies in the model's grids (output row, column, LR row, column); tiles, rows and writes are the image's.
    image: GridMap | None = None
    origin: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def build(cls, lr_size, scale: float, *, tile: int, window: int, out_size=None, grid: GridMap | None = None,
              groups=None, channels: int = 3, samples: int = 1, seed: int = 0, out_rows=None,
              temperature: float | None = None) -> RunPlan:
        """The checked plan; ``out_size`` (h, w) defaults to the scale's (rules.output_size)."""
        h, w = (int(v) for v in lr_size)
        out_size = tuple(out_size) if out_size is not None else rules.output_size(h, w, scale)
        rules.check_output_side(out_size[1], out_size[0])
        grid = GridMap.of(grid, (h, w), out_size)
        if (grid.lr_size, grid.out_size) != ((h, w), tuple(out_size)):
            raise E2DiffSRError(f"the grid is for {grid.lr_size} -> {grid.out_size} px, the run {(h, w)} -> "
                                f"{tuple(out_size)}")
        groups = tuple(tuple(int(c) for c in g) for g in (groups or [[0, 1, 2]]))
        if samples < 1 or int(samples) != samples:
            raise E2DiffSRError(f"samples must be a whole number of at least 1, got {samples}")
        return cls(grid, groups, int(channels), int(samples), int(seed), int(tile), int(window),
                   None if out_rows is None else (int(out_rows[0]), int(out_rows[1])),
                   rules.check_temperature(temperature, samples))

    def bordered(self, m: int) -> RunPlan:
        """The plan of the model's run on the input extended by ``m`` LR pixels on every side: its grid is the
        extended one (gridmap.GridMap.bordered), while its tiles, rows and results stay the image's."""
        if m <= 0 or self.image is not None:
            return self
        grid, (oy, ox) = self.grid.bordered(m)
        return replace(self, grid=grid, image=self.grid, origin=(oy, ox, m, m))

    @property
    def image_grid(self) -> GridMap:
        """The mapping of the image the results belong to (the grid itself without a border)."""
        return self.grid if self.image is None else self.image

    def smaller(self) -> RunPlan:
        """The same run with tiles and windows halved (after running out of memory)."""
        return replace(self, tile=max(64, self.tile // 2 // LATENT * LATENT), window=max(256, self.window // 2))

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.grid.lr_size

    @property
    def out_size(self) -> tuple[int, int]:
        return self.grid.out_size

    @property
    def batch(self) -> int:
        """Images the model runs side by side: every sample of every band group."""
        return self.samples * len(self.groups)

    @property
    def row_starts(self) -> list[int]:
        """The image's tile rows (its own coordinates)."""
        return tile_starts(self.image_grid.out_size[0], self.tile)

    @property
    def col_starts(self) -> list[int]:
        return tile_starts(self.image_grid.out_size[1], self.tile)

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """Output tiles (y0, y1, x0, x1) of the image in row order, cut to ``out_rows`` when given, in the
        model's output grid (shifted by the border's output pixels on an extended input)."""
        (H, W), (oy, ox) = self.image_grid.out_size, self.origin[:2]
        cols = [(ox + x, ox + min(W, x + self.tile)) for x in tile_starts(W, self.tile)]
        return [(oy + y0, oy + y1, x0, x1) for y0, y1 in row_spans(H, self.tile, self.out_rows) for x0, x1 in cols]


@dataclass(frozen=True)
class RunIO:
    """Where a run reads and writes, and how it reports: the callbacks of :meth:`TiledSR.run_plan`."""

    read: Reader
    write: Writer
    combine: Callable[[list[np.ndarray]], np.ndarray] | None = None  # outputs per group -> [C, h, w]
    correction: Writer | None = None  # the size of the consistency correction of the pixels written
    progress: Callable[[float], None] | None = None
    cancel: Callable[[], bool] | None = None
    log: Callable[[str], None] | None = None

    def ungroup(self, outs: list[np.ndarray]) -> np.ndarray:
        """The inverse of the grouping (the first group's output when no ``combine`` was given)."""
        return outs[0] if self.combine is None else self.combine(outs)


__all__ = ["Reader", "RunIO", "RunPlan", "Writer", "row_spans", "tile_starts"]
