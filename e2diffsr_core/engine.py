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

from . import rules
from .consistency import PASSES, Placement, back_project, halo
from .engine_canvas import Canvas, Store
from .engine_decode import bicubic_rows, csum_tile, level_weights, row_spans, run_lr_features, skip_window, valid_out
from .engine_stream import Streamer, crop, encoder_passes, lr_passes, prior_passes, run_encoder, run_prior
from .errors import Cancelled, E2DiffSRError
from .gridmap import GridMap
from .model import E2DiffSR, Geometry

LATENT = 8  # output pixels per latent cell


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
def autocast_dtype(device: torch.device, precision: str = "auto", cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32.

    auto: bf16 on CUDA (fp16 where bf16 is missing); on a CPU, bf16 when ``cpu_bf16`` (the CPU computes
    bf16 natively and a short measurement found it faster and agreeing, see :func:`cpu_bf16_pays`), else fp32.
    fp32 and bf16 force a choice on either device; fp16 is for CUDA (a CPU runs it as fp32).
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "bf16" or (precision == "auto" and cpu_bf16):
            return torch.bfloat16
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_bf16_pays(model: E2DiffSR) -> bool:
    """Whether bf16 autocast is worth it on this CPU for this model: native bf16 (AVX512-BF16 / AMX), and
    the model's own heaviest layer types (3 x 3 convs of the SR branch and CSUM, the CSUM's 1 x 1 fusion) at
    least 20% faster in bf16 while agreeing with fp32. Measured once per model object (about a second)."""
    cached = getattr(model, "_cpu_bf16_pays", None)
    if cached is not None:
        return cached
    verdict = False
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        verdict = _measure_bf16(model)
    model._cpu_bf16_pays = verdict
    return verdict


@torch.no_grad()
def _measure_bf16(model: E2DiffSR) -> bool:
    import time

    dec = model.first_stage_model.decoder
    csum = dec.upsampler
    layers = [csum.UPNet_x2_list[0][0], csum.fuse] + ([dec.FRUList[0].IMDB[0].c1] if dec.FRUList else [])
    gen = torch.Generator().manual_seed(0)
    times = {None: math.inf, torch.bfloat16: math.inf}
    outs = {}
    for rnd in range(3):  # alternating, best of each: robust to other processes sharing the cores
        # a new size every round: a run meets many shapes, and bf16 kernels can cost more to set up
        inputs = [torch.randn(1, _in_channels(layer), 32 + 8 * rnd, 48, generator=gen).contiguous(
            memory_format=torch.channels_last) for layer in layers]
        for dtype in times:
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
            t = time.perf_counter()
            with ctx:
                outs[dtype] = [layer(x).float() for layer, x in zip(layers, inputs)]
            if rnd:  # the first round loads the libraries
                times[dtype] = min(times[dtype], time.perf_counter() - t)
    agree = all(float((b - a).norm() / a.norm().clamp_min(1e-12)) < 0.02
                for a, b in zip(outs[None], outs[torch.bfloat16]))
    model._bf16_measurement = (times[None], times[torch.bfloat16], agree)
    return agree and times[torch.bfloat16] < 0.8 * times[None]


def _in_channels(layer: torch.nn.Module) -> int:
    return layer[0].in_channels if isinstance(layer, torch.nn.Sequential) else layer.in_channels


def set_cpu_threads() -> None:
    """No more threads than cores the process may run on (PyTorch may count the machine's, not the process's).
    Never more than the caller chose: float sums depend on the thread count, and a caller that set it (e.g.
    the ranks of superresolve-batch, to match single-process results) keeps it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)


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

    Every part of the model is computed once per pixel of its own grid (docs/design.md, "Tiling"):
    1. CondNet, layer by layer over the whole output in bands of rows (engine_stream), with whole-image
       GroupNorm statistics;
    2. the T reverse steps of the UNet on large windows of the latent (the whole latent when it fits), with
       noise indexed by global latent position;
    3. the decoder's prior branch (latent grid) and LR-grid features (head, modulation, FRUs), streamed the
       same way, then its CSUM and bicubic skip on output tiles of ``tile`` pixels, exact without overlap.

    read(x, y, w, h) -> (data [C, h, w] float32 in [0, 1], valid [h, w] bool), the LR image.
    write(x, y, mean [C, h, w], valid [h, w], std [C, h, w] | None), output pixels, each written once.
    groups: the channel triples the model runs on (e.g. [[0, 1, 2]]; 1 band: [[0, 0, 0]]).
    combine(outputs per group) -> [C, h, w]: the inverse of the grouping.
    ``tile`` bounds the working set: output tiles of tile x tile pixels, and bands of about as many pixels.
    """

    def __init__(self, model: E2DiffSR, device: torch.device, tile: int = 0, overlap: int = 0,
                 precision: str = "auto", ram_budget: float | None = None, batch: int = 0,
                 workdir: str | None = None, diffusion_window: int = 0, consistency: bool = True,
                 passes: int = PASSES):
        self.model = model
        # back-project every output tile onto the input (consistency.py); 0 passes: the model's own output
        self.passes = int(passes) if consistency else 0
        self.device = device
        self.tile = int(tile)
        self.overlap = int(overlap)  # accepted for compatibility: output tiles are exact and need none
        self.batch = int(batch)
        self.workdir = workdir
        self.diffusion_window = int(diffusion_window)
        model.to(memory_format=torch.channels_last)  # the fast layout for convolutions, CPU and GPU alike
        if device.type == "cpu":
            set_cpu_threads()
        self.amp = autocast_dtype(device, precision, device.type == "cpu" and precision == "auto"
                                  and cpu_bf16_pays(model))
        self.ram_budget = ram_budget

    def plan_sizes(self, scale: float, batch: int) -> tuple[int, int]:
        """Output tile size and overlap (output pixels; the overlap is 0) a run at this scale starts with."""
        tile = self.tile or auto_tile(self.model, self.device, scale, batch, self.ram_budget)
        return max(64, tile // LATENT * LATENT), 0

    def run(self, read: Reader, write: Writer, lr_size: tuple[int, int], scale: float, seed: int = 0,
            samples: int = 1, groups: list[list[int]] | None = None, combine=None, channels: int = 3,
            progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
            log: Callable[[str], None] | None = None, out_size: tuple[int, int] | None = None,
            correction: Writer | None = None, grid: GridMap | None = None,
            out_rows: tuple[int, int] | None = None) -> EngineResult:
        """``out_size`` (height, width) overrides int(h * scale) x int(w * scale), e.g. for a target pixel size
        whose two axes scale differently; ``scale`` then only sizes the tiles. ``grid`` places the output
        pixels on the LR grid (an output aligned to another raster's grid); default: the sizes' own mapping.
        correction(x, y, |correction| [C, h, w], valid, None), when given: the size of the consistency
        correction (per band, [0, 1] units, mean over samples) of the pixels handed to ``write``.
        out_rows (first, stop): decode and write only these output rows (one rank's part of a raster split
        across ranks, split.py); all before the decoder's upsampler still runs on the whole image, so these
        rows come out as in a whole run."""
        h, w = lr_size
        out_size = tuple(out_size) if out_size is not None else rules.output_size(h, w, scale)
        rules.check_output_side(out_size[1], out_size[0])
        grid = GridMap.of(grid, (h, w), out_size)
        if (grid.lr_size, grid.out_size) != ((h, w), out_size):
            raise E2DiffSRError(f"the grid is for {grid.lr_size} -> {grid.out_size} px, the run {(h, w)} -> {out_size}")
        groups = groups or [[0, 1, 2]]
        combine = combine or (lambda outs: outs[0])
        tile, _ = self.plan_sizes(scale, len(groups) * samples)
        window = self.diffusion_window or DIFFUSION_WINDOW
        while True:
            try:
                return self._run(read, write, grid, seed, samples, groups, combine, channels,
                                 tile, window, progress, cancel, log, correction, out_rows)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(exc) or (tile <= 64 and window <= 256):
                    if is_oom(exc):
                        raise E2DiffSRError(f"out of memory on {self.device} even with 64 px tiles; "
                                            "use --device cpu or free memory") from None
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = max(64, tile // 2 // LATENT * LATENT)
                window = max(256, window // 2)
                if log:
                    log(f"out of memory: retrying with {tile} px tiles")

    def _store(self, tile: int) -> Store:
        """Whole-image feature maps stay in memory within a share of the memory budget (half on a CPU, a
        quarter on a GPU, whose budget also holds the tiles' working set); the rest goes to disk, so memory
        does not grow with the area. An explicit ``tile`` (the user's memory knob) also bounds that share."""
        budget = _cuda_budget(self.device) if self.device.type == "cuda" else (self.ram_budget or _cpu_budget())
        share = budget / (4 if self.device.type == "cuda" else 2)
        if self.tile:
            share = min(share, max(16 << 20, 64 * tile * tile))
        return Store(self.device, int(share), self.workdir)

    def _run(self, read, write, grid: GridMap, seed, samples, groups, combine, channels, tile, window,
             progress, cancel, log, correction=None, out_rows=None) -> EngineResult:
        model = self.model
        lr_size, out_size = grid.lr_size, grid.out_size
        H, W = out_size
        rows, cols = tile_starts(H, tile), tile_starts(W, tile)
        spans = row_spans(H, tile, out_rows)
        if log:
            log(f"{len(spans) * len(cols)} output tile(s) of {tile} px on {self.device}")
        G, S = len(groups), samples
        dec = model.first_stage_model.decoder
        store = self._store(tile)
        ticker = _Progress(progress, (encoder_passes(model.cond_stage_model), diffusion_units(out_size, window, model),
                                      prior_passes(dec) + lr_passes(dec) + len(spans) * len(cols)))
        st = Streamer(store, tile * tile, self._autocast, cancel, lambda: ticker.step(0))
        cond = None
        try:
            lr = self._read_lr(st, read, lr_size, groups)
            enc = model.cond_stage_model

            def first(a, b):  # conv_in of bicubic(LR) on the output grid
                lo, hi = max(0, a - 1), min(H, b + 1)
                return crop(st.conv(enc.conv_in, bicubic_rows(lr, lo, hi, grid)), lo, a, b)

            cond = run_encoder(st, enc, first, (G, enc.conv_in.out_channels, H, W))
            z0 = self._diffuse(cond, grid, seed, S, G, window, ticker, cancel)
            cond.free()
            st.tick = lambda: ticker.step(2)
            feats = self._features(st, z0, lr, grid, S)
            z0.close()
            self._write_tiles(st, feats, read, write, grid, spans, cols, groups, combine, channels,
                              S, ticker, cancel, correction)
        finally:
            store.close()
        return EngineResult(out_size, tile, 0, str(self.device), len(spans) * len(cols), rows, cols)

    def _read_lr(self, st: Streamer, read, lr_size, groups) -> Canvas:
        """The LR image in the model's [-1, 1] space, one channel triple per group: [G, 3, h, w]."""
        h, w = lr_size

        def band(a, b):
            data, _ = read(0, a, w, b - a)
            x = torch.from_numpy(np.ascontiguousarray(data[np.array(groups)], np.float32))
            return (x.to(self.device) - 0.5) / 0.5

        return st.run((len(groups), 3, h, w), band)[0]

    def _diffuse(self, cond: Canvas, grid: GridMap, seed, S, G, window, ticker, cancel) -> LatentCanvas:
        """The reverse chain on large latent windows. Every step is blended across windows before the next
        one reads it (so overlapping windows agree, as in MultiDiffusion), with noise indexed by global
        latent position."""
        model = self.model
        LH, LW = grid.y.n_out // LATENT, grid.x.n_out // LATENT
        lat_win = max(2 * LATENT, window // LATENT // LATENT * LATENT)  # latent cells, a multiple of 8
        lat_overlap = min(2 * LATENT, lat_win // 4 // LATENT * LATENT) or LATENT
        lrows, lcols = plan_axis(LH, lat_win, lat_overlap), plan_axis(LW, lat_win, lat_overlap)
        noise = [NoiseField(seed + k, model.cfg.timesteps, model.cfg.embed_dim) for k in range(S)]
        whole = Geometry.whole(grid.lr_size, grid.out_size, grid)  # the UNet's scale inputs: the whole image's
        T = model.cfg.timesteps
        z = None
        for i, t in enumerate(reversed(range(T))):
            nxt = LatentCanvas(S * G, model.cfg.embed_dim, LH, LW, self.workdir)
            try:
                for li in range(len(lrows)):
                    ya, yb, wy = _latent_ramps(lrows, li, LH, 1)
                    y0, y1 = lrows[li].comp_start, lrows[li].comp_stop
                    c_rows = cond.read(y0, y1)
                    for lj in range(len(lcols)):
                        _check(cancel)
                        xa, xb, wx = _latent_ramps(lcols, lj, LW, 1)
                        x0, x1 = lcols[lj].comp_start, lcols[lj].comp_stop
                        noises = self._tile_noise(noise, y0, [x0], (y1 - y0, x1 - x0), G)
                        zw = noises[0] if z is None else torch.from_numpy(z.read(y0, y1, x0, x1))
                        c = c_rows[:, :, :, x0:x1].repeat(S, 1, 1, 1)  # [S*G, 4, h, w]
                        out = self._step(zw, c, t, noises[i + 1] if t > 0 else None, whole)
                        nxt.add(ya, xa, out[:, :, ya - y0:yb - y0, xa - x0:xb - x0], wy[:, None] * wx[None, :])
                        ticker.step(1)
            except BaseException:
                nxt.close()
                raise
            finally:
                if z is not None:
                    z.close()
            z = nxt
        return z

    def _features(self, st: Streamer, z0: LatentCanvas, lr: Canvas, grid: GridMap, S: int) -> Canvas:
        """The decoder up to the CSUM: prior maps from z0, then the LR-grid features, batch [S*G, ...]."""
        model = self.model
        dec = model.first_stage_model.decoder
        pq = model.first_stage_model.post_quant_conv
        n = z0.acc.shape[0]
        LH, LW = z0.acc.shape[2], z0.acc.shape[3]
        inv = float(1.0 / model.scale_factor)

        def first(a, b):
            lo, hi = max(0, a - 1), min(LH, b + 1)
            z = torch.from_numpy(z0.read(lo, hi, 0, LW)).to(self.device) * inv
            return crop(st.conv(dec.conv_in, st.conv(pq, z)), lo, a, b)

        maps = run_prior(st, dec, first, (n, dec.conv_in.out_channels, LH, LW)) if dec.prior_branch else None
        lr_n = lr if S == 1 else _Repeated(lr, S)
        feats = run_lr_features(st, dec, lr_n, maps, grid)
        for mp in maps or []:
            mp.free()
        return feats
    def _write_tiles(self, st: Streamer, feats: Canvas, read, write, grid: GridMap, spans, cols, groups,
                     combine, channels, S, ticker, cancel, correction=None) -> None:
        """CSUM and bicubic skip per output tile; each tile is final and written at once. With the consistency
        correction on, a tile is computed with the halo its back-projection needs and cropped afterwards."""
        csum = self.model.first_stage_model.decoder.upsampler
        G = len(groups)
        H, W = grid.out_size
        level_w = level_weights(csum, grid, feats.shape[0], self.device)
        margin = halo(grid.lr_size, grid.out_size, self.passes, grid) if self.passes else 0
        for y0, y1 in spans:
            for ci, x0 in enumerate(cols):
                _check(cancel)
                x1 = cols[ci + 1] if ci + 1 < len(cols) else W
                ext = (max(0, y0 - margin), min(H, y1 + margin), max(0, x0 - margin), min(W, x1 + margin))
                lx, ly, lw, lh = skip_window(ext, grid)
                data, valid = read(lx, ly, lw, lh)
                lr01 = np.ascontiguousarray(data[np.array(groups)], np.float32)  # [G, 3, lh, lw]
                lr = (torch.from_numpy(lr01).to(self.device) - 0.5) / 0.5
                out = csum_tile(st, csum, feats, lr.repeat(S, 1, 1, 1), (ly, lx), ext, grid, level_w)
                out = (out.clamp(-1, 1) * 0.5 + 0.5).float().cpu().numpy()  # [S*G, 3, eh, ew]
                delta = None
                if self.passes:
                    where = Placement(grid.lr_size, grid.out_size, (ly, lx), (ext[0], ext[2]), grid)
                    out, delta = back_project(out, np.tile(lr01, (S, 1, 1, 1)), valid, self.passes, where,
                                              self.device)
                keep = (slice(None), slice(None), slice(y0 - ext[0], y1 - ext[0]), slice(x0 - ext[2], x1 - ext[2]))
                out = out[keep]
                stack = np.stack([combine([out[k * G + g] for g in range(G)]) for k in range(S)])
                mean = stack.mean(0)
                std = np.sqrt(np.maximum((stack * stack).mean(0) - mean * mean, 0.0)) if S > 1 else None
                ok = valid_out(valid, grid, (ly, lx), (y0, x0), (y1 - y0, x1 - x0))
                write(x0, y0, mean[:channels], ok, std)
                if correction is not None:
                    d = np.abs(delta[keep]) if delta is not None else np.zeros_like(out)
                    size = np.stack([combine([d[k * G + g] for g in range(G)]) for k in range(S)]).mean(0)
                    correction(x0, y0, size[:channels], ok, None)
                ticker.step(2)

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

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()

    @torch.no_grad()
    def _step(self, z: torch.Tensor, c: torch.Tensor, t: int, noise: torch.Tensor | None, geo: Geometry):
        """One reverse step of a latent window; the first (t = T-1) in fp32, since it multiplies eps by ~20."""
        dev = self.device
        ctx = contextlib.nullcontext() if t == self.model.cfg.timesteps - 1 else self._autocast()
        with ctx:
            out, _, _ = self.model.denoise_step(z.to(dev).float(), c.to(dev), t, geo,
                                                None if noise is None else noise.to(dev))
        return out.float().cpu().numpy()


class _Repeated:
    """A canvas seen ``times`` times along the batch (the LR of every sample)."""

    def __init__(self, canvas: Canvas, times: int):
        self.canvas, self.times = canvas, times
        n, c, h, w = canvas.shape
        self.shape = (n * times, c, h, w)

    @property
    def height(self) -> int:
        return self.shape[2]

    def read(self, a: int, b: int) -> torch.Tensor:
        return self.canvas.read(a, b).repeat(self.times, 1, 1, 1)


def tile_starts(size: int, tile: int) -> list[int]:
    """Starts of output tiles of ``tile`` pixels (the last one may be narrower)."""
    return list(range(0, size, tile))


def diffusion_units(out_size, window: int, model: E2DiffSR) -> int:
    lat_win = max(2 * LATENT, window // LATENT // LATENT * LATENT)
    n = [len(plan_axis(s // LATENT, lat_win, min(2 * LATENT, lat_win // 4 // LATENT * LATENT) or LATENT))
         for s in out_size]
    return n[0] * n[1] * model.cfg.timesteps


class _Progress:
    """Overall fraction done from per-phase unit counts."""

    def __init__(self, callback, counts):
        self.callback, self.counts, self.done = callback, counts, [0, 0, 0]

    def step(self, phase: int) -> None:
        self.done[phase] += 1
        if self.callback is not None:
            self.callback(min(1.0, sum(w * min(d, c) / max(1, c)
                                       for w, d, c in zip(PHASES, self.done, self.counts))))


def _check(cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def superresolve_array(model: E2DiffSR, image: np.ndarray, scale: float, *, device: str | torch.device = "cpu",
                       seed: int = 0, tile: int = 0, overlap: int = 0, samples: int = 1, precision: str = "auto",
                       diffusion_window: int = 0, progress=None, cancel=None, consistency: bool = True,
                       passes: int = PASSES, correction_map: bool = False,
                       grid: GridMap | None = None) -> tuple[np.ndarray, np.ndarray | None, EngineResult]:
    """In-memory convenience: image [3, h, w] in [0, 1] -> (sr [3, H, W], std or None, plan); with
    ``correction_map`` the plan's ``correction`` holds the per band |correction| [3, H, W]; ``grid`` gives
    the output its own grid (size grid.out_size), e.g. one aligned to another raster."""
    from .api import check_scale, resolve_device

    scale = check_scale(scale, model.cfg.max_scale)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    C, h, w = image.shape
    H, W = grid.out_size if grid is not None else rules.output_size(h, w, scale)
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
                     progress=progress, cancel=cancel, correction=write_fix if correction_map else None,
                     out_size=(H, W), grid=grid)
    res.correction = fix
    return out, std, res
