"""Tiled inference on images of any size with bounded memory, and without seams (DESIGN.md).

The output is cut into tiles aligned to the latent grid (multiples of 8 output pixels) that overlap by
``overlap`` pixels. Each tile is computed on the *global* continuous coordinate mapping (model.geometry), with
diffusion noise that is a function of the global latent position (:class:`NoiseField`), so overlapping tiles
agree up to what each tile's receptive field sees; overlaps are blended with raised-cosine weights. Tiles are
visited row by row and every output pixel is handed to the sink as soon as no later tile touches it, so
memory grows with the tile size and the raster's width times the overlap, never with its area.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .consistency import PASSES, Placement, back_project
from .errors import Cancelled, E2DiffSRError
from .model import E2DiffSR, Geometry

LATENT = 8  # output pixels per latent cell
LR_MARGIN = 8  # LR pixels of context around each tile's footprint


# -- tile plan --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
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


def lr_footprint(c0: int, c1: int, lr_n: int, out_n: int) -> tuple[int, int]:
    """LR pixels (with LR_MARGIN of context) that output range [c0, c1) samples, unclipped."""
    f0 = math.floor((c0 + 0.5) * lr_n / out_n - 0.5) - LR_MARGIN
    f1 = math.ceil((c1 - 0.5) * lr_n / out_n - 0.5) + 1 + LR_MARGIN
    return f0, f1


def lr_window_size(spans: list[Span], lr_n: int, out_n: int) -> int:
    """One LR window size for every tile along an axis, so that tiles can share a batch."""
    return min(lr_n, max(b - a for a, b in (lr_footprint(s.comp_start, s.comp_stop, lr_n, out_n) for s in spans)))


def lr_window_start(c0: int, c1: int, lr_n: int, out_n: int, size: int) -> int:
    """Start of a tile's LR window: around its footprint, moved inside the image (whose zero-padded border
    is then exactly the whole-image pass's border)."""
    return min(max(0, lr_footprint(c0, c1, lr_n, out_n)[0]), lr_n - size)


def valid_out(valid: np.ndarray, lr_size, out_size, lr_origin, out_origin, size) -> np.ndarray:
    """Output pixel valid where its nearest LR pixel (global mapping) is valid."""
    if valid.all():
        return np.ones(size, bool)
    idx = []
    for axis in (0, 1):
        g = np.arange(out_origin[axis], out_origin[axis] + size[axis])
        src = np.floor((g + 0.5) * lr_size[axis] / out_size[axis]).astype(np.int64)
        idx.append(np.clip(src - lr_origin[axis], 0, valid.shape[axis] - 1))
    return valid[np.ix_(idx[0], idx[1])]


# -- noise ------------------------------------------------------------------------------------------------
class NoiseField:
    """Gaussian noise indexed by (seed, step, channel, global latent row, column): every tile sees the same."""

    BLOCK = 32

    def __init__(self, seed: int, steps: int, channels: int = 4):
        self.seed, self.steps, self.channels = int(seed), steps, channels
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
        return out


# -- device, precision, memory ----------------------------------------------------------------------------
def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """auto: bf16 (else fp16) autocast on CUDA, none (fp32) on the CPU; fp32/bf16/fp16 force a choice
    on CUDA (the CPU always runs fp32)."""
    if precision == "fp32" or device.type != "cuda":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def bytes_per_output_pixel(model: E2DiffSR, scale: float) -> float:
    """Rough peak activation memory per output pixel of one tile (fp32), dominated by the CSUM."""
    cfg = model.cfg
    csum = (4 * cfg.dec_ch + 3 * cfg.csum_hidden) * 4.0
    x8_level = cfg.dec_ch * 4 * 4.0 * (8.0 / scale) ** 2 * 2  # the x8 level and its pre-shuffle conv
    cond = cfg.cond_ch * max(cfg.cond_ch_mult[:1]) * 4.0 * 3
    return 1.5 * (csum + x8_level + cond)


def auto_tile(model: E2DiffSR, device: torch.device, scale: float, batch: int = 1,
              ram_budget: float | None = None) -> int:
    """Largest tile (output px, multiple of 64) whose estimated working set fits the device's free memory."""
    if device.type == "cuda":
        budget = _cuda_budget(device)
    else:
        budget = ram_budget if ram_budget is not None else _cpu_budget()
    px = budget / (bytes_per_output_pixel(model, scale) * max(1, batch))
    side = int(math.sqrt(max(px, 1.0))) // 64 * 64
    return int(min(max(side, 128), 1024 if device.type == "cpu" else 2048))


def auto_tile_batch(model: E2DiffSR, device: torch.device, scale: float, tile: int, per_tile: int) -> int:
    """Tiles per forward pass on CUDA: as many as the working-set budget holds, at most 16."""
    per = bytes_per_output_pixel(model, scale) * tile * tile * per_tile
    return int(max(1, min(16, _cuda_budget(device) // per)))


CUDA_BUDGET = 6 * 2**30  # working set aimed at on a GPU, so that a run stays under ~8 GiB whatever the raster


def _cuda_budget(device: torch.device) -> float:
    free, _total = torch.cuda.mem_get_info(device)
    return min(0.5 * free, CUDA_BUDGET)


def _cpu_budget() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        avail = info.get("MemAvailable", 4 << 30)
    except OSError:
        avail = 4 << 30
    return min(0.25 * avail, 2.0 * (1 << 30))


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


# -- the engine -------------------------------------------------------------------------------------------
Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
Writer = Callable[[int, int, np.ndarray, np.ndarray, "np.ndarray | None"], None]


@dataclass
class EngineResult:
    out_size: tuple[int, int]  # (height, width)
    tile: int
    overlap: int
    device: str
    tiles: int
    row_starts: list[int]
    col_starts: list[int]
    correction: np.ndarray | None = None  # superresolve_array(correction_map=True): per band |correction|


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


def _latent_ramps(spans: list[Span], i: int, n_lat: int, unit: int = LATENT) -> tuple[int, int, np.ndarray]:
    """Latent range [a, b) that span i contributes to, and its blending weights; ``unit`` is 8 for spans in
    output pixels and 1 for spans already in latent cells."""
    a = spans[i].start // unit
    b = n_lat if i == len(spans) - 1 else spans[i].stop // unit
    rise = (spans[i - 1].stop // unit - a) if i > 0 else 0
    fall = (b - spans[i + 1].start // unit) if i + 1 < len(spans) else 0
    return a, b, ramp(rise, b - a, True) * ramp(fall, b - a, False)


# Phase weights for progress reporting (CondNet, diffusion, decoder), roughly their share of the work.
PHASES = (0.3, 0.1, 0.6)
DIFFUSION_WINDOW = 2048  # output pixels a side of one UNet window (the latent is 8x smaller)


class TiledSR:
    """Run ``model`` over an image of any size read through ``read`` and written through ``write``.

    Three phases, so that the diffusion sees far more context than a decoder tile:
    1. CondNet on output tiles, blended into a global latent c;
    2. the T reverse steps of the UNet on large windows of that latent (the whole latent when it fits),
       with noise indexed by global latent position, blended into a global z0;
    3. the DPESR decoder on output tiles, blended and written as soon as final.

    read(x, y, w, h) -> (data [C, h, w] float32 in [0, 1], valid [h, w] bool), the LR image.
    write(x, y, mean [C, h, w], valid [h, w], std [C, h, w] | None), output pixels that are final.
    groups: the channel triples the model runs on (e.g. [[0, 1, 2]]; 1 band: [[0, 0, 0]]).
    combine(outputs per group) -> [C, h, w]: the inverse of the grouping.
    """

    def __init__(self, model: E2DiffSR, device: torch.device, tile: int = 0, overlap: int = 0,
                 precision: str = "auto", ram_budget: float | None = None, batch: int = 0,
                 workdir: str | None = None, diffusion_window: int = 0, consistency: bool = True,
                 passes: int = PASSES):
        self.model = model
        # back-project every decoded tile onto the input (consistency.py); False: the model's own output
        self.passes = int(passes) if consistency else 0
        self.device = device
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.batch = int(batch)  # tiles per forward pass; 0: 1 on the CPU, from free memory on CUDA
        self.workdir = workdir
        self.diffusion_window = int(diffusion_window)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            model.to(memory_format=torch.channels_last)
        self.amp = autocast_dtype(device, precision)
        self.ram_budget = ram_budget

    def plan_sizes(self, scale: float, batch: int) -> tuple[int, int]:
        """Decoder tile size and overlap (output pixels) a run at this scale starts with."""
        tile = self.tile or auto_tile(self.model, self.device, scale, batch, self.ram_budget)
        tile = max(64, tile // LATENT * LATENT)
        overlap = self.overlap or max(16, (tile // 8) // LATENT * LATENT)
        overlap = min(overlap // LATENT * LATENT, (tile // 2) // LATENT * LATENT - LATENT)
        return tile, max(LATENT, overlap)

    def run(self, read: Reader, write: Writer, lr_size: tuple[int, int], scale: float, seed: int = 0,
            samples: int = 1, groups: list[list[int]] | None = None, combine=None, channels: int = 3,
            progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
            log: Callable[[str], None] | None = None, out_size: tuple[int, int] | None = None,
            correction: Writer | None = None) -> EngineResult:
        """``out_size`` (height, width) overrides int(h * scale) x int(w * scale), e.g. for a target pixel size
        whose two axes scale differently; ``scale`` then only sizes the tiles.
        correction(x, y, |correction| [C, h, w], valid, None), when given: the size of the consistency
        correction (per band, [0, 1] units, mean over samples) of the pixels handed to ``write``."""
        h, w = lr_size
        out_size = tuple(out_size) if out_size is not None else (int(h * scale), int(w * scale))
        if min(out_size) < 16:
            raise E2DiffSRError(f"the output ({out_size[1]} x {out_size[0]} px) would be under 16 px a side; "
                                "use a larger input or scale")
        groups = groups or [[0, 1, 2]]
        combine = combine or (lambda outs: outs[0])
        batch = len(groups) * samples
        tile, overlap = self.plan_sizes(scale, batch)
        window = self.diffusion_window or DIFFUSION_WINDOW
        while True:
            try:
                return self._run(read, write, lr_size, out_size, scale, seed, samples, groups, combine, channels,
                                 tile, overlap, window, progress, cancel, log, correction)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(exc) or (tile <= 64 and window <= 256):
                    if is_oom(exc):
                        raise E2DiffSRError(f"out of memory on {self.device} even with 64 px tiles; "
                                            "use --device cpu or free memory") from None
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = max(64, tile // 2 // LATENT * LATENT)
                overlap = min(overlap, (tile // 2) // LATENT * LATENT - LATENT)
                window = max(256, window // 2)
                if log:
                    log(f"out of memory: retrying with {tile} px tiles")

    def _run(self, read, write, lr_size, out_size, scale, seed, samples, groups, combine, channels, tile,
             overlap, window, progress, cancel, log, correction=None) -> EngineResult:
        model = self.model
        H, W = out_size
        LH, LW = H // LATENT, W // LATENT
        rows = plan_axis(H, tile, overlap)
        cols = plan_axis(W, tile, overlap)
        lat_win = max(2 * LATENT, window // LATENT // LATENT * LATENT)  # latent cells, a multiple of 8
        lat_overlap = min(2 * LATENT, lat_win // 4 // LATENT * LATENT) or LATENT
        lrows = plan_axis(LH, lat_win, lat_overlap)
        lcols = plan_axis(LW, lat_win, lat_overlap)
        if log:
            log(f"tiles: {len(rows) * len(cols)} of {tile} px (overlap {overlap} px), "
                f"{len(lrows) * len(lcols)} diffusion window(s) on {self.device}")
        G, S = len(groups), samples
        lr_win = (lr_window_size(rows, lr_size[0], H), lr_window_size(cols, lr_size[1], W))
        batch_tiles = self.batch or (1 if self.device.type == "cpu" else max(1, auto_tile_batch(
            self.model, self.device, scale, tile, G * S)))
        n_tiles = len(rows) * len(cols)
        n_windows = len(lrows) * len(lcols)
        ticker = _Progress(progress, (n_tiles, n_windows * model.cfg.timesteps, n_tiles))
        cond = LatentCanvas(G, model.cfg.embed_dim, LH, LW, self.workdir)
        canvases = [cond]  # closed (temporary files removed) however the run ends
        try:
            # phase 1: CondNet, per output tile, into the global c
            for ri, ry in enumerate(rows):
                ya, yb, wy = _latent_ramps(rows, ri, LH)
                for chunk, first in self._chunks(cols, batch_tiles):
                    _check(cancel)
                    lr, geo, _, _ = self._inputs(read, lr_size, out_size, ry, chunk, lr_win, groups)
                    c = self._condition(lr, geo)  # [n*G, 4, lh, lw]
                    for i, cx in enumerate(chunk):
                        xa, xb, wx = _latent_ramps(cols, first + i, LW)
                        oy, ox = ya - ry.comp_start // LATENT, xa - cx.comp_start // LATENT
                        cond.add(ya, xa, c[i * G:(i + 1) * G, :, oy:oy + yb - ya, ox:ox + xb - xa],
                                 wy[:, None] * wx[None, :])
                        ticker.step(0)
            # phase 2: the reverse chain on large latent windows. Every step is blended across windows before
            # the next one reads it (so overlapping windows agree, as in MultiDiffusion), with noise indexed by
            # global latent position.
            noise = [NoiseField(seed + k, model.cfg.timesteps, model.cfg.embed_dim) for k in range(S)]
            whole = Geometry.whole(lr_size, out_size)  # the UNet's scale inputs are the whole image's
            T = model.cfg.timesteps
            z = None
            for i, t in enumerate(reversed(range(T))):
                nxt = LatentCanvas(S * G, model.cfg.embed_dim, LH, LW, self.workdir)
                canvases.append(nxt)
                for li in range(len(lrows)):
                    ya, yb, wy = _latent_ramps(lrows, li, LH, 1)
                    y0, y1 = lrows[li].comp_start, lrows[li].comp_stop
                    for lj in range(len(lcols)):
                        _check(cancel)
                        xa, xb, wx = _latent_ramps(lcols, lj, LW, 1)
                        x0, x1 = lcols[lj].comp_start, lcols[lj].comp_stop
                        noises = self._tile_noise(noise, y0, [x0], (y1 - y0, x1 - x0), G)
                        zw = noises[0] if z is None else torch.from_numpy(z.read(y0, y1, x0, x1))
                        c = np.tile(cond.read(y0, y1, x0, x1), (S, 1, 1, 1))  # [S*G, 4, h, w]
                        out = self._step(zw, torch.from_numpy(c), t, noises[i + 1] if t > 0 else None, whole)
                        nxt.add(ya, xa, out[:, :, ya - y0:yb - y0, xa - x0:xb - x0], wy[:, None] * wx[None, :])
                        ticker.step(1)
                if z is not None:
                    z.close()
                z = nxt
            # phase 3: the decoder, per output tile, blended and written as soon as final
            self._decode_and_write(read, write, lr_size, out_size, rows, cols, lr_win, groups, combine, channels,
                                   S, z, batch_tiles, ticker, cancel, correction)
        finally:
            for canvas in canvases:
                canvas.close()
        return EngineResult(out_size, tile, overlap, str(self.device), n_tiles,
                            [r.start for r in rows], [c.start for c in cols])

    @staticmethod
    def _chunks(cols: list[Span], batch_tiles: int):
        """Runs of consecutive same-size column tiles, at most batch_tiles long: (chunk, index of its first)."""
        ci = 0
        while ci < len(cols):
            chunk = [cols[ci]]
            while (ci + len(chunk) < len(cols) and len(chunk) < batch_tiles and
                   cols[ci + len(chunk)].comp_stop - cols[ci + len(chunk)].comp_start
                   == chunk[0].comp_stop - chunk[0].comp_start):
                chunk.append(cols[ci + len(chunk)])
            yield chunk, ci
            ci += len(chunk)

    def _decode_and_write(self, read, write, lr_size, out_size, rows, cols, lr_win, groups, combine, channels,
                          samples, z0, batch_tiles, ticker, cancel, correction=None):
        H, W = out_size
        n_out = channels * (2 if samples > 1 else 1) + (channels if correction else 0)
        carry_top = None  # accumulated (values, weights) of the rows shared with the previous tile row
        for ri, ry in enumerate(rows):
            next_row_overlap = rows[ri + 1].start if ri + 1 < len(rows) else ry.stop
            keep_rows = ry.stop - next_row_overlap  # rows shared with the next tile row
            top_n = (rows[ri - 1].stop - ry.start) if ri > 0 else 0
            wy = ramp(top_n, ry.stop - ry.start, True) * ramp(keep_rows, ry.stop - ry.start, False)
            carry_bottom = np.zeros((n_out + 1, keep_rows, W), np.float32)
            carry_left = None
            for chunk, first in self._chunks(cols, batch_tiles):
                _check(cancel)
                results = self._decode_tiles(read, lr_size, out_size, ry, chunk, lr_win, groups, combine,
                                             samples, z0, correction is not None)
                for i, (cx, (values, valid)) in enumerate(zip(chunk, results)):
                    ci = first + i
                    next_col_overlap = cols[ci + 1].start if ci + 1 < len(cols) else cx.stop
                    keep_cols = cx.stop - next_col_overlap
                    left_n = (cols[ci - 1].stop - cx.start) if ci > 0 else 0
                    wx = ramp(left_n, cx.stop - cx.start, True) * ramp(keep_cols, cx.stop - cx.start, False)
                    weight = wy[:, None] * wx[None, :]
                    acc = np.concatenate([values * weight[None], weight[None]], axis=0)
                    if left_n:
                        acc[:, :, :left_n] += carry_left
                    if top_n:
                        acc[:, :top_n, left_n:] += carry_top[:, :, cx.start + left_n:cx.stop]
                    final_h = acc.shape[1] - keep_rows
                    final_w = acc.shape[2] - keep_cols
                    if final_h > 0 and final_w > 0:
                        out = acc[:n_out, :final_h, :final_w] / acc[n_out:, :final_h, :final_w]
                        self._emit(write, cx.start, ry.start, out, valid[:final_h, :final_w], channels, samples,
                                   correction)
                    if keep_rows:
                        carry_bottom[:, :, cx.start:cx.start + final_w] = acc[:, final_h:, :final_w]
                    carry_left = acc[:, :, final_w:].copy()
                    ticker.step(2)
            carry_top = carry_bottom

    @staticmethod
    def _emit(write, x, y, out, valid, channels, samples, correction=None):
        mean = out[:channels]
        std = None
        if samples > 1:
            var = out[channels:2 * channels] - mean * mean  # blended E[x^2] - (blended E[x])^2
            std = np.sqrt(np.maximum(var, 0.0))
        write(x, y, mean, valid, std)
        if correction is not None:
            correction(x, y, out[-channels:], valid, None)

    def _inputs(self, read, lr_size, out_size, ry: Span, chunk: list[Span], lr_win, groups):
        """LR windows of a batch of same-size tiles of one tile row: (lr [n*G, 3, h, w], geometry, valids,
        LR origins)."""
        H_lr, W_lr = lr_size
        H, W = out_size
        oy0, oy1 = ry.comp_start, ry.comp_stop
        ly0 = lr_window_start(oy0, oy1, H_lr, H, lr_win[0])
        datas, valids, lr_origins, out_origins = [], [], [], []
        for cx in chunk:
            lx0 = lr_window_start(cx.comp_start, cx.comp_stop, W_lr, W, lr_win[1])
            data, valid = read(lx0, ly0, lr_win[1], lr_win[0])
            datas.append(data[np.array(groups)])  # [G, 3, h, w]
            valids.append(valid)
            lr_origins.append((ly0, lx0))
            out_origins.append((oy0, cx.comp_start))
        comp_w = chunk[0].comp_stop - chunk[0].comp_start
        if tuple(lr_win) == (H_lr, W_lr) and (oy1 - oy0, comp_w) == (H, W):
            geo = Geometry.whole((H_lr, W_lr), (H, W))  # one tile is the whole image: the release's own resizes
        else:
            geo = Geometry.tiles((H_lr, W_lr), (H, W), lr_origins, lr_win, out_origins, (oy1 - oy0, comp_w))
        lr = torch.from_numpy(np.ascontiguousarray(np.concatenate(datas)))  # [n*G, 3, h, w]
        return lr, geo, valids, lr_origins

    def _decode_tiles(self, read, lr_size, out_size, ry: Span, chunk: list[Span], lr_win, groups, combine,
                      samples, z0: LatentCanvas, with_correction: bool = False):
        """Decode a batch of same-size tiles of one tile row; return each one's (values, valid) contribution
        (values: the mean, then E[x^2] when samples > 1, then the mean |correction| when asked)."""
        G, n = len(groups), len(chunk)
        lr, geo, valids, lr_origins = self._inputs(read, lr_size, out_size, ry, chunk, lr_win, groups)
        lat = geo.latent_size
        ly = ry.comp_start // LATENT
        z = np.concatenate([z0.read(ly, ly + lat[0], cx.comp_start // LATENT, cx.comp_start // LATENT + lat[1])
                            for cx in chunk])  # [n*S*G, 4, h, w]: tile, then sample, then group
        # the LR of each tile repeated for its samples: [n, G, ...] -> [n, S, G, ...]
        lr = lr.reshape(n, 1, G, *lr.shape[1:]).expand(n, samples, G, *lr.shape[1:]).reshape(-1, *lr.shape[1:])
        out = self._decode(torch.from_numpy(z), lr, geo)  # [n*S*G, 3, oh, ow] in [0, 1]
        delta = self._make_consistent(out, lr.numpy(), valids, lr_origins, lr_size, out_size, ry, chunk)
        results = []
        sy = ry.start - ry.comp_start
        hh = ry.stop - ry.start
        for i, cx in enumerate(chunk):
            sx = cx.start - cx.comp_start
            ww = cx.stop - cx.start
            tile_out = out[i * samples * G:(i + 1) * samples * G, :, sy:sy + hh, sx:sx + ww]
            stack = np.stack([combine([tile_out[k * G + g] for g in range(G)]) for k in range(samples)])
            values = stack.mean(0)
            if samples > 1:
                values = np.concatenate([values, (stack * stack).mean(0)], axis=0)
            if with_correction:
                d = np.abs(delta[i * samples * G:(i + 1) * samples * G, :, sy:sy + hh, sx:sx + ww])
                d = np.stack([combine([d[k * G + g] for g in range(G)]) for k in range(samples)]).mean(0)
                values = np.concatenate([values, d], axis=0)
            valid = valid_out(valids[i], lr_size, out_size, lr_origins[i], (ry.start, cx.start), (hh, ww))
            results.append((values.astype(np.float32), valid))
        return results

    def _make_consistent(self, out, lr, valids, lr_origins, lr_size, out_size, ry: Span, chunk: list[Span]):
        """Back-project each decoded tile (all its samples and band groups) onto its LR window, in place, on
        the global grids; return the correction (zero when consistency is off)."""
        delta = np.zeros_like(out)
        if not self.passes:
            return delta
        per = out.shape[0] // len(chunk)
        for i, cx in enumerate(chunk):
            k = slice(i * per, (i + 1) * per)
            where = Placement(lr_size, out_size, lr_origins[i], (ry.comp_start, cx.comp_start))
            out[k], delta[k] = back_project(out[k], lr[k], valids[i], self.passes, where, self.device)
        return delta

    @staticmethod
    def _tile_noise(noise, ly, lxs, lat, groups):
        """Per reverse step, noise [n_tiles*samples*groups, 4, h, w] from the global noise fields."""
        per_tile = []
        for lx in lxs:
            for field in noise:
                win = torch.from_numpy(field.window(ly, ly + lat[0], lx, lx + lat[1]))  # [T, 4, h, w]
                per_tile.append(win.unsqueeze(1).expand(-1, groups, -1, -1, -1))
        stacked = torch.cat(per_tile, dim=1)  # [T, n*samples*G, 4, h, w]
        return list(stacked.unbind(0))

    def _prepare(self, lr01: torch.Tensor) -> torch.Tensor:
        x = (lr01.to(self.device, non_blocking=True) - 0.5) / 0.5
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x.contiguous()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()

    @torch.no_grad()
    def _condition(self, lr01: torch.Tensor, geo: Geometry) -> np.ndarray:
        with self._autocast():
            c = self.model.condition(self._prepare(lr01), geo)
        return c.float().cpu().numpy()

    @torch.no_grad()
    def _step(self, z: torch.Tensor, c: torch.Tensor, t: int, noise: torch.Tensor | None, geo: Geometry):
        """One reverse step of a latent window; the first (t = T-1) in fp32, since it multiplies eps by ~20."""
        dev = self.device
        ctx = contextlib.nullcontext() if t == self.model.cfg.timesteps - 1 else self._autocast()
        with ctx:
            out, _, _ = self.model.denoise_step(z.to(dev).float(), c.to(dev), t, geo,
                                                None if noise is None else noise.to(dev))
        return out.float().cpu().numpy()

    @torch.no_grad()
    def _decode(self, z: torch.Tensor, lr01: torch.Tensor, geo: Geometry) -> np.ndarray:
        with self._autocast():
            out = self.model.decode(z.to(self.device), self._prepare(lr01), geo)
        return (out.float().clamp(-1, 1) * 0.5 + 0.5).cpu().numpy()


class _Progress:
    """Overall fraction done from per-phase unit counts."""

    def __init__(self, callback, counts):
        self.callback, self.counts, self.done = callback, counts, [0, 0, 0]

    def step(self, phase: int) -> None:
        self.done[phase] += 1
        if self.callback is not None:
            self.callback(min(1.0, sum(w * d / max(1, c) for w, d, c in zip(PHASES, self.done, self.counts))))


def _check(cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def superresolve_array(model: E2DiffSR, image: np.ndarray, scale: float, *, device: str | torch.device = "cpu",
                       seed: int = 0, tile: int = 0, overlap: int = 0, samples: int = 1, precision: str = "auto",
                       diffusion_window: int = 0, progress=None, cancel=None, consistency: bool = True,
                       passes: int = PASSES,
                       correction_map: bool = False) -> tuple[np.ndarray, np.ndarray | None, EngineResult]:
    """In-memory convenience: image [3, h, w] in [0, 1] -> (sr [3, H, W], std or None, plan); with
    ``correction_map`` the plan's ``correction`` holds the per band |correction| [3, H, W]."""
    from .api import check_scale, resolve_device

    scale = check_scale(scale, model.cfg.max_scale)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    C, h, w = image.shape
    H, W = int(h * scale), int(w * scale)
    out = np.zeros((C, H, W), np.float32)
    std = np.zeros((C, H, W), np.float32) if samples > 1 else None
    fix = np.zeros((C, H, W), np.float32) if correction_map else None
    image = np.asarray(image, np.float32)

    def read(x, y, ww, hh):
        return image[:, y:y + hh, x:x + ww], np.ones((hh, ww), bool)

    def write(x, y, mean, valid, s):
        out[:, y:y + mean.shape[1], x:x + mean.shape[2]] = mean
        if std is not None and s is not None:
            std[:, y:y + s.shape[1], x:x + s.shape[2]] = s

    def write_fix(x, y, size, valid, _):
        fix[:, y:y + size.shape[1], x:x + size.shape[2]] = size

    engine = TiledSR(model, dev, tile=tile, overlap=overlap, precision=precision, diffusion_window=diffusion_window,
                     consistency=consistency, passes=passes)
    res = engine.run(read, write, (h, w), scale, seed=seed, samples=samples, channels=C,
                     progress=progress, cancel=cancel, correction=write_fix if correction_map else None)
    res.correction = fix
    return out, std, res
