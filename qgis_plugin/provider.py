"""The Processing provider "E2DiffSR super-resolution" (id e2diffsr)."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import SuperResolveAlgorithm


class E2DiffSRProvider(QgsProcessingProvider):
    def id(self):
        return "e2diffsr"

    def name(self):
        return "E2DiffSR super-resolution"

    def longName(self):
        return "E2DiffSR continuous-scale super-resolution"

    def icon(self):
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))

    def loadAlgorithms(self):
        self.addAlgorithm(SuperResolveAlgorithm())

    def supportedOutputRasterLayerExtensions(self):
        return ["tif"]  # the engine writes GeoTIFF (or COG)
