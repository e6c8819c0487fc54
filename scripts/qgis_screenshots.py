"""Screenshots for docs/qgis_plugin.md, taken inside a running QGIS desktop (run with `qgis --code`).

The plugin must be installed and enabled in the profile QGIS starts with, e.g. a throw-away one:

    make plugin
    export QGIS_CUSTOM_CONFIG_PATH=$(mktemp -d)
    mkdir -p $QGIS_CUSTOM_CONFIG_PATH/profiles/default/python/plugins
    unzip -q dist/e2diffsr_qgis.zip -d $QGIS_CUSTOM_CONFIG_PATH/profiles/default/python/plugins
    QT_QPA_PLATFORM=offscreen qgis_process.bin plugins enable e2diffsr_qgis

Then run QGIS twice, here under a virtual screen: first with QGIS's own Python, which has no PyTorch, then
with PyTorch from a virtual environment (SITE: its site-packages folder, e.g.
~/e2diffsr-venv/lib/python3.11/site-packages):

    export E2DIFFSR_SHOTS=docs/img E2DIFFSR_MODEL3=tests/data/superresolve_chain.model3
    export QT_XCB_GL_INTEGRATION=none
    xvfb-run -a -s "-screen 0 1280x800x24" qgis --nologo --noversioncheck --code scripts/qgis_screenshots.py
    PYTHONPATH=$SITE xvfb-run -a -s "-screen 0 1280x800x24" \
        qgis --nologo --noversioncheck --code scripts/qgis_screenshots.py

Each run quits by itself after half a minute or so. Two details of the second run:

- PYTHONPATH, not E2DIFFSR_PYTHONPATH: the plugin adds E2DIFFSR_PYTHONPATH's folders after the system's, so
  where the system has an older sympy (Debian 12) that one is imported, and the preview stops with
  "cannot import name 'equal_valued' from 'sympy.core.numbers'" (PyTorch's FLOP counter, used by the
  estimate, imports torch._dynamo, which needs a newer sympy).
- QT_XCB_GL_INTEGRATION=none: PyPI's Linux PyTorch brings triton, and loading triton (the FLOP counter
  does) into a QGIS that has Mesa's OpenGL, and with it Mesa's libLLVM, loaded crashes QGIS (segmentation
  fault). Without OpenGL in Qt, Mesa is not loaded. A CPU-only PyTorch has no triton.

Without PyTorch it saves the start-up message (missing_torch_bar.png), the set-up dialog
(torch_setup.png), the example model (modeler.png, modeler_parameters.png) and the algorithm dialog
(dialog.png). With PyTorch it loads the bundled sample raster and a small polygon GeoPackage it writes in a
temporary folder, and saves the algorithm dialog with a processing extent and the polygons (one selected,
*Selected features only*) filled in (dialog_area.png), the set-up dialog saying that PyTorch imports
(torch_setup_ready.png), and the main window after *Super-resolve visible area* (preview.png: the
temporary preview layer above the sample, the view zoomed out a little so that the sample shows around it).
Each window is saved with QWidget.grab() (at most 1000 px wide, scaled down where the window is wider).
"""

import os
import shutil
import sys
import tempfile
import traceback

from qgis.core import (
    QgsApplication,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingModelAlgorithm,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.utils import iface, plugins

OUT = os.environ.get("E2DIFFSR_SHOTS", ".")
MODEL3 = os.environ.get("E2DIFFSR_MODEL3", "")
SAMPLE = os.path.abspath(os.path.join("e2diffsr_core", "data", "sample.tif"))  # run from the project's root
PLUGIN = "e2diffsr_qgis"
_keep = []  # windows must outlive the timers that grab them
_folders = []  # temporary folders, removed at the end


def save(widget, name, width=1000):
    """The widget as a PNG, scaled down to ``width`` pixels where it is wider (the main window's minimum)."""
    picture = widget.grab()
    if picture.width() > width:
        picture = picture.scaledToWidth(width, Qt.SmoothTransformation)
    picture.save(os.path.join(OUT, name))


def quit_qgis():
    QgsProject.instance().removeAllMapLayers()  # no question about temporary layers (the preview's)
    QgsProject.instance().setDirty(False)  # nor about saving the project
    for folder in _folders:
        shutil.rmtree(folder, ignore_errors=True)
    iface.actionExit().trigger()


def later(ms, fn):
    def guarded():
        try:
            fn()
        except Exception:  # a screenshot run must never hang on an error: say it and quit
            traceback.print_exc(file=sys.stderr)
            quit_qgis()

    QTimer.singleShot(ms, guarded)


def wait_until(done, then, timeout_ms, step_ms=500):
    """Call ``then`` once ``done()`` is true (or after ``timeout_ms``)."""
    if done() or timeout_ms <= 0:
        later(0, then)
    else:
        later(step_ms, lambda: wait_until(done, then, timeout_ms - step_ms, step_ms))


def torch_missing():
    return sys.modules[f"{PLUGIN}.deps"].torch_missing()


def start():
    if torch_missing():
        main_window_and_setup_dialog()
    else:
        with_torch()


# --- QGIS's Python without PyTorch -------------------------------------------------------------------------------
def main_window_and_setup_dialog():
    iface.mainWindow().resize(1100, 700)  # the message's text fits on one line
    later(800, lambda: save(iface.mainWindow(), "missing_torch_bar.png"))
    plugin = plugins.get(PLUGIN)
    if plugin is not None:
        later(1200, lambda: _keep.append(plugin.open_setup()))
        later(2500, lambda: save(_keep[-1], "torch_setup.png"))
    later(3000, modeler)


def modeler():
    from processing.modeler.ModelerDialog import ModelerDialog

    model = QgsProcessingModelAlgorithm()
    model.fromFile(MODEL3)
    designer = ModelerDialog.create(model)
    designer.resize(1000, 600)
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
    later(3000, quit_qgis)


# --- PyTorch imports ---------------------------------------------------------------------------------------------
def polygons(folder):
    """A GeoPackage with two polygons over the sample (EPSG:32617, the sample's CRS)."""
    from osgeo import ogr, osr

    path = os.path.join(folder, "fields.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32617)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = ds.CreateLayer("fields", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for name, wkt in (
        ("north field", "POLYGON ((404217 3285112, 404235 3285109, 404241 3285125, 404226 3285136, "
                        "404215 3285124, 404217 3285112))"),
        ("pond", "POLYGON ((404242 3285130, 404250 3285130, 404250 3285139, 404242 3285139, 404242 3285130))"),
    ):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("name", name)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = None
    return path


def with_torch():
    iface.mainWindow().resize(1000, 640)
    folder = tempfile.mkdtemp(prefix="e2diffsr_shots_")
    raster = QgsRasterLayer(SAMPLE, "sample")
    mask = QgsVectorLayer(polygons(folder) + "|layername=fields", "fields")
    QgsProject.instance().addMapLayers([raster, mask])
    mask.selectByExpression("\"name\" = 'north field'")
    _folders.append(folder)
    _keep.extend([raster, mask])
    later(1500, lambda: area_dialog(raster, mask))


def area_dialog(raster, mask):
    import processing

    parameters = {
        "INPUT": raster.id(),
        "EXTENT": "404214,404246,3285106,3285138 [EPSG:32617]",
        "MASK": QgsProcessingFeatureSourceDefinition(mask.id(), True),
    }
    dialog = processing.createAlgorithmDialog("e2diffsr:superresolve", parameters)
    dialog.resize(900, 620)
    dialog.show()
    _keep.append(dialog)
    later(2000, lambda: save(dialog, "dialog_area.png"))
    later(2500, lambda: (dialog.close(), setup_dialog_ready(raster, mask)))


def setup_dialog_ready(raster, mask):
    dialog = plugins[PLUGIN].open_setup()
    _keep.append(dialog)
    later(2000, lambda: save(dialog, "torch_setup_ready.png"))
    later(2500, lambda: (dialog.close(), preview(raster, mask)))


def preview(raster, mask):
    """The view on a part of the sample, then the plugin's action, as a click on its toolbar button does."""
    QgsProject.instance().removeMapLayer(mask.id())
    sys.modules[f"{PLUGIN}.preview"].remember({"SCALE": 3})  # as if the last run of the algorithm was x3
    canvas = iface.mapCanvas()
    canvas.setExtent(QgsRectangle(404224, 3285116, 404236, 3285124))  # 120 x 80 px of the sample
    canvas.refresh()
    iface.setActiveLayer(raster)
    plugin = plugins[PLUGIN]
    later(1500, plugin.preview_action.trigger)
    later(2500, lambda: wait_until(lambda: not plugin.previews, zoom_out, 240_000))


def zoom_out():
    canvas = iface.mapCanvas()
    canvas.zoomByFactor(1.8)
    canvas.refresh()
    later(3000, lambda: save(iface.mainWindow(), "preview.png"))
    later(3500, quit_qgis)


later(6000, start)
