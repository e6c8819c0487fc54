# ruff: noqa: F811 (pytest fixtures imported from qgis_support)
"""The QGIS plugin as analysts use it: Processing algorithm, Toolbox task, batch, graphical model, qgis_process.

Headless (pytest-qgis with qgis_gui_enabled = false). Rasters are small crops of the bundled sample and the
model is a tiny random one, so every run takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingMultiStepFeedback,
    QgsProject,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis_support import ALG, ROOT, Recorder, check_output, leftovers, provider, rasters, run  # noqa: F401

from qgis_plugin import deps, devices
from qgis_plugin.plugin import E2DiffSRPlugin  # noqa: F401

QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def run_as_task(params, feedback, timeout=120):
    """Run the algorithm the way the Toolbox dialog does: a QgsProcessingAlgRunnerTask on the task manager."""
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    done = {}
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    task.executed.connect(lambda ok, results: done.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    end = time.time() + timeout
    while "ok" not in done and time.time() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert "ok" in done, "the task did not finish"
    return done["ok"], done["results"]


# --- the provider, the algorithm's definition, the GUI entry ---------------------------------------------------------
def test_provider_and_parameters(provider):
    reg = QgsApplication.processingRegistry()
    assert reg.providerById("e2diffsr").name() == "E2DiffSR super-resolution"
    alg = reg.algorithmById(ALG)
    assert alg.displayName() == "Super-resolve raster"
    # Runs in a background task, in batch, and can be cancelled.
    assert not alg.flags() & alg.FlagNoThreading
    assert alg.flags() & alg.FlagSupportsBatch and alg.flags() & alg.FlagCanCancel
    scale = alg.parameterDefinition("SCALE")
    # No bounds on the spin box (it would clamp 0 to the minimum without a word); checked with a message.
    assert scale.defaultValue() == 2.0 and scale.maximum() > 1e300
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & p.FlagAdvanced}
    assert {"MODEL", "BANDS", "DEVICE", "SEED", "SAMPLES", "TEMPERATURE", "TILE_SIZE", "MEMORY",
            "CREATION_OPTIONS"} <= advanced
    temperature = alg.parameterDefinition("TEMPERATURE")  # empty: the engine's default for the samples asked
    assert temperature.flags() & temperature.FlagOptional and temperature.defaultValue() is None
    assert (temperature.minimum(), temperature.maximum()) == (0.0, 1.0)
    # The Graphical Modeler cannot show an advanced output: no destination is flagged advanced.
    assert not [p.name() for p in alg.destinationParameterDefinitions() if p.flags() & p.FlagAdvanced]
    device = alg.parameterDefinition("DEVICE")
    assert device.options()[:2] == ["Automatic", "CPU"] and device.usesStaticStrings()
    assert device.defaultValue() == "Automatic"
    assert alg.parameterDefinition("SAMPLES").maximum() == 64  # the engine's own limit (e2diffsr_core.rules)
    assert alg.parameterDefinition("MODEL").flags() & alg.parameterDefinition("MODEL").FlagOptional
    assert "bundled" in alg.shortHelpString() and "Tile size" in alg.shortHelpString()
    assert "small demonstration model" in alg.shortHelpString() and "MODEL_CARD.md" in alg.shortHelpString()
    # The creation-options editor this QGIS has: the Python widget (3.22) or the C++ widget type (3.40).
    widget = alg.parameterDefinition("CREATION_OPTIONS").metadata()["widget_wrapper"]
    if "class" in widget:
        module, _, name = widget["class"].rpartition(".")
        assert getattr(importlib.import_module(module), name)
    else:
        assert widget == {"widget_type": "rasteroptions"}
    assert not alg.icon().isNull()


def test_gui_entry_opens_the_dialog(qgis_processing, qgis_iface, monkeypatch):
    import processing

    from qgis_plugin import classFactory

    opened = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg_id, *a, **k: opened.append(alg_id))
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert QgsApplication.processingRegistry().algorithmById(ALG) is not None
        plugin.action.trigger()
        assert opened == [ALG]
    finally:
        plugin.unload()
    assert plugin.provider is None and plugin.action is None


# --- running -------------------------------------------------------------------------------------------------------
def test_run_writes_a_georeferenced_raster(provider, rasters, tiny_model_file, tmp_path):
    out = tmp_path / "sr.tif"
    feedback = Recorder()
    res = run({"INPUT": str(rasters["a48"]), "SCALE": 2.5, "OUTPUT": str(out), "MODEL": str(tiny_model_file),
               "DEVICE": "cpu", "CREATION_OPTIONS": "COMPRESS=DEFLATE;PREDICTOR=2"}, feedback)
    assert res["OUTPUT"] == str(out)
    check_output(out, rasters["a48"], 2.5)
    assert gdal.Open(str(out)).GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    assert res["USED_DEVICE"] == "cpu" and "tiny.pt" in res["USED_MODEL"] and res["USED_TILE_SIZE"] > 0
    log = "\n".join(feedback.infos)
    assert "device: cpu" in log and "tile" in log and "PyTorch" in log
    assert feedback.progress and max(feedback.progress) == pytest.approx(100)
    assert leftovers(tmp_path) == ["sr.tif"]  # no temporary files beside it


def test_samples_and_uncertainty(provider, rasters, tiny_model_file, tmp_path):
    out, unc = tmp_path / "mean.tif", tmp_path / "std.tif"
    res = run({"INPUT": str(rasters["b40x32"]), "SCALE": 1.5, "OUTPUT": str(out), "MODEL": str(tiny_model_file),
               "BANDS": "3,1", "SAMPLES": 2, "SEED": 3, "UNCERTAINTY": str(unc)})
    assert res["UNCERTAINTY"] == str(unc)
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (60, 48, 2)
    std = gdal.Open(str(unc))
    assert (std.RasterXSize, std.RasterYSize) == (60, 48)
    assert std.GetRasterBand(1).DataType == gdal.GDT_Float32


def test_run_and_load_results_adds_the_layer(provider, rasters, tiny_model_file, qgis_new_project):
    import processing

    res = processing.runAndLoadResults(ALG, {"INPUT": str(rasters["b40x32"]), "SCALE": 2.0,
                                            "OUTPUT": "TEMPORARY_OUTPUT", "MODEL": str(tiny_model_file)})
    layers = list(QgsProject.instance().mapLayers().values())
    assert len(layers) == 1
    layer = layers[0]
    assert layer.isValid() and (layer.width(), layer.height()) == (80, 64)
    assert layer.source() == res["OUTPUT"] and layer.crs().authid() == "EPSG:32617"


def test_graphical_model_chains_it_with_gdal_translate(provider, rasters, tiny_model_file, tmp_path):
    import processing

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(ROOT / "tests" / "data" / "superresolve_chain.model3"))
    assert model.validate()[0], model.validate()[1]
    out = tmp_path / "chain.tif"
    res = processing.run(model, {"input": str(rasters["a48"]), "scale": 2.0, "model": str(tiny_model_file),
                                 "translate:Converted": str(out)})
    assert Path(res["translate:Converted"]) == out
    check_output(out, rasters["a48"], 2.0)
    assert gdal.Open(str(out)).GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"


def test_batch_of_two_inputs(provider, rasters, tiny_model_file, tmp_path):
    """Batch processing as QGIS 3.22 does it.

    The batch dialog (processing/gui/BatchAlgorithmDialog.py) is GUI-only; for each row it makes a fresh
    context, calls preprocessParameters and alg.run(...) in sequence with a multi-step feedback. That loop is
    reproduced here without the dialog (qgis_process in 3.22 has no batch/JSON input either).
    """
    from processing.tools import dataobjects

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    rows = [{"INPUT": str(rasters[name]), "SCALE": 2.0, "MODEL": str(tiny_model_file),
             "OUTPUT": str(tmp_path / f"{name}_x2.tif")} for name in ("a48", "b40x32")]
    feedback = QgsProcessingFeedback()
    multi = QgsProcessingMultiStepFeedback(len(rows), feedback)
    for i, params in enumerate(rows):
        multi.setCurrentStep(i)
        params = alg.preprocessParameters(params)
        ok, msg = alg.checkParameterValues(params, dataobjects.createContext(feedback))
        assert ok, msg
        results, ok = alg.run(params, dataobjects.createContext(feedback), multi)
        assert ok, results
    for name in ("a48", "b40x32"):
        check_output(tmp_path / f"{name}_x2.tif", rasters[name], 2.0)


def test_background_task_reports_progress_and_cancels_cleanly(provider, rasters, tiny_model_file, tmp_path):
    params = {"INPUT": str(rasters["c64"]), "SCALE": 2.0, "MODEL": str(tiny_model_file), "TILE_SIZE": 64}
    # A complete run in the Toolbox's task: progress rises to 100 over several tiles.
    done = Recorder()
    ok, results = run_as_task({**params, "OUTPUT": str(tmp_path / "full.tif")}, done)
    assert ok and Path(results["OUTPUT"]).is_file()
    steps = sorted({p for p in done.progress if 0 < p < 100})
    assert len(steps) >= 2, done.progress  # reported tile by tile, not just at the end
    # The same run cancelled at its first progress report: it stops early and leaves nothing behind.
    cancelled_dir = tmp_path / "cancelled"
    cancelled_dir.mkdir()
    feedback = Recorder(cancel_at_first_progress=True)
    ok, _ = run_as_task({**params, "OUTPUT": str(cancelled_dir / "never.tif")}, feedback)
    assert not ok and feedback.isCanceled()
    assert max(feedback.progress) < 100
    assert leftovers(cancelled_dir) == []


# --- errors a user can make ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    ({"SCALE": 1.0}, "'Scale factor' must be greater than 1 (got 1)"),
    ({"SCALE": 20.0}, "'Scale factor' 20 is above the maximum of 16"),
    ({"MODEL": "missing-model.pt"}, "'Model file' not found"),
    ({"BANDS": "1,two"}, "band numbers separated by commas"),
    ({"BANDS": "1,5"}, "band 5 does not exist"),
    ({"TILE_SIZE": 10}, "tile size"),
    ({"MEMORY": "lots"}, "'Memory budget' lots: give a size of at least 64M, e.g. 512M or 4G"),
    ({"UNCERTAINTY": "unc.tif"}, "set 'Samples' to 2 or more"),
    ({"CREATION_OPTIONS": "COMPRESS=NOPE"}, "COMPRESS"),
])
def test_bad_parameters_give_clear_errors(provider, rasters, tiny_model_file, tmp_path, extra, message):
    params = {"INPUT": str(rasters["a48"]), "SCALE": 2.0, "MODEL": str(tiny_model_file),
              "OUTPUT": str(tmp_path / "out.tif")}
    for key in ("MODEL", "UNCERTAINTY"):
        if key in extra:
            extra = {**extra, key: str(tmp_path / extra[key])}
    with pytest.raises(QgsProcessingException) as err:
        run({**params, **extra})
    assert message.lower() in str(err.value).lower()
    assert leftovers(tmp_path) == []


def test_no_model_and_none_bundled(provider, rasters, tmp_path, monkeypatch):
    import e2diffsr_core.api

    monkeypatch.setattr(e2diffsr_core.api, "default_model_path", lambda: None)
    with pytest.raises(QgsProcessingException, match="no bundled model is installed; give one in 'Model file'"):
        run({"INPUT": str(rasters["a48"]), "SCALE": 2.0, "OUTPUT": str(tmp_path / "x.tif")})
    assert leftovers(tmp_path) == []


def test_missing_torch_is_explained(provider, rasters, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail as if it were not installed
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: False)
    msg = deps.problem()
    assert "PyTorch" in msg and ("No module named" in msg or "halted" in msg)
    assert "-m pip install" in msg and "'torch>=2.1'" in msg
    # numpy 1 (QGIS 3.22 on Debian 12) is pinned so pip keeps the numpy GDAL was built with; numpy 2 is left alone.
    assert ("'numpy<2'" in msg) == (int(np.__version__.split(".")[0]) < 2)
    # No NVIDIA GPU on the test machine: the CPU-only build, not PyPI's CUDA build.
    assert "--index-url https://download.pytorch.org/whl/cpu" in msg and "Set up PyTorch" in msg
    assert deps.ENV_VAR in msg
    with pytest.raises(QgsProcessingException, match="pip install"):
        run({"INPUT": str(rasters["a48"]), "SCALE": 2.0, "OUTPUT": str(tmp_path / "x.tif")})


def test_extra_site_packages_from_environment(tmp_path, monkeypatch):
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    (site_dir / "e2diffsr_probe_module.py").write_text("VALUE = 42\n")
    monkeypatch.setenv(deps.ENV_VAR, str(site_dir))
    monkeypatch.setattr(deps, "_paths_added", False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    deps.add_paths()
    import e2diffsr_probe_module

    assert e2diffsr_probe_module.VALUE == 42
    sys.modules.pop("e2diffsr_probe_module")


def test_the_environments_packages_win_over_older_system_copies(tmp_path, monkeypatch):
    system, env = tmp_path / "system", tmp_path / "env-site-packages"
    for folder, version in ((system, "old"), (env, "new")):
        folder.mkdir()
        (folder / "e2diffsr_probe_dependency.py").write_text(f"VERSION = {version!r}\n")
    monkeypatch.setenv(deps.ENV_VAR, str(env))
    monkeypatch.setattr(deps, "_paths_added", False)
    monkeypatch.setattr(sys, "path", [str(system), *sys.path])  # as Debian's dist-packages holds an old sympy
    deps.add_paths()
    import e2diffsr_probe_dependency

    assert e2diffsr_probe_dependency.VERSION == "new"
    sys.modules.pop("e2diffsr_probe_dependency")


# --- the built zip, installed and driven with qgis_process ---------------------------------------------------------
def test_plugin_zip_works_with_qgis_process(rasters, tiny_model_file, tmp_path):
    if not Path(QGIS_PROCESS).is_file():
        pytest.skip(f"{QGIS_PROCESS} is not installed (Debian package qgis)")
    zip_path = tmp_path / "e2diffsr_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "--out", str(zip_path)],
                   check=True, capture_output=True, text=True)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert {"e2diffsr_qgis/metadata.txt", "e2diffsr_qgis/__init__.py", "e2diffsr_qgis/icon.png",
                "e2diffsr_qgis/lib/e2diffsr_core/raster.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
        plugins = tmp_path / "plugins"
        zf.extractall(plugins)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", deps.ENV_VAR)}
    env.update(QGIS_PLUGINPATH=str(plugins), QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"),
               QT_QPA_PLATFORM="offscreen", PATH=f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}")

    def qgis_process(*args, environ=env):
        return subprocess.run([QGIS_PROCESS, *args], env=environ, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    enabled = qgis_process("plugins", "enable", "e2diffsr_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    listing = qgis_process("list")
    assert "e2diffsr:superresolve\tSuper-resolve raster" in listing.stdout
    out = tmp_path / "qp_out.tif"
    ran = qgis_process("run", ALG, "--", f"INPUT={rasters['a48']}", "SCALE=2.5", f"OUTPUT={out}",
                       f"MODEL={tiny_model_file}", "DEVICE=cpu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "device: cpu" in ran.stdout and "USED_DEVICE:\tcpu" in ran.stdout
    # The engine that ran is the copy inside the plugin folder, not the project's.
    assert str(plugins / "e2diffsr_qgis" / "lib" / "e2diffsr_core") in ran.stdout
    check_output(out, rasters["a48"], 2.5)

    # QGIS's own Python without the venv: the algorithm must say what is missing and how to install it.
    no_torch = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode != 0
    if no_torch:
        bare = {**env, "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                              if not p.startswith(sys.prefix))}
        failed = qgis_process("run", ALG, "--", f"INPUT={rasters['a48']}", "SCALE=2", f"OUTPUT={tmp_path / 'n.tif'}",
                              environ=bare)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0 and "PyTorch" in text and "/usr/bin/python3 -m pip install" in text, text
        assert not (tmp_path / "n.tif").exists()
    shutil.rmtree(plugins)
