# ruff: noqa: F811 (pytest fixtures imported from qgis_support)
"""What broke for analysts in QGIS: the Graphical Modeler, batch runs, layer names, scale and device checks.

Headless (pytest-qgis); the model is a tiny random one, so each run takes about a second on a CPU.
"""

from __future__ import annotations

import inspect
import os
import stat
import sys

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingModelAlgorithm,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
)
from qgis_support import ALG, Recorder, leftovers, provider, rasters, run  # noqa: F401

from qgis_plugin import devices
from qgis_plugin.wording import for_qgis


def algorithm():
    return QgsApplication.processingRegistry().createAlgorithmById(ALG)


def project_layer_names():
    return sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())


# --- the Graphical Modeler ---------------------------------------------------------------------------------------
def test_modeler_dialog_shows_advanced_parameters(provider, qgis_iface):
    """Adding the algorithm to a model and clicking "Show advanced parameters" used to raise KeyError."""
    from processing.modeler.ModelerParametersDialog import ModelerParametersDialog, ModelerParametersPanelWidget

    model = QgsProcessingModelAlgorithm("m", "g")
    dialog = ModelerParametersDialog(algorithm(), model)
    panel = dialog.findChildren(ModelerParametersPanelWidget)[0]
    assert panel.advancedButton.text() == "Show advanced parameters"
    panel.showAdvancedParametersClicked()  # raised KeyError: 'UNCERTAINTY' before the fix
    assert panel.advancedButton.text() == "Hide advanced parameters"
    for name in ("MODEL", "DEVICE", "TILE_SIZE", "CREATION_OPTIONS"):
        assert panel.widget_labels[name].isVisibleTo(dialog), name
    child = dialog.createAlgorithm()  # what OK does: the child algorithm with every value the dialog holds
    assert child is not None and child.algorithmId() == ALG
    assert child.parameterSources()["DEVICE"][0].staticValue() == "Automatic"
    panel.showAdvancedParametersClicked()
    assert not panel.widget_labels["MODEL"].isVisibleTo(dialog)
    dialog.deleteLater()


# --- batch processing ------------------------------------------------------------------------------------------
def run_batch(rows, project):
    """The loop of QGIS's batch dialog (3.22: BatchAlgorithmDialog.runAlgorithm; 3.40: the C++ base class
    QgsProcessingBatchAlgorithmDialogBase), without the dialog.

    Each row's destinations are QgsProcessingOutputLayerDefinition(text, project), the empty optional
    Uncertainty included, exactly as BatchPanel.parametersForRow builds them; after each row the results are
    loaded by handleAlgorithmResults, which reports the layers it could not load.
    """
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects

    alg = algorithm()
    feedback = Recorder()
    multi = QgsProcessingMultiStepFeedback(len(rows), feedback)
    for i, row in enumerate(rows):
        multi.setCurrentStep(i)
        params = {k: QgsProcessingOutputLayerDefinition(v, project) if k in ("OUTPUT", "UNCERTAINTY", "CONSISTENCY_MAP")
                  else v
                  for k, v in row.items()}
        params = alg.preprocessParameters(params)
        context = dataobjects.createContext(feedback)
        results, ok = alg.run(params, context, multi)
        assert ok, results
        # QGIS 3.22 passes showResults=False; 3.40 dropped that argument.
        if "showResults" in inspect.signature(handleAlgorithmResults).parameters:
            assert handleAlgorithmResults(alg, context, multi, False, params)
        else:
            assert handleAlgorithmResults(alg, context, multi, params)
    return feedback


def test_batch_with_empty_optional_outputs_loads_cleanly(provider, rasters, tiny_model_file, tmp_path,
                                                          qgis_new_project):
    rows = [{"INPUT": str(rasters[name]), "SCALE": 2.0, "MODEL": str(tiny_model_file),
             "OUTPUT": str(tmp_path / f"{name}_x2.tif"), "UNCERTAINTY": "", "CONSISTENCY_MAP": ""}
            for name in ("a48", "b40x32")]
    feedback = run_batch(rows, QgsProject.instance())
    errors = [text for kind, text in feedback.lines if kind == "error"]
    assert not [e for e in errors if "not correctly generated" in e], errors
    layers = list(QgsProject.instance().mapLayers().values())
    assert len(layers) == 2 and all(layer.isValid() for layer in layers)
    assert sorted(layer.source() for layer in layers) == sorted(row["OUTPUT"] for row in rows)
    assert leftovers(tmp_path) == ["a48_x2.tif", "b40x32_x2.tif"]


def test_batch_row_with_uncertainty_loads_both_layers(provider, rasters, tiny_model_file, tmp_path,
                                                       qgis_new_project):
    rows = [{"INPUT": str(rasters["a48"]), "SCALE": 1.5, "MODEL": str(tiny_model_file), "SAMPLES": 2,
             "OUTPUT": "TEMPORARY_OUTPUT", "UNCERTAINTY": "TEMPORARY_OUTPUT"}]
    feedback = run_batch(rows, QgsProject.instance())
    assert not [text for kind, text in feedback.lines if kind == "error"]
    assert project_layer_names() == ["a48 x1.5", "a48 x1.5 uncertainty"]


# --- layer names -----------------------------------------------------------------------------------------------
def test_result_layers_are_named_after_the_input_and_scale(provider, rasters, tiny_model_file, qgis_new_project):
    import processing

    for name in ("a48", "b40x32"):
        processing.runAndLoadResults(ALG, {"INPUT": str(rasters[name]), "SCALE": 2.5, "MODEL": str(tiny_model_file),
                                           "OUTPUT": "TEMPORARY_OUTPUT"})
    processing.runAndLoadResults(ALG, {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file),
                                       "SAMPLES": 2, "OUTPUT": "TEMPORARY_OUTPUT", "UNCERTAINTY": "TEMPORARY_OUTPUT"})
    assert project_layer_names() == ["a48 x2", "a48 x2 uncertainty", "a48 x2.5", "b40x32 x2.5"]
    uncertainty = QgsProject.instance().mapLayersByName("a48 x2 uncertainty")[0]
    assert uncertainty.dataProvider().dataType(1) == gdal.GDT_Float32 and uncertainty.width() == 96


def test_the_consistency_map_loads_named_and_styled(provider, rasters, tiny_model_file, tmp_path, qgis_new_project):
    import processing

    target = tmp_path / "map.tif"
    processing.runAndLoadResults(ALG, {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file),
                                       "OUTPUT": "TEMPORARY_OUTPUT", "CONSISTENCY_MAP": str(target)})
    # a file of the user's own takes its file name ("Prefer output filename for layer names", on by default)
    assert project_layer_names() == ["a48 x2", "map"]
    layer = QgsProject.instance().mapLayersByName("map")[0]
    assert layer.dataProvider().dataType(1) == gdal.GDT_Float32 and layer.bandCount() == 1
    assert layer.renderer().type() == "singlebandpseudocolor"  # from map.qml, written beside it
    assert (tmp_path / "map.qml").is_file()


def test_raw_output_with_a_consistency_map_is_refused_before_the_run(provider, rasters, tiny_model_file, tmp_path):
    alg = algorithm()
    context = QgsProcessingContext()
    params = {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "RAW": True,
              "OUTPUT": str(tmp_path / "o.tif"), "CONSISTENCY_MAP": str(tmp_path / "m.tif")}
    ok, message = alg.checkParameterValues(params, context)
    assert not ok and "'Raw model output'" in message and "'Consistency map'" in message


def test_sampling_temperature_in_qgis(provider, rasters, tiny_model_file, tmp_path):
    """Left empty, one sample draws no noise (the seed changes nothing); 1 is the authors' sampling (the seed
    matters); several samples at 0 are refused in QGIS words, before the run and in a batch row alike."""
    base = {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu"}

    def pixels(name, **params):
        run({**base, **params, "OUTPUT": str(tmp_path / name)})
        return gdal.Open(str(tmp_path / name)).ReadAsArray()

    assert np.array_equal(pixels("a.tif", SEED=1), pixels("b.tif", SEED=2))
    assert not np.array_equal(pixels("c.tif", SEED=1, TEMPERATURE=1.0), pixels("d.tif", SEED=2, TEMPERATURE=1.0))
    params = {**base, "SAMPLES": 2, "TEMPERATURE": 0.0, "OUTPUT": str(tmp_path / "o.tif")}
    ok, message = algorithm().checkParameterValues(params, QgsProcessingContext())
    assert not ok and "'Sampling temperature'" in message and "'Samples'" in message and "--" not in message
    results, ok = algorithm().run(params, QgsProcessingContext(), Recorder())  # a batch row: refused by the run
    assert not ok and not (tmp_path / "o.tif").exists()


def test_the_guard_is_an_advanced_parameter_on_by_default(provider, tiny_model_file, tmp_path):
    """A step edge keeps its two levels by default; without the guard the (random) model's ringing shows."""
    from raster_support import make_raster

    step = np.full((32, 40), 50, np.uint8)
    step[:, 20:] = 200
    src = make_raster(tmp_path / "step.tif", step)
    alg = algorithm()  # the parameter lives as long as its algorithm
    guard = alg.parameterDefinition("GUARD")
    assert guard.flags() & guard.FlagAdvanced and guard.defaultValue() is True
    base = {"INPUT": src, "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "cpu"}
    run({**base, "OUTPUT": str(tmp_path / "a.tif")})
    run({**base, "GUARD": False, "OUTPUT": str(tmp_path / "b.tif")})
    guarded, loose = (gdal.Open(str(tmp_path / n)).ReadAsArray().astype(int) for n in ("a.tif", "b.tif"))
    assert guarded.shape == (64, 80) and guarded.min() >= 50 and guarded.max() <= 200
    assert loose.min() < 50 or loose.max() > 200


def test_a_name_given_by_the_user_is_kept(provider, rasters, tiny_model_file):
    alg = algorithm()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", QgsProject.instance())
    out.destinationName = "my sharp ortho"
    params = {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "OUTPUT": out}
    results, ok = alg.run(params, context, Recorder())
    assert ok
    assert [d.name for d in context.layersToLoadOnCompletion().values()] == ["my sharp ortho"]


# --- scale: refused with a message, never clamped; the above-8 warning before the run --------------------------
@pytest.mark.parametrize("scale, message", [
    (0, "'Scale factor' must be greater than 1 (got 0)"),
    (1, "'Scale factor' must be greater than 1 (got 1)"),
    (100, "'Scale factor' 100 is above the maximum of 16; for a larger enlargement run the algorithm twice"),
])
def test_scale_out_of_range_is_refused(provider, rasters, tiny_model_file, tmp_path, scale, message):
    params = {"INPUT": str(rasters["a48"]), "SCALE": scale, "MODEL": str(tiny_model_file),
              "OUTPUT": str(tmp_path / "out.tif")}
    ok, msg = algorithm().checkParameterValues(params, QgsProcessingContext())
    assert not ok and msg.startswith(message)
    with pytest.raises(QgsProcessingException, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(params)
    # Batch rows and models skip checkParameterValues: the run refuses it too.
    results, ok = algorithm().run(params, QgsProcessingContext(), Recorder())
    assert not ok
    assert leftovers(tmp_path) == []


def test_above_trained_range_is_warned_before_the_run(provider, rasters, tiny_model_file, tmp_path):
    feedback = Recorder()
    run({"INPUT": str(rasters["b40x32"]), "SCALE": 10, "MODEL": str(tiny_model_file), "DEVICE": "cpu",
         "OUTPUT": str(tmp_path / "x10.tif")}, feedback)
    lines = [text for _, text in feedback.lines]
    warn = [i for i, (kind, text) in enumerate(feedback.lines) if kind == "warning" and "trained for (1 to 8)" in text]
    plan = [i for i, text in enumerate(lines) if text.startswith("Plan:")]
    done = [i for i, text in enumerate(lines) if text.startswith("Done:")]
    assert len(warn) == 1 and plan and done and warn[0] < plan[0] < done[0], lines
    assert "'Scale factor' 10 is beyond" in lines[warn[0]]


# --- the plan and the estimate -----------------------------------------------------------------------------------
def test_plan_and_estimate_are_logged_before_the_run(provider, rasters, tiny_model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("E2DIFFSR_CACHE_DIR", str(tmp_path / "cache"))
    feedback = Recorder()
    params = {"INPUT": str(rasters["c64"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": "CPU",
              "TILE_SIZE": 64, "OUTPUT": str(tmp_path / "p.tif")}
    run(params, feedback)
    plan = next(text for text in feedback.infos if text.startswith("Plan:"))
    # 128 x 128 px out of 64 px tiles (exact, no overlap): 2 x 2 tiles, as the engine plans them.
    assert "128 x 128 px output, 3 band(s) in 1 group(s)" in plan and "4 tile(s) of 64 px, on the CPU" in plan
    assert "Estimated time: about " in plan and "a short probe" in plan
    assert feedback.infos.index(plan) < min(i for i, t in enumerate(feedback.infos) if t.startswith("device: "))
    # the run's own pace is kept for the next estimate on this device
    again = Recorder()
    run({**params, "OUTPUT": str(tmp_path / "q.tif")}, again)
    plan = next(text for text in again.infos if text.startswith("Plan:"))
    assert "measured on earlier runs" in plan and (tmp_path / "cache" / "estimate.json").is_file()


# --- devices -----------------------------------------------------------------------------------------------------
def test_device_list_and_aliases(provider, rasters, tiny_model_file, tmp_path):
    alg = algorithm()
    options = alg.parameterDefinition("DEVICE").options()
    assert options[:2] == ["Automatic", "CPU"]
    assert all(o.startswith("cuda:") and devices.SEPARATOR in o for o in options[2:])
    for value in ("CPU", "cpu"):  # the list's entry, and what scripts and qgis_process write
        res = run({"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "DEVICE": value,
                   "OUTPUT": str(tmp_path / f"{value}.tif")})
        assert res["USED_DEVICE"] == "cpu"
    with pytest.raises(QgsProcessingException) as err:
        run({"INPUT": str(rasters["a48"]), "SCALE": 2.0, "DEVICE": "gpu", "OUTPUT": str(tmp_path / "g.tif")})
    assert "'Device' 'gpu' is not available here; choose one of: Automatic, CPU" in str(err.value)
    assert "--device" not in str(err.value)


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that reports two GPUs, as the real one does with --query-gpu=index,name."""
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nprintf '0, NVIDIA H200\\n1, NVIDIA RTX A5000\\n'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices.cuda_devices.cache_clear()
    yield
    devices.cuda_devices.cache_clear()


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for nvidia-smi")
def test_each_gpu_is_listed_by_index_and_name(fake_nvidia_smi, monkeypatch):
    assert devices.device_options() == ["Automatic", "CPU", "cuda:0 — NVIDIA H200", "cuda:1 — NVIDIA RTX A5000"]
    assert devices.nvidia_gpu_present()
    assert devices.engine_device("cuda:1 — NVIDIA RTX A5000") == "cuda:1"
    assert devices.list_entry("cuda", devices.device_options()) == "cuda:0 — NVIDIA H200"
    # CUDA renumbers what CUDA_VISIBLE_DEVICES shows: the A5000 alone is cuda:0.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    devices.cuda_devices.cache_clear()
    assert devices.device_options()[2:] == ["cuda:0 — NVIDIA RTX A5000"]


def test_engine_messages_are_worded_for_qgis():
    """The engine's messages that name command-line options, as QGIS shows them."""
    from e2diffsr_core.api import NO_MODEL

    cases = {
        "device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu":
            "device 'cuda' was asked for but PyTorch sees no CUDA GPU; set 'Device' to CPU",
        "out of memory on cuda:0 even with 64 px tiles; use --device cpu or free memory":
            "out of memory on cuda:0 even with 64 px tiles; set 'Device' to CPU or free memory",
        "no bands selected; select at least one band, e.g. --bands 1,2,3":
            "no bands selected; select at least one band, e.g. 'Bands' 1,2,3",
        NO_MODEL: "no model file given and no bundled model is installed; give one in 'Model file' (advanced "
                  "parameters)",
    }
    for engine, qgis in cases.items():
        assert for_qgis(engine) == qgis


# --- target pixel size -----------------------------------------------------------------------------------------
def test_a_target_pixel_size_replaces_the_scale(provider, rasters, tiny_model_file, tmp_path, qgis_new_project):
    import processing

    out = tmp_path / "p04.tif"
    processing.runAndLoadResults(ALG, {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "TARGET_RESOLUTION": 0.04,
                                       "MODEL": str(tiny_model_file), "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayersByName("a48 at 0.04")[0]
    ds = gdal.Open(layer.source())
    assert (ds.RasterXSize, ds.RasterYSize) == (120, 120)  # 4.8 m in pixels of 0.04 m, not the x2 of SCALE
    assert ds.GetGeoTransform()[1] == pytest.approx(0.04) and ds.GetGeoTransform()[5] == pytest.approx(-0.04)
    feedback = Recorder()
    with pytest.raises(QgsProcessingException):  # not finer than the layer's 0.1 m pixels
        run({"INPUT": str(rasters["a48"]), "SCALE": 2.0, "TARGET_RESOLUTION": 0.2, "MODEL": str(tiny_model_file),
             "OUTPUT": str(out)}, feedback)
    errors = [text for kind, text in feedback.lines if kind == "error"]
    assert any("'Target pixel size'" in e and "down-sampling is GDAL's job" in e for e in errors), feedback.lines
    assert not out.exists()
