"""The bounded engine: rasters whose whole-image feature maps would not fit in memory.

The exact engine (engine_stream) keeps every normalised layer's output for the whole image so that the next
GroupNorm / contrast-attention layer can use whole-image statistics; on a large raster those maps (at or near
output resolution) would go to temporary files, layer after layer. Here instead:

1. **Statistics from a fixed sample.** Each normalisation's statistics are estimated on a fixed,
   deterministic set of windows spread over the raster (:func:`sample_windows`; they depend on the raster's
   size alone, never on the tile or the memory budget), all windows run side by side as one batch, layer by
   layer, each layer normalised with the statistics pooled over the windows so far. Only the windows'
   interiors count: their edges, padded where the real image goes on, are left out by the model's halo
   (:func:`encoder_halo` and friends). The decoder's prior branch is the exception: it runs on the latent
   grid (1/64 of the output's pixels), where the outermost cells, the model's own response to the raster's
   edge, weigh on its statistics far more than their share (a sample inside the raster misses them), so its
   statistics are exact, from one pass over the whole latent (:func:`prior_stats`).
2. **Every value from the input, the statistics fixed.** CondNet runs on blocks of the output grid (with its
   halo) straight from the input, only its latent output is kept (4 channels at 1/8 of the output a side);
   the decoder's prior branch and LR-grid features run per output tile from z0 and the input (again with
   their halos), so nothing at output or LR resolution is stored: the temporary data of a run is its latents.

With the statistics fixed every layer is local, so a value does not depend on the block or tile it was
computed in (float rounding aside), ranks of a split raster compute the same statistics, and the result
differs from the exact engine's only by the sampled statistics (docs/design.md, "Large rasters").
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..gridmap import GridMap
from .canvas import Canvas, Moments, Store
from .decode import latent_prior, nearest_index, run_lr_features, tile_geo
from .stream import Streamer, run_encoder, run_prior

LATENT = 8
SAMPLE_WINDOWS = 3     # windows per axis of the statistics sample (at most 3 x 3)
SAMPLE_INTERIOR = 256  # pixels a side of a window's interior that count (output grid: CondNet; LR grid: decoder)


# -- halos: how far a value depends on the input, in pixels of the grid named ------------------------------
def encoder_halo(enc) -> int:
    """Output pixels a CondNet latent cell depends on beyond its own 8 x 8 pixels (a multiple of 8): every
    3 x 3 conv adds one pixel of its level's grid, every downsample one more."""
    px, step = 1, 1  # conv_in
    for level in enc.down:
        px += step * (2 * len(level.block) + (1 if hasattr(level, "downsample") else 0))
        if hasattr(level, "downsample"):
            step *= 2
    px += step * (2 * 2 + 1)  # two middle blocks, conv_out
    return -(-px // LATENT) * LATENT


def prior_halo(dec) -> int:
    """Latent cells a prior map depends on around its own cell: conv_in, the middle blocks, the groups."""
    return 1 + 4 + sum(2 * len(group.block) for group in dec.up)


def lr_halo(dec) -> int:
    """LR pixels a feature fed to the CSUM depends on: head, per FRU four 3 x 3 convs per IMDB and LR_conv."""
    # the modulation is per pixel (Model-III's concatenation too: a 1 x 1 conv)
    return 1 + sum(4 * len(fru.IMDB) + 1 for fru in dec.FRUList) if dec.sr_branch else 1


def sample_windows(size: int, window: int, count: int | None = None, align: int = 1) -> list[int]:
    """Starts of ``count`` (default SAMPLE_WINDOWS) windows of ``window`` pixels spread evenly over ``size``
    (multiples of ``align``)."""
    count = SAMPLE_WINDOWS if count is None else count
    if window >= size:
        return [0]
    last = (size - window) // align * align
    n = max(1, min(count, size // window))
    starts = [round(last * (k + 0.5) / n / align) * align for k in range(n)] if n > 1 else [last // 2 // align * align]
    return sorted(set(min(max(0, s), last) for s in starts))


# -- statistics: recorded from the sample, replayed on blocks and tiles ------------------------------------
class _Fixed:
    """Statistics that are not computed but given (mean, var [N, groups] float64)."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor):
        self.mean, self.var = mean, var

    def add(self, x: torch.Tensor, a: int = 0) -> None:
        pass

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.var


class _Interior(Moments):
    """Moments of the interior of every window of a batch (``margin(h, w)`` pixels left out each side)."""

    def __init__(self, groups: int, shape, margin):
        super().__init__(groups)
        self.h, self.w = shape[2], shape[3]
        self.mh, self.mw = margin(self.h, self.w)

    def add(self, x: torch.Tensor, a: int = 0) -> None:
        lo, hi = max(a, self.mh), min(a + x.shape[2], self.h - self.mh)
        if lo < hi and self.mw < self.w - self.mw:
            super().add(x[:, :, lo - a:hi - a, self.mw:self.w - self.mw])


class StatsBook:
    """The statistics of one chain of passes, in the order the passes ask for them.

    Recording (:meth:`recorder`): a batch of ``windows`` windows x N images; each pass's moments are pooled
    over the windows (equal interiors: the mean of the means, the variance with the spread of the means) and
    the pooled values both recorded and used by the next layer. Replaying (:meth:`replay`): the passes of
    one block get the recorded values, in the same order, without computing any."""

    def __init__(self):
        self.entries: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recorder(self, windows: int, margin, given: StatsBook | None = None) -> _Recorder:
        """Records into this book; ``given``: a book whose entries come first, not recomputed."""
        if given is not None:
            self.entries = list(given.entries)
        return _Recorder(self, windows, margin, given.entries if given is not None else ())

    def replay(self) -> _Replay:
        return _Replay(self)


class _Recorder:
    """Records the pooled statistics of each pass; the first passes may be given instead (``given``: their
    entries, already in the book), the same for every window."""

    def __init__(self, book: StatsBook, windows: int, margin, given=()):
        self.book, self.windows, self.margin = book, windows, margin
        self.given = list(given)

    def start(self, groups: int, shape) -> Moments:
        if self.given:
            mean, var = self.given.pop(0)
            return _Fixed(mean.repeat(self.windows, 1), var.repeat(self.windows, 1))
        return _Interior(groups, shape, self.margin)

    def finish(self, moments: Moments):
        if isinstance(moments, _Fixed):
            return moments
        mean, var = moments.mean_var()
        k = self.windows
        mean, var = mean.view(k, -1, mean.shape[-1]), var.view(k, -1, var.shape[-1])
        pooled = mean.mean(0)
        pooled_var = (var + (mean - pooled) ** 2).mean(0)
        self.book.entries.append((pooled, pooled_var))
        return _Fixed(pooled.repeat(k, 1), pooled_var.repeat(k, 1))


class _Replay:
    def __init__(self, book: StatsBook):
        self.book, self.at = book, 0

    def start(self, groups: int, shape):
        mean, var = self.book.entries[self.at]
        self.at += 1
        return _Fixed(mean, var)

    def finish(self, moments):
        return moments


# -- local canvases -----------------------------------------------------------------------------------------
def local(x: torch.Tensor) -> Canvas:
    """An in-memory canvas holding the tensor ``x`` [N, C, h, w] (a block's input)."""
    c = Canvas.__new__(Canvas)
    c.shape, c.store, c.dtype, c.data = tuple(x.shape), None, x.dtype, x.contiguous(memory_format=torch.channels_last)
    return c


def _normalised(data: np.ndarray, groups, repeat: int, device) -> torch.Tensor:
    """Bands [C, h, w] in [0, 1] -> the model's [-1, 1] space, one channel triple per group: [repeat*G, 3, h, w]."""
    x = torch.from_numpy(np.ascontiguousarray(data[np.array(groups)], np.float32)).to(device)
    x = (x - 0.5) / 0.5
    return x.repeat(repeat, 1, 1, 1) if repeat > 1 else x


def bicubic_window(read, grid: GridMap, groups, box, device) -> torch.Tensor:
    """bicubic(LR) on the output pixels ``box`` (y0, y1, x0, x1): CondNet's input there [G, 3, h, w]."""
    y0, y1, x0, x1 = box
    ly0, ly1 = grid.y.span(y0, y1, 2)
    lx0, lx1 = grid.x.span(x0, x1, 2)
    data, _ = read(lx0, ly0, lx1 - lx0, ly1 - ly0)
    lr = _normalised(data, groups, 1, device)
    return tile_geo(grid, (ly0, lx0), (ly1 - ly0, lx1 - lx0), box).lr_to_out(lr, "bicubic")


# -- CondNet --------------------------------------------------------------------------------------------------
def _encode(st: Streamer, enc, x: torch.Tensor) -> Canvas:
    src = local(x)

    def first(a, b):
        return st.conv3(enc.conv_in, src, a, b)

    n, _, h, w = x.shape
    return run_encoder(st, enc, first, (n, enc.conv_in.out_channels, h, w))


def encoder_stats(st: Streamer, enc, read, grid: GridMap, groups, device) -> StatsBook:
    """CondNet's statistics from the sample windows of the output grid."""
    H, W = grid.out_size
    halo = encoder_halo(enc)
    side = [min(n, SAMPLE_INTERIOR + 2 * halo) // LATENT * LATENT or n for n in (H, W)]
    boxes = [(y, y + side[0], x, x + side[1]) for y in sample_windows(H, side[0], align=LATENT)
             for x in sample_windows(W, side[1], align=LATENT)]
    x = torch.cat([bicubic_window(read, grid, groups, box, device) for box in boxes])
    book = StatsBook()

    def margin(h, w):
        return (math.ceil(halo * h / side[0]) if side[0] < H else 0,
                math.ceil(halo * w / side[1]) if side[1] < W else 0)

    st.stats = book.recorder(len(boxes), margin)
    try:
        _encode(st, enc, x).free()
    finally:
        st.stats = None
    return book


def encode_blocks(st: Streamer, enc, read, grid: GridMap, groups, book: StatsBook, *, block: int, out: Canvas,
                  tick=None) -> None:
    """CondNet's latent for the whole output, block by block straight from the input (the statistics fixed),
    into ``out`` [G, 4, LH, LW], one row of blocks at a time."""
    H, W = grid.out_size
    halo = encoder_halo(enc)
    LH, LW = out.shape[2], out.shape[3]
    block = max(LATENT, block // LATENT * LATENT)
    for by in range(0, LH * LATENT, block):
        y0, y1 = max(0, by - halo), min(H, by + block + halo)
        row = []
        for bx in range(0, LW * LATENT, block):
            x0, x1 = max(0, bx - halo), min(W, bx + block + halo)
            st.stats = book.replay()
            try:
                lat = _encode(st, enc, bicubic_window(read, grid, groups, (y0, y1, x0, x1), st.store.device))
            finally:
                st.stats = None
            ly, lx = (by - y0) // LATENT, (bx - x0) // LATENT
            rows, cols = min(block // LATENT, LH - by // LATENT), min(block // LATENT, LW - bx // LATENT)
            row.append(lat.read(ly, ly + rows)[:, :, :, lx:lx + cols])
            lat.free()
            if tick is not None:
                tick()
        out.write(by // LATENT, torch.cat(row, dim=3))


# -- the decoder ------------------------------------------------------------------------------------------
class _LatentWindow:
    """Where a block of LR pixels lies on the latent grid: nearest indices (global mapping) into a latent
    crop that holds them and the prior branch's halo."""

    def __init__(self, grid: GridMap, lat_size, ys: tuple[int, int], xs: tuple[int, int], halo: int, size=None):
        self.iy = nearest_index(grid.y, ys[0], ys[1], lat_size[0])
        self.ix = nearest_index(grid.x, xs[0], xs[1], lat_size[1])
        self.box = []
        for idx, n, want in ((self.iy, lat_size[0], None if size is None else size[0]),
                             (self.ix, lat_size[1], None if size is None else size[1])):
            lo, hi = int(idx.min()) - halo, int(idx.max()) + 1 + halo
            if want is not None:  # a common size for a batch of windows
                lo = min(max(0, lo - (want - (hi - lo)) // 2), max(0, n - want))
                hi = min(n, lo + want)
            self.box.append((max(0, lo), min(n, hi)))

    @property
    def size(self) -> tuple[int, int]:
        return self.box[0][1] - self.box[0][0], self.box[1][1] - self.box[1][0]

    def indices(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(self.iy - self.box[0][0]).to(device),
                torch.from_numpy(self.ix - self.box[1][0]).to(device))


def _decode_features(st: Streamer, model, z: torch.Tensor, lr: torch.Tensor, grid: GridMap, windows) -> Canvas:
    """Prior branch on the latent crops ``z`` [K*N, 4, lh, lw], then the LR-grid features of the LR crops ``lr``
    [K*N, 3, h, w]; ``windows`` (one :class:`_LatentWindow` per crop) place the prior maps on the LR crops."""
    dec = model.first_stage_model.decoder
    pq = model.first_stage_model.post_quant_conv
    src = local(z * float(1.0 / model.scale_factor))
    maps = None
    if dec.prior_branch:
        def first(a, b):
            return st.conv3(dec.conv_in, src, a, b, lambda t: st.conv(pq, t))

        n, _, lh, lw = z.shape
        maps = run_prior(st, dec, first, (n, dec.conv_in.out_channels, lh, lw))
    per = lr.shape[0] // len(windows)
    index = [w.indices(lr.device) for w in windows]

    def resize(mp: Canvas, a: int, b: int) -> torch.Tensor:
        data = mp.read(0, mp.shape[2])
        return torch.cat([data[k * per:(k + 1) * per].index_select(2, iy[a:b]).index_select(3, ix)
                          for k, (iy, ix) in enumerate(index)])

    feats = run_lr_features(st, dec, local(lr), maps, grid, resize=resize)
    for mp in maps or []:
        mp.free()
    return feats


def prior_stats(st: Streamer, model, z0) -> StatsBook:
    """The prior branch's statistics over the whole latent grid, exactly (the exact engine's own pass; its maps
    are 1/64 of the output's pixels, in the run's store, which spills to temporary files beyond the budget).

    Measured (1200 x 1200 mosaic of the bundled sample at x2): the latent's outermost cells hold values far
    from the rest (a per-channel variance of 4-11 over the whole latent against 1.2-1.9 inside), and a
    sample inside the raster put the prior's variances off by a factor of 3 or more; the bounded output
    agreed with the exact engine to 45 dB with the sampled prior statistics, 57 dB with exact ones."""
    book = StatsBook()
    st.stats = book.recorder(1, lambda h, w: (0, 0))
    try:
        for mp in latent_prior(st, model, z0) or []:
            mp.free()
    finally:
        st.stats = None
    return book


def prior_bytes(model, out_size, batch: int, itemsize: int) -> int:
    """Peak bytes of :func:`prior_stats`' maps: a residual block's three maps and the four prior maps (fp32)."""
    dec = model.first_stage_model.decoder
    if not dec.prior_branch:
        return 0
    cells = (out_size[0] // LATENT) * (out_size[1] // LATENT)
    c = dec.conv_in.out_channels
    maps = sum(group.transfer.out_channels for group in dec.up)
    return int(batch * cells * (3 * c * itemsize + 4 * maps))


def decoder_stats(st: Streamer, model, z0, read, grid: GridMap, groups, samples: int, device, *,
                  prior: StatsBook) -> StatsBook:
    """The decoder's statistics: the prior branch's given (``prior``, :func:`prior_stats`), the LR grid's
    (modulation, contrast attention) from sample windows; the windows' prior maps are computed on latent
    crops around them with the given statistics."""
    dec = model.first_stage_model.decoder
    h, w = grid.lr_size
    lat = (z0.acc.shape[2], z0.acc.shape[3])
    halo, phalo = lr_halo(dec), prior_halo(dec)
    side = [min(n, SAMPLE_INTERIOR + 2 * halo) for n in (h, w)]
    boxes = [(y, y + side[0], x, x + side[1]) for y in sample_windows(h, side[0]) for x in sample_windows(w, side[1])]
    first = [_LatentWindow(grid, lat, (b[0], b[1]), (b[2], b[3]), phalo) for b in boxes]
    size = tuple(max(win.size[k] for win in first) for k in (0, 1))
    windows = [_LatentWindow(grid, lat, (b[0], b[1]), (b[2], b[3]), phalo, size) for b in boxes]
    lr = torch.cat([_normalised(read(b[2], b[0], side[1], side[0])[0], groups, samples, device) for b in boxes])
    z = torch.cat([torch.from_numpy(z0.read(*win.box[0], *win.box[1])) for win in windows]).to(device)
    book = StatsBook()
    m_lr = tuple(halo if s < n else 0 for s, n in zip(side, (h, w)))  # every recorded pass is on the LR grid
    st.stats = book.recorder(len(boxes), lambda hh, ww: m_lr, prior)
    try:
        _decode_features(st, model, z, lr, grid, windows).free()
    finally:
        st.stats = None
    return book


class LocalFeatures:
    """The LR-grid features the CSUM tiles read, computed on demand from z0 and the input (the statistics
    fixed): the drop-in for the exact engine's whole-image feature canvas (csum_tile asks one window per
    tile). Tiles come in rows, so the features are computed for a band of LR rows at a time (the full width,
    in chunks of ``cols`` columns, each with its halo) and kept until a tile reads below it: the halo is
    recomputed once per band and chunk rather than once per tile."""

    def __init__(self, st: Streamer, model, z0, read, grid: GridMap, groups, *, samples: int, book: StatsBook,
                 budget: float, over: int):
        self.st, self.model, self.z0, self.read, self.grid = st, model, z0, read, grid
        self.groups, self.samples, self.book = groups, samples, book
        dec = model.first_stage_model.decoder
        self.halo, self.phalo = lr_halo(dec), prior_halo(dec)
        n, c = z0.acc.shape[0], dec.head.out_channels
        self.shape = (n, c, *grid.lr_size)
        h, w = grid.lr_size
        # the band kept: a quarter of the budget; a chunk's maps while computing (about ten): half of it
        self.rows = int(min(h, max(64, budget / 4 / (n * c * 4 * w))))
        self.over = int(over)  # LR rows a tile reads (with its halos): where one band overlaps the next
        self.cols = int(min(w, max(128, budget / 2 / (10 * n * c * 4) / (self.rows + 2 * self.halo))))
        self._band: tuple[int, int, torch.Tensor] | None = None

    def read_window(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Bands lie on a fixed grid (band k: rows k * rows to (k + 1) * rows + over), so a tile's values do
        not depend on which tiles came before it (ranks of a split raster compute the same pixels); a window
        reaching past its band's rows is computed on its own."""
        h, w = self.grid.lr_size
        k = y0 // self.rows
        a, b = k * self.rows, min(h, (k + 1) * self.rows + self.over)
        if y1 > b:
            return self._block(y0, y1, x0, x1)
        if self._band is None or self._band[0] != a:
            self._band = None  # its memory back before the next band is computed
            chunks = [self._block(a, b, c, min(w, c + self.cols)) for c in range(0, w, self.cols)]
            self._band = (a, b, chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=3))
        band = self._band[2]
        return band[:, :, y0 - a:y1 - a, x0:x1]

    def _block(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Features of LR rows [y0, y1), columns [x0, x1), from the input and z0 around them (the halos)."""
        h, w = self.grid.lr_size
        by0, by1 = max(0, y0 - self.halo), min(h, y1 + self.halo)
        bx0, bx1 = max(0, x0 - self.halo), min(w, x1 + self.halo)
        lat = (self.z0.acc.shape[2], self.z0.acc.shape[3])
        win = _LatentWindow(self.grid, lat, (by0, by1), (bx0, bx1), self.phalo)
        device = self.st.store.device
        data, _ = self.read(bx0, by0, bx1 - bx0, by1 - by0)
        lr = _normalised(data, self.groups, self.samples, device)
        z = torch.from_numpy(self.z0.read(*win.box[0], *win.box[1])).to(device)
        self.st.stats = self.book.replay()
        try:
            feats = _decode_features(self.st, self.model, z, lr, self.grid, [win])
        finally:
            self.st.stats = None
        out = feats.read(y0 - by0, y1 - by0)[:, :, :, x0 - bx0:x1 - bx0].clone()
        feats.free()
        return out


def sample_bytes(model, lr_size, out_size, batch: int, itemsize: int) -> int:
    """Peak bytes of the statistics sample's maps, all its windows side by side (engine_device.exact_bytes)."""
    from .device import exact_bytes

    enc, dec = model.cond_stage_model, model.first_stage_model.decoder

    def area(size, halo):  # pixels of the windows of :func:`encoder_stats` / :func:`decoder_stats`
        sides = [min(n, SAMPLE_INTERIOR + 2 * halo) for n in size]
        return len(sample_windows(size[0], sides[0])) * len(sample_windows(size[1], sides[1])) * sides[0] * sides[1]

    out = area(out_size, encoder_halo(enc))
    lr = area(lr_size, lr_halo(dec))
    return max(exact_bytes(model, (1, 1), (1, out), batch, itemsize), exact_bytes(model, (1, lr), (1, lr), batch,
                                                                                    itemsize))


def local_streamer(store: Store, autocast, cancel=None) -> Streamer:
    """A streamer whose maps stay in memory whatever the budget: a block's or a tile's maps are bounded by
    its size."""
    return Streamer(Store(store.device, 1 << 62, store.workdir, store.dtype), 1 << 40, autocast, cancel)


__all__ = ["LocalFeatures", "StatsBook", "decoder_stats", "encode_blocks", "encoder_halo",
           "encoder_stats", "local_streamer", "lr_halo", "prior_bytes", "prior_halo", "prior_stats", "sample_bytes",
           "sample_windows"]
