"""The plan of a run and its time estimate: a cost model over a measured, cached throughput.

time = fixed time + FLOPs of the run x seconds per FLOP of the engine on this device with this model.

- FLOPs: the model's FLOPs per output pixel at the run's scale, times the output pixels it computes (band
  groups and samples included). Per pixel they are a + b / scale^2 (the output-grid parts: CondNet, the
  diffusion on the latent, the CSUM's last level; the input-grid parts: the decoder's features); a and b are
  counted once per model with ``tools.inspect_model.FlopCount`` (on the meta device: shapes only, no arithmetic)
  at two scales and cached. At x2 and x4 the engine skips part of the CSUM's last levels
  (:func:`shortcut_flops`), which is taken off where its shortcuts apply (not on an output aligned to another
  raster's grid), so that one pace serves every scale; a processing area counts the margin of context the
  engine computes around it.
- Pace: a fixed time plus seconds per FLOP, fitted (least squares) to the last runs on this device with this
  model, cached; a run whose time drifts from its estimate by more than half replaces them. Before the
  first run it comes from a probe of well under a second (3 x 3 convolutions of the model's width) times
  the ratio of the engine's rate to the probe's seen on this kind of device.

During the run :class:`Remaining` turns the progress into the time left. No Qt here (the benchmark uses it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

from osgeo import gdal

REFERENCE_OUTPUT = 256  # output side of the FLOP count (pixels)
COUNT_SCALES = (2.0, 4.0)
DRIFT = 0.5  # a run this far (a share of its time) from its estimate replaces the runs the pace came from
KEEP_RUNS = 6
DEFAULT_FIXED_S = 1.5  # opening the model and the raster, statistics, writing: before any run is seen
#: Engine rate / probe rate before any run on a device (measured on an idle 2-core CPU: benchmarks/bench_estimate.py;
#: the first run on a device then corrects it for that device).
DEFAULT_EFFICIENCY = {"cpu": 0.6, "cuda": 0.25}


def cache_path() -> Path:
    root = os.environ.get("E2DIFFSR_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "e2diffsr")
    return Path(root) / "estimate.json"


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # an estimate without a cache is measured again next time, nothing worse


def model_key(model) -> str:
    """The model's identity for the cache: its configuration (FLOPs depend on nothing else)."""
    return hashlib.sha1(repr(model.cfg).encode()).hexdigest()[:16]


def device_key(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()} threads"


# -- FLOPs ---------------------------------------------------------------------------------------------------
def _count(model, scale: float) -> float:
    """FLOPs per output pixel of one whole-image pass at ``scale`` (meta device, every reverse step)."""
    import torch

    from e2diffsr_core.model import E2DiffSR, Geometry
    from e2diffsr_core.tools.inspect_model import FlopCount

    with torch.device("meta"):
        meta = E2DiffSR(model.cfg).eval()
    lr = max(8, round(REFERENCE_OUTPUT / scale))
    out = (int(lr * scale),) * 2
    x = torch.zeros(1, 3, lr, lr, device="meta")
    noises = [torch.zeros(1, model.cfg.embed_dim, out[0] // 8, out[1] // 8, device="meta")
              for _ in range(model.cfg.timesteps)]
    with FlopCount() as counter, torch.no_grad():
        meta.sample(x, Geometry.whole((lr, lr), out), noises=noises)
    return counter.total / (out[0] * out[1])


def flop_terms(model, cache: Path | None = None) -> tuple[float, float]:
    """(a, b): FLOPs per output pixel = a + b / scale^2 for this model (counted once, cached)."""
    cache = cache or cache_path()
    data = _load(cache)
    key = f"flops:{model_key(model)}"
    if key not in data:
        (s1, s2) = COUNT_SCALES
        f1, f2 = _count(model, s1), _count(model, s2)
        b = (f1 - f2) / (1 / s1**2 - 1 / s2**2)
        data = {**_load(cache), key: [f1 - b / s1**2, b]}
        _save(cache, data)
    a, b = data[key]
    return float(a), float(b)


def shortcut_flops(model, scale: float) -> float:
    """FLOPs per output pixel of the whole-image pass that the engine does not spend at the scales where the
    CSUM's last level lies at twice or four times the output grid (x4 and x2 for the four-level CSUM).
    Twice (engine.decode._averaged_level): three quarters of that level's conv, which runs on the level
    below it, (2^(levels-2) / scale)^2 of its pixels per output pixel. Four times (_composed_level): the last
    two convs, on four and one times the output's pixels, become one conv of the last level's phase mean on
    the output grid and one 5 x 5 conv there, each with a quarter of the output channels."""
    from e2diffsr_core.engine.device import skipped_level

    csum = model.first_stage_model.decoder.upsampler
    skipped = skipped_level(csum.levels, scale)
    if not skipped:
        return 0.0
    last = csum.UPNet_x2_list[-1][0]
    pairs = last.in_channels * last.out_channels  # per tap of the 3 x 3 kernel
    if skipped == 2:
        return 0.75 * 2 * 9 * pairs * (2 ** (csum.levels - 2) / scale) ** 2
    prev = csum.UPNet_x2_list[-2][0]
    on_grid = (2 ** (csum.levels - 3) / scale) ** 2  # pixels of the level on the output grid per output pixel
    whole = 2 * 9 * (prev.in_channels * prev.out_channels + 4 * pairs) * on_grid
    engine = 2 * (9 * prev.in_channels * prev.out_channels + 25 * pairs) / 4 * on_grid
    return whole - engine


def run_flops(the_plan: dict, terms: tuple[float, float], model=None) -> float:
    """FLOPs of the planned run: the whole-image pass's per output pixel (``terms``), less what the engine's
    shortcuts save at this scale (with ``model``, on an output grid where they apply), times the output
    pixels computed (a processing area's margin of context included), band groups and samples."""
    a, b = terms
    s = the_plan["scale"]
    shortcut = model is not None and the_plan.get("shortcuts", True)
    per_px = a + b / (s * s) - (shortcut_flops(model, s) if shortcut else 0.0)
    pixels = the_plan.get("computed_px", the_plan["width"] * the_plan["height"])
    return per_px * pixels * the_plan["groups"] * the_plan["samples"]


# -- rate ----------------------------------------------------------------------------------------------------
def probe_rate(model, device) -> float:
    """FLOP/s of 3 x 3 convolutions of the model's width on ``device`` (a fraction of a second)."""
    import torch

    width = int(getattr(model.cfg, "unet_channels", 64))
    conv = torch.nn.Conv2d(width, width, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(1, width, 64, 64, device=device).to(memory_format=torch.channels_last)
    flops = 2 * width * width * 9 * 64 * 64
    with torch.no_grad():
        conv(x)  # the first call pays for set-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < 0.1:
            conv(x)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return n * flops / max(seconds, 1e-9)


def _fit(runs: list) -> tuple[float, float]:
    """(fixed seconds, seconds per FLOP) through the runs [(flops, seconds), ...]: by least squares from three
    runs of different sizes on, when that gives a fixed part between 0 and the shortest run; otherwise (fewer
    runs, or one noisy run tilting the line) the median pace over a fixed part of 1.5 s at most, which one
    slow run cannot make explode."""
    if len({f for f, _ in runs}) >= 3:
        n = len(runs)
        mf, ms = sum(f for f, _ in runs) / n, sum(t for _, t in runs) / n
        slope = sum((f - mf) * (t - ms) for f, t in runs) / sum((f - mf) ** 2 for f, _ in runs)
        fixed = ms - slope * mf
        if slope > 0 and 0.0 <= fixed <= min(t for _, t in runs):
            return fixed, slope
    fixed = min(DEFAULT_FIXED_S, min(t for _, t in runs) / 2)
    return fixed, statistics.median((t - fixed) / f for f, t in runs)


def predict(flops: float, model, device, cache: Path | None = None) -> tuple[float, str]:
    """(seconds of a run of ``flops``, where the pace came from): the earlier runs on this device with this
    model, or (before any) the probe times the engine's share of it."""
    cache = cache or cache_path()
    data = _load(cache)
    runs = data.get(f"runs:{device_key(device)}:{model_key(model)}")
    if runs:
        fixed, per_flop = _fit(runs)
        return fixed + flops * per_flop, "measured on earlier runs"
    eff = data.get(f"efficiency:{device.type}", DEFAULT_EFFICIENCY.get(device.type, 0.3))
    return DEFAULT_FIXED_S + flops / (probe_rate(model, device) * float(eff)), \
        "a short probe (no earlier run on this device)"


def record(model, device, flops: float, seconds: float, estimate: float | None, cache: Path | None = None) -> bool:
    """After a run: add it to the runs the pace is fitted to (the last few); a run that drifts from the
    estimate by more than DRIFT replaces them (the device is not what it was: other load, other threads).
    True when the earlier runs were dropped."""
    if seconds <= 0 or flops <= 0:
        return False
    cache = cache or cache_path()
    data = _load(cache)
    key = f"runs:{device_key(device)}:{model_key(model)}"
    runs = data.get(key) or []
    drifted = bool(runs) and estimate is not None and abs(seconds - estimate) > DRIFT * seconds
    runs = [[flops, seconds]] if drifted else [*runs, [flops, seconds]][-KEEP_RUNS:]
    if estimate and not data.get(key) and seconds > DEFAULT_FIXED_S:
        # the first run on this kind of device: how the engine's pace relates to the probe's
        eff = float(data.get(f"efficiency:{device.type}", DEFAULT_EFFICIENCY.get(device.type, 0.3)))
        data[f"efficiency:{device.type}"] = eff * (estimate - DEFAULT_FIXED_S) / (seconds - DEFAULT_FIXED_S)
    data[key] = runs
    _save(cache, data)
    return drifted


# -- the plan ------------------------------------------------------------------------------------------------
def plan(source: str, scale: float, bands: list[int] | None, samples: int, tile: int, model, device,
         *, size: tuple[int, int] | None = None, shortcuts: bool = True,
         computed: list[tuple[int, int]] | None = None) -> dict:
    """Output size (``size`` when given, e.g. a processing area's), band groups, tiles of the run;
    ``shortcuts``: False for an output grid aligned to another raster's, where the engine computes every CSUM
    level (smaller tiles, none of the shortcuts' savings); ``computed``: the (width, height) of the boxes the
    engine computes where they are not the output (a processing area's, with its margin of context)."""
    from e2diffsr_core.engine import TiledSR, tile_starts
    from e2diffsr_core.raster_io.bands import make_groups

    ds = gdal.Open(source)
    width, height, count = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
    # the reader leaves an alpha band out unless it is chosen
    selected = list(bands) if bands else [b for b in range(1, count + 1)
                                          if ds.GetRasterBand(b).GetColorInterpretation() != gdal.GCI_AlphaBand]
    ds = None
    n_bands = len(selected) or count
    feeds = [[selected[i] for i in g] for g in make_groups(len(selected))]
    groups = max(1, math.ceil(n_bands / 3))
    out_w, out_h = size if size is not None else (int(width * scale), int(height * scale))
    engine = TiledSR(model, device, tile=tile)
    tile_px, _ = engine.plan_sizes(scale, groups * samples, shortcuts)
    boxes = computed or [(out_w, out_h)]
    tiles = sum(len(tile_starts(w, tile_px)) * len(tile_starts(h, tile_px)) for w, h in boxes)
    return {"width": out_w, "height": out_h, "bands": n_bands, "groups": groups, "samples": samples,
            "tile": tile_px, "tiles": tiles, "scale": scale, "feeds": feeds, "shortcuts": shortcuts,
            "computed_px": sum(w * h for w, h in boxes)}


def estimate_seconds(the_plan: dict, model, device, cache: Path | None = None) -> tuple[float, float, str]:
    """(seconds, FLOPs, where the rate came from) of the planned run."""
    flops = run_flops(the_plan, flop_terms(model, cache), model)
    seconds, source = predict(flops, model, device, cache)
    return seconds, flops, source


def duration(seconds: float) -> str:
    """'about 40 s', 'about 3 min', 'about 2.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def describe(the_plan: dict, device_label: str, seconds: float | None, source: str = "") -> str:
    text = (f"Plan: {the_plan['width']} x {the_plan['height']} px output, {the_plan['bands']} band(s) in "
            f"{the_plan['groups']} group(s) of three, {the_plan['samples']} sample(s), {the_plan['tiles']} "
            f"tile(s) of {the_plan['tile']} px, on {device_label}.")
    if the_plan.get("feeds"):  # the order changes the result: the model sees each group as an RGB image
        fed = "; ".join(", ".join(map(str, g)) for g in the_plan["feeds"])
        text += (f" Bands fed to the model as R, G, B: {fed} (in the order of 'Bands', else the file's; the "
                 "layer's renderer does not change it).")
    if seconds is not None:
        text += f" Estimated time: {duration(seconds)} (the model's arithmetic at the speed of {source})."
    return text


class Remaining:
    """The time left from the progress: the estimate at first, then more and more the pace actually seen."""

    def __init__(self, estimate: float | None):
        self.estimate, self.start = estimate, time.perf_counter()

    def seconds(self, fraction: float) -> float | None:
        elapsed = time.perf_counter() - self.start
        if fraction <= 0:
            return None if self.estimate is None else max(0.0, self.estimate - elapsed)
        paced = elapsed / fraction
        trust = math.sqrt(min(1.0, fraction))  # the pace seen soon outweighs the estimate
        total = paced if self.estimate is None else (1 - trust) * max(self.estimate, elapsed) + trust * paced
        return max(0.0, total - elapsed)
