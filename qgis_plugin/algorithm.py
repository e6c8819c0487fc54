"""The Processing algorithm e2diffsr:superresolve: parameters in, one call to the engine, feedback out.

No model or raster logic lives here; ``e2diffsr_core.raster.superresolve_raster`` does the work. The engine
(and torch) is imported only when the algorithm runs, so the provider loads even where torch is missing.
The algorithm runs in a background task (the Toolbox's QgsProcessingAlgRunnerTask): the input layer is
resolved to a GDAL source in prepareAlgorithm (main thread), and nothing in processAlgorithm touches Qt
objects owned by the main thread.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import warnings

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from . import area, deps, devices, outputs, preview
from .help import HELP
from .wording import LABELS, for_qgis, label


def _rules():
    """The engine's limits (e2diffsr_core.rules: no torch, no GDAL), so the plugin never keeps its own copy."""
    deps.add_paths()
    from e2diffsr_core import rules

    return rules


def tr(text: str) -> str:
    return QCoreApplication.translate("E2DiffSR", text)


def parse_bands(text: str) -> list[int] | None:
    """'1, 2,3' -> [1, 2, 3]; '' -> None (all bands)."""
    text = (text or "").strip()
    if not text:
        return None
    if not re.fullmatch(r"\d+(\s*[,; ]\s*\d+)*", text):
        raise QgsProcessingException(tr(f"{label('BANDS')} must be band numbers separated by commas, e.g. 1,2,3 "
                                        f"(got {text!r})"))
    return [int(b) for b in re.split(r"[,; ]+", text)]


def parse_creation_options(text: str) -> list[str]:
    """'KEY=VALUE;KEY=VALUE' (or '|'-separated, as QGIS's creation-options widget writes it) -> list."""
    return [opt.strip() for opt in re.split(r"[;|]", text or "") if opt.strip()]


def scale_problem(scale: float) -> str | None:
    """Why a scale factor is refused, in QGIS's words; None when it is fine. Nothing is clamped silently."""
    if not math.isfinite(scale) or scale <= 1.0:
        return tr(f"{label('SCALE')} must be greater than 1 (got {scale:g}): it is how many times larger the "
                  "output is, e.g. 2 doubles the resolution. This algorithm only enlarges.")
    max_scale = _rules().MAX_SCALE
    if scale > max_scale:
        return tr(f"{label('SCALE')} {scale:g} is above the maximum of {max_scale:g}; for a larger enlargement "
                  f"run the algorithm twice (e.g. x{math.sqrt(scale):.3g} and x{math.sqrt(scale):.3g}).")
    return None


def scale_warning(scale: float) -> str | None:
    trained = _rules().TRAINED_MAX_SCALE
    if scale > trained:
        return tr(f"{label('SCALE')} {scale:g} is beyond the range the model was trained for (1 to "
                  f"{trained:g}): the result will look softer than at x{trained:g} or below.")
    return None


def creation_options_widget() -> dict:
    """QGIS's own creation-options editor (as in GDAL's Translate; it writes KEY=VALUE|KEY=VALUE).

    QGIS 3.22 has it as a Python widget in the processing plugin; QGIS 3.40 has dropped that module for a
    C++ widget type, and naming the missing module breaks the dialogs (ModuleNotFoundError).
    """
    module = "processing.algs.gdal.ui.RasterOptionsWidget"
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return {"class": f"{module}.RasterOptionsWidgetWrapper"} if found else {"widget_type": "rasteroptions"}


class SuperResolveAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    SCALE = "SCALE"
    TARGET_RESOLUTION = "TARGET_RESOLUTION"
    ALIGN_TO = "ALIGN_TO"
    OUTPUT = "OUTPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    DEVICE = "DEVICE"
    SEED = "SEED"
    SAMPLES = "SAMPLES"
    TEMPERATURE = "TEMPERATURE"
    UNCERTAINTY = "UNCERTAINTY"
    TILE_SIZE = "TILE_SIZE"
    MEMORY = "MEMORY"
    CREATION_OPTIONS = "CREATION_OPTIONS"
    COG = "COG"

    # Optional raster outputs: (parameter, the engine's keyword for its path, layer-name suffix). Each is
    # written only when given a destination and then loaded as "<input> x<scale> <suffix>"; one left empty
    # is never handed to QGIS to load.
    RAW = "RAW"
    GUARD = "GUARD"
    CONSISTENCY_MAP = "CONSISTENCY_MAP"
    OPTIONAL_OUTPUTS = (
        (UNCERTAINTY, "uncertainty", "uncertainty"),
        (CONSISTENCY_MAP, "consistency_map", "consistency"),
    )

    def __init__(self):
        super().__init__()
        self._source = None
        self._layer_name = None
        self._resolution = None
        self._align = None
        self._scale = None
        self._area = {}

    # --- identity -------------------------------------------------------------------------------------------
    def name(self):
        return "superresolve"

    def displayName(self):
        return tr("Super-resolve raster")

    def shortDescription(self):
        return tr("Enlarge a raster by any scale factor with the E2DiffSR diffusion model")

    def tags(self):
        return tr("super-resolution,superresolution,upscale,upsample,enlarge,resolution,sharpen,deep learning,"
                  "diffusion,e2diffsr,ai,resample,resampling,upsampling,increase resolution,extent,mask").split(",")

    def shortHelpString(self):
        return tr(HELP)

    def icon(self):
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))

    def createInstance(self):
        return SuperResolveAlgorithm()

    # --- parameters -----------------------------------------------------------------------------------------
    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr(LABELS["INPUT"])))
        # No minimum or maximum here: QGIS's spin box would silently clamp 0 to the minimum. The value is
        # checked in checkParameterValues with a message instead.
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, tr(LABELS["SCALE"]), QgsProcessingParameterNumber.Double, defaultValue=2.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.TARGET_RESOLUTION, tr(f"{LABELS['TARGET_RESOLUTION']} (CRS units)"),
            QgsProcessingParameterNumber.Double, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.ALIGN_TO, tr(LABELS["ALIGN_TO"]), optional=True))
        for param in area.parameters():
            self.addParameter(param)
        for param in self._advanced_parameters():
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr(LABELS["OUTPUT"])))
        # Not flagged advanced: the Graphical Modeler cannot show an advanced *output* (KeyError in
        # ModelerParametersDialog when advanced parameters are shown).
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.UNCERTAINTY, tr(f"{LABELS['UNCERTAINTY']} (needs 2+ samples)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.CONSISTENCY_MAP, tr(LABELS['CONSISTENCY_MAP']), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString("USED_DEVICE", tr("Device used")))
        self.addOutput(QgsProcessingOutputString("USED_MODEL", tr("Model used")))
        self.addOutput(QgsProcessingOutputNumber("USED_TILE_SIZE", tr("Tile size used")))

    def _advanced_parameters(self):
        options = QgsProcessingParameterString(self.CREATION_OPTIONS, tr(LABELS["CREATION_OPTIONS"]), optional=True)
        options.setMetadata({"widget_wrapper": creation_options_widget()})
        integer = QgsProcessingParameterNumber.Integer
        return [
            QgsProcessingParameterFile(
                self.MODEL, tr(f"{LABELS['MODEL']} (empty: bundled)"),
                QgsProcessingParameterFile.File, fileFilter=tr("E2DiffSR models (*.pt *.pth);;All files (*.*)"),
                optional=True),
            QgsProcessingParameterString(self.BANDS, tr(f"{LABELS['BANDS']} (e.g. 1,2,3; empty: all)"),
                                         optional=True),
            # Static strings: scripts and qgis_process say DEVICE=cpu or DEVICE=cuda:1 rather than an index
            # (checkParameterValues maps those onto the list's entries).
            QgsProcessingParameterEnum(self.DEVICE, tr(LABELS["DEVICE"]), options=devices.device_options(),
                                       defaultValue=devices.AUTO, usesStaticStrings=True),
            QgsProcessingParameterNumber(self.SEED, tr(LABELS["SEED"]), integer, defaultValue=0, minValue=0),
            QgsProcessingParameterNumber(self.SAMPLES, tr(f"{LABELS['SAMPLES']} (averaged)"), integer,
                                         defaultValue=1, minValue=1, maxValue=_rules().MAX_SAMPLES),
            QgsProcessingParameterNumber(
                self.TEMPERATURE, tr(f"{LABELS['TEMPERATURE']} (empty: automatic)"),
                QgsProcessingParameterNumber.Double,
                defaultValue=None, optional=True, minValue=0.0, maxValue=1.0),
            QgsProcessingParameterNumber(self.TILE_SIZE, tr(f"{LABELS['TILE_SIZE']} (0: automatic)"), integer,
                                         defaultValue=0, minValue=0),
            # optional: models saved before this parameter existed keep validating
            QgsProcessingParameterString(self.MEMORY, tr(f"{LABELS['MEMORY']}, e.g. 512M or 4G (empty: half the "
                                                         "memory available)"), defaultValue="", optional=True),
            options,
            QgsProcessingParameterBoolean(self.COG, tr(LABELS["COG"]), defaultValue=False),
            # optional: models saved before this parameter existed keep validating
            QgsProcessingParameterBoolean(self.RAW, tr(LABELS['RAW']),
                                          defaultValue=False, optional=True),
            QgsProcessingParameterBoolean(
                self.GUARD, tr(f"{LABELS['GUARD']} (no ringing or invented extremes; off: the correction alone)"),
                defaultValue=True, optional=True),
        ]

    def _temperature(self, parameters, context):
        """The Sampling temperature, or None when left empty (the engine's default for the samples asked)."""
        value = parameters.get(self.TEMPERATURE)
        if value is None or value == "":
            return None
        return self.parameterAsDouble(parameters, self.TEMPERATURE, context)

    def _device_entry(self, parameters):
        """(the Device list entry the value stands for, or None; a message when it stands for none)."""
        value = parameters.get(self.DEVICE)
        options = self.parameterDefinition(self.DEVICE).options()
        if value is None or value == "":
            return None, None
        entry = devices.list_entry(str(value), options)
        if entry is None:
            return None, tr(f"{label('DEVICE')} {value!r} is not available here; choose one of: "
                            + ", ".join(options) + " (scripts may also write auto, cpu, cuda or cuda:N).")
        return entry, None

    def checkParameterValues(self, parameters, context):
        # Clearer than QGIS's generic "Incorrect parameter value for SCALE", and caught before the run starts.
        if parameters.get(self.SCALE) is not None:
            problem = scale_problem(self.parameterAsDouble(parameters, self.SCALE, context))
            if problem:
                return False, problem
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model and not os.path.isfile(model):
            return False, tr(f"{label('MODEL')} not found: {model}. Choose an E2DiffSR model (.pt) or leave it "
                             "empty to use the bundled model.")
        if outputs.given(parameters.get(self.UNCERTAINTY), context) and \
                self.parameterAsInt(parameters, self.SAMPLES, context) < 2:
            return False, tr(f"The {label('UNCERTAINTY')} raster is the spread of several samples: set "
                             f"{label('SAMPLES')} to 2 or more (e.g. 4), or leave {label('UNCERTAINTY')} empty.")
        if self._temperature(parameters, context) == 0 and self.parameterAsInt(parameters, self.SAMPLES, context) > 1:
            return False, tr(f"Several {label('SAMPLES')} differ only with a {label('TEMPERATURE')} above 0: leave "
                             f"{label('TEMPERATURE')} empty (several samples then use 1) or set it above 0.")
        if self.parameterAsBoolean(parameters, self.RAW, context) and \
                outputs.given(parameters.get(self.CONSISTENCY_MAP), context):
            return False, tr(f"{label('RAW')} output has no correction to map: untick {label('RAW')} or leave "
                             f"{label('CONSISTENCY_MAP')} empty.")
        try:
            bands = parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        except QgsProcessingException as exc:
            return False, str(exc)
        problem = self._layer_problem(parameters, context, bands) or area.output_problem(
            outputs.path_of(parameters.get(self.OUTPUT), context))
        if problem:
            return False, problem
        entry, problem = self._device_entry(parameters)
        if problem:
            return False, problem
        if entry is not None:
            parameters = {**parameters, self.DEVICE: entry}  # 'cpu' from a script is the list's 'CPU'
        return super().checkParameterValues(parameters, context)

    def _layer_problem(self, parameters, context, bands) -> str | None:
        """What the input layer itself rules out: bands beyond it, a pixel size it cannot give, the area."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            return None  # QGIS's own check of INPUT says so
        problem = area.bands_problem(bands, layer) or area.problems(self, parameters, context, layer)
        if problem is None and parameters.get(self.TARGET_RESOLUTION) not in (None, ""):
            res = self.parameterAsDouble(parameters, self.TARGET_RESOLUTION, context)
            if math.isfinite(res) and res > 0:
                problem = area.pixel_size_problem(res, layer, _rules().MAX_SCALE)
        return problem

    # --- running --------------------------------------------------------------------------------------------
    def _target_resolution(self, parameters, context) -> float | None:
        value = parameters.get(self.TARGET_RESOLUTION)
        if value is None or value == "":
            return None
        res = self.parameterAsDouble(parameters, self.TARGET_RESOLUTION, context)
        if not math.isfinite(res) or res <= 0:
            raise QgsProcessingException(tr(f"{label('TARGET_RESOLUTION')} must be a positive pixel size in the "
                                            f"layer's CRS units (got {res:g}), or empty to use {label('SCALE')}."))
        return res

    def _reference_grid(self, parameters, context, layer):
        """(scale of the rows, layer name) of an output aligned to ALIGN_TO's grid, or None without one."""
        value = parameters.get(self.ALIGN_TO)
        if value is None or value == "":
            return None
        if self._resolution is not None:
            raise QgsProcessingException(tr(f"Give either {label('TARGET_RESOLUTION')} or {label('ALIGN_TO')}, not "
                                            f"both (with neither, {label('SCALE')} is used)."))
        ref = self.parameterAsRasterLayer(parameters, self.ALIGN_TO, context)
        if ref is None or not ref.isValid() or ref.providerType() != "gdal":
            raise QgsProcessingException(tr(f"Could not open the {label('ALIGN_TO')} raster {value!r}; choose a "
                                            "raster file GDAL can read."))
        deps.add_paths()
        from e2diffsr_core.errors import E2DiffSRError
        from e2diffsr_core.raster_io.align import align_file

        from .layer_source import engine_source, release

        reference = engine_source(ref)  # the reference as QGIS shows it too (an assigned CRS)
        try:
            grid = align_file(reference, self._source).grid
        except E2DiffSRError as exc:
            release(reference)
            raise QgsProcessingException(for_qgis(str(exc))) from None
        self._align = reference
        return grid.y.scale, f"{layer.name()} on the {ref.name()} grid"

    def prepareAlgorithm(self, parameters, context, feedback):
        # Batch processing and models run without checkParameterValues: the scale is checked again here.
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(tr(f"Could not load the input raster {parameters.get(self.INPUT)!r}"))
        self._resolution, self._align = self._target_resolution(parameters, context), None
        if layer.providerType() == "gdal":  # the layer as QGIS shows it: its CRS, nodata and open options
            from .layer_source import engine_source

            self._source = engine_source(layer)
        aligned = self._reference_grid(parameters, context, layer) if layer.providerType() == "gdal" else None
        if aligned is not None:
            scale, problem = aligned[0], None
        elif self._resolution is None:
            scale = self.parameterAsDouble(parameters, self.SCALE, context)
            problem = scale_problem(scale)
        else:  # the model's scale inputs are height ratios; the engine checks both axes
            scale = layer.rasterUnitsPerPixelY() / self._resolution
            problem = area.pixel_size_problem(self._resolution, layer, _rules().MAX_SCALE)
        if problem:
            raise QgsProcessingException(problem)
        self._scale = scale
        if layer.providerType() != "gdal":
            raise QgsProcessingException(tr(
                f"The input layer '{layer.name()}' comes from a '{layer.providerType()}' source; E2DiffSR reads "
                "rasters GDAL can open (files). Save it as a GeoTIFF first (Export > Save As...)."))
        problem = area.problems(self, parameters, context, layer)  # batches and models skip the dialog's check
        if problem:
            raise QgsProcessingException(problem)
        self._area = area.engine_keywords(self, parameters, context, layer, feedback)
        preview.remember(parameters)
        self._layer_name = (aligned[1] if aligned is not None else f"{layer.name()} x{scale:g}"
                            if self._resolution is None else f"{layer.name()} at {self._resolution:g}")
        warning = scale_warning(scale)
        if warning:
            feedback.pushWarning(warning)
        return True

    def _engine_device(self, parameters, context) -> str:
        value = self.parameterAsString(parameters, self.DEVICE, context)
        try:
            return devices.engine_device(value)
        except ValueError:
            raise QgsProcessingException(self._device_entry({self.DEVICE: value})[1]) from None

    def _destinations(self, parameters, context) -> dict[str, str]:
        """Output parameter -> path, for the main output and each optional output that was given one."""
        resolved = {self.OUTPUT: self.parameterAsOutputLayer(parameters, self.OUTPUT, context)}
        for name, _, _ in self.OPTIONAL_OUTPUTS:
            path = outputs.destination(self, parameters, name, context)
            if path:
                resolved[name] = path
        return resolved

    def _engine_keywords(self, parameters, context, resolved) -> dict:
        """The keyword arguments of superresolve_raster this run's parameters set."""
        kwargs = dict(
            model=self.parameterAsFile(parameters, self.MODEL, context) or None,
            device=self._engine_device(parameters, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            bands=parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            memory=self.parameterAsString(parameters, self.MEMORY, context).strip() or None,
            samples=self.parameterAsInt(parameters, self.SAMPLES, context),
            temperature=self._temperature(parameters, context),
            creation_options=parse_creation_options(self.parameterAsString(parameters, self.CREATION_OPTIONS, context)),
            cog=self.parameterAsBoolean(parameters, self.COG, context),
            raw=self.parameterAsBoolean(parameters, self.RAW, context),
            # left out (models saved before it existed): on, the default
            guard=parameters.get(self.GUARD) in (None, "") or self.parameterAsBoolean(parameters, self.GUARD, context),
            overwrite=True,  # QGIS asks before overwriting; a destination it hands us is meant to be replaced
        )
        for name, keyword, _ in self.OPTIONAL_OUTPUTS:
            kwargs[keyword] = resolved.get(name)
        kwargs.update(self._area)
        if self._resolution is not None:
            kwargs["resolution"] = (self._resolution, self._resolution)
        if self._align is not None:
            kwargs["align_to"] = self._align
        return kwargs

    def processAlgorithm(self, parameters, context, feedback):
        problem = deps.problem()
        if problem:
            raise QgsProcessingException(problem)
        from .layer_source import release
        from .run import log_environment, run_engine

        log_environment(feedback)
        resolved = self._destinations(parameters, context)
        kwargs = self._engine_keywords(parameters, context, resolved)
        unit = outputs.unit_of(self._source)  # before an in-memory source is released
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                info = run_engine(self._source, resolved[self.OUTPUT], self._scale, kwargs, feedback)
            finally:
                release(self._source)
                release(self._align or "")
        for w in caught:
            if "trained range" not in str(w.message):  # already said before the run, in QGIS's words
                feedback.pushWarning(for_qgis(str(w.message)))
        written = {name: path for name, path in resolved.items() if os.path.exists(path)}
        self._load_outputs(context, resolved, written, unit)
        return {
            **written,
            "USED_DEVICE": str(info.get("device", "")),
            "USED_MODEL": str(info.get("model", "")),
            "USED_TILE_SIZE": info.get("tile"),
        }

    def _load_outputs(self, context, resolved, written, unit) -> None:
        """Diagnostic layers styled with their units and kept above the result; every layer named."""
        for name, what in ((self.CONSISTENCY_MAP, "correction"), (self.UNCERTAINTY, "std. deviation")):
            if name in written:
                outputs.style_magnitude(context, written[name], f"{what}, {unit}", written.get(self.OUTPUT))
        outputs.keep_diagnostics_above(context, written.get(self.OUTPUT, ""),
                                       [p for n, p in written.items() if n != self.OUTPUT])
        suffixes = {name: suffix for name, _, suffix in self.OPTIONAL_OUTPUTS}
        names = {name: f"{self._layer_name} {suffixes[name]}" if name in suffixes else self._layer_name
                 for name in resolved}
        outputs.name_layers(self, context, resolved, names)
