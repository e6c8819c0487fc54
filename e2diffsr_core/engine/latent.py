"""The latent phase of the engine: the reverse diffusion chain over large windows of the global latent.

Windows overlap and are blended with raised-cosine weights after every step (as MultiDiffusion does), and
the noise is a function of the global latent position (:class:`NoiseField`), so windows agree and the
result does not depend on where they fall. Latent maps larger than a budget live in temporary files.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import E2DiffSRError, check_cancel
from ..model import Geometry

LATENT = 8  # output pixels per latent cell
DIFFUSION_WINDOW = 2048  # output pixels a side of one UNet window (the latent is 8x smaller)


@dataclass
class Span:
    """One tile along one axis: the output range it contributes to, and the (wider) range it computes."""

    start: int
    stop: int
    comp_start: int
    comp_stop: int


def plan_axis(size: int, tile: int, overlap: int) -> list[Span]:
    """Tiles of ``tile`` output pixels with starts on the latent grid, overlapping by ``overlap``.

    A last tile narrower than ``tile`` computes a full-size window reaching back into its neighbour (the
    model then sees as much context as elsewhere) but contributes only to its own range.
    """
    if size <= tile:
        return [Span(0, size, 0, size)]
    stride = tile - overlap
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(starts[-1] + stride)
    spans = []
    for i, s in enumerate(starts):
        stop = size if i == len(starts) - 1 else s + tile
        comp_start = min(s, max(0, (size - tile) // LATENT * LATENT))
        spans.append(Span(s, stop, comp_start, max(stop, comp_start + tile) if stop < size else size))
    return spans


def ramp(n_in: int, length: int, rising: bool) -> np.ndarray:
    """Raised-cosine weights over an overlap of ``n_in`` pixels (``length`` pixels in all, 1 elsewhere)."""
    w = np.ones(length, np.float32)
    if n_in > 0:
        x = (np.arange(n_in, dtype=np.float32) + 0.5) / n_in
        r = 0.5 - 0.5 * np.cos(np.pi * x)
        if rising:
            w[:n_in] = r
        else:
            w[length - n_in:] = r[::-1]
    return np.maximum(w, 1e-4)


class NoiseField:
    """Gaussian noise indexed by (seed, step, channel, global latent row, column): every tile sees the same."""

    BLOCK = 32

    def __init__(self, seed: int, steps: int, channels: int = 4, temperature: float = 1.0):
        self.seed, self.steps, self.channels = int(seed), steps, channels
        self.temperature = float(temperature)  # multiplies every value (engine: the run's sampling temperature)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _block(self, by: int, bx: int) -> np.ndarray:
        key = (by, bx)
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed & 0xFFFFFFFF, by, bx])))
            self._cache[key] = rng.standard_normal(
                (self.steps, self.channels, self.BLOCK, self.BLOCK), dtype=np.float32)
        return self._cache[key]

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Noise [steps, channels, y1-y0, x1-x0] for a latent window."""
        b = self.BLOCK
        out = np.empty((self.steps, self.channels, y1 - y0, x1 - x0), np.float32)
        for by in range(y0 // b, (y1 - 1) // b + 1):
            for bx in range(x0 // b, (x1 - 1) // b + 1):
                ys, ye = max(y0, by * b), min(y1, (by + 1) * b)
                xs, xe = max(x0, bx * b), min(x1, (bx + 1) * b)
                out[:, :, ys - y0:ye - y0, xs - x0:xe - x0] = self._block(by, bx)[
                    :, :, ys - by * b:ye - by * b, xs - bx * b:xe - bx * b]
        if self.temperature != 1.0:
            out *= np.float32(self.temperature)
        return out


class LatentCanvas:
    """Global latent maps [N, C, LH, LW] blended from overlapping windows.

    Kept in memory when small, in a temporary file (beside the output when ``workdir`` is given) when large,
    so memory stays bounded whatever the raster's area.
    """

    def __init__(self, n: int, ch: int, lh: int, lw: int, workdir: str | None = None, limit: int = 256 << 20):
        self._tmp = None
        shape = (n, ch, lh, lw)
        if n * ch * lh * lw * 4 > limit:
            self._tmp = tempfile.TemporaryDirectory(prefix=".e2diffsr-latent-", dir=workdir)
            self.acc = self._file("acc.npy", shape)
            self.w = self._file("w.npy", (lh, lw))
        else:
            self.acc = np.zeros(shape, np.float32)
            self.w = np.zeros((lh, lw), np.float32)

    def _file(self, name: str, shape) -> np.ndarray:
        path = os.path.join(self._tmp.name, name)
        arr = np.lib.format.open_memmap(path, "w+", np.float32, shape)
        # Reserve the space now: a memory map that runs out of disk later would kill the process.
        if hasattr(os, "posix_fallocate"):
            try:
                with open(path, "r+b") as f:
                    os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
            except OSError as e:
                size, folder = os.path.getsize(path) >> 20, os.path.dirname(self._tmp.name)
                del arr
                self.close()
                raise E2DiffSRError(f"no room for {size} MiB of temporary latents in {folder} ({e.strerror}); "
                                    "free disk space") from None
        return arr

    def add(self, y0: int, x0: int, values: np.ndarray, weight: np.ndarray) -> None:
        h, w = weight.shape
        self.acc[:, :, y0:y0 + h, x0:x0 + w] += values * weight
        self.w[y0:y0 + h, x0:x0 + w] += weight

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self.acc[:, :, y0:y1, x0:x1]) / np.maximum(np.asarray(self.w[y0:y1, x0:x1]), 1e-12)

    def close(self) -> None:
        if self._tmp is not None:
            self.acc = self.w = None
            self._tmp.cleanup()
            self._tmp = None


def latent_ramps(spans: list[Span], i: int, n_lat: int, unit: int = LATENT) -> tuple[int, int, np.ndarray]:
    """Latent range [a, b) that span i contributes to, and its blending weights; ``unit`` is 8 for spans in
    output pixels and 1 for spans already in latent cells."""
    a = spans[i].start // unit
    b = n_lat if i == len(spans) - 1 else spans[i].stop // unit
    rise = (spans[i - 1].stop // unit - a) if i > 0 else 0
    fall = (b - spans[i + 1].start // unit) if i + 1 < len(spans) else 0
    return a, b, ramp(rise, b - a, True) * ramp(fall, b - a, False)


# Phase weights for progress reporting (CondNet, diffusion, decoder), roughly their share of the work.


def latent_windows(n_lat: int, window: int) -> list[Span]:
    """The UNet's windows along one latent axis of ``n_lat`` cells, for windows of ``window`` output pixels."""
    lat_win = max(2 * LATENT, window // LATENT // LATENT * LATENT)  # latent cells, a multiple of 8
    return plan_axis(n_lat, lat_win, min(2 * LATENT, lat_win // 4 // LATENT * LATENT) or LATENT)


def diffusion_units(out_size, window: int, steps: int) -> int:
    """UNet window evaluations of a run (for progress)."""
    rows, cols = (len(latent_windows(side // LATENT, window)) for side in out_size)
    return rows * cols * steps


def tile_noise(noise: list[NoiseField], ly: int, lx: int, lat, groups: int) -> list[torch.Tensor]:
    """Per reverse step, noise [samples*groups, 4, h, w] of the latent window at (ly, lx) of size ``lat``."""
    per_sample = [torch.from_numpy(field.window(ly, ly + lat[0], lx, lx + lat[1])).unsqueeze(1)
                  .expand(-1, groups, -1, -1, -1) for field in noise]  # [T, G, 4, h, w] each
    return list(torch.cat(per_sample, dim=1).unbind(0))


def window_batches(lrows: list[Span], lcols: list[Span], per_call: int) -> list[list[tuple[int, int]]]:
    """The windows (row, column) of one reverse step in batches of at most ``per_call`` windows of one shape
    (the UNet evaluates a batch in one call). Most windows have the full window's shape; the last of a row or
    column may be a few cells wider: those go in batches of their own. One by one (``per_call`` 1): row order."""
    if per_call <= 1:
        return [[(li, lj)] for li in range(len(lrows)) for lj in range(len(lcols))]
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for li, r in enumerate(lrows):
        for lj, c in enumerate(lcols):
            by_shape.setdefault((r.comp_stop - r.comp_start, c.comp_stop - c.comp_start), []).append((li, lj))
    return [same[k:k + per_call] for same in by_shape.values() for k in range(0, len(same), per_call)]


def diffuse(cond, plan, *, model, step, workdir: str | None = None, tick=None, cancel=None,
            per_call: int = 1) -> LatentCanvas:
    """The reverse chain on large latent windows of the conditioning latent ``cond`` (a canvas [G, 4, LH, LW]).
    Every step is blended across windows before the next one reads it (so overlapping windows agree, as in
    MultiDiffusion), with noise indexed by global latent position. ``step(z, c, t, noise, geometry)`` is one
    reverse step of a batch of windows; up to ``per_call`` windows of one shape go in one batch (a GPU's
    utilisation; the blend then sums overlaps in another order, which changes only roundings). Returns z0
    [samples * G, 4, LH, LW]."""
    LH, LW = plan.out_size[0] // LATENT, plan.out_size[1] // LATENT
    lrows, lcols = latent_windows(LH, plan.window), latent_windows(LW, plan.window)
    noise = [NoiseField(plan.seed + k, model.cfg.timesteps, model.cfg.embed_dim, plan.temperature)
             for k in range(plan.samples)]
    whole = Geometry.whole(plan.grid.lr_size, plan.grid.out_size, plan.grid)  # the UNet's scale inputs
    oy, ox = getattr(plan, "latent_origin", (0, 0))
    batches = window_batches(lrows, lcols, max(1, int(per_call)))
    z = None
    for i, t in enumerate(reversed(range(model.cfg.timesteps))):
        nxt = LatentCanvas(plan.batch, model.cfg.embed_dim, LH, LW, workdir)
        try:
            for batch in batches:
                check_cancel(cancel)
                zs, cs, ns = [], [], []
                for li, lj in batch:
                    y0, y1 = lrows[li].comp_start, lrows[li].comp_stop
                    x0, x1 = lcols[lj].comp_start, lcols[lj].comp_stop
                    # a run over part of a raster draws the noise of that part of the whole run (area_run.py)
                    noises = tile_noise(noise, y0 + oy, x0 + ox, (y1 - y0, x1 - x0), len(plan.groups))
                    zs.append(noises[0] if z is None else torch.from_numpy(z.read(y0, y1, x0, x1)))
                    cs.append(cond.read_window(y0, y1, x0, x1).repeat(plan.samples, 1, 1, 1))  # [S*G, 4, h, w]
                    ns.append(noises[i + 1] if t > 0 else None)
                out = step(_cat(zs), _cat(cs), t, _cat(ns) if t > 0 else None, whole)
                n = zs[0].shape[0]
                for k, (li, lj) in enumerate(batch):
                    ya, yb, wy = latent_ramps(lrows, li, LH, 1)
                    xa, xb, wx = latent_ramps(lcols, lj, LW, 1)
                    y0, x0 = lrows[li].comp_start, lcols[lj].comp_start
                    nxt.add(ya, xa, out[k * n:(k + 1) * n, :, ya - y0:yb - y0, xa - x0:xb - x0],
                            wy[:, None] * wx[None, :])
                    if tick is not None:
                        tick()
        except BaseException:
            nxt.close()
            raise
        finally:
            if z is not None:
                z.close()
        z = nxt
    return z


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
