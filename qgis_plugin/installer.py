"""Which PyTorch build suits this machine, the pip command that installs it into QGIS's Python, and a runner.

Standard library and Qt only: it must work exactly when torch is missing.

PyPI's torch for Linux is the CUDA build (several GB); without an NVIDIA GPU the CPU-only build from
PyTorch's own index is a fraction of that. On Windows PyPI's build is CPU-only, so a GPU needs PyTorch's
CUDA index. On macOS there is no CUDA; PyPI's build is the one to use. Packages go to the user's
site-packages (--user): no administrator rights, and the files QGIS or the system installed stay untouched.
"""

from __future__ import annotations

import platform
import shlex
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, pyqtSignal

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # a CUDA version current drivers support

OS_NAMES = {"Linux": "Linux", "Windows": "Windows (OSGeo4W)", "Darwin": "macOS"}
CPU_BUILD = "CPU-only build"
CUDA_BUILD = "CUDA build (NVIDIA GPU)"
MAC_BUILD = "standard build (CPU and Apple GPU)"


def python_executable(system: str | None = None) -> str:
    """The Python interpreter QGIS embeds (sys.executable is QGIS itself, not Python)."""
    system = system or platform.system()
    prefix = Path(sys.exec_prefix)
    if system == "Windows":
        return str(prefix / "python.exe")  # OSGeo4W: apps\PythonXY\python.exe
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    exe = prefix / "bin" / f"python{version}"
    if exe.is_file():
        short = exe.with_name(f"python{sys.version_info.major}")  # Debian: /usr/bin/python3 -> python3.11
        return str(short if short.is_file() and short.resolve() == exe.resolve() else exe)
    return f"python{sys.version_info.major}"


def _in_virtualenv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def _externally_managed() -> bool:
    """Debian 12+ and Ubuntu 23.04+ mark the system Python as managed by apt (PEP 668)."""
    try:
        return (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").is_file()
    except Exception:
        return False


@dataclass
class PipPlan:
    system: str                  # Linux, Windows or Darwin
    build: str                   # which PyTorch build, in words
    python: str                  # the interpreter to run
    packages: list[str]
    index_url: str | None = None
    flags: list[str] = field(default_factory=list)

    def args(self, find_links: str | None = None, target: str | None = None, quiet: bool = False) -> list[str]:
        """Arguments after the interpreter. find_links/target: install from a local folder of wheels into
        a folder instead (how the tests run the real command without a network)."""
        args = ["-m", "pip", "install"]
        if quiet:  # for the dialog's log: no progress bars redrawn with carriage returns, no upgrade nag
            args += ["--disable-pip-version-check", "--progress-bar", "off"]
        if target:
            args += ["--target", target]  # pip refuses --user together with --target
        else:
            args += self.flags
        if find_links:
            args += ["--no-index", "--find-links", find_links]
        elif self.index_url:
            args += ["--index-url", self.index_url]
        return args + self.packages

    def command(self) -> str:
        """The exact command line to type in a terminal (cmd.exe or the OSGeo4W Shell on Windows)."""
        words = [self.python, *self.args()]
        if self.system == "Windows":
            # cmd.exe reads < and > as redirections even in arguments: quote such words (list2cmdline won't)
            return " ".join(f'"{w}"' if any(c in w for c in ' <>|&^') else w for w in words)
        return shlex.join(words)


def torch_plan(packages: list[str], gpu: bool, system: str | None = None) -> PipPlan:
    """How to install ``packages`` (torch first) for this QGIS, given whether an NVIDIA GPU is present."""
    system = system or platform.system()
    flags = [] if _in_virtualenv() else ["--user"]
    if system == "Darwin":
        return PipPlan(system, MAC_BUILD, python_executable(system), packages, None, flags)
    if system == "Windows":
        return PipPlan(system, CUDA_BUILD if gpu else CPU_BUILD, python_executable(system), packages,
                       CUDA_INDEX if gpu else None, flags)
    if flags and _externally_managed():
        flags.append("--break-system-packages")  # with --user, apt's own files stay untouched
    return PipPlan(system, CUDA_BUILD if gpu else CPU_BUILD, python_executable(system), packages,
                   None if gpu else CPU_INDEX, flags)


class PipRunner(QObject):
    """Runs pip in a QProcess: streams its output line by line and reports coarse progress (0-100)."""

    line = pyqtSignal(str)
    progress = pyqtSignal(int, str)
    finished = pyqtSignal(bool, int)  # success, exit code

    STAGES = [("Looking in", 5, "Contacting the package index"), ("Collecting", 10, "Resolving packages"),
              ("Downloading", 30, "Downloading"), ("Processing", 30, "Reading local wheels"),
              ("Installing collected packages", 80, "Installing"), ("Successfully installed", 100, "Installed")]

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._error)
        self._buffer = ""
        self._stage = 0

    def start(self, program: str, args: list[str]) -> None:
        self._stage = 0
        self.line.emit("$ " + shlex.join([program, *args]))
        self.progress.emit(0, "Starting pip")
        self.process.start(program, args)

    def cancel(self) -> None:
        if self.process.state() != QProcess.NotRunning:
            self.process.kill()

    def _read(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._buffer = self._buffer.replace("\r", "\n").split("\n")
        for text in lines:
            if text.strip():
                self._report(text)

    def _report(self, text: str) -> None:
        self.line.emit(text)
        for prefix, value, label in self.STAGES:
            if text.lstrip().startswith(prefix) and value > self._stage:
                self._stage = value
                self.progress.emit(value, label)

    def _done(self, code, _status) -> None:
        if self._buffer.strip():
            self._report(self._buffer)
        self._buffer = ""
        ok = code == 0 and self.process.exitStatus() == QProcess.NormalExit
        self.finished.emit(ok, int(code))

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self.line.emit(f"Could not start {self.process.program()}: {self.process.errorString()}")
            self.finished.emit(False, -1)
