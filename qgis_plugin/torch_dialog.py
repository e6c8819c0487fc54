"""The "Set up PyTorch" dialog: what is missing, which build fits this machine, the command, an Install button."""

from __future__ import annotations

import html

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
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

    def _build(self, missing: list[str]) -> None:
        layout = QVBoxLayout(self)
        what = "<br>".join(f"&bull; {html.escape(m)}" for m in missing) or "&bull; nothing: PyTorch imports."
        size = SIZES.get(self.plan.build, "")
        self.summary = QLabel(
            "<p>The super-resolution algorithm runs on PyTorch, which the Python that QGIS uses does not "
            f"have. Missing:<br>{what}</p>"
            f"<p>{html.escape(machine_text(self.gpu))}</p>"
            f"<p><b>To install:</b> PyTorch, {html.escape(self.plan.build)} ({size}) for "
            f"{OS_NAMES.get(self.plan.system, self.plan.system)}, into your user folder (no administrator "
            "rights needed). Click <b>Install</b>, or run this command yourself and restart QGIS:</p>")
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
        buttons.addStretch(1)
        self.install_button = QPushButton("Install")
        self.install_button.setDefault(True)
        self.install_button.clicked.connect(self.install)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        self.resize(720, 300)

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
