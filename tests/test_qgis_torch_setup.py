"""PyTorch guidance where the user is: the message bar at plugin load, the set-up dialog, the pip command and
the Install button, run for real against a local folder of wheels (no network)."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from qgis.core import Qgis
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QPushButton
from qgis_support import ROOT  # noqa: F401 (puts the project root on sys.path)

from qgis_plugin import deps, devices, torch_dialog
from qgis_plugin.installer import CPU_INDEX, CUDA_INDEX, PipRunner, torch_plan

PROBE = "e2diffsr_wheel_probe"


@pytest.fixture
def no_torch(monkeypatch):
    """torch made unimportable, and no NVIDIA GPU seen, whatever the test machine has."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(deps, "torch_missing", lambda: True)
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(torch_dialog, "nvidia_gpu_present", lambda: False)


def make_wheel(folder: Path, version="1.0") -> Path:
    """A minimal pure-Python wheel: one module with VALUE = 42 (what pip needs: METADATA, WHEEL, RECORD)."""
    info = f"{PROBE}-{version}.dist-info"
    files = {
        f"{PROBE}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    wheel = folder / f"{PROBE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def wait_for(condition, timeout=180):
    end = time.time() + timeout
    while not condition() and time.time() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert condition(), "timed out"


# --- the command for each system -----------------------------------------------------------------------------------
def test_the_build_follows_the_machine():
    pkgs = ["torch>=2.1", "numpy<2"]
    linux_cpu = torch_plan(pkgs, gpu=False, system="Linux")
    assert linux_cpu.build == "CPU-only build" and linux_cpu.index_url == CPU_INDEX
    assert linux_cpu.command().endswith(f"-m pip install {' '.join(linux_cpu.flags)} --index-url {CPU_INDEX} "
                                        "'torch>=2.1' 'numpy<2'".replace("  ", " "))
    linux_gpu = torch_plan(pkgs, gpu=True, system="Linux")  # PyPI's Linux build is the CUDA one
    assert linux_gpu.build.startswith("CUDA") and "--index-url" not in linux_gpu.command()
    windows_cpu = torch_plan(pkgs, gpu=False, system="Windows")  # PyPI's Windows build is CPU-only
    assert windows_cpu.python.endswith("python.exe") and "--index-url" not in windows_cpu.command()
    assert '"torch>=2.1"' in windows_cpu.command()  # cmd.exe quoting
    assert torch_plan(pkgs, gpu=True, system="Windows").index_url == CUDA_INDEX
    mac = torch_plan(pkgs, gpu=False, system="Darwin")
    assert mac.index_url is None and "Apple" in mac.build
    # Into the user's site-packages unless QGIS runs in a virtual environment.
    in_venv = sys.prefix != sys.base_prefix
    assert ("--user" in linux_cpu.flags) != in_venv


# --- the message bar and the dialog ----------------------------------------------------------------------------------
def test_plugin_load_without_torch_shows_a_message_with_a_button(qgis_iface, qgis_processing, no_torch):
    from qgis_plugin import classFactory

    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        items = bar.items()
        assert len(items) == 1 and items[0].level() == Qgis.Warning
        assert "needs PyTorch" in items[0].text()
        button = items[0].findChild(QPushButton, "e2diffsrSetupTorchButton")
        assert button.text() == "Set up PyTorch..."
        button.click()
        assert plugin.dialog.isVisible() and "download.pytorch.org/whl/cpu" in plugin.dialog.command.toPlainText()
        assert bar.items() == []  # the message goes once the dialog is open
        plugin.dialog.close()
    finally:
        plugin.unload()


def test_plugin_load_with_torch_says_nothing(qgis_iface, qgis_processing, monkeypatch):
    from qgis_plugin import classFactory

    monkeypatch.setattr(deps, "torch_missing", lambda: False)
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    assert bar.items() == []
    plugin.unload()


def test_dialog_shows_the_cpu_only_command_when_no_gpu_is_seen(qgis_app, no_torch):
    dialog = torch_dialog.TorchSetupDialog()
    summary = dialog.summary.text()
    assert "PyTorch (ModuleNotFoundError" in summary or "PyTorch (ImportError" in summary
    assert "No NVIDIA GPU was found" in summary and "CPU-only build" in summary
    command = dialog.command.toPlainText()
    python = dialog.plan.python
    assert command.startswith(f"{python} -m pip install ") and f"--index-url {CPU_INDEX}" in command
    assert "'torch>=2.1'" in command
    assert dialog.install_button.isEnabled() and not dialog.log.isVisible()


def test_dialog_offers_the_cuda_build_when_a_gpu_is_seen(qgis_app, monkeypatch):
    monkeypatch.setattr(devices, "cuda_devices", lambda: ((0, "NVIDIA RTX A5000"),))
    monkeypatch.setattr(torch_dialog, "cuda_devices", lambda: ((0, "NVIDIA RTX A5000"),))
    dialog = torch_dialog.TorchSetupDialog(missing=["PyTorch"], packages=["torch>=2.1"], gpu=True, system="Linux")
    assert "This machine has NVIDIA RTX A5000, so the CUDA build fits" in dialog.summary.text()
    assert "--index-url" not in dialog.command.toPlainText()


# --- the Install button, for real, from a local folder of wheels -------------------------------------------------
def test_install_runs_pip_with_progress_and_a_log(qgis_app, no_torch, tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    target = tmp_path / "site"
    dialog = torch_dialog.TorchSetupDialog(missing=["PyTorch"], packages=[PROBE])
    dialog.show()
    asked = []
    monkeypatch.setattr(dialog, "ask_restart", lambda: asked.append(True))
    progress = []
    dialog.runner.progress.connect(lambda value, _label: progress.append(value))
    dialog.install(find_links=str(wheels), target=str(target))
    assert not dialog.install_button.isEnabled() and dialog.log.isVisible()
    wait_for(lambda: dialog.succeeded is not None)
    log = dialog.log.toPlainText()
    assert dialog.succeeded, log
    assert f"Successfully installed {PROBE}-1.0" in log and asked == [True]
    assert progress[0] == 0 and progress[-1] == 100 and progress == sorted(progress)
    assert dialog.progress.value() == 100
    # The package is importable from where pip put it (a fresh interpreter, as after a restart).
    check = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                            f"import {PROBE}; print({PROBE}.VALUE)"], capture_output=True, text=True)
    assert check.stdout.strip() == "42", check.stderr


def test_a_failed_install_says_so(qgis_app, no_torch, tmp_path):
    dialog = torch_dialog.TorchSetupDialog(missing=["PyTorch"], packages=["e2diffsr-not-in-the-folder"])
    dialog.install(find_links=str(tmp_path), target=str(tmp_path / "site"))
    wait_for(lambda: dialog.succeeded is not None)
    assert dialog.succeeded is False and dialog.install_button.isEnabled()
    assert "pip failed with exit code 1" in dialog.log.toPlainText()
    assert "No matching distribution found for e2diffsr-not-in-the-folder" in dialog.log.toPlainText()


def test_a_missing_interpreter_is_reported(qgis_app):
    runner = PipRunner()
    finished, lines = [], []
    runner.finished.connect(lambda ok, code: finished.append((ok, code)))
    runner.line.connect(lines.append)
    runner.start("/nonexistent/python3", ["-m", "pip", "--version"])
    wait_for(lambda: finished, timeout=30)
    assert finished == [(False, -1)] and any("Could not start /nonexistent/python3" in x for x in lines)
