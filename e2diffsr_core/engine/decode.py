"""The decoder's LR-grid features over the whole image, then its CSUM on output tiles.

The LR-grid features (head, modulation by the prior maps, FRUs) are streamed passes (stream). The
CSUM (paper Eq. 8-9) then runs per output tile: each of its levels (LR grid x1, x2, x4, x8) is computed
only over the LR region its bilinear resize reads for this tile plus one pixel per 3 x 3 conv above it, and
the per-pixel fusion needs no halo at all, so tiles are exact, need no overlap and no blending.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..gridmap import GridMap
from ..model import Geometry
from ..model.geometry import latent_index
from .canvas import Canvas
from .stream import Streamer, crop, run_fru, run_prior


def nearest_index(am, lo: int, hi: int, n_lat: int) -> np.ndarray:
    """Latent cells (of ``n_lat``) that LR pixels [lo, hi) take their prior map from, along the axis ``am``:
    the legacy nearest resize, float32 scale as F.interpolate, or the aligned grid's own mapping."""
    if am.sized:
        scale = np.float32(n_lat) / np.float32(am.n_lr)
        src = np.floor(np.arange(lo, hi, dtype=np.float32) * scale).astype(np.int64)
    else:
        src = latent_index(am, np.arange(lo, hi, dtype=np.float64)).astype(np.int64)
    return np.clip(src, 0, n_lat - 1)


def nearest_rows(mp: Canvas, a: int, b: int, grid: GridMap) -> torch.Tensor:
    """Rows [a, b) of a latent-grid map resized (legacy nearest, float32 scale as F.interpolate) to the LR grid."""
    lat_h, lat_w = mp.shape[2], mp.shape[3]
    iy, ix = nearest_index(grid.y, a, b, lat_h), nearest_index(grid.x, 0, grid.x.n_lr, lat_w)
    y0, y1 = int(iy[0]), int(iy[-1]) + 1
    rows = mp.read(y0, y1)
    ys = torch.from_numpy(iy - y0).to(rows.device)
    xs = torch.from_numpy(ix).to(rows.device)
    return rows.index_select(2, ys).index_select(3, xs)


def latent_prior(st: Streamer, model, z0) -> list[Canvas] | None:
    """The decoder's prior branch over the whole latent ``z0`` (a LatentCanvas [N, 4, LH, LW]): the prior maps
    h_0..h_3 on the latent grid, with whole-latent statistics (``st.stats`` may record them); None without a
    prior branch."""
    dec = model.first_stage_model.decoder
    if not dec.prior_branch:
        return None
    pq = model.first_stage_model.post_quant_conv
    n, _, LH, LW = z0.acc.shape
    inv = float(1.0 / model.scale_factor)

    def first(a, b):
        lo, hi = max(0, a - 1), min(LH, b + 1)
        z = torch.from_numpy(z0.read(lo, hi, 0, LW)).to(st.store.device) * inv
        return crop(st.conv(dec.conv_in, st.conv(pq, z)), lo, a, b)

    return run_prior(st, dec, first, (n, dec.conv_in.out_channels, LH, LW))


def run_lr_features(st: Streamer, dec, lr: Canvas, maps: list[Canvas] | None, grid: GridMap,
                    resize=None) -> Canvas:
    """head(LR), then per group: modulation by the prior map, FRU. Returns the features fed to the CSUM.
    ``resize(map, a, b)``: rows [a, b) of a prior map on the LR grid (default :func:`nearest_rows`; the
    bounded engine's crops give their own)."""
    resize = resize or (lambda mp, a, b: nearest_rows(mp, a, b, grid))
    n, _, h, w = lr.shape
    s = grid.y.scale  # the decoder's modulation input: the true scale of the rows
    ch = dec.head.out_channels
    f, _ = st.run((n, ch, h, w), lambda a, b: st.conv3(dec.head, lr, a, b))
    steps = list(reversed(dec.up)) if dec.prior_branch else [None] * len(dec.FRUList)
    for k, group in enumerate(steps):
        if group is not None:
            s_t = torch.full((n, 1), s, dtype=torch.float32, device=st.store.device)
            mp = maps[k]
            f2, _ = st.run((n, ch, h, w), lambda a, b, g=group, mp=mp, s_t=s_t, f=f: g.modulation(
                f.read(a, b), resize(mp, a, b).to(torch.float32), s_t))
            f.free()
            f = f2
        if dec.sr_branch:
            f2 = run_fru(st, dec.FRUList[k], f)
            f.free()
            f = f2
    return f


# -- CSUM on output tiles ---------------------------------------------------------------------------------
def level_regions(tile: tuple[int, int, int, int], grid: GridMap, levels: int) -> list[list[tuple[int, int]]]:
    """Per CSUM level, per axis, the LR region [lo, hi) to compute: what its bilinear resize reads, widened
    by one LR pixel for every 3 x 3 conv of the levels above that reads it."""
    oy0, oy1, ox0, ox1 = tile
    lr_size = grid.lr_size
    need = [grid.y.span(oy0, oy1, 1), grid.x.span(ox0, ox1, 1)]
    regions = [list(need)]
    for _ in range(levels - 1):
        above = regions[0]
        regions.insert(0, [(max(0, min(lo - 1, nl)), min(n, max(hi + 1, nh)))
                           for (lo, hi), (nl, nh), n in zip(above, need, lr_size)])
    return regions


def tile_geo(grid: GridMap, lr_origin, lr_size, tile) -> Geometry:
    """The geometry of one output tile (oy0, oy1, ox0, ox1) reading the LR window at ``lr_origin``."""
    oy0, oy1, ox0, ox1 = tile
    return Geometry.tiles(grid.lr_size, grid.out_size, [lr_origin], tuple(lr_size), [(oy0, ox0)],
                          (oy1 - oy0, ox1 - ox0), grid=grid)


@torch.no_grad()
def csum_tile(st: Streamer, csum, feats: Canvas, lr_crop: torch.Tensor, lr_origin: tuple[int, int],
              tile: tuple[int, int, int, int], grid: GridMap, level_w: torch.Tensor) -> torch.Tensor:
    """CSUM(features) + bicubic(LR) for one output tile [N, 3, th, tw], in the model's [-1, 1] space."""
    regions = level_regions(tile, grid, csum.levels)
    (y0, y1), (x0, x1) = regions[0]
    level = feats.read_window(y0, y1, x0, x1)
    resized = []
    # per level, exact_shift's answer where that level lies on the output grid (its resize the identity)
    shifts = [exact_shift(grid, 2 ** k) for k in range(csum.levels)]
    for k in range(csum.levels):
        below = shifts[k - 1] if k else None  # the level below on the output grid
        if k == csum.levels - 1 and below is not None:
            resized.append(_averaged_level(st, csum.UPNet_x2_list[-1], level, regions[k - 1], tile, 2 ** (k - 1),
                                           below))
            break
        if k == csum.levels - 2 and below is not None:
            # the last two levels lie at twice and four times the output grid: both straight from the level
            # on the output grid, neither built
            resized.append(_averaged_level(st, csum.UPNet_x2_list[k - 1], level, regions[k - 1], tile, 2 ** (k - 1),
                                           below))
            resized.append(_composed_level(st, csum, level, regions[k - 1], tile, 2 ** (k - 1), below,
                                           grid.lr_size))
            break
        if k:
            (py0, _), (px0, _) = regions[k - 1]
            up = st.conv(csum.UPNet_x2_list[k - 1], level)
            (y0, y1), (x0, x1) = regions[k]
            f = 2 ** k
            level = up[:, :, (y0 - py0) * f:(y1 - py0) * f, (x0 - px0) * f:(x1 - px0) * f]
        shift = shifts[k]
        if shift is not None:  # the level is on the output grid: the resize is the identity
            oy0, oy1, ox0, ox1 = tile
            (y0, _), (x0, _) = regions[k]
            f = 2 ** k
            r, c = (shift[0] - y0) * f, (shift[1] - x0) * f
            fitted = level[:, :, oy0 + r:oy1 + r, ox0 + c:ox1 + c]
        else:
            (ry0, ry1), (rx0, rx1) = regions[k]
            fitted = tile_geo(grid, (ry0, rx0), (ry1 - ry0, rx1 - rx0), tile).level_to_out(level, 2 ** k)
        resized.append(fitted)
    out = _fuse(st, csum.fuse, resized, level_w)
    skip_geo = tile_geo(grid, lr_origin, lr_crop.shape[2:], tile)
    return out + skip_geo.lr_to_out(lr_crop, "bicubic")


FUSE_PX = 1 << 16  # output pixels per block of the per-pixel fusion: its 64-channel maps stay in the cache


def _fuse(st: Streamer, fuse: torch.nn.Sequential, levels: list[torch.Tensor], level_w: torch.Tensor) -> torch.Tensor:
    """fuse(cat(w_k * level_k)) without building the concatenation or the weighted copies: the first 1 x 1
    conv split by level, each slice of its weights scaled by that level's weight (the weights depend on the
    run's scale alone, :func:`level_weights`, so every batch element has the same), and the per-pixel stack
    run on blocks of rows, so that its intermediate maps stay in the cache (twice as fast on a CPU as one
    pass per layer). No value goes back to the host: nothing waits for a GPU inside a tile."""
    first, c = fuse[0], levels[0].shape[1]
    weights = [first.weight[:, k * c:(k + 1) * c] * level_w[0, k].to(first.weight.dtype) for k in range(len(levels))]
    levels = [lv.contiguous(memory_format=torch.channels_last) for lv in levels]
    n, _, h, w = levels[0].shape
    out = torch.empty((n, fuse[-1].out_channels, h, w), device=levels[0].device, memory_format=torch.channels_last)
    rows = max(1, FUSE_PX // max(1, w))
    with st.autocast():
        for a in range(0, h, rows):
            acc = F.conv2d(levels[0][:, :, a:a + rows], weights[0], first.bias)
            for lv, weight in zip(levels[1:], weights[1:]):
                acc.add_(F.conv2d(lv[:, :, a:a + rows], weight))
            out[:, :, a:a + rows] = fuse[1:](acc)
    return out


def exact_shift(grid: GridMap, factor: int) -> tuple[int, int] | None:
    """(rows, columns) of LR pixels before the output's first pixel where the output grid is exactly the LR
    grid enlarged ``factor`` times on both axes, shifted by whole LR pixels and lying over it: the default
    mapping (0, 0), or a window of it (a processing area's input window reaches beyond its output); None
    for every other grid (e.g. one aligned to another raster, with a step and a fractional shift of its own).
    On such a grid a CSUM level at ``factor`` per LR pixel is the output grid itself."""
    shift = []
    for am in grid.axes:
        s = am.shift
        if am.ratio * factor != 1.0 or s != int(s) or s < 0 or s + am.n_out * am.ratio > am.n_lr:
            return None
        shift.append(int(s))
    return shift[0], shift[1]


def shortcut_grid(grid: GridMap | None) -> bool:
    """Whether the engine's exact shortcuts apply on this output grid (None: the default mapping): it is the
    LR grid enlarged by a power of two, shifted by whole LR pixels (:func:`exact_shift`)."""
    if grid is None:
        return True
    factor = round(grid.y.scale)
    return factor >= 1 and factor & (factor - 1) == 0 and exact_shift(grid, factor) is not None


def _derived(conv: torch.nn.Conv2d, name: str, build, *also: torch.nn.Conv2d):
    """``build(conv)``, cached on the module under ``name`` and rebuilt when its weights (or those of the
    convs in ``also``, which the result depends on too) change."""
    key = tuple((c.weight._version, c.weight.data_ptr(), c.bias._version) for c in (conv, *also))
    cached = getattr(conv, name, None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, build(conv))
        setattr(conv, name, cached)
    return cached[1]


def _phase_weights(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv3x3 + PixelShuffle(2)'s weights by sub-pixel phase [C, 2 (dy), 2 (dx), Cin, 3, 3] and biases [C, 4]."""
    c_out = conv.out_channels // 4
    return conv.weight.detach().view(c_out, 2, 2, *conv.weight.shape[1:]), conv.bias.detach().view(c_out, 4)


def _averaged_conv(up: torch.nn.Sequential) -> torch.nn.Conv2d:
    """conv3x3 + PixelShuffle(2) followed by an exact 2x bilinear reduction (every output pixel the mean of
    the four sub-pixels it covers) is one conv3x3 whose weights are the mean over the four sub-pixel phases:
    a quarter of the arithmetic, no x2 map, no resize. Cached on the module."""
    def build(conv):
        weight, bias = _phase_weights(conv)
        mean = torch.nn.Conv2d(conv.in_channels, bias.shape[0], 3, padding=1).to(conv.weight.device,
                                                                                conv.weight.dtype)
        mean.weight.copy_(weight.flatten(1, 2).mean(1))
        mean.bias.copy_(bias.mean(1))
        return mean.to(memory_format=torch.channels_last)

    return _derived(up[0], "_phase_mean", build)


def _averaged_level(st: Streamer, up: torch.nn.Sequential, below: torch.Tensor, region_below, tile,
                    f: int, shift=(0, 0)) -> torch.Tensor:
    """The level that ``up`` (conv3x3 + PixelShuffle(2)) builds from ``below``, resized to the output tile, when
    its grid is twice the output's: ``below`` is on the output grid itself, covering LR rows/cols
    ``region_below`` (x ``f`` pixels each); ``shift``: :func:`exact_shift`'s."""
    (y0, _), (x0, _) = region_below
    oy0, oy1, ox0, ox1 = tile
    r, c = (shift[0] - y0) * f, (shift[1] - x0) * f
    out = st.conv(_averaged_conv(up), below)
    return out[:, :, oy0 + r:oy1 + r, ox0 + c:ox1 + c]


_TAPS = (-1, 0, 1, 2)  # the rows (cols) 2i + u, u in _TAPS, of the level at twice the output grid that
# the last level's conv reads for output pixel i when the last level is reduced 4x (see _composed_level)


def _composed_weights(csum, rows: tuple[int, ...], cols: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5 x 5 conv on the output grid that gives the CSUM's last level, reduced 4x, from the level on the
    output grid (two levels below), counting only the taps ``rows`` x ``cols`` (of _TAPS) of the level
    between them: all of them inside the raster, fewer on its outermost rows and columns (the level between
    is zero beyond the raster for the last conv, not the previous conv's extrapolation). Weights [C, Cin,
    5, 5] and bias [C], cached on the last conv for every (rows, cols) asked."""
    prev, last = csum.UPNet_x2_list[-2][0], csum.UPNet_x2_list[-1][0]

    def build(_):
        return {}

    cache = _derived(last, "_composed", build, prev)
    if (rows, cols) in cache:
        return cache[(rows, cols)]
    with torch.no_grad():
        w1, b1 = (t.double() for t in _phase_weights(prev))  # [C, 2, 2, Cin, 3, 3], [C, 4]
        w3, b3 = (t.double() for t in _phase_weights(last))
        c_out, c_in = w3.shape[0], w1.shape[3]
        # the exact 4x bilinear reduction reads sub-pixels 4i + 1 and 4i + 2 of the last level (weights 1/2):
        # phase 1 of the middle level's pixel 2i and phase 0 of 2i + 1; each reads a 3 x 3 neighbourhood of the
        # middle level, so output pixel i reads its rows 2i - 1 .. 2i + 2 through a 4 x 4 kernel k
        k = torch.zeros(c_out, w3.shape[3], 4, 4, dtype=torch.float64)
        for a in (0, 1):
            for b in (0, 1):
                k[:, :, a:a + 3, b:b + 3] += 0.25 * w3[:, 1 - a, 1 - b]
        weight = torch.zeros(c_out, c_in, 5, 5, dtype=torch.float64)
        bias = b3.mean(1).clone()
        # the middle level's row 2i + u is phase u mod 2 of the output-grid level's row i + (u - u mod 2) / 2
        for u in rows:
            for v in cols:
                p, q = u % 2, v % 2
                dy, dx = (u - p) // 2, (v - q) // 2
                tap = k[:, :, u + 1, v + 1]
                weight[:, :, dy + 1:dy + 4, dx + 1:dx + 4] += torch.einsum("oc,cikl->oikl", tap, w1[:, p, q])
                bias += tap @ b1[:, 2 * p + q]
        cache[(rows, cols)] = (weight.to(last.weight.dtype).contiguous(memory_format=torch.channels_last),
                               bias.to(last.bias.dtype))
    return cache[(rows, cols)]


def _composed_level(st: Streamer, csum, level: torch.Tensor, region, tile, f: int, shift,
                    lr_size) -> torch.Tensor:
    """The CSUM's last level resized to the output tile when its grid is four times the output's (x2 for a
    four-level CSUM), computed from the level on the output grid (``level``, covering LR rows/cols ``region``,
    x ``f`` pixels each; ``shift``: :func:`exact_shift`'s; ``lr_size``: the LR canvas's) without building the
    two levels above it.

    Both levels above are linear in it (conv3x3 + PixelShuffle(2), twice, with nothing between), and the exact
    4x bilinear reduction reads only the sub-pixels 4i + 1 and 4i + 2 of the last level: so the whole chain is
    one 5 x 5 conv on the output grid (_composed_weights), 25 multiply-adds per channel pair and output
    pixel instead of 36 + 144 for the two convs as the model runs them (36 + 36 with the middle level built
    and only the read sub-pixels of the last). On the raster's outermost rows and columns the middle level's
    taps beyond the raster drop out of the kernel (the last conv's zero padding)."""
    (y0, _), (x0, _) = region
    oy0, oy1, ox0, ox1 = tile
    th, tw = oy1 - oy0, ox1 - ox0
    h, w = level.shape[2], level.shape[3]
    dy, dx = shift[0] * f, shift[1] * f  # output pixel i is the level's pixel i + d
    r0, c0 = oy0 + dy - 2 - y0 * f, ox0 + dx - 2 - x0 * f  # the first row/col read, two beyond the tile
    r1, c1 = r0 + th + 4, c0 + tw + 4
    win = level[:, :, max(0, r0):min(h, r1), max(0, c0):min(w, c1)]
    pad = (max(0, -c0), max(0, c1 - w), max(0, -r0), max(0, r1 - h))
    if any(pad):  # the first conv's own zero padding, where the window leaves the region (the raster's edge)
        win = F.pad(win, pad)
    win = win.contiguous(memory_format=torch.channels_last)

    def taps(i: int, n: int) -> tuple[int, ...]:
        return tuple(u for u in _TAPS if 0 <= 2 * i + u < 2 * n)

    def part(a: int, b: int, c: int, d: int, rows=_TAPS, cols=_TAPS) -> torch.Tensor:
        weight, bias = _composed_weights(csum, rows, cols)
        return F.conv2d(win[:, :, a:b + 4, c:d + 4], weight.to(win.dtype), bias.to(win.dtype))

    H, W = lr_size[0] * f, lr_size[1] * f  # the level's rows and columns: the raster's outermost ones
    edge_rows = [(q - dy - oy0, taps(q, H)) for q in sorted({0, H - 1}) if oy0 <= q - dy < oy1]
    edge_cols = [(q - dx - ox0, taps(q, W)) for q in sorted({0, W - 1}) if ox0 <= q - dx < ox1]
    with st.autocast():
        out = part(0, th, 0, tw)
        for i, rows in edge_rows:
            out[:, :, i:i + 1] = part(i, i + 1, 0, tw, rows=rows)
        for j, cols in edge_cols:
            out[:, :, :, j:j + 1] = part(0, th, j, j + 1, cols=cols)
        for i, rows in edge_rows:
            for j, cols in edge_cols:
                out[:, :, i:i + 1, j:j + 1] = part(i, i + 1, j, j + 1, rows, cols)
    return out.to(st.store.dtype)


def skip_window(tile, grid: GridMap) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the LR pixels a tile's bicubic skip reads (four taps: two pixels of margin)."""
    oy0, oy1, ox0, ox1 = tile
    ly0, ly1 = grid.y.span(oy0, oy1, 2)
    lx0, lx1 = grid.x.span(ox0, ox1, 2)
    return lx0, ly0, lx1 - lx0, ly1 - ly0


def level_weights(csum, grid: GridMap, n: int, device) -> torch.Tensor:
    """The CSUM's level weights for the true scale of the rows (its input r = LR / output pixels): one scale
    per run, so every one of the n rows is the same."""
    return csum.level_weights(torch.full((n, 1), grid.y.ratio, dtype=torch.float32, device=device))


def bicubic_rows(lr: Canvas, a: int, b: int, grid: GridMap) -> torch.Tensor:
    """Rows [a, b) (every column) of bicubic(LR) on the output grid: CondNet's input."""
    ly0, ly1 = grid.y.span(a, b, 2)
    geo = tile_geo(grid, (ly0, 0), (ly1 - ly0, grid.x.n_lr), (a, b, 0, grid.x.n_out))
    return geo.lr_to_out(lr.read(ly0, ly1), "bicubic")


def valid_out(valid: np.ndarray, grid: GridMap, lr_origin, out_origin, size) -> np.ndarray:
    """Output pixel valid where the LR pixel under its centre (global mapping) is valid."""
    if valid.all():
        return np.ones(size, bool)
    idx = []
    for axis in (0, 1):
        g = np.arange(out_origin[axis], out_origin[axis] + size[axis])
        src = np.floor(grid.axes[axis].edge(g)).astype(np.int64)
        idx.append(np.clip(src - lr_origin[axis], 0, valid.shape[axis] - 1))
    return valid[np.ix_(idx[0], idx[1])]


__all__ = ["bicubic_rows", "csum_tile", "exact_shift", "level_regions", "level_weights", "nearest_index",
           "nearest_rows", "run_lr_features", "shortcut_grid", "skip_window", "valid_out"]
