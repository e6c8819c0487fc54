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
    for k in range(csum.levels):
        if k == csum.levels - 1 and _scales_by(grid, 2 ** (k - 1)):
            resized.append(_averaged_level(st, csum, level, regions[k - 1], tile, 2 ** (k - 1)))
            break
        if k == csum.levels - 1 and k >= 2 and _scales_by(grid, 2 ** (k - 2)):
            resized.append(_quarter_level(st, csum, level, regions[k - 1], tile, 2 ** (k - 1)))
            break
        if k:
            (py0, _), (px0, _) = regions[k - 1]
            up = st.conv(csum.UPNet_x2_list[k - 1], level)
            (y0, y1), (x0, x1) = regions[k]
            f = 2 ** k
            level = up[:, :, (y0 - py0) * f:(y1 - py0) * f, (x0 - px0) * f:(x1 - px0) * f]
        if _scales_by(grid, 2 ** k):  # the level is on the output grid: the resize is the identity
            oy0, oy1, ox0, ox1 = tile
            (y0, _), (x0, _) = regions[k]
            f = 2 ** k
            fitted = level[:, :, oy0 - y0 * f:oy1 - y0 * f, ox0 - x0 * f:ox1 - x0 * f]
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


def _scales_by(grid: GridMap, factor: int) -> bool:
    """Whether the output grid is exactly the LR grid enlarged ``factor`` times on both axes (the default
    mapping: an output aligned to another grid has a step and a shift of its own)."""
    return not grid.aligned and all(o == n * factor for o, n in zip(grid.out_size, grid.lr_size))


def _derived(conv: torch.nn.Conv2d, name: str, build):
    """``build(conv)``, cached on the module under ``name`` and rebuilt when its weights change."""
    key = (conv.weight._version, conv.weight.data_ptr(), conv.bias._version)
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


def _averaged_level(st: Streamer, csum, below: torch.Tensor, region_below, tile, f: int) -> torch.Tensor:
    """The last CSUM level resized to the output tile when its grid is twice the output's: the level below
    is on the output grid itself, covering LR rows/cols ``region_below`` (x ``f`` pixels each)."""
    (y0, _), (x0, _) = region_below
    oy0, oy1, ox0, ox1 = tile
    out = st.conv(_averaged_conv(csum.UPNet_x2_list[-1]), below)
    return out[:, :, oy0 - y0 * f:oy1 - y0 * f, ox0 - x0 * f:ox1 - x0 * f]


def _phase_convs(up: torch.nn.Sequential) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """The weights of conv3x3 + PixelShuffle(2) by sub-pixel phase: [dy][dx] -> [C, Cin, 3, 3], and the mean
    bias over the four phases. Cached on the module."""
    def build(conv):
        weight, bias = _phase_weights(conv)
        return ([[weight[:, dy, dx].contiguous(memory_format=torch.channels_last) for dx in (0, 1)]
                 for dy in (0, 1)], bias.mean(1))

    return _derived(up[0], "_phases", build)


def _quarter_level(st: Streamer, csum, below: torch.Tensor, region_below, tile, f: int) -> torch.Tensor:
    """The last CSUM level resized to the output tile when its grid is four times the output's (x2 for a
    four-level CSUM): the level below lies on twice the output grid, covering LR rows/cols ``region_below``
    (x ``f`` pixels each).

    The exact 4x bilinear reduction (align_corners=False) reads, per axis, the sub-pixels 4i + 1 and 4i + 2 of
    the last level with weights 1/2: sub-pixel 1 of the level below's pixel 2i and sub-pixel 0 of its pixel
    2i + 1. So output pixel (i, j) is the mean over a, b in {0, 1} of the conv's phase (1 - a, 1 - b) at the
    level below's pixel (2i + a, 2j + b): four stride-2 convs with a quarter of the weights each, a quarter
    of the arithmetic of the conv at every pixel, and no map at four times the output grid."""
    (y0, _), (x0, _) = region_below
    oy0, oy1, ox0, ox1 = tile
    th, tw = oy1 - oy0, ox1 - ox0
    phases, bias = _phase_convs(csum.UPNet_x2_list[-1])
    h, w = below.shape[2], below.shape[3]
    acc = None
    with st.autocast():
        for a in (0, 1):
            for b in (0, 1):
                r0, c0 = 2 * oy0 + a - y0 * f - 1, 2 * ox0 + b - x0 * f - 1  # first row/col read
                r1, c1 = r0 + 2 * th + 1, c0 + 2 * tw + 1
                win = below[:, :, max(0, r0):min(h, r1), max(0, c0):min(w, c1)]
                pad = (max(0, -c0), max(0, c1 - w), max(0, -r0), max(0, r1 - h))
                if any(pad):  # the conv's own zero padding, where the window leaves the region
                    win = F.pad(win, pad)
                part = F.conv2d(win, phases[1 - a][1 - b].to(win.dtype), stride=2)
                acc = part if acc is None else acc + part
        out = torch.addcmul(bias.to(acc.dtype)[None, :, None, None], acc, torch.tensor(0.25, dtype=acc.dtype))
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


__all__ = ["bicubic_rows", "csum_tile", "level_regions", "level_weights", "nearest_index", "nearest_rows",
           "run_lr_features", "skip_window", "valid_out"]

