"""The Processing algorithm e2diffsr:superresolve: parameters in, one call to the engine, feedback out.

No model or raster logic lives here; ``e2diffsr_core.raster.superresolve_raster`` does the work. The engine
(and torch) is imported only when the algorithm runs, so the provider loads even where torch is missing.
The algorithm runs in a background task (the Toolbox's QgsProcessingAlgRunnerTask): the input layer is
resolved to a GDAL source in prepareAlgorithm (main thread), and nothing in processAlgorithm touches Qt
objects owned by the main thread.
"""

from __future__ import annotations

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

from . import deps

DEVICES = ["auto", "cpu", "cuda"]
MAX_SCALE = 16.0       # the engine's limit (e2diffsr_core.model.config max_scale)
TRAINED_MAX_SCALE = 8  # beyond it the engine warns that results get softer

HELP = """<p>Enlarges a raster by any factor above 1 (x2, x2.6, x3.4, x4 ... up to x16) with the E2DiffSR \
latent-diffusion super-resolution model. The output covers the same area in the same CRS with \
int(width &times; scale) &times; int(height &times; scale) pixels, the same bands, data type and NoData.</p>
<p><b>Scale</b>: the model was trained for 1 to 8; larger scales work but look softer.</p>
<p><b>Model</b>: a model file (.pt); leave empty to use the model bundled with the plugin.</p>
<p><b>Bands</b>: which bands to process, e.g. <code>1,2,3</code> (empty: all). They are processed in groups of \
three; a single band (panchromatic, DEM) is handled as grey.</p>
<p><b>Device</b>: <i>auto</i> uses a CUDA GPU when PyTorch sees one, else the CPU. The log says which device, \
model and tile size were used.</p>
<p><b>Seed</b>: the model draws random noise; the same seed gives the same result.</p>
<p><b>Samples</b> and <b>Uncertainty</b>: with several samples the output is their mean, and the optional \
uncertainty raster holds their per-pixel standard deviation (where the model is unsure).</p>
<p><b>Tile size</b>: output pixels per tile side; 0 picks one that fits the device's memory. Tiles overlap and \
are blended, so no seams appear.</p>
<p><b>Creation options</b>: GeoTIFF options, e.g. <code>COMPRESS=ZSTD;PREDICTOR=2</code> (separated by ; or |).</p>
<p>Cancelling stops within a tile and leaves no output file. Requires PyTorch in the Python QGIS uses; if it is \
missing, running the algorithm says which command installs it.</p>"""


def tr(text: str) -> str:
    return QCoreApplication.translate("E2DiffSR", text)


def parse_bands(text: str) -> list[int] | None:
    """'1, 2,3' -> [1, 2, 3]; '' -> None (all bands)."""
    text = (text or "").strip()
    if not text:
        return None
    if not re.fullmatch(r"\d+(\s*[,; ]\s*\d+)*", text):
        raise QgsProcessingException(tr(f"Bands must be band numbers separated by commas, e.g. 1,2,3 (got {text!r})"))
    return [int(b) for b in re.split(r"[,; ]+", text)]


def parse_creation_options(text: str) -> list[str]:
    """'KEY=VALUE;KEY=VALUE' (or '|'-separated, as QGIS's creation-options widget writes it) -> list."""
    return [opt.strip() for opt in re.split(r"[;|]", text or "") if opt.strip()]


class SuperResolveAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    SCALE = "SCALE"
    OUTPUT = "OUTPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    DEVICE = "DEVICE"
    SEED = "SEED"
    SAMPLES = "SAMPLES"
    UNCERTAINTY = "UNCERTAINTY"
    TILE_SIZE = "TILE_SIZE"
    CREATION_OPTIONS = "CREATION_OPTIONS"
    COG = "COG"

    def __init__(self):
        super().__init__()
        self._source = None

    # --- identity -------------------------------------------------------------------------------------------
    def name(self):
        return "superresolve"

    def displayName(self):
        return tr("Super-resolve raster")

    def shortDescription(self):
        return tr("Enlarge a raster by any scale factor with the E2DiffSR diffusion model")

    def tags(self):
        return tr("super-resolution,superresolution,upscale,upsample,enlarge,resolution,sharpen,deep learning,"
                  "diffusion,e2diffsr,ai").split(",")

    def shortHelpString(self):
        return tr(HELP)

    def icon(self):
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))

    def createInstance(self):
        return SuperResolveAlgorithm()

    # --- parameters -----------------------------------------------------------------------------------------
    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")))
        self.addParameter(QgsProcessingParameterNumber(
            self.SCALE, tr("Scale factor (above 1, up to 16)"), QgsProcessingParameterNumber.Double,
            defaultValue=2.0, minValue=1.01, maxValue=MAX_SCALE))

        advanced = [
            QgsProcessingParameterFile(
                self.MODEL, tr("Model file (empty: the bundled model)"), QgsProcessingParameterFile.File,
                fileFilter=tr("E2DiffSR models (*.pt *.pth);;All files (*.*)"), optional=True),
            QgsProcessingParameterString(self.BANDS, tr("Bands (e.g. 1,2,3; empty: all)"), optional=True),
            # Static strings: scripts and qgis_process say DEVICE=cpu rather than an index.
            QgsProcessingParameterEnum(self.DEVICE, tr("Device"), options=DEVICES, defaultValue="auto",
                                       usesStaticStrings=True),
            QgsProcessingParameterNumber(self.SEED, tr("Random seed"), QgsProcessingParameterNumber.Integer,
                                         defaultValue=0, minValue=0),
            QgsProcessingParameterNumber(self.SAMPLES, tr("Samples (averaged)"), QgsProcessingParameterNumber.Integer,
                                         defaultValue=1, minValue=1, maxValue=16),
            QgsProcessingParameterNumber(self.TILE_SIZE, tr("Tile size in output pixels (0: automatic)"),
                                         QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0),
        ]
        options = QgsProcessingParameterString(
            self.CREATION_OPTIONS, tr("GeoTIFF creation options"), optional=True)
        # QGIS's own creation-options editor (as in GDAL's Translate); it writes KEY=VALUE|KEY=VALUE.
        options.setMetadata({"widget_wrapper": {
            "class": "processing.algs.gdal.ui.RasterOptionsWidget.RasterOptionsWidgetWrapper"}})
        advanced += [
            options,
            QgsProcessingParameterBoolean(self.COG, tr("Write a Cloud Optimized GeoTIFF"), defaultValue=False),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)

        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Super-resolved raster")))
        uncertainty = QgsProcessingParameterRasterDestination(
            self.UNCERTAINTY, tr("Uncertainty (per-pixel std. deviation of the samples)"), optional=True,
            createByDefault=False)
        uncertainty.setFlags(uncertainty.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(uncertainty)

        self.addOutput(QgsProcessingOutputString("USED_DEVICE", tr("Device used")))
        self.addOutput(QgsProcessingOutputString("USED_MODEL", tr("Model used")))
        self.addOutput(QgsProcessingOutputNumber("USED_TILE_SIZE", tr("Tile size used")))

    def checkParameterValues(self, parameters, context):
        # Clearer than QGIS's generic "Incorrect parameter value for SCALE", and caught before the run starts.
        if parameters.get(self.SCALE) is not None:
            scale = self.parameterAsDouble(parameters, self.SCALE, context)
            if not scale > 1.0:
                return False, tr(f"Scale factor must be greater than 1 (got {scale:g}); e.g. 2 doubles the "
                                 "resolution. This is a super-resolution algorithm, it only enlarges.")
            if scale > MAX_SCALE:
                return False, tr(f"Scale factor {scale:g} is above the maximum of {MAX_SCALE:g}.")
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model and not os.path.isfile(model):
            return False, tr(f"Model file not found: {model}. Choose an E2DiffSR model (.pt) or leave it empty "
                             "to use the bundled model.")
        if parameters.get(self.UNCERTAINTY) and self.parameterAsInt(parameters, self.SAMPLES, context) < 2:
            return False, tr("The uncertainty raster is the spread of several samples: set Samples to 2 or more "
                             "(e.g. 4), or leave Uncertainty empty.")
        try:
            parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        except QgsProcessingException as exc:
            return False, str(exc)
        return super().checkParameterValues(parameters, context)

    # --- running --------------------------------------------------------------------------------------------
    def prepareAlgorithm(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(tr(f"Could not load the input raster {parameters.get(self.INPUT)!r}"))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(tr(
                f"The input layer '{layer.name()}' comes from a '{layer.providerType()}' source; E2DiffSR reads "
                "rasters GDAL can open (files). Save it as a GeoTIFF first (Export > Save As...)."))
        self._source = layer.source()
        return True

    def processAlgorithm(self, parameters, context, feedback):
        problem = deps.problem()
        if problem:
            raise QgsProcessingException(problem)
        import torch

        import e2diffsr_core
        from e2diffsr_core.api import default_model_path
        from e2diffsr_core.errors import Cancelled, E2DiffSRError
        from e2diffsr_core.raster import superresolve_raster

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible to PyTorch"
        feedback.pushInfo(tr(f"PyTorch {torch.__version__} (CUDA GPU: {gpu}); engine "
                             f"{os.path.dirname(e2diffsr_core.__file__)}"))

        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        uncertainty = None
        if parameters.get(self.UNCERTAINTY):
            uncertainty = self.parameterAsOutputLayer(parameters, self.UNCERTAINTY, context) or None
        kwargs = dict(
            model=self.parameterAsFile(parameters, self.MODEL, context) or None,
            device=self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto",
            seed=self.parameterAsInt(parameters, self.SEED, context),
            bands=parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            samples=self.parameterAsInt(parameters, self.SAMPLES, context),
            uncertainty=uncertainty,
            creation_options=parse_creation_options(self.parameterAsString(parameters, self.CREATION_OPTIONS, context)),
            cog=self.parameterAsBoolean(parameters, self.COG, context),
            overwrite=True,  # QGIS asks before overwriting; a destination it hands us is meant to be replaced
        )
        if kwargs["model"] is None and default_model_path() is None:
            raise QgsProcessingException(tr(
                "No model file given and this installation has no bundled model: choose an E2DiffSR model (.pt) "
                "in 'Model file' (advanced parameters)."))
        scale = self.parameterAsDouble(parameters, self.SCALE, context)
        feedback.pushInfo(tr(f"Super-resolving {self._source} x{scale:g} -> {output}"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                info = superresolve_raster(
                    self._source, output, scale, **kwargs,
                    progress=lambda f: feedback.setProgress(100.0 * f),
                    cancel=feedback.isCanceled,
                    log=feedback.pushInfo)
            except Cancelled as exc:
                raise QgsProcessingException(str(exc)) from None
            except E2DiffSRError as exc:
                raise QgsProcessingException(str(exc)) from None
        for w in caught:
            feedback.pushWarning(str(w.message))

        feedback.pushInfo(tr(
            f"Done: {info.get('width')} x {info.get('height')} px on device {info.get('device')}, model "
            f"{info.get('model')}, tile size {info.get('tile')}"
            + (f", {info['seconds']:.1f} s" if isinstance(info.get("seconds"), (int, float)) else "")))
        results = {
            self.OUTPUT: output,
            "USED_DEVICE": str(info.get("device", "")),
            "USED_MODEL": str(info.get("model", "")),
            "USED_TILE_SIZE": info.get("tile"),
        }
        if uncertainty:
            results[self.UNCERTAINTY] = uncertainty
        return results
