"""'Super-resolve visible area': the algorithm on the active raster layer, limited to the map view.

It uses the settings of the last run of the algorithm (kept by :func:`remember`), writes a temporary GeoTIFF
and loads it above the source layer. It runs as a background task (QgsProcessingAlgRunnerTask: progress and
cancel in QGIS's task manager), and refuses, in words, a view that holds more output pixels than a preview
should compute.
"""

from __future__ import annotations

import json
import os
import time

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)

ALGORITHM_ID = "e2diffsr:superresolve"
SETTINGS_KEY = "e2diffsr/last_parameters"
MAX_PIXELS = 2_000_000  # output pixels of a preview: tens of seconds on a CPU with the bundled model
KEPT = ("SCALE", "TARGET_RESOLUTION", "MODEL", "BANDS", "DEVICE", "SEED", "SAMPLES", "TEMPERATURE", "TILE_SIZE",
        "RAW")


def remember(parameters: dict) -> None:
    """Keep the settings of a run (not its input, area or outputs) for the next preview."""
    kept = {k: parameters[k] for k in KEPT if k in parameters and isinstance(parameters[k], (int, float, str))}
    QgsSettings().setValue(SETTINGS_KEY, json.dumps(kept))


def last_settings() -> dict:
    try:
        value = json.loads(QgsSettings().value(SETTINGS_KEY, "{}") or "{}")
    except (TypeError, ValueError):
        value = {}
    return value if isinstance(value, dict) else {}


def visible_part(layer, extent, crs, project=None):
    """The part of ``layer`` inside the map view (``extent`` in ``crs``), in the layer's CRS; None if none."""
    project = project or QgsProject.instance()
    if crs is not None and crs.isValid() and layer.crs().isValid() and crs != layer.crs():
        extent = QgsCoordinateTransform(crs, layer.crs(), project.transformContext()).transformBoundingBox(extent)
    part = extent.intersect(layer.extent())
    return None if part.isEmpty() else part


def output_pixels(layer, part, settings: dict) -> int:
    """Output pixels the preview of ``part`` computes with ``settings`` (scale or target pixel size)."""
    px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    res = settings.get("TARGET_RESOLUTION")
    if res not in (None, "") and float(res) > 0:
        return int(part.width() / float(res)) * int(part.height() / float(res))
    scale = float(settings.get("SCALE") or 2.0)
    return int(part.width() / px * scale) * int(part.height() / py * scale)


def refusal(layer, part, settings: dict) -> str | None:
    """Why this view cannot be previewed, in words; None when it can."""
    if layer is None or not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return "Select a raster layer in the Layers panel first: the preview super-resolves the active layer."
    if layer.providerType() != "gdal":
        return f"The layer '{layer.name()}' is not a raster file GDAL reads; save it as a GeoTIFF first."
    if part is None:
        return f"The layer '{layer.name()}' is not in view: pan or zoom to it first."
    n = output_pixels(layer, part, settings)
    if n > MAX_PIXELS:
        return (f"The view holds {n / 1e6:.1f} million output pixels of '{layer.name()}'; a preview computes at "
                f"most {MAX_PIXELS / 1e6:g} million. Zoom in, or run 'Super-resolve raster' (with a processing "
                "extent) for the whole area.")
    return None


class Preview:
    """One preview run: its task, and the layer it adds when done."""

    def __init__(self, layer, part, settings: dict, project=None, on_done=None):
        self.layer, self.project = layer, project or QgsProject.instance()
        self.on_done = on_done
        folder = QgsProcessingUtils.tempFolder()
        self.output = os.path.join(folder, f"preview_{layer.id()[:24]}_{int(time.time() * 1000)}.tif")
        self.params = {**settings, "INPUT": layer.source(), "OUTPUT": self.output,
                       "EXTENT": f"{part.xMinimum()},{part.xMaximum()},{part.yMinimum()},{part.yMaximum()} "
                                 f"[{layer.crs().authid()}]"}
        self.params = {k: v for k, v in self.params.items() if v not in (None, "")}
        self.context = QgsProcessingContext()
        self.context.setProject(self.project)
        self.feedback = QgsProcessingFeedback()
        alg = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
        self.task = QgsProcessingAlgRunnerTask(alg, self.params, self.context, self.feedback)
        self.task.setDescription(f"E2DiffSR preview of '{layer.name()}'")
        self.task.executed.connect(self._finished)
        self.added = None
        self.ok = None

    def start(self) -> None:
        QgsApplication.taskManager().addTask(self.task)

    def _finished(self, ok: bool, _results: dict) -> None:
        self.ok = ok
        if ok and os.path.exists(self.output):
            scale = self.params.get("SCALE", 2.0)
            self.added = QgsRasterLayer(self.output, f"{self.layer.name()} preview x{float(scale):g}")
            self.project.addMapLayer(self.added, False)
            root = self.project.layerTreeRoot()
            node = root.findLayer(self.layer.id())
            parent = node.parent() if node is not None else root
            index = parent.children().index(node) if node is not None else 0
            parent.insertLayer(index, self.added)  # just above the source
        if self.on_done is not None:
            self.on_done(self)


def run_visible_area(iface, keep: list) -> Preview | None:
    """The action: check the view, start the task (``keep`` holds it while it runs), or say why not."""
    layer = iface.activeLayer()
    canvas = iface.mapCanvas()
    settings = last_settings()
    part = visible_part(layer, canvas.extent(), canvas.mapSettings().destinationCrs()) \
        if isinstance(layer, QgsRasterLayer) and layer.isValid() else None
    problem = refusal(layer, part, settings)
    if problem:
        iface.messageBar().pushMessage("E2DiffSR preview", problem, Qgis.Warning, 10)
        return None

    def done(preview):
        if preview in keep:
            keep.remove(preview)
        if not preview.ok and not preview.feedback.isCanceled():
            iface.messageBar().pushMessage("E2DiffSR preview", "the preview failed; the Log Messages panel "
                                           "(Processing) says why.", Qgis.Critical, 10)

    preview = Preview(layer, part, settings, on_done=done)
    keep.append(preview)
    preview.start()
    return preview
