"""Parameter labels, and the engine's messages reworded for QGIS users.

The engine serves the command line too, so some of its messages name command-line options (--device cpu,
--samples 4). In QGIS the user sees parameters, so those options are replaced by the parameter's label.
"""

from __future__ import annotations

import re

# The label of each parameter as the algorithm dialog shows it; the algorithm's descriptions use these.
LABELS = {
    "INPUT": "Input raster",
    "SCALE": "Scale factor",
    "OUTPUT": "Super-resolved raster",
    "MODEL": "Model file",
    "BANDS": "Bands",
    "DEVICE": "Device",
    "SEED": "Random seed",
    "SAMPLES": "Samples",
    "TEMPERATURE": "Sampling temperature",
    "UNCERTAINTY": "Uncertainty",
    "TILE_SIZE": "Tile size",
    "MEMORY": "Memory budget",
    "CREATION_OPTIONS": "GeoTIFF creation options",
    "COG": "Write a Cloud Optimized GeoTIFF",
    "RAW": "Raw model output",
    "GUARD": "Keep within the input's local range",
    "TARGET_RESOLUTION": "Target pixel size",
    "ALIGN_TO": "Align to the grid of",
    "CONSISTENCY_MAP": "Consistency map",
    "EXTENT": "Processing extent",
    "MASK": "Only inside polygons",
}

_FLAGS = {
    "--device": "DEVICE", "--samples": "SAMPLES", "--bands": "BANDS", "--scale": "SCALE", "--model": "MODEL",
    "--tile": "TILE_SIZE", "--co": "CREATION_OPTIONS", "--cog": "COG", "--seed": "SEED",
    "--uncertainty": "UNCERTAINTY", "--raw": "RAW", "--resolution": "TARGET_RESOLUTION", "--align-to": "ALIGN_TO",
    "--consistency-map": "CONSISTENCY_MAP", "--temperature": "TEMPERATURE", "--extent": "EXTENT",
    "--mask": "MASK", "--no-guard": "GUARD", "--memory": "MEMORY",
}

# Whole phrases first, where a literal swap would read badly.
_PHRASES = [
    (re.compile(r"\(--model FILE, or Model file in QGIS\)"), "in 'Model file' (advanced parameters)"),
    (re.compile(r"use --device cpu"), "set 'Device' to CPU"),
    (re.compile(r"allow overwriting \(--overwrite\)"), "choose another output file"),
]
_FLAG = re.compile(r"--[a-z][a-z-]*")


def label(name: str) -> str:
    return f"'{LABELS[name]}'"


def for_qgis(message: str) -> str:
    """The message with command-line options replaced by the labels of the matching QGIS parameters."""
    for pattern, replacement in _PHRASES:
        message = pattern.sub(replacement, message)

    def swap(match: re.Match) -> str:
        name = _FLAGS.get(match.group(0))
        return label(name) if name else match.group(0)

    return _FLAG.sub(swap, message)
