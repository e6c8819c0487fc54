"""The "Set up PyTorch" dialog: what is missing, which build fits this machine, the command, an Install button."""

from __future__ import annotations

import glob
import html
import os
import sys

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from . import deps
from .devices import cuda_devices, nvidia_gpu_present
from .installer import CPU_BUILD, CUDA_BUILD, OS_NAMES, PipRunner, torch_plan

SIZES = {CPU_BUILD: "about 200 MB to download", CUDA_BUILD: "2.5 GB or more to download"}


def machine_text(gpu: bool) -> str:
    if not gpu:
        return "No NVIDIA GPU was found on this machine, so the CPU-only build fits: it is much smaller."
    names = ", ".join(name for _, name in cuda_devices()) or "an NVIDIA driver"
    return f"This machine has {names}, so the CUDA build fits: it runs the model on the GPU."


def site_packages_of(folder: str) -> tuple[str | None, str]:
    """(the site-packages folder with PyTorch in ``folder``, a Python environment or its site-packages; or
    None) and a sentence saying what was found."""
    py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [folder, os.path.join(folder, "Lib", "site-packages"),
                  os.path.join(folder, "lib", py, "site-packages"),
                  *sorted(glob.glob(os.path.join(folder, "lib", "python3*", "site-packages")))]
    for c in candidates:
        if os.path.isfile(os.path.join(c, "torch", "__init__.py")):
            other = os.path.basename(os.path.dirname(c))
            if other.startswith("python3") and other != py:
                return None, (f"{c} holds PyTorch for {other.replace('python', 'Python ')}, but QGIS runs Python "
                              f"{py[6:]}: its compiled parts cannot load here. Choose an environment made with "
                              f"Python {py[6:]}.")
            return c, f"PyTorch found in {c}."
    return None, (f"No PyTorch in {folder}: choose the folder of a Python environment (a venv or conda "
                  "environment) that has PyTorch installed, or its site-packages folder.")


def torch_version() -> str | None:
    """The version of the PyTorch that imports here (None when none does)."""
    if deps.torch_missing():
        return None
    try:
        import torch
    except Exception:  # noqa: BLE001 - a broken install is as good as none here
        return None
    return f"{torch.__version__} ({os.path.dirname(torch.__file__)})"


class TorchSetupDialog(QDialog):
    def __init__(self, parent=None, missing: list[str] | None = None, packages: list[str] | None = None,
                 gpu: bool | None = None, system: str | None = None):
        super().__init__(parent)
        self.setObjectName("e2diffsrTorchSetup")
        self.setWindowTitle("E2DiffSR: set up PyTorch")
        if missing is None:
            missing, packages = deps.missing()
        packages = packages or ["torch>=2.1"]
        self.gpu = nvidia_gpu_present() if gpu is None else gpu
        self.plan = torch_plan(packages, self.gpu, system)
        self.runner = PipRunner(self)
        self.runner.line.connect(self._log_line)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.succeeded = None
        self._build(missing)

    def _text(self, missing: list[str]) -> str:
        size = SIZES.get(self.plan.build, "")
        existing = ("<p>Or, if another Python environment on this computer has PyTorch, click <b>Use an "
                    "existing Python environment...</b> and choose its folder.</p>")
        if not missing:
            version = torch_version() or "installed"
            return (f"<p><b>PyTorch {html.escape(version)} is installed and imports in the Python that QGIS "
                    "uses: the algorithm can run. Nothing needs to be installed.</p>"
                    f"<p>{html.escape(machine_text(self.gpu))}</p>"
                    "<p>To use another PyTorch (e.g. a CUDA build in another environment), choose it with "
                    "<b>Use an existing Python environment...</b>, or reinstall with this command:</p>")
        what = "<br>".join(f"&bull; {html.escape(m)}" for m in missing)
        return ("<p>The super-resolution algorithm runs on PyTorch, which the Python that QGIS uses does not "
                f"have. Missing:<br>{what}</p>"
                f"<p>{html.escape(machine_text(self.gpu))}</p>"
                f"<p><b>To install:</b> PyTorch, {html.escape(self.plan.build)} ({size}) for "
                f"{OS_NAMES.get(self.plan.system, self.plan.system)}, into your user folder (no administrator "
                "rights needed). Click <b>Install</b>, or run this command yourself and restart QGIS:</p>"
                + existing)

    def _build(self, missing: list[str]) -> None:
        layout = QVBoxLayout(self)
        self.summary = QLabel(self._text(missing))
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.RichText)
        self.summary.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        # Wrapped over a few lines: a single-line field would hide the index URL, the part that matters.
        self.command = QPlainTextEdit(self.plan.command())
        self.command.setReadOnly(True)
        self.command.setFixedHeight(self.command.fontMetrics().lineSpacing() * 3 + 12)
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QApplication.clipboard().setText(self.plan.command()))
        row.addWidget(self.command, 1)
        row.addWidget(copy)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setVisible(False)
        layout.addWidget(self.log, 1)
        layout.addStretch(0)
        buttons = QHBoxLayout()
        self.existing_button = QPushButton("Use an existing Python environment...")
        self.existing_button.setObjectName("e2diffsrUseEnvironment")
        self.existing_button.clicked.connect(self.choose_environment)
        buttons.addWidget(self.existing_button)
        buttons.addStretch(1)
        self.install_button = QPushButton("Install" if missing else "Reinstall")
        self.install_button.setDefault(bool(missing))
        self.install_button.clicked.connect(self.install)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        self.resize(720, 300)

    # --- an existing environment -----------------------------------------------------------------------------
    def choose_environment(self, folder: str | None = None) -> str | None:
        """Pick a Python environment's folder; its site-packages becomes the plugin's Python path setting."""
        if not folder:
            folder = QFileDialog.getExistingDirectory(self, "A Python environment with PyTorch")
        if not folder:
            return None
        found, sentence = site_packages_of(folder)
        if found is None:
            QMessageBox.warning(self, "E2DiffSR", sentence)
            return None
        from qgis.core import QgsSettings

        QgsSettings().setValue(deps.SETTING, found)
        QMessageBox.information(self, "E2DiffSR", f"{sentence} The plugin will use it (setting {deps.SETTING}); "
                                "restart QGIS to load it.")
        return found

    # --- installing -----------------------------------------------------------------------------------------
    def install(self, find_links: str | None = None, target: str | None = None) -> None:
        """Run the command; find_links/target install from a local folder of wheels into a folder."""
        self.install_button.setEnabled(False)
        self.progress.setVisible(True)
        self.log.setVisible(True)
        self.progress.setFormat("Starting pip")
        self.runner.start(self.plan.python, self.plan.args(find_links=find_links, target=target, quiet=True))

    def _log_line(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _on_progress(self, value: int, label: str) -> None:
        self.progress.setValue(value)
        self.progress.setFormat(f"{label}: %p%")

    def _on_finished(self, ok: bool, code: int) -> None:
        self.succeeded = ok
        self.install_button.setEnabled(not ok)
        if ok:
            self.progress.setValue(100)
            self.progress.setFormat("Installed")
            self.ask_restart()
        else:
            self.progress.setFormat(f"pip failed (exit code {code}); see the log")
            self.log.appendPlainText(
                f"pip failed with exit code {code}. The lines above say why (no network, no pip: on Debian "
                "and Ubuntu install python3-pip). You can run the command above in a terminal instead.")

    def ask_restart(self) -> None:
        QMessageBox.information(self, "PyTorch installed",
                                "PyTorch is installed. Restart QGIS so that the plugin can use it.")

    def reject(self) -> None:
        self.runner.cancel()
        super().reject()
