"""The normalised parts of the model run layer by layer over the whole image, one band of rows at a time.

CondNet, the DPDecoder prior branch and the decoder's LR-grid features (head, modulation, FRUs) contain
normalisations whose statistics span the whole image (GroupNorm; the IMDB contrast-aware channel
attention). Each is run as a sequence of *passes*: a pass computes one layer's output for the whole image,
band by band, reading its input with the few halo rows its convolutions need (one per 3 x 3 conv), and
accumulates the statistics the next normalisation needs. Every layer is computed once per pixel of its own
grid, and the result does not depend on the band or tile size: it is the whole-image pass, reordered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import Cancelled
from .canvas import Canvas, Moments, Store


def _swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.05)


def group_norm(x: torch.Tensor, gn: torch.nn.GroupNorm, stats) -> torch.Tensor:
    """GroupNorm of a band with the whole image's statistics (mean, var [N, groups], float64), in the band's
    dtype. fp32: one fused multiply-add per element; bf16: the inference batch norm (per batch element, the
    group statistics repeated per channel), which computes in float32 and rounds once."""
    per_group = x.shape[1] // gn.num_groups
    mean, var = (t.repeat_interleave(per_group, dim=1) for t in stats)  # [N, C], float64
    if x.dtype != torch.float32:
        w, b = gn.weight.float(), gn.bias.float()
        parts = [F.batch_norm(x[i:i + 1], mean[i].float(), var[i].float(), w, b, False, 0.0, gn.eps)
                 for i in range(x.shape[0])]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    a = torch.rsqrt(var + gn.eps) * gn.weight.double()
    b = gn.bias.double() - mean * a
    # one fused multiply-add per element: x * a + b
    return torch.addcmul(b.float()[:, :, None, None], x.float(), a.float()[:, :, None, None])


def crop(t: torch.Tensor, t_lo: int, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of a band that starts at row t_lo."""
    return t[:, :, lo - t_lo:hi - t_lo]


class Streamer:
    """Runs passes band by band; ``band_px`` pixels of the pass's own grid per band (at least 8 rows)."""

    def __init__(self, store: Store, band_px: int, autocast: Callable[[], contextlib.AbstractContextManager],
                 cancel: Callable[[], bool] | None = None, tick: Callable[[], None] | None = None):
        self.store, self.band_px, self.autocast = store, int(band_px), autocast
        self.cancel, self.tick = cancel, tick
        # None: whole-image statistics; otherwise the bounded engine's record or replay of them
        # (engine_bounded.StatsBook): start(groups, shape) -> moments, finish(moments) -> moments
        self.stats = None

    def rows(self, height: int, width: int) -> int:
        return max(1, min(height, max(8, self.band_px // max(1, width))))

    def conv(self, conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return conv(x.contiguous(memory_format=torch.channels_last)).to(self.store.dtype)

    @torch.no_grad()
    def run(self, shape, band: Callable[[int, int], torch.Tensor], groups: int = 0,
            dtype: torch.dtype | None = None) -> tuple[Canvas, Moments | None]:
        """One pass: out[:, :, a:b] = band(a, b) for consecutive bands; statistics by ``groups`` if asked; the
        map in the store's dtype unless ``dtype`` is given."""
        n, c, h, w = shape
        out = self.store.canvas(n, c, h, w, dtype)
        moments = None
        if groups:
            moments = Moments(groups) if self.stats is None else self.stats.start(groups, shape)
        step = self.rows(h, w)
        for a in range(0, h, step):
            if self.cancel is not None and self.cancel():
                raise Cancelled()
            b = min(h, a + step)
            y = band(a, b)
            out.write(a, y)
            if moments is not None:
                moments.add(y, a)
        if moments is not None and self.stats is not None:
            moments = self.stats.finish(moments)
        if self.tick is not None:
            self.tick()
        return out, moments

    # -- building blocks ------------------------------------------------------------------------------
    def conv3(self, conv, src: Canvas, a: int, b: int, pre=None) -> torch.Tensor:
        """A 3 x 3 (padding 1) conv of ``pre(src)`` for rows [a, b): one halo row each side."""
        h = src.height
        lo, hi = max(0, a - 1), min(h, b + 1)
        x = src.read(lo, hi)
        return crop(self.conv(conv, pre(x) if pre is not None else x), lo, a, b)

    def resnet_block(self, blk, x: Canvas, stats: Moments) -> tuple[Canvas, Moments]:
        n, _, h, w = x.shape
        cout = blk.conv1.out_channels
        s_x = stats.mean_var()
        h1, m1 = self.run((n, cout, h, w), lambda a, b: self.conv3(
            blk.conv1, x, a, b, lambda t: _swish(group_norm(t, blk.norm1, s_x))), blk.norm2.num_groups)
        s_1 = m1.mean_var()

        def second(a, b):
            r = self.conv3(blk.conv2, h1, a, b, lambda t: _swish(group_norm(t, blk.norm2, s_1)))
            skip = x.read(a, b)
            if blk.nin_shortcut is not None:
                skip = self.conv(blk.nin_shortcut, skip)
            return skip + r

        out, mo = self.run((n, cout, h, w), second, 32)
        h1.free()
        return out, mo

    def downsample(self, ds, x: Canvas) -> tuple[Canvas, Moments]:
        """Stride-2 conv after padding right and bottom: output row i reads input rows 2i .. 2i+2."""
        n, c, h, w = x.shape
        return self.run((n, c, h // 2, w // 2),
                        lambda a, b: self.conv(ds, x.read(2 * a, min(h, 2 * b + 1)))[:, :, :b - a], 32)


def encoder_passes(enc) -> int:
    """Passes of :func:`run_encoder` (for progress)."""
    blocks = sum(len(level.block) for level in enc.down) + 2
    downs = sum(1 for level in enc.down if hasattr(level, "downsample"))
    return 2 + 2 * blocks + downs


def run_encoder(st: Streamer, enc, first: Callable[[int, int], torch.Tensor], shape) -> Canvas:
    """GAPEncoder (CondNet) with whole-image GroupNorm statistics; ``first(a, b)`` gives conv_in's output."""
    h, m = st.run(shape, first, 32)
    for level in enc.down:
        for blk in level.block:
            h2, m = st.resnet_block(blk, h, m)
            h.free()
            h = h2
        if hasattr(level, "downsample"):
            h2, m = st.downsample(level.downsample, h)
            h.free()
            h = h2
    for blk in (enc.mid.block_1, enc.mid.block_2):
        h2, m = st.resnet_block(blk, h, m)
        h.free()
        h = h2
    s = m.mean_var()
    n, _, hh, ww = h.shape
    out, _ = st.run((n, enc.conv_out.out_channels, hh, ww), lambda a, b: st.conv3(
        enc.conv_out, h, a, b, lambda t: _swish(group_norm(t, enc.norm_out, s))), dtype=torch.float32)
    h.free()
    return out


def prior_passes(dec) -> int:
    return 1 + 4 + sum(2 * len(g.block) + 1 for g in dec.up)


def run_prior(st: Streamer, dec, first: Callable[[int, int], torch.Tensor], shape) -> list[Canvas]:
    """DPDecoder prior branch: the prior maps h_0..h_3 (before the nearest resize), on the latent grid."""
    h, m = st.run(shape, first, 32)
    for blk in (dec.mid.block_1, dec.mid.block_2):
        h2, m = st.resnet_block(blk, h, m)
        h.free()
        h = h2
    maps = []
    for group in reversed(dec.up):
        for blk in group.block:
            h2, m = st.resnet_block(blk, h, m)
            h.free()
            h = h2
        n, _, hh, ww = h.shape
        t = group.transfer
        mp, _ = st.run((n, t.out_channels, hh, ww), lambda a, b, t=t, h=h: st.conv(t, h.read(a, b)),
                       dtype=torch.float32)
        maps.append(mp)
    h.free()
    return maps


def fru_passes(fru) -> int:
    return 2 * len(fru.IMDB) + 1


def _distill(st: Streamer, blk, src: Canvas, a: int, b: int) -> torch.Tensor:
    """The four distillation steps of an IMDB for rows [a, b): each 3 x 3 conv on just the rows the next reads."""
    h = src.height
    lo, hi = max(0, a - 4), min(h, b + 4)
    x = src.read(lo, hi)
    split = (blk.distilled, blk.remaining)
    parts = []
    for k, conv in enumerate((blk.c1, blk.c2, blk.c3)):
        nlo, nhi = max(0, a - 3 + k), min(h, b + 3 - k)
        y = crop(_lrelu(st.conv(conv, x)), lo, nlo, nhi)
        d, x = torch.split(y, split, dim=1)
        parts.append(crop(d, nlo, a, b))
        lo = nlo
    parts.append(crop(st.conv(blk.c4, x), lo, a, b))
    return torch.cat(parts, dim=1)


def _cca_gate(cca, moments: Moments) -> torch.Tensor:
    """The channel-attention gate [N, C, 1, 1] from whole-image per-channel mean and population std."""
    mean, var = moments.mean_var()
    stat = (var.sqrt() + mean).float()[:, :, None, None]
    return cca.conv_du(stat)


def run_fru(st: Streamer, fru, x: Canvas) -> Canvas:
    """FRU: IMDBs with whole-image channel attention; the 1 x 1 fusion of all IMDB outputs is accumulated
    block by block, so no more than three LR-grid maps are held at once."""
    n, c, h, w = x.shape
    fuse = fru.c[0]
    acc = st.store.canvas(n, c, h, w)
    cur = x
    for j, blk in enumerate(fru.IMDB):
        d, mom = st.run((n, 4 * blk.distilled, h, w), lambda a, b, blk=blk, cur=cur: _distill(st, blk, cur, a, b),
                        4 * blk.distilled)
        gate = _cca_gate(blk.cca, mom).to(st.store.dtype)
        weight = fuse.weight[:, j * c:(j + 1) * c]

        def finish(a, b, blk=blk, cur=cur, d=d, gate=gate, weight=weight, j=j):
            out = st.conv(blk.c5, d.read(a, b) * gate) + cur.read(a, b)
            with st.autocast():
                part = F.conv2d(out, weight, fuse.bias if j == 0 else None).to(st.store.dtype)
            if j == 0:
                acc.write(a, part)
            else:
                acc.add(a, part)
            return out

        nxt, _ = st.run((n, c, h, w), finish)
        d.free()
        if cur is not x:
            cur.free()
        cur = nxt
    if cur is not x:
        cur.free()
    out, _ = st.run((n, c, h, w), lambda a, b: st.conv3(fru.LR_conv, acc, a, b, _lrelu) + x.read(a, b))
    acc.free()
    return out


def lr_passes(dec) -> int:
    return 1 + len(dec.up) + sum(fru_passes(f) for f in dec.FRUList)
