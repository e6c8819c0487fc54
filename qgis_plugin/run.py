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


def announce(source: str, scale: float, kwargs: dict, feedback) -> None:
    """Log the plan (tiles, device) and an estimated time measured by one short pass, before the run."""
    device = resolve_device(kwargs["device"])
    net = open_model(kwargs["model"], device)
    plan = estimate.plan(source, scale, kwargs["bands"], kwargs["samples"], kwargs["tile"], net, device)
    seconds = None
    # A run no larger than a few test passes is over about as soon as it would be measured.
    if estimate.worth_measuring(plan) and not feedback.isCanceled():
        probe_seconds, probe_pixels = estimate.measure(net, device, scale)
        seconds = estimate.estimate_seconds(plan, probe_seconds, probe_pixels)
    feedback.pushInfo(estimate.describe(plan, _device_label(device), seconds))
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_engine(source: str, output: str, scale: float, kwargs: dict, feedback) -> dict:
    """superresolve_raster with the feedback wired in; every engine error becomes one QGIS message."""
    feedback.pushInfo(f"Super-resolving {source} x{scale:g} -> {output}")
    try:
        announce(source, scale, kwargs, feedback)
        # a target pixel size or a reference grid replaces the scale (which then only sized the plan above)
        grid_given = kwargs.get("resolution") or kwargs.get("align_to")
        info = superresolve_raster(source, output, None if grid_given else scale, **kwargs,
                                   progress=lambda f: feedback.setProgress(100.0 * f),
                                   cancel=feedback.isCanceled, log=feedback.pushInfo)
    except E2DiffSRError as exc:  # also Cancelled: "cancelled by the user; no output was written"
        raise QgsProcessingException(for_qgis(str(exc))) from None
    seconds = f", {info['seconds']:.1f} s" if isinstance(info.get("seconds"), (int, float)) else ""
    feedback.pushInfo(f"Done: {info.get('width')} x {info.get('height')} px on device {info.get('device')}, model "
                      f"{info.get('model')}, tile size {info.get('tile')}{seconds}")
    return info
