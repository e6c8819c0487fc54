"""One super-resolution request, checked once before any file is opened or any model loaded.

The command line, ``superresolve-batch`` (each file, each part of a split raster) and the QGIS algorithm
all end in :func:`e2diffsr_core.raster.superresolve_raster`, which builds a :class:`Request` first: the
option rules (one of scale / pixel size / reference grid, sample and tile limits, precision, distinct
outputs, raw vs consistency map) live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .api import NO_MODEL, default_model_path
from .engine.device import parse_memory
from .errors import E2DiffSRError
from .raster_io.area import AreaOptions, check_options
from .rules import MAX_SCALE, check_precision, check_samples, check_scale, check_temperature, check_tile


@dataclass(frozen=True)
class Request:
    """What to super-resolve, how, and where the results go; built by :meth:`check`."""

    input: str
    output: str
    scale: float | None = None                      # exactly one of scale, resolution, align_to
    resolution: tuple[float, float] | None = None   # target pixel size (x, y) in CRS units
    align_to: str | None = None                     # a raster whose grid the output takes
    model: str | None = None                        # None: the bundled model
    device: str = "auto"
    seed: int = 0
    bands: tuple[int, ...] | None = None
    tile: int = 0
    samples: int = 1
    uncertainty: str | None = None
    consistency_map: str | None = None
    creation_options: tuple[str, ...] = field(default=())
    cog: bool = False
    overwrite: bool = False
    ranges: tuple[tuple[float, float], ...] | None = None
    precision: str = "auto"
    raw: bool = False
    guard: bool = True                              # within the local range of the input (consistency.local_bounds)
    compile: bool = False                           # the UNet through torch.compile (engine.CompiledUNet)
    temperature: float | None = None                # None: rules.check_temperature's default (check: resolved)
    rows: tuple[int, int] | None = None             # only these output rows (one part of a split raster)
    area: AreaOptions | None = None                 # an extent and/or a polygon mask (raster_io/area.py)
    memory: int | str | None = None                 # the working set's budget (--memory; check: bytes or None)

    @classmethod
    def check(cls, input: str, output: str, scale: float | None = None, **options) -> Request:
        """The request, or E2DiffSRError with a one-line message naming the command-line option at fault
        (the QGIS algorithm rewords it with its parameters' labels)."""
        req = cls(str(input), str(output), scale, **options)
        samples = check_samples(req.samples, bool(req.uncertainty))
        named = [Path(p).resolve() for p in (req.output, req.uncertainty, req.consistency_map) if p]
        if len(set(named)) != len(named):
            raise E2DiffSRError("the output, the uncertainty raster and the consistency map must be different files")
        if req.raw and req.consistency_map:
            raise E2DiffSRError("a raw output (--raw) has no consistency correction to map; leave out one of "
                                "--raw and --consistency-map")
        check_precision(req.precision)
        temperature = check_temperature(req.temperature, samples)
        tile = check_tile(req.tile)
        memory = None if req.memory in (None, "", 0) else parse_memory(req.memory)
        if sum(v is not None for v in (req.scale, req.resolution, req.align_to)) != 1:
            raise E2DiffSRError("give exactly one of a scale (--scale), a target pixel size (--resolution) or a "
                                "reference grid (--align-to)")
        scale = None if req.scale is None else check_scale(req.scale, MAX_SCALE)
        if req.area is not None:
            check_options(req.area)
        if req.model is None and default_model_path() is None:
            raise E2DiffSRError(NO_MODEL)
        _check_not_a_raster(req.model)
        return replace(req, samples=samples, tile=tile, memory=memory, scale=scale, temperature=temperature,
                       resolution=None if req.resolution is None else tuple(req.resolution),
                       bands=None if req.bands is None else tuple(req.bands),
                       ranges=None if req.ranges is None else tuple(tuple(r) for r in req.ranges),
                       creation_options=tuple(req.creation_options),
                       area=req.area if req.area is not None and req.area.given else None)

    def extra_outputs(self) -> dict[str, str]:
        """The optional Float32 outputs asked for, by label."""
        out = {"uncertainty raster": self.uncertainty, "consistency map": self.consistency_map}
        return {label: path for label, path in out.items() if path}


def _check_not_a_raster(model: str | None) -> None:
    """A raster given as the model (arguments swapped) is named as such, not as a file that could run code."""
    if model is None or not Path(model).is_file():
        return
    from .raster_io.files import raster_driver

    driver = raster_driver(str(model))
    if driver is not None:
        raise E2DiffSRError(f"--model {model} is a raster ({driver}), not a model file; give a checkpoint written "
                            "by e2diffsr (a .pt file), or leave --model out for the bundled model")


__all__ = ["Request"]
