"""Raster outputs: which ones were asked for, what they are called in the project, what QGIS loads.

Optional outputs are the trouble spot. Processing hands an algorithm a destination for every output, even
one the user left empty (the batch dialog passes an empty QgsProcessingOutputLayerDefinition), and asking
QGIS for its path registers it as a layer to load; QGIS then reports "The following layers were not
correctly generated." for the file that was never written. So an optional output is resolved only when it
has a value, and after the run only files that exist are left for QGIS to load, named after the input.
"""

from __future__ import annotations

import os

from qgis.core import QgsProcessingOutputLayerDefinition, QgsProcessingUtils, QgsProperty


def given(value, context) -> bool:
    """Whether an output parameter's value names a destination (a path, TEMPORARY_OUTPUT, an expression)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        sink = value.sink
        if sink.propertyType() == QgsProperty.StaticProperty:
            value = sink.staticValue()
        else:
            value = sink.valueAsString(context.expressionContext(), "")[0]
    return value is not None and str(value).strip() != ""


def destination(alg, parameters, name, context) -> str | None:
    """The path an output is to be written to, or None when it was left empty (nothing is registered)."""
    if not given(parameters.get(name), context):
        return None
    return alg.parameterAsOutputLayer(parameters, name, context) or None


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
    for name, path in resolved.items():
        if not os.path.exists(path):
            stale.add(path)
        elif context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            if details.name in ("", alg.parameterDefinition(name).description()):
                details.name = names[name]
                details.forceName = _is_temporary(path)
    layers = context.layersToLoadOnCompletion()
    if stale & set(layers):
        context.setLayersToLoadOnCompletion({k: v for k, v in layers.items() if k not in stale})
