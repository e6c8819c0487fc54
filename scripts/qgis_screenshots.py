"""Screenshots for docs/qgis_plugin.md, taken inside a running QGIS desktop (run with `qgis --code`).

    E2DIFFSR_SHOTS=docs/img E2DIFFSR_MODEL3=tests/data/superresolve_chain.model3 \
        qgis --nologo --noversioncheck --code scripts/qgis_screenshots.py

The plugin must be installed and enabled in the profile QGIS starts with. Where QGIS's Python has no PyTorch,
the start-up message and the set-up dialog are the real ones. Each window is saved with QWidget.grab(), then
QGIS quits.
"""

import os

from qgis.core import QgsApplication, QgsProcessingModelAlgorithm
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

OUT = os.environ.get("E2DIFFSR_SHOTS", ".")
MODEL3 = os.environ.get("E2DIFFSR_MODEL3", "")
_keep = []  # windows must outlive the timers that grab them


def save(widget, name):
    widget.grab().save(os.path.join(OUT, name))


def later(ms, fn):
    QTimer.singleShot(ms, fn)


def main_window_and_setup_dialog():
    iface.mainWindow().resize(1100, 650)
    later(800, lambda: save(iface.mainWindow(), "missing_torch_bar.png"))
    plugin = plugins.get("e2diffsr_qgis")
    if plugin is not None:
        later(1200, lambda: _keep.append(plugin.open_setup()))
        later(2500, lambda: save(_keep[-1], "torch_setup.png"))
    later(3000, modeler)


def modeler():
    from processing.modeler.ModelerDialog import ModelerDialog

    model = QgsProcessingModelAlgorithm()
    model.fromFile(MODEL3)
    designer = ModelerDialog.create(model)
    designer.resize(1100, 600)
    designer.show()
    _keep.append(designer)
    later(2500, lambda: save(designer, "modeler.png"))
    later(3000, lambda: child_dialog(model))


def child_dialog(model):
    from processing.modeler.ModelerParametersDialog import ModelerParametersDialog, ModelerParametersPanelWidget

    alg = QgsApplication.processingRegistry().createAlgorithmById("e2diffsr:superresolve")
    dialog = ModelerParametersDialog(alg, model)
    dialog.findChildren(ModelerParametersPanelWidget)[0].showAdvancedParametersClicked()
    dialog.resize(760, 900)
    dialog.show()
    _keep.append(dialog)
    later(2000, lambda: save(dialog, "modeler_parameters.png"))
    later(2500, algorithm_dialog)


def algorithm_dialog():
    import processing

    dialog = processing.createAlgorithmDialog("e2diffsr:superresolve")
    dialog.resize(900, 620)
    dialog.show()
    _keep.append(dialog)
    later(2000, lambda: save(dialog, "dialog.png"))
    later(3000, lambda: iface.actionExit().trigger())


later(6000, main_window_and_setup_dialog)
