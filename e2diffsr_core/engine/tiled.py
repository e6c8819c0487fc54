"""Super-resolution of images of any size with bounded memory and without seams (docs/design.md, "Tiling").

Every part of the model is computed once per pixel of its own grid, in three phases:
1. CondNet, layer by layer over the whole output in bands of rows (stream), with whole-image
   GroupNorm statistics;
2. the reverse diffusion chain on large windows of the global latent (latent), with noise indexed by
   global latent position;
3. the decoder's prior branch and LR-grid features, streamed the same way, then its CSUM and bicubic skip on
   exact output tiles (tiles), each corrected for consistency with the input and written at once.

A run is described by one frozen :class:`RunPlan` (plan); memory is bounded by the tile and a share
of the memory budget (device), never by the raster's area.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import E2DiffSRError
from ..gridmap import GridMap, mirror
from ..model import E2DiffSR, Geometry
from .bounded import (
    LocalFeatures,
    decoder_stats,
    encode_blocks,
    encoder_halo,
    encoder_stats,
    local_streamer,
    prior_bytes,
    prior_stats,
    sample_bytes,
)
from .canvas import Canvas, Store
from .consistency import GUARD, PASSES, halo
from .decode import bicubic_rows, latent_prior, run_lr_features, shortcut_grid
from .device import (
    auto_tile,
    autocast_dtype,
    block_side,
    exact_bytes,
    feature_budget,
    is_oom,
    memory_budget,
    reused_memory,
    set_cpu_threads,
    tile_budget,
    windows_per_call,
)
from .latent import (
    DIFFUSION_WINDOW,
    LATENT,
    LatentCanvas,
    NoiseField,
    Span,
    diffuse,
    diffusion_units,
    latent_windows,
    plan_axis,
)
from .plan import Reader, RunIO, RunPlan, Writer, tile_starts
from .stream import Streamer, crop, encoder_passes, lr_passes, prior_passes, run_encoder
from .tiles import TileDecoder

# Bytes of one latent map beyond which engine_latent.LatentCanvas keeps it in a temporary file (its default).
LATENT_LIMIT = 256 << 20
# Phase weights for progress reporting (CondNet, diffusion, decoder), roughly their share of the work.
PHASES = (0.3, 0.1, 0.6)
# LR pixels by which a corrected run extends the input beyond each edge (by reflection), so that the model
# computes the raster's outer pixels as it computes inner ones (docs/design.md, "Raster borders").
BORDER = 8


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


class TiledSR:
    """Run ``model`` over an image of any size read and written through callbacks (:class:`RunIO`).

    ``tile`` bounds the working set (output tiles of tile x tile pixels, bands of about as many pixels; 0:
    from free memory); ``consistency`` back-projects every tile onto the input (``passes`` passes);
    ``guard`` keeps every pixel within the range of the guard x guard input pixels around it (2 or 3, 0: off;
    None: consistency.GUARD with the correction, 0 without); ``border`` extends the input by that many LR
    pixels beyond each edge by reflection and crops the output back (None: BORDER with the correction, 0
    without: the model's own output is the whole-image pass of the authors' code).
    ``window_batch``: UNet windows per call (0: device.windows_per_call); ``compile``: the UNet through
    ``torch.compile`` (its windows all have one shape; on CUDA as CUDA graphs), falling back to the module
    itself, with a log line, where compilation fails. ``ram_budget``: the memory budget in bytes (``--memory``;
    None: engine_device.default_memory); ``bounded``: None runs the exact whole-image engine while its feature
    maps fit half the budget and the bounded one (engine_bounded) beyond, True / False force either.
    """

    def __init__(self, model: E2DiffSR, device: torch.device, *, tile: int = 0, overlap: int = 0,
                 precision: str = "auto", ram_budget: float | None = None,
                 workdir: str | None = None, diffusion_window: int = 0, consistency: bool = True,
                 passes: int = PASSES, window_batch: int = 0, compile: bool = False, guard: int | None = None,
                 border: int | None = None, bounded: bool | None = None):
        self.model = model
        self.bounded = bounded
        # back-project every output tile onto the input (consistency); 0 passes: the model's own output
        self.passes = int(passes) if consistency else 0
        self.guard = int(GUARD if consistency else 0) if guard is None else int(guard)
        self.border = int(BORDER if consistency else 0) if border is None else int(border)
        self.device = device
        self.tile = int(tile)
        self.overlap = int(overlap)  # accepted for compatibility: output tiles are exact and need none
        self.workdir = workdir
        self.diffusion_window = int(diffusion_window)
        model.to(memory_format=torch.channels_last)  # the fast layout for convolutions, CPU and GPU alike
        if device.type == "cpu":
            set_cpu_threads()
        self.amp = autocast_dtype(device, precision)
        # whole-image feature maps in bf16 in a bf16 run: half the memory traffic of every elementwise pass,
        # no conversion around each conv (fp16 keeps fp32 maps: its range is too small for them)
        self.map_dtype = torch.bfloat16 if self.amp == torch.bfloat16 else torch.float32
        self.ram_budget = ram_budget
        self.window_batch = int(window_batch)
        self.unet = CompiledUNet(model.unet, device) if compile else None

    @property
    def arithmetic(self) -> str:
        """The run's arithmetic in words: fp32, bf16 or fp16."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, "fp32")

    def plan_sizes(self, scale: float, batch: int, shortcuts: bool = True) -> tuple[int, int]:
        """Output tile size and overlap (output pixels; the overlap is 0) a run at this scale starts with;
        ``shortcuts``: False for an output grid where the engine builds every CSUM level (one aligned to another
        raster: decode.shortcut_grid), which gets smaller tiles."""
        tile = self.tile or auto_tile(self.model, self.device, scale, batch, self.ram_budget, shortcut=shortcuts)
        return max(64, tile // LATENT * LATENT), 0

    def plan(self, lr_size, scale: float, *, out_size=None, grid: GridMap | None = None, groups=None,
             channels: int = 3, samples: int = 1, seed: int = 0, out_rows=None,
             temperature: float | None = None) -> RunPlan:
        """The checked plan of a run: ``out_size`` (h, w) overrides the scale's int(h * s) x int(w * s) (e.g. a
        target pixel size whose axes scale differently: ``scale`` then only sizes the tiles); ``grid`` places
        the output pixels on the LR grid (default: the sizes' own mapping); ``out_rows`` (first, stop) decodes
        only those output rows (one rank's part of a split raster, scale_out.split); ``temperature`` multiplies the
        diffusion's noise (None: rules.check_temperature's default, 0 for one sample and 1 for several)."""
        n = len(groups or [[0, 1, 2]]) * samples
        return RunPlan.build(lr_size, scale, tile=self.plan_sizes(scale, n, shortcut_grid(grid))[0],
                             window=self.diffusion_window or DIFFUSION_WINDOW, out_size=out_size, grid=grid,
                             groups=groups, channels=channels, samples=samples, seed=seed, out_rows=out_rows,
                             temperature=temperature)

    def run(self, read: Reader, write: Writer, lr_size: tuple[int, int], scale: float, *, combine=None,
            correction: Writer | None = None, progress=None, cancel=None, log=None, **plan) -> EngineResult:
        """:meth:`plan` then :meth:`run_plan`; ``plan`` takes the keyword arguments of :meth:`plan`."""
        return self.run_plan(self.plan(lr_size, scale, **plan),
                             RunIO(read, write, combine, correction, progress, cancel, log))

    def run_plan(self, plan: RunPlan, io: RunIO) -> EngineResult:
        """Run ``plan``; out of memory, retry with tiles and windows halved down to 64 / 256 pixels."""
        while True:
            try:
                with reused_memory():
                    return self._run(plan, io)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(exc) or (plan.tile <= 64 and plan.window <= 256):
                    if is_oom(exc):
                        raise E2DiffSRError(f"out of memory on {self.device} even with 64 px tiles; "
                                            "use --device cpu or free memory") from None
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                plan = plan.smaller()
                if io.log:
                    io.log(f"out of memory: retrying with {plan.tile} px tiles")

    def _store(self, tile: int) -> Store:
        """Where this run's whole-image feature maps live (device.feature_budget)."""
        return Store(self.device, feature_budget(self.device, self.ram_budget), self.workdir, self.map_dtype)

    def is_bounded(self, plan: RunPlan) -> bool:
        """Whether ``plan`` runs the bounded engine: its whole-image maps would not fit half the budget."""
        if self.bounded is not None:
            return self.bounded
        plan = plan.bordered(self.border)
        need = exact_bytes(self.model, plan.lr_size, plan.out_size, plan.batch, self.map_dtype.itemsize)
        return need > feature_budget(self.device, self.ram_budget)

    def temporary_bytes(self, plan: RunPlan) -> int:
        """Bytes of temporary files ``plan`` will hold at once at most: the latent chains beyond their memory
        limit (latent.LatentCanvas: the step being blended and the one it reads), and feature maps that
        do not fit half the memory budget (the exact engine's whole-image maps; the bounded one's CondNet
        latent, its statistics sample and the prior branch's maps on the latent grid)."""
        plan = plan.bordered(self.border)
        (H, W), lat = plan.out_size, self.model.cfg.embed_dim
        cells = (H // LATENT) * (W // LATENT)
        chain = 2 * cells * 4 * (plan.batch * lat + 1) if plan.batch * lat * cells * 4 > LATENT_LIMIT else 0
        share, item = feature_budget(self.device, self.ram_budget), self.map_dtype.itemsize
        if not self.is_bounded(plan):
            return chain + max(0, exact_bytes(self.model, plan.lr_size, plan.out_size, plan.batch, item) - share)
        cond = len(plan.groups) * lat * cells * 4
        sample = sample_bytes(self.model, plan.lr_size, plan.out_size, plan.batch, item)
        prior = prior_bytes(self.model, plan.out_size, plan.batch, item)
        return chain + (cond if cond > share else 0) + max(0, sample - share) + max(0, prior - share)

    def _run(self, plan: RunPlan, io: RunIO) -> EngineResult:
        bounded = self.is_bounded(plan)
        plan = plan.bordered(self.border)
        io = replace(io, read=_mirrored(io.read, plan))
        model, (H, W), tiles = self.model, plan.out_size, plan.tiles()
        if io.log:
            io.log(f"{len(tiles)} output tile(s) of {plan.tile} px on {self.device}"
                   + (", bounded engine (statistics from a sample)" if bounded else ""))
        if bounded:
            return self._run_bounded(plan, io)
        dec = model.first_stage_model.decoder
        store = self._store(plan.tile)
        ticker = _Progress(io.progress, (encoder_passes(model.cond_stage_model),
                                         diffusion_units(plan.out_size, plan.window, model.cfg.timesteps),
                                         prior_passes(dec) + lr_passes(dec) + len(tiles)))
        st = Streamer(store, plan.tile * plan.tile, self._autocast, io.cancel, lambda: ticker.step(0))
        try:
            lr = self._read_lr(st, io.read, plan.lr_size, plan.groups)
            enc = model.cond_stage_model

            def first(a, b):  # conv_in of bicubic(LR) on the output grid
                lo, hi = max(0, a - 1), min(H, b + 1)
                return crop(st.conv(enc.conv_in, bicubic_rows(lr, lo, hi, plan.grid)), lo, a, b)

            cond = run_encoder(st, enc, first, (len(plan.groups), enc.conv_in.out_channels, H, W))
            z0 = diffuse(cond, plan, model=model, step=self._step, workdir=self.workdir,
                         tick=lambda: ticker.step(1), cancel=io.cancel, per_call=self._windows_per_call(plan))
            if self.unet is not None and self.unet.failed and io.log:
                io.log(f"note: the UNet could not be compiled ({self.unet.failed}); it ran uncompiled")
            cond.free()
            st.tick = lambda: ticker.step(2)
            feats = self._features(st, z0, lr, plan.grid, plan.samples)
            z0.close()
            TileDecoder(st, model, feats, plan, io, passes=self.passes, device=self.device, guard=self.guard).run(
                lambda: ticker.step(2))
        finally:
            store.close()
        return EngineResult(plan.image_grid.out_size, plan.tile, 0, str(self.device), len(tiles), plan.row_starts,
                            plan.col_starts)

    def _run_bounded(self, plan: RunPlan, io: RunIO) -> EngineResult:
        """engine_bounded: statistics from the sample windows, CondNet by blocks, features per tile."""
        model, (H, W), tiles = self.model, plan.out_size, plan.tiles()
        enc = model.cond_stage_model
        grid, groups = plan.grid, plan.groups
        block = block_side(model, self.device, len(groups), self.ram_budget, encoder_halo(enc))
        blocks = -(-H // block) * -(-W // block)
        ticker = _Progress(io.progress, (blocks + 1, diffusion_units(plan.out_size, plan.window,
                                                                     model.cfg.timesteps), len(tiles) + 1))
        store = self._store(plan.tile)
        st = Streamer(store, plan.tile * plan.tile, self._autocast, io.cancel)
        loc = local_streamer(store, self._autocast, io.cancel)
        z0 = None
        try:
            book = encoder_stats(st, enc, io.read, grid, groups, self.device)
            ticker.step(0)
            cond = store.canvas(len(groups), enc.conv_out.out_channels, H // LATENT, W // LATENT, torch.float32)
            encode_blocks(loc, enc, io.read, grid, groups, book, block=block, out=cond, tick=lambda: ticker.step(0))
            z0 = diffuse(cond, plan, model=model, step=self._step, workdir=self.workdir,
                         tick=lambda: ticker.step(1), cancel=io.cancel, per_call=self._windows_per_call(plan))
            cond.free()
            prior = prior_stats(st, model, z0)
            dbook = decoder_stats(st, model, z0, io.read, grid, groups, plan.samples, self.device, prior=prior)
            ticker.step(2)
            # the features' bands are held beside the tiles: as much as a tile where the budget has room for
            # both (the default on most machines), a quarter of the budget where it has not
            budget = (min(tile_budget(self.ram_budget), memory_budget(self.ram_budget) / 4)
                      if self.device.type == "cpu" else 1 << 30)
            margin = halo(grid.lr_size, grid.out_size, self.passes, grid) if self.passes else 0
            over = math.ceil((plan.tile + 2 * margin) * grid.lr_size[0] / H) + 24  # a tile's rows, with halos
            feats = LocalFeatures(loc, model, z0, io.read, grid, groups, samples=plan.samples, book=dbook,
                                  budget=budget, over=over)
            TileDecoder(loc, model, feats, plan, io, passes=self.passes, device=self.device, guard=self.guard).run(
                lambda: ticker.step(2))
        finally:
            if z0 is not None:
                z0.close()
            store.close()
        return EngineResult(plan.image_grid.out_size, plan.tile, 0, str(self.device), len(tiles), plan.row_starts,
                            plan.col_starts)

    def _windows_per_call(self, plan: RunPlan) -> int:
        if self.window_batch:
            return self.window_batch
        side = [latent_windows(n // LATENT, plan.window)[0] for n in plan.out_size]
        cells = (side[0].comp_stop - side[0].comp_start) * (side[1].comp_stop - side[1].comp_start)
        return windows_per_call(self.model, self.device, cells, plan.batch)

    def _read_lr(self, st: Streamer, read, lr_size, groups) -> Canvas:
        """The LR image in the model's [-1, 1] space, one channel triple per group: [G, 3, h, w]."""
        h, w = lr_size

        def band(a, b):
            data, _ = read(0, a, w, b - a)
            x = torch.from_numpy(np.ascontiguousarray(data[np.array(groups)], np.float32))
            return (x.to(self.device) - 0.5) / 0.5

        return st.run((len(groups), 3, h, w), band, dtype=torch.float32)[0]

    def _features(self, st: Streamer, z0: LatentCanvas, lr: Canvas, grid: GridMap, S: int) -> Canvas:
        """The decoder up to the CSUM: prior maps from z0, then the LR-grid features, batch [S*G, ...]."""
        dec = self.model.first_stage_model.decoder
        maps = latent_prior(st, self.model, z0)
        lr_n = lr if S == 1 else _Repeated(lr, S)
        feats = run_lr_features(st, dec, lr_n, maps, grid)
        for mp in maps or []:
            mp.free()
        return feats

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()

    @torch.no_grad()
    def _step(self, z: torch.Tensor, c: torch.Tensor, t: int, noise: torch.Tensor | None, geo: Geometry):
        """One reverse step of a latent window; the first (t = T-1) in fp32, since it multiplies eps by ~20."""
        dev = self.device
        ctx = contextlib.nullcontext() if t == self.model.cfg.timesteps - 1 else self._autocast()
        with ctx:
            out, _, _ = self.model.denoise_step(z.to(dev).float(), c.to(dev), t, geo,
                                                None if noise is None else noise.to(dev), unet=self.unet)
        return out.float().cpu().numpy()


class CompiledUNet:
    """``torch.compile`` of the UNet for the engine's fixed window shapes (CUDA graphs on a GPU: the windows of
    a run replay one graph without a launch per layer). Compilation happens at the first call; where it fails
    (no C++ compiler, an unsupported operator) the module itself runs from then on and ``failed`` says why."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.module = unet
        self.failed: str | None = None
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.compiled = torch.compile(unet, mode=mode, dynamic=False)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self.compiled is not None:
            try:
                out = self.compiled(*args, **kwargs)
                # a CUDA graph's output is overwritten by its next replay: hand out a copy
                return out.clone() if out.is_cuda else out
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run the module itself
                if is_oom(exc):
                    raise
                self.compiled = None
                first = (str(exc).strip().splitlines() or [""])[0][:160]
                self.failed = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return self.module(*args, **kwargs)


def reflecting(read: Reader, size: tuple[int, int]) -> Reader:
    """``read`` on an image of ``size`` (h, w) extended without end: a window reaching beyond the image's edges
    gets the image's own pixels reflected about those edges (the edge pixel repeated), validity with them."""
    h, w = size

    def reflected(x, y, ww, hh):
        if x >= 0 and y >= 0 and x + ww <= w and y + hh <= h:  # inside the image
            return read(x, y, ww, hh)
        rows, cols = mirror(np.arange(y, y + hh), h), mirror(np.arange(x, x + ww), w)
        r0, c0 = int(rows.min()), int(cols.min())
        data, valid = read(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0)
        return data[:, rows - r0][:, :, cols - c0], valid[np.ix_(rows - r0, cols - c0)]

    return reflected


def _mirrored(read: Reader, plan: RunPlan) -> Reader:
    """The image's reader on the model's grid of a bordered plan (:func:`reflecting`)."""
    if plan.image is None:
        return read
    (_, _, my, mx), inner = plan.origin, reflecting(read, plan.image.lr_size)
    return lambda x, y, ww, hh: inner(x - mx, y - my, ww, hh)


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


class _Progress:
    """Overall fraction done from per-phase unit counts."""

    def __init__(self, callback, counts):
        self.callback, self.counts, self.done = callback, counts, [0, 0, 0]

    def step(self, phase: int) -> None:
        self.done[phase] += 1
        if self.callback is not None:
            self.callback(min(1.0, sum(w * min(d, c) / max(1, c)
                                       for w, d, c in zip(PHASES, self.done, self.counts))))


def superresolve_array(model: E2DiffSR, image: np.ndarray, scale: float, *, device: str | torch.device = "cpu",
                       seed: int = 0, tile: int = 0, overlap: int = 0, samples: int = 1, precision: str = "auto",
                       diffusion_window: int = 0, progress=None, cancel=None, consistency: bool = True,
                       passes: int = PASSES, correction_map: bool = False, grid: GridMap | None = None,
                       window_batch: int = 0, compile: bool = False, temperature: float | None = None,
                       guard: int | None = None, border: int | None = None,
                       ) -> tuple[np.ndarray, np.ndarray | None, EngineResult]:
    """In-memory convenience: image [3, h, w] in [0, 1] -> (sr [3, H, W], std or None, plan); with
    ``correction_map`` the plan's ``correction`` holds the per band |correction| [3, H, W]; ``grid`` gives
    the output its own grid (size grid.out_size), e.g. one aligned to another raster; ``guard`` and
    ``border`` as :class:`TiledSR`'s."""
    from ..api import check_scale, resolve_device

    scale = check_scale(scale, model.cfg.max_scale)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    C, h, w = image.shape
    engine = TiledSR(model, dev, tile=tile, overlap=overlap, precision=precision, diffusion_window=diffusion_window,
                     consistency=consistency, passes=passes, window_batch=window_batch, compile=compile,
                     guard=guard, border=border)
    plan = engine.plan((h, w), scale, out_size=None if grid is None else grid.out_size, grid=grid, channels=C,
                       samples=samples, seed=seed, temperature=temperature)
    H, W = plan.out_size
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

    res = engine.run_plan(plan, RunIO(read, write, correction=write_fix if correction_map else None,
                                      progress=progress, cancel=cancel))
    res.correction = fix
    return out, std, res


# The engine's public names, wherever they live.
__all__ = ["BORDER", "DIFFUSION_WINDOW", "LATENT", "CompiledUNet", "EngineResult", "LatentCanvas", "NoiseField",
           "Reader", "RunIO", "RunPlan", "Span", "TiledSR", "Writer", "auto_tile", "autocast_dtype", "plan_axis",
           "superresolve_array", "tile_starts"]
