"""A run limited to a processing area (an extent and/or a polygon mask) on the whole-layer run's output grid.

The output is the box of whole-layer output pixels that covers the area (raster_io/area.py). The engine runs
on a larger *computed* box, the area plus a margin of context cut to the whole output and started on the
latent's 8-pixel cells, over the input window those pixels read plus a margin; only the tiles inside the area
(and, with a mask, only those that touch a polygon) are decoded and written. The model's whole-image
statistics then come from the computed box instead of the whole raster, so a piece agrees with the matching
window of a whole run closely (tests: >= 40 dB) but not bit for bit; an area that needs the whole output runs
as the whole-layer run and gives its pixels exactly.

Boxes live on the whole run's *bordered* grid (the input extended by ``engine.tiled.BORDER`` LR pixels by
reflection, docs/design.md "Raster borders"): where an area meets the raster's edge its computed box takes
the reflected border exactly as the whole run does; inside, its margin is real pixels. ``computed`` and
``lr`` are kept in the image's own pixels, so they reach below 0 or beyond the raster at a border.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from .engine.plan import RunPlan
from .engine.tiled import BORDER
from .errors import E2DiffSRError
from .gridmap import AxisMap, GridMap
from .raster_io.align import Alignment
from .raster_io.area import AreaOptions, Polygons, extent_bounds, fmt, intersect, north_up, output_box
from .raster_io.georef import scaled_geotransform

#: Context around the area: output pixels (CondNet and the diffusion run on the output grid and its latent)
#: and input pixels (the decoder's features on the input grid); measured in tests/test_area.py.
MARGIN_OUT = 32
MARGIN_LR = 16
LATENT = 8
#: Masks of more polygons than this are computed over the box around them all (grouping costs n^2).
MAX_GROUPED = 2000


@dataclass(frozen=True)
class AreaPlan(RunPlan):
    """A :class:`RunPlan` that decodes only the tiles inside ``keep`` (y0, y1, x0, x1 of the computed box) and,
    with ``touches``, only those for which it is True (tiles of the computed box)."""

    keep: tuple[int, int, int, int] = (0, 0, 0, 0)
    touches: Callable[[tuple[int, int, int, int]], bool] | None = None
    latent_origin: tuple[int, int] = (0, 0)  # the computed box's first latent cell in the whole run's latent
    whole_origin: tuple[int, int] = (0, 0)     # the whole output's first pixel (row, column) in the computed box

    def all_tiles(self) -> list[tuple[int, int, int, int]]:
        """The whole layer's output tiles (of ``tile`` px from its first pixel, at ``whole_origin`` in the
        computed box) cut to ``keep``: the pieces a whole run would compute there."""
        ky0, ky1, kx0, kx1 = self.keep
        (oy, ox), T = self.whole_origin, self.tile

        def spans(o, k0, k1):
            first = o + (k0 - o) // T * T
            return [(max(a, k0), min(a + T, k1)) for a in range(first, k1, T)]

        return [(y0, y1, x0, x1) for y0, y1 in spans(oy, ky0, ky1) for x0, x1 in spans(ox, kx0, kx1)]

    def tiles(self) -> list[tuple[int, int, int, int]]:
        tiles = self.all_tiles()
        return tiles if self.touches is None else [t for t in tiles if self.touches(t)]

    @classmethod
    def of(cls, plan: RunPlan, keep, touches, latent_origin=(0, 0), whole_origin=(0, 0)) -> AreaPlan:
        return cls(**{f.name: getattr(plan, f.name) for f in fields(RunPlan)}, keep=keep, touches=touches,
                   latent_origin=latent_origin, whole_origin=whole_origin)


@dataclass(frozen=True)
class Area:
    """Where an area run's pixels lie: ``box`` (x0, y0, x1, y1) of the whole-layer output, the ``computed`` box
    (same form), the input window ``lr`` (x0, y0, x1, y1), and the engine's and the writer's grids."""

    box: tuple[int, int, int, int]
    computed: tuple[int, int, int, int]
    lr: tuple[int, int, int, int]
    engine_grid: GridMap
    alignment: Alignment | None       # the writer's: the box's geotransform and its pixels on the input
    polygons: Polygons | None
    box_gt: tuple
    border_out: tuple[int, int] = (0, 0)  # output pixels (rows, columns) the border adds before the image
    # the raster's own pixels in the computed box: their mapping, and where they start in it (output row,
    # column, LR row, column; RunPlan.origin)
    image_grid: GridMap | None = None
    image_origin: tuple[int, int, int, int] = (0, 0, 0, 0)
    part: tuple[int, int, int, int] | None = None  # the output pixels this piece computes (None: all the box)
    parts: tuple[Area, ...] = ()  # pieces computed one after the other (polygons far apart), or none

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def computed_size(self) -> tuple[int, int]:
        return self.computed[2] - self.computed[0], self.computed[3] - self.computed[1]

    def keep(self, rows=None) -> tuple[int, int, int, int]:
        """The box (rows cut to ``rows`` of the box's output when given) in the computed box's pixels."""
        x0, y0, x1, y1 = self.box
        cx, cy = self.computed[0], self.computed[1]
        if rows is not None:
            y0, y1 = y0 + rows[0], min(y1, y0 + rows[1])
        if self.part is not None:
            px0, py0, px1, py1 = self.part
            x0, y0, x1, y1 = max(x0, px0), max(y0, py0), min(x1, px1), max(min(y1, py1), max(y0, py0))
        return y0 - cy, y1 - cy, x0 - cx, x1 - cx

    def whole_origin(self) -> tuple[int, int]:
        """The whole output's first pixel (row, column) in the computed box's pixels."""
        return -self.computed[1], -self.computed[0]

    def to_box(self, x: int, y: int) -> tuple[int, int]:
        """A written pixel (of the raster's part of the computed box) -> the output's pixel."""
        return x + max(0, self.computed[0]) - self.box[0], y + max(0, self.computed[1]) - self.box[1]

    def ground(self, x: int, y: int, w: int, h: int) -> tuple:
        """Geotransform of the output window (x, y, w, h)."""
        gt = self.box_gt
        return (gt[0] + x * gt[1], gt[1], 0.0, gt[3] + y * gt[5], 0.0, gt[5])

    def touches(self, tile) -> bool:
        """Does the engine tile (y0, y1, x0, x1 of the computed box) meet a polygon?"""
        y0, y1, x0, x1 = tile
        bx, by = x0 + self.computed[0] - self.box[0], y0 + self.computed[1] - self.box[1]
        gt = self.ground(bx, by, x1 - x0, y1 - y0)
        xs = (gt[0], gt[0] + (x1 - x0) * gt[1])
        ys = (gt[3], gt[3] + (y1 - y0) * gt[5])
        return self.polygons.touches(min(xs), min(ys), max(xs), max(ys))

    def inside(self, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """[h, w] pixels of the output window inside a polygon (None without a mask)."""
        return None if self.polygons is None else self.polygons.inside(self.ground(x, y, w, h), w, h)

    def read(self, read):
        """The engine's reader on the raster's part of the input window (the engine reflects it beyond the
        raster's edges, RunPlan.origin), from ``read`` on the whole input."""
        lx, ly = max(0, self.lr[0]), max(0, self.lr[1])
        return lambda x, y, w, h: read(x + lx, y + ly, w, h)


def _axis(g: AxisMap, b0: int, b1: int, m: int, M: int):
    """Output pixels [b0, b1) along one axis of the whole grid ``g``, on its extension by ``m`` LR (``M``
    output) pixels a side: (computed span, input span) in the image's own pixels (reaching beyond it at a
    border), the engine's axis on the computed box, and the image's part of the box (its axis, and its first
    output and LR pixel in the box)."""
    big, b0, b1 = g.bordered(m)[0], b0 + M, b1 + M
    c0 = max(0, (b0 - MARGIN_OUT) // LATENT * LATENT)
    c1 = min(big.n_out, -(-(b1 + MARGIN_OUT) // LATENT) * LATENT)
    lo, hi = (0, big.n_lr) if (c0, c1) == (0, big.n_out) else big.span(c0, c1, MARGIN_LR)
    engine = big.window(c0, c1, lo, hi)
    (c0, c1), (lo, hi) = (c0 - M, c1 - M), (lo - m, hi - m)  # the image's own pixels from here on
    i0, i1, j0, j1 = max(0, c0), min(g.n_out, c1), max(0, lo), min(g.n_lr, hi)
    return (c0, c1), (lo, hi), engine, (g.window(i0, i1, j0, j1), i0 - c0, j0 - lo)


def _computed(grid: GridMap, box, border_out) -> dict:
    """The fields of :class:`Area` that say where the output pixels ``box`` (x0, y0, x1, y1) are computed."""
    x0, y0, x1, y1 = box
    (cx0, cx1), (lx0, lx1), ex, ix = _axis(grid.x, x0, x1, BORDER, border_out[1])
    (cy0, cy1), (ly0, ly1), ey, iy = _axis(grid.y, y0, y1, BORDER, border_out[0])
    return dict(computed=(cx0, cy0, cx1, cy1), lr=(lx0, ly0, lx1, ly1), engine_grid=GridMap(ey, ex),
                image_grid=GridMap(iy[0], ix[0]), image_origin=(iy[1], ix[1], iy[2], ix[2]))


def _clusters(boxes: list, gap: int) -> list[tuple[int, int, int, int]]:
    """``boxes`` (x0, y0, x1, y1) joined into groups whose boxes lie ``gap`` pixels or more apart: the groups
    that touch (vectorised over all pairs) are joined into their bounding box until none touch."""
    groups = np.array(boxes, np.int64).reshape(-1, 4)
    while len(groups) > 1:
        x0, y0, x1, y1 = (groups[:, k] for k in range(4))
        near = ((x0[:, None] - gap < x1[None, :]) & (x0[None, :] - gap < x1[:, None])
                & (y0[:, None] - gap < y1[None, :]) & (y0[None, :] - gap < y1[:, None]))
        label = np.arange(len(groups))
        while True:  # connected components: every group takes the smallest label it touches
            nxt = np.where(near, label[None, :], len(groups)).min(axis=1)
            if np.array_equal(nxt, label):
                break
            label = nxt
        if len(np.unique(label)) == len(groups):
            break
        groups = np.array([[x0[label == g].min(), y0[label == g].min(), x1[label == g].max(), y1[label == g].max()]
                           for g in np.unique(label)])
    return sorted(tuple(int(v) for v in g) for g in groups)


def _parts(area: Area, grid: GridMap, gt: tuple, out_size: tuple[int, int]) -> tuple[Area, ...]:
    """Pieces of a masked area whose polygons lie far apart: each group computed over its own box, so that
    the work follows the polygons rather than the box around all of them; none where that would not save
    at least a quarter of the computed pixels."""
    if area.polygons is None or not 1 < area.polygons.count <= MAX_GROUPED:
        return ()
    x0, y0, x1, y1 = area.box
    boxes = []
    for bounds in area.polygons.boxes():
        try:
            bx0, by0, bx1, by1 = output_box(bounds, gt, *out_size, "a polygon")
        except E2DiffSRError:
            continue  # a polygon beside the raster: nothing of it to compute
        box = (max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1))
        if box[0] < box[2] and box[1] < box[3]:
            boxes.append(box)
    groups = _clusters(boxes, 2 * MARGIN_OUT + 2 * LATENT)
    if len(groups) < 2:
        return ()
    parts = tuple(replace(area, part=g, **_computed(grid, g, area.border_out)) for g in groups)
    if sum(math.prod(p.computed_size) for p in parts) > 0.75 * math.prod(area.computed_size):
        return ()
    return parts


def _box_axis(g: AxisMap, b0: int, b1: int) -> AxisMap:
    """The output box's pixels on the whole input (for the writer's masks and carried values)."""
    if b0 == 0 and b1 == g.n_out:
        return g
    return AxisMap(g.n_lr, b1 - b0, g.ratio, g.shift + b0 * g.ratio)


def plan_area(reader, opts: AreaOptions, out_w: int, out_h: int, alignment: Alignment | None, log) -> Area:
    """The area of a run whose whole-layer output is ``out_w`` x ``out_h`` (on ``alignment``'s grid when
    given); a one-line error for an area that is outside the raster or has no polygon over it."""
    north_up(reader.has_geotransform, reader.geotransform)
    gt = alignment.geotransform if alignment is not None else \
        scaled_geotransform(reader.geotransform, reader.width, reader.height, out_w, out_h)
    bounds = extent_bounds(opts, reader.projection)
    polygons = Polygons(opts, reader.projection) if opts.mask is not None else None
    if polygons is not None:
        what = "the box around the mask's polygons" + (" within --extent" if bounds is not None else "")
        both = intersect(bounds, polygons.bounds)
        if both is None:
            raise E2DiffSRError(f"the mask's polygons ({fmt(polygons.bounds)}) do not overlap --extent "
                                f"({fmt(bounds)}); choose polygons inside the extent")
        bounds = both
    else:
        what = "--extent"
    x0, y0, x1, y1 = output_box(bounds, gt, out_w, out_h, what)
    grid = alignment.grid if alignment is not None else GridMap.sized((reader.height, reader.width), (out_h, out_w))
    my, mx = grid.bordered(BORDER)[1]
    whole = (x0, y0, x1, y1) == (0, 0, out_w, out_h)
    writer = alignment if whole else Alignment(
        x1 - x0, y1 - y0, (gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5]),
        GridMap(_box_axis(grid.y, y0, y1), _box_axis(grid.x, x0, x1)))
    if polygons is not None:
        b = (gt[0] + x0 * gt[1], gt[3] + y1 * gt[5], gt[0] + x1 * gt[1], gt[3] + y0 * gt[5])
        if not polygons.touches(*b):
            raise E2DiffSRError(f"the mask's polygons do not overlap the raster ({fmt(b)} in its CRS); choose "
                                "polygons over the raster")
    area = Area(box=(x0, y0, x1, y1), alignment=writer, polygons=polygons, border_out=(my, mx),
                box_gt=(gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5]),
                **_computed(grid, (x0, y0, x1, y1), (my, mx)))
    area = replace(area, parts=_parts(area, grid, gt, (out_w, out_h)))
    for piece in area.parts or (area,):
        (lx0, ly0, lx1, ly1), p = piece.lr, piece.part or area.box
        log(f"area: output pixels {p[0]}..{p[2]} x {p[1]}..{p[3]} of the whole layer's {out_w} x {out_h} "
            f"({p[2] - p[0]} x {p[3] - p[1]} px), computed from input pixels {max(0, lx0)}..{min(reader.width, lx1)}"
            f" x {max(0, ly0)}..{min(reader.height, ly1)}")
    if area.parts:
        log(f"area: the mask's polygons lie in {len(area.parts)} groups far apart, computed one after the other "
            f"inside the output's {x1 - x0} x {y1 - y0} px")
    return area


def area_nodata(reader) -> list[float | None] | None:
    """Nodata per band for a masked output: the input's, or (where it has none) one the type can hold, so the
    pixels outside the polygons read back as missing: NaN for floating point, 0 for unsigned, the type's
    lowest value for signed integers; None when every band has one already."""
    from .raster_io.values import type_limits

    if all(v is not None for v in reader.nodata):
        return None
    limits = type_limits(reader.dtype)
    fill = math.nan if limits is None else (0.0 if limits[0] >= 0 else float(limits[0]))
    return [v if v is not None else fill for v in reader.nodata]


def plan_tiles(engine, area: Area, scale: float, rows, **plan) -> AreaPlan:
    """The engine's plan on the computed box, decoding only the area's tiles (and those meeting a polygon)."""
    cx0, cy0, cx1, cy1 = area.computed
    lx0, ly0, lx1, ly1 = area.lr
    base = engine.plan((ly1 - ly0, lx1 - lx0), scale, out_size=(cy1 - cy0, cx1 - cx0), grid=area.engine_grid,
                       out_rows=None, **plan)
    by, bx = area.border_out
    base = replace(base, image=area.image_grid, origin=area.image_origin)
    return AreaPlan.of(base, area.keep(rows), area.touches if area.polygons is not None else None,
                       ((cy0 + by) // LATENT, (cx0 + bx) // LATENT), area.whole_origin())


def skipped(plan: AreaPlan) -> int:
    """Output tiles of the area that touch no polygon and were never computed."""
    return len(plan.all_tiles()) - len(plan.tiles())


__all__ = ["Area", "AreaPlan", "MARGIN_LR", "MARGIN_OUT", "area_nodata", "plan_area", "plan_tiles", "skipped"]
