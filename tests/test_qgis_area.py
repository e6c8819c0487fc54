# ruff: noqa: F811 (pytest fixtures imported from qgis_support)
"""QGIS: the processing extent and the polygon mask, and the checks the dialog makes before the model loads."""

from __future__ import annotations

import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingFeatureSourceDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis_support import ALG, Recorder, leftovers, provider, rasters, run  # noqa: F401


def corners(path):
    ds = gdal.Open(str(path))
    gt = ds.GetGeoTransform()
    return gt, ds.RasterXSize, ds.RasterYSize


def test_the_area_parameters_are_there(provider):
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    extent, mask = alg.parameterDefinition("EXTENT"), alg.parameterDefinition("MASK")
    assert extent.type() == "extent" and extent.flags() & extent.FlagOptional
    assert mask.type() == "source" and mask.flags() & mask.FlagOptional
    assert mask.dataTypes() == [2]  # polygons
    assert {"resample", "resampling", "upsampling", "increase resolution"} <= set(alg.tags())


def test_an_extent_gives_the_whole_runs_pixels_on_its_grid(provider, rasters, tiny_model_file, tmp_path):
    src = rasters["c64"]
    gt, w, h = corners(src)
    whole, part = tmp_path / "whole.tif", tmp_path / "part.tif"
    base = {"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu"}
    run({**base, "OUTPUT": str(whole)})
    # QGIS's extent text: xmin,xmax,ymin,ymax [CRS]; output pixels of half the layer's size
    xmin, xmax = gt[0] + 10.2 * gt[1], gt[0] + 40.7 * gt[1]
    ymax, ymin = gt[3] + 5.0 * gt[5], gt[3] + 30.3 * gt[5]
    run({**base, "OUTPUT": str(part), "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [EPSG:32617]"})
    wg, pg = gdal.Open(str(whole)).GetGeoTransform(), gdal.Open(str(part)).GetGeoTransform()
    ox, oy = (pg[0] - wg[0]) / wg[1], (pg[3] - wg[3]) / wg[5]
    assert (round(ox, 6), round(oy, 6)) == (20, 10) and pg[1] == wg[1] and pg[5] == wg[5]
    p = gdal.Open(str(part)).ReadAsArray().astype(float)
    assert p.shape[1:] == (61 - 10, 82 - 20)
    wpx = gdal.Open(str(whole)).ReadAsArray(20, 10, p.shape[2], p.shape[1]).astype(float)
    assert 10 * np.log10(255**2 / max(((p - wpx) ** 2).mean(), 1e-12)) >= 40
    assert leftovers(tmp_path) == ["part.tif", "whole.tif"]


def polygons(crs, rings):
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "fields", "memory")
    feats = []
    for ring in rings:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt("POLYGON((" + ",".join(f"{x} {y}" for x, y in ring + [ring[0]]) + "))"))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_a_mask_of_selected_features_limits_the_output(provider, rasters, tiny_model_file, tmp_path):
    src = rasters["c64"]
    gt, w, h = corners(src)

    def at(px, py):  # map coordinates of a point given in layer pixels
        return gt[0] + px * gt[1], gt[3] + py * gt[5]

    layer = polygons("EPSG:32617", [[at(5, 5), at(20, 5), at(20, 25)], [at(40, 40), at(60, 40), at(60, 60)]])
    layer.selectByIds([layer.getFeatures().__next__().id()])
    out = tmp_path / "masked.tif"
    feedback = Recorder()
    run({"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu", "OUTPUT": str(out),
         "MASK": QgsProcessingFeatureSourceDefinition(layer.id(), True)}, feedback)
    ds = gdal.Open(str(out))
    og = ds.GetGeoTransform()
    # the box of the selected triangle only (the second polygon is not selected), on the whole run's grid
    assert (ds.RasterXSize, ds.RasterYSize) == (30, 40)
    assert (og[0], og[3]) == pytest.approx(at(5, 5))
    data = ds.ReadAsArray()
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    assert nodata is not None and (data[:, -1, 0] == nodata).all()  # below the hypotenuse: outside
    assert (data[:, 1, -2] != nodata).all()  # inside the triangle
    QgsProject.instance().removeMapLayer(layer.id())


@pytest.mark.parametrize("extra, message", [
    ({"TARGET_RESOLUTION": 10.0}, "is coarser than the layer's pixels"),
    ({"TARGET_RESOLUTION": "SAME"}, "is the same as the layer's pixels"),
    ({"BANDS": "1,5"}, "band 5 does not exist; the layer 'c64' has 3 bands"),
    ({"OUTPUT": "out.png"}, "give it a .tif name"),
    ({"EXTENT": "0,10,0,10 [EPSG:32617]"}, "does not overlap the layer"),
    ({"MASK": "EMPTY"}, "has no features"),
])
def test_checks_before_the_model_loads(provider, rasters, tiny_model_file, tmp_path, extra, message):
    src = rasters["c64"]
    layer = QgsRasterLayer(str(src), "c64")
    if extra.get("TARGET_RESOLUTION") == "SAME":
        extra = {"TARGET_RESOLUTION": layer.rasterUnitsPerPixelX()}
    if extra.get("MASK") == "EMPTY":
        empty = polygons("EPSG:32617", [])
        extra = {"MASK": empty.id()}
    if "OUTPUT" in extra:
        extra = {"OUTPUT": str(tmp_path / extra["OUTPUT"])}
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    params = {"INPUT": str(src), "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": str(tmp_path / "o.tif"),
              **extra}
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, msg = alg.checkParameterValues(params, context)
    assert not ok and message in msg, msg
    assert "1 times finer" not in msg
    assert leftovers(tmp_path) == []


# -- the preview of the map view ---------------------------------------------------------------------------------
def test_the_preview_refuses_a_view_with_too_many_pixels(provider, rasters):
    from qgis_plugin import preview

    layer = QgsRasterLayer(str(rasters["c64"]), "c64")
    assert preview.refusal(None, None, {}).startswith("Select a raster layer")
    part = layer.extent()
    text = preview.refusal(layer, part, {"SCALE": 40.0})
    assert "6.6 million output pixels of 'c64'" in text and "Zoom in" in text and "Super-resolve raster" in text
    assert preview.refusal(layer, part, {"SCALE": 2.0}) is None


def test_the_preview_runs_in_the_background_and_lands_above_the_source(provider, rasters, tiny_model_file,
                                                                       qgis_new_project):
    from qgis.core import QgsRectangle
    from qgis.PyQt.QtCore import QCoreApplication

    from qgis_plugin import preview

    project = QgsProject.instance()
    layer = QgsRasterLayer(str(rasters["c64"]), "c64")
    other = QgsRasterLayer(str(rasters["a48"]), "a48")
    project.addMapLayers([other, layer])  # c64 on top
    preview.remember({"SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu", "INPUT": "not kept"})
    assert preview.last_settings() == {"SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu"}
    e = layer.extent()
    view = QgsRectangle(e.xMinimum() + e.width() / 4, e.yMinimum() + e.height() / 4, e.xMaximum() + 100,
                        e.yMaximum() - e.height() / 4)  # reaches beyond the layer on the right
    part = preview.visible_part(layer, view, layer.crs(), project)
    done = []
    run = preview.Preview(layer, part, preview.last_settings(), project, on_done=done.append)
    run.start()
    for _ in range(6000):
        if done:
            break
        QCoreApplication.processEvents()
        time.sleep(0.05)
    assert done and run.ok, "the preview task did not finish"
    added = run.added
    assert added.isValid() and added.name() == "c64 preview x2"
    # output pixels of half the layer's size over the visible part of the layer
    assert (added.width(), added.height()) == (96, 64)
    order = [n.layerId() for n in project.layerTreeRoot().findLayers()]
    assert order.index(added.id()) == order.index(layer.id()) - 1


def test_the_plugin_has_the_preview_and_model_card_actions(qgis_iface, qgis_processing):
    from qgis_plugin.plugin import E2DiffSRPlugin

    plugin = E2DiffSRPlugin(qgis_iface)
    plugin.initGui()
    try:
        assert plugin.preview_action.text() == "Super-resolve visible area"
        card = plugin.open_model_card()
        text = card.browser.toPlainText()
        assert "Model card" in text and "## Data" not in text  # rendered, not raw Markdown
        assert not [a for a in card.browser.document().toHtml().split('href="')[1:] if "e2diffsr/e2diffsr" in a]
        card.close()
    finally:
        plugin.unload()


# -- the PyTorch dialog ------------------------------------------------------------------------------------------
def test_the_torch_dialog_tells_the_truth_when_torch_imports(qgis_app):
    from qgis_plugin.torch_dialog import TorchSetupDialog

    dialog = TorchSetupDialog(missing=[], gpu=False)
    text = dialog.summary.text()
    assert "is installed and imports" in text and "does not have" not in text and "Missing" not in text
    assert dialog.install_button.text() == "Reinstall"
    assert dialog.existing_button.text() == "Use an existing Python environment..."
    missing = TorchSetupDialog(missing=["PyTorch (ModuleNotFoundError: No module named 'torch')"], gpu=False)
    assert "does not have" in missing.summary.text() and "Use an existing Python environment" in \
        missing.summary.text()


def test_an_existing_environment_sets_the_python_path(qgis_app, tmp_path, monkeypatch):
    import sys

    from qgis.core import QgsSettings

    from qgis_plugin import deps, torch_dialog

    said = []
    monkeypatch.setattr(torch_dialog.QMessageBox, "information", lambda *a: said.append(a[-1]))
    monkeypatch.setattr(torch_dialog.QMessageBox, "warning", lambda *a: said.append(a[-1]))
    py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = tmp_path / "venv" / "lib" / py / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("")
    before = QgsSettings().value(deps.SETTING, "")
    dialog = torch_dialog.TorchSetupDialog(missing=["PyTorch"], gpu=False)
    try:
        assert dialog.choose_environment(str(tmp_path / "nothing")) is None and "No PyTorch in" in said[-1]
        assert dialog.choose_environment(str(tmp_path / "venv")) == str(site)
        assert QgsSettings().value(deps.SETTING) == str(site) and "restart QGIS" in said[-1]
    finally:
        QgsSettings().setValue(deps.SETTING, before)


# -- result layers -----------------------------------------------------------------------------------------------
def test_diagnostic_layers_load_above_the_result_styled_with_units(provider, rasters, tiny_model_file, tmp_path,
                                                                   qgis_new_project):
    import processing
    from qgis.core import QgsSettings

    from qgis_plugin.outputs import PREFER_FILENAME

    settings = QgsSettings()
    before = settings.value(PREFER_FILENAME, True, type=bool)
    settings.setValue(PREFER_FILENAME, False)
    try:
        for _ in range(2):
            processing.runAndLoadResults(ALG, {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "SAMPLES": 2,
                                               "MODEL": str(tiny_model_file), "OUTPUT": "TEMPORARY_OUTPUT",
                                               "UNCERTAINTY": "TEMPORARY_OUTPUT", "CONSISTENCY_MAP":
                                                   "TEMPORARY_OUTPUT"})
    finally:
        settings.setValue(PREFER_FILENAME, before)
    names = [n.name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    # two runs, two distinct names; each run's diagnostics above its result
    assert sorted(names) == sorted(["a48 x2", "a48 x2 uncertainty", "a48 x2 consistency", "a48 x2 (2)",
                                    "a48 x2 uncertainty (2)", "a48 x2 consistency (2)"])
    for suffix in ("", " (2)"):
        result = names.index(f"a48 x2{suffix}")
        assert names.index(f"a48 x2 uncertainty{suffix}") < result
        assert names.index(f"a48 x2 consistency{suffix}") < result
    unc = QgsProject.instance().mapLayersByName("a48 x2 uncertainty")[0]
    assert unc.renderer().type() == "singlebandpseudocolor"
    legend = [label for label, _ in unc.renderer().legendSymbologyItems()]
    assert legend and all("std. deviation, input units" in label for label in legend)


def test_the_estimate_of_an_area_counts_the_pixels_the_engine_computes(rasters, tiny_model_file):
    """A processing area is computed with a margin of context around it, on a window of the default mapping
    (which keeps the engine's shortcuts): the time estimate counts those pixels, not only the area's (a
    256 x 256 px extent at x2 computes 320 x 320, 1.56 times as many)."""
    import torch

    from e2diffsr_core.api import open_model
    from qgis_plugin import estimate
    from qgis_plugin.run import _run_grid

    src = str(rasters["c64"])
    gt, w, h = corners(src)
    extent = (gt[0] + 10.2 * gt[1], gt[3] + 30.3 * gt[5], gt[0] + 40.7 * gt[1], gt[3] + 5.0 * gt[5])
    grid = _run_grid(src, 2.0, {"extent": extent, "bands": None})
    assert grid["size"] == (82 - 20, 61 - 10) and grid["shortcuts"]
    (cw, ch), = grid["computed"]
    assert cw > 82 - 20 and ch > 61 - 10  # the margin of context
    model, cpu = open_model(str(tiny_model_file), "cpu"), torch.device("cpu")
    terms = (1e6, 0.0)
    area = estimate.plan(src, 2.0, None, 1, 0, model, cpu, **grid)
    bare = estimate.plan(src, 2.0, None, 1, 0, model, cpu, size=grid["size"])
    ratio = estimate.run_flops(area, terms, model) / estimate.run_flops(bare, terms, model)
    assert ratio == pytest.approx(cw * ch / ((82 - 20) * (61 - 10)))
    assert _run_grid(src, 2.0, {"bands": None}) == {}
