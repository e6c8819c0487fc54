"""The plugin object QGIS loads: registers the provider and adds a toolbar/menu entry for the dialog."""

import os

from qgis.core import QgsApplication

from .provider import E2DiffSRProvider

ALGORITHM_ID = "e2diffsr:superresolve"
MENU = "&E2DiffSR"


class E2DiffSRPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None
        self.action = None

    def initProcessing(self):
        """Called by QGIS (also by qgis_process, which has no GUI) because metadata says hasProcessingProvider."""
        if self.provider is None:
            provider = E2DiffSRProvider()
            # addProvider takes ownership and deletes the object when it refuses it (id already registered).
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self):
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        icon = QIcon(os.path.join(os.path.dirname(__file__), "icon.png"))
        self.action = QAction(icon, "Super-resolve raster (E2DiffSR)...", self.iface.mainWindow())
        self.action.setObjectName("e2diffsrSuperresolve")
        self.action.setToolTip("Enlarge a raster by any scale factor with E2DiffSR")
        self.action.triggered.connect(self.open_dialog)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(MENU, self.action)

    @staticmethod
    def open_dialog():
        import processing

        processing.execAlgorithmDialog(ALGORITHM_ID)

    def unload(self):
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
