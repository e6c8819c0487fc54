"""Raster outputs: which ones were asked for, what they are called in the project, what QGIS loads.

Optional outputs are the trouble spot. Processing hands an algorithm a destination for every output, even
one the user left empty (the batch dialog passes an empty QgsProcessingOutputLayerDefinition), and asking
QGIS for its path registers it as a layer to load; QGIS then reports "The following layers were not
correctly generated." for the file that was never written. So an optional output is resolved only when it
has a value, and after the run only files that exist are left for QGIS to load, named after the input.
"""

from __future__ import annotations

import os
from html import escape as html_escape

import numpy as np
from qgis.core import (
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingUtils,
    QgsProject,
    QgsProperty,
    QgsSettings,
)


def path_of(value, context) -> str | None:
    """The text of an output parameter's value (a path, TEMPORARY_OUTPUT, an evaluated expression), or None."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        sink = value.sink
        if sink.propertyType() == QgsProperty.StaticProperty:
            value = sink.staticValue()
        else:
            value = sink.valueAsString(context.expressionContext(), "")[0]
    return None if value is None or str(value).strip() == "" else str(value).strip()


def given(value, context) -> bool:
    """Whether an output parameter's value names a destination (a path, TEMPORARY_OUTPUT, an expression)."""
    return path_of(value, context) is not None


def destination(alg, parameters, name, context) -> str | None:
    """The path an output is to be written to, or None when it was left empty (nothing is registered)."""
    if not given(parameters.get(name), context):
        return None
    return alg.parameterAsOutputLayer(parameters, name, context) or None


PREFER_FILENAME = "Processing/Configuration/PREFER_FILENAME_AS_LAYER_NAME"


def unique_name(project, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when the project has a layer of that name already."""
    project = project or QgsProject.instance()
    taken = {layer.name() for layer in project.mapLayers().values()}
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def _is_temporary(path: str) -> bool:
    temp = os.path.normcase(os.path.abspath(QgsProcessingUtils.tempFolder()))
    return os.path.normcase(os.path.abspath(path)).startswith(temp + os.sep)


def name_layers(alg, context, resolved: dict[str, str], names: dict[str, str]) -> None:
    """Name the layers QGIS will load and unregister the destinations of ours that were not written.

    ``resolved`` maps output parameter -> the path asked for; ``names`` maps it -> layer name. A name the
    user or a model gave (e.g. a model output's name) is kept; QGIS's default, the parameter's label, is
    replaced. A temporary output gets the name even where QGIS prefers file names (its file name means
    nothing). An empty path can never load, whoever registered it.
    """
    stale = {""}
    prefer_file = QgsSettings().value(PREFER_FILENAME, True, type=bool)
    for name, path in resolved.items():
        if not os.path.exists(path):
            stale.add(path)
        elif context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            if details.name in ("", alg.parameterDefinition(name).description()):
                temporary = _is_temporary(path)
                # QGIS 3.22 cannot take a raster's name from its file itself: the setting is followed here
                wanted = os.path.splitext(os.path.basename(path))[0] if prefer_file and not temporary else names[name]
                details.name = unique_name(context.project(), wanted)
                details.forceName = True
    layers = context.layersToLoadOnCompletion()
    if stale & set(layers):
        context.setLayersToLoadOnCompletion({k: v for k, v in layers.items() if k not in stale})


_STYLE = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22">
  <pipe>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" classificationMin="0" classificationMax="{hi}">
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0"
                         minimumValue="0" maximumValue="{hi}">
          <item value="0" color="#ffffcc" alpha="0" label="0 {unit}"/>
          <item value="{mid}" color="#fd8d3c" alpha="255" label="{mid} {unit}"/>
          <item value="{hi}" color="#800026" alpha="255" label="{hi} {unit}"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
  </pipe>
</qgis>
"""


class _LoadStyle(QgsProcessingLayerPostProcessorInterface):
    """Applies the style file to the layer QGIS loads from the map and puts it above ``below`` (the result) in
    the Layers panel (kept alive here: QGIS holds only a pointer)."""

    keep: list = []

    def __init__(self, qml: str, below: str | None = None):
        super().__init__()
        self.qml, self.below = qml, below

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS's name
        layer.loadNamedStyle(self.qml)
        layer.triggerRepaint()
        if self.below:
            _above(context.project() or QgsProject.instance(), layer, self.below)


class _Arrange(QgsProcessingLayerPostProcessorInterface):
    """On the result layer: puts the diagnostic layers loaded before it (QGIS loads in no set order) above it."""

    def __init__(self, diagnostics: list[str]):
        super().__init__()
        self.diagnostics = diagnostics

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS's name
        project = context.project() or QgsProject.instance()
        for lyr in list(project.mapLayers().values()):
            if lyr.source() in self.diagnostics:
                _above(project, lyr, layer.source())


def keep_diagnostics_above(context, result: str, diagnostics: list[str]) -> None:
    """Whatever order QGIS loads them in, the diagnostic layers end up just above the result."""
    if diagnostics and context.willLoadLayerOnCompletion(result):
        arranger = _Arrange(diagnostics)
        _LoadStyle.keep = [*_LoadStyle.keep[-31:], arranger]
        context.layerToLoadOnCompletionDetails(result).setPostProcessor(arranger)


def _above(project, layer, source: str) -> None:
    """Move ``layer`` just above the layer read from ``source`` when both are in the Layers panel."""
    root = project.layerTreeRoot()
    result = next((lyr for lyr in project.mapLayers().values() if lyr.source() == source), None)
    node, target = root.findLayer(layer.id()), root.findLayer(result.id()) if result is not None else None
    if node is None or target is None:
        return
    parent = target.parent()
    clone = node.clone()
    parent.insertChildNode(parent.children().index(target), clone)
    node.parent().removeChildNode(node)


def style_magnitude(context, path: str, unit: str = "", result: str | None = None) -> None:
    """A style for a map of magnitudes, written beside it (``NAME.qml``, which QGIS also finds when the file is
    opened later) and applied to the layer loaded now: transparent where nothing changed, yellow to dark red up
    to the 99.5th percentile, so the few large values stand out; the legend says ``unit``. Band 1 is shown
    (the uncertainty raster has one band per input band: the others are a choice in the layer's properties).
    Loaded above ``result`` (the super-resolved layer's path), so it is not hidden under it."""
    from osgeo import gdal

    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    step = max(1, int((ds.RasterXSize * ds.RasterYSize / 1e6) ** 0.5))
    values = band.ReadAsArray(buf_xsize=max(1, ds.RasterXSize // step), buf_ysize=max(1, ds.RasterYSize // step))
    values = values[values >= 0]
    ds = None
    hi = float(np.percentile(values, 99.5)) if values.size else 0.0
    hi = hi if hi > 0 else float(values.max()) if values.size and values.max() > 0 else 1.0
    qml = os.path.splitext(path)[0] + ".qml"
    with open(qml, "w", encoding="utf-8") as f:
        f.write(_STYLE.format(hi=f"{hi:.6g}", mid=f"{hi / 2:.6g}", unit=html_escape(unit)))
    if context.willLoadLayerOnCompletion(path):
        loader = _LoadStyle(qml, result)
        _LoadStyle.keep = [*_LoadStyle.keep[-31:], loader]
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(loader)


def unit_of(source: str) -> str:
    """The input's unit in words, for a legend: its first band's unit, or "input units"."""
    from osgeo import gdal

    try:
        ds = gdal.Open(source)  # held while its band is read: a band outliving its dataset crashes GDAL
        unit = ds.GetRasterBand(1).GetUnitType()
    except (RuntimeError, AttributeError):
        unit = ""
    return unit or "input units"
