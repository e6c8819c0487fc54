"""The plugin object QGIS loads: registers the provider, adds menu/toolbar entries, says when PyTorch is missing."""

import os

from qgis.core import Qgis, QgsApplication

from . import deps
from .provider import E2DiffSRProvider

ALGORITHM_ID = "e2diffsr:superresolve"
MENU = "&E2DiffSR"


class E2DiffSRPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None
        self.action = None
        self.setup_action = None
        self.card_action = None
        self.preview_action = None
        self.previews = []  # running previews (their tasks must outlive the click)
        self.message = None
        self.dialog = None

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
        self.preview_action = QAction(icon, "Super-resolve visible area", self.iface.mainWindow())
        self.preview_action.setObjectName("e2diffsrPreview")
        self.preview_action.setToolTip("A quick look: the active raster layer, only what the map shows, with the "
                                       "last settings of Super-resolve raster, into a temporary layer")
        self.preview_action.triggered.connect(self.preview)
        self.iface.addToolBarIcon(self.preview_action)
        self.iface.addPluginToRasterMenu(MENU, self.preview_action)
        self.setup_action = QAction("Set up PyTorch...", self.iface.mainWindow())
        self.setup_action.setObjectName("e2diffsrSetupTorch")
        self.setup_action.triggered.connect(self.open_setup)
        self.iface.addPluginToRasterMenu(MENU, self.setup_action)
        self.card_action = QAction("Model card", self.iface.mainWindow())
        self.card_action.setObjectName("e2diffsrModelCard")
        self.card_action.triggered.connect(self.open_model_card)
        self.iface.addPluginToRasterMenu(MENU, self.card_action)
        if deps.torch_missing():
            self.warn_missing_torch()

    def warn_missing_torch(self):
        """A message bar entry with a button to the set-up dialog: the user learns it now, not on Run."""
        from qgis.PyQt.QtWidgets import QPushButton

        bar = self.iface.messageBar()
        self.message = bar.createMessage(
            "E2DiffSR", "needs PyTorch, which the Python of this QGIS does not have.")
        button = QPushButton("Set up PyTorch...", self.message)
        button.setObjectName("e2diffsrSetupTorchButton")
        button.clicked.connect(self.open_setup)
        self.message.layout().addWidget(button)
        bar.pushWidget(self.message, Qgis.Warning)

    def open_setup(self):
        from .torch_dialog import TorchSetupDialog

        if self.message is not None:
            try:
                self.iface.messageBar().popWidget(self.message)
            except RuntimeError:  # the user closed it already (the C++ object is gone)
                pass
            self.message = None
        self.dialog = TorchSetupDialog(self.iface.mainWindow() if self.iface else None)
        self.dialog.show()
        return self.dialog

    def open_model_card(self):
        from .model_card import ModelCardDialog

        self.card = ModelCardDialog(self.iface.mainWindow() if self.iface else None)
        self.card.show()
        return self.card

    def preview(self):
        from .preview import run_visible_area

        return run_visible_area(self.iface, self.previews)

    @staticmethod
    def open_dialog():
        import processing

        processing.execAlgorithmDialog(ALGORITHM_ID)

    def unload(self):
        for action in (self.action, self.preview_action, self.setup_action, self.card_action):
            if action is not None:
                if action in (self.action, self.preview_action):
                    self.iface.removeToolBarIcon(action)
                self.iface.removePluginRasterMenu(MENU, action)
                action.deleteLater()
        self.action = self.setup_action = self.preview_action = self.card_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
