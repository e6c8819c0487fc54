"""The engine call of processAlgorithm: plan and estimate first, then the run, errors in QGIS's words.

Imports torch and the engine; the algorithm imports this module only once deps.problem() found them.
"""

from __future__ import annotations

import os

import torch
from qgis.core import QgsProcessingException

import e2diffsr_core
from e2diffsr_core.api import open_model, resolve_device
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.raster import superresolve_raster

from . import estimate
from .wording import for_qgis


def log_environment(feedback) -> None:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible to PyTorch"
    engine = os.path.dirname(e2diffsr_core.__file__)
    feedback.pushInfo(f"PyTorch {torch.__version__} (CUDA GPU: {gpu}); engine {engine}")


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "the CPU"


def _run_grid(source: str, scale: float, kwargs: dict) -> dict:
    """estimate.plan's keywords for the run's grid: the output size of a run limited to a processing area and
    the boxes the engine computes for it (its pieces, each with a margin of context; None for the whole
    layer), and whether the engine's power-of-two shortcuts apply on its output grid (not on one aligned to
    another raster's grid, where it computes every CSUM level: decode.shortcut_grid)."""
    area = kwargs.get("extent") or kwargs.get("mask")
    grid_given = kwargs.get("resolution") or kwargs.get("align_to")
    if not (area or grid_given):
        return {}
    from e2diffsr_core.area_run import plan_area
    from e2diffsr_core.engine.decode import shortcut_grid
    from e2diffsr_core.raster import output_grid
    from e2diffsr_core.raster_io import RasterReader
    from e2diffsr_core.raster_io.area import AreaOptions

    with RasterReader(source, bands=kwargs.get("bands")) as reader:
        out_w, out_h, _, alignment = output_grid(reader, None if grid_given else scale, kwargs.get("resolution"),
                                                 kwargs.get("align_to"), lambda _m: None)
        if not area:
            return {"shortcuts": alignment is None or shortcut_grid(alignment.grid)}
        opts = AreaOptions(kwargs.get("extent"), None, kwargs.get("mask"), kwargs.get("mask_layer"))
        found = plan_area(reader, opts, out_w, out_h, alignment, lambda _m: None)
        parts = found.parts or (found,)
        return {"size": found.size, "shortcuts": all(shortcut_grid(a.engine_grid) for a in parts),
                "computed": [a.computed_size for a in parts]}


def announce(source: str, scale: float, kwargs: dict, feedback) -> tuple[float | None, dict, object, object]:
    """Log the plan (tiles, device) and the estimated time before the run: (seconds, plan, model, device)."""
    device = resolve_device(kwargs["device"])
    net = open_model(kwargs["model"], device)
    plan = estimate.plan(source, scale, kwargs["bands"], kwargs["samples"], kwargs["tile"], net, device,
                         **_run_grid(source, scale, kwargs))
    seconds, plan["flops"], where = estimate.estimate_seconds(plan, net, device)
    feedback.pushInfo(estimate.describe(plan, _device_label(device), seconds, where))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return seconds, plan, net, device


def _progress(feedback, remaining):
    """Progress to QGIS, with the time left in the dialog's progress text and now and then in the log."""
    said = [0.0]

    def report(fraction: float) -> None:
        feedback.setProgress(100.0 * fraction)
        left = remaining.seconds(fraction)
        if left is None:
            return
        feedback.setProgressText(f"{estimate.duration(left)} left")
        if fraction - said[0] >= 0.25 and fraction < 0.99:
            said[0] = fraction
            feedback.pushInfo(f"{100 * fraction:.0f}% done, {estimate.duration(left)} left")

    return report


def run_engine(source: str, output: str, scale: float, kwargs: dict, feedback) -> dict:
    """superresolve_raster with the feedback wired in; every engine error becomes one QGIS message."""
    feedback.pushInfo(f"Super-resolving {source} x{scale:g} -> {output}")
    try:
        seconds, plan, net, device = announce(source, scale, kwargs, feedback)
        # a target pixel size or a reference grid replaces the scale (which then only sized the plan above)
        grid_given = kwargs.get("resolution") or kwargs.get("align_to")
        info = superresolve_raster(source, output, None if grid_given else scale, **kwargs,
                                   progress=_progress(feedback, estimate.Remaining(seconds)),
                                   cancel=feedback.isCanceled, log=feedback.pushInfo)
    except E2DiffSRError as exc:  # also Cancelled: "cancelled by the user; no output was written"
        raise QgsProcessingException(for_qgis(str(exc))) from None
    if isinstance(info.get("seconds"), (int, float)) and not info.get("tiles_skipped"):
        estimate.record(net, device, plan["flops"], info["seconds"], seconds)
    seconds = f", {info['seconds']:.1f} s" if isinstance(info.get("seconds"), (int, float)) else ""
    feedback.pushInfo(f"Done: {info.get('width')} x {info.get('height')} px on device {info.get('device')}, model "
                      f"{info.get('model')}, tile size {info.get('tile')}{seconds}")
    return info
