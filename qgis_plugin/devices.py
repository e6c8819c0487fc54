"""The devices the Device parameter offers, found without importing PyTorch.

Importing torch takes seconds, and the list is built when QGIS loads the provider at start-up, so the
NVIDIA GPUs are listed by the driver's own tool (nvidia-smi). CUDA numbers GPUs fastest first unless
CUDA_DEVICE_ORDER=PCI_BUS_ID, so with mixed GPUs the name shown may differ from the one PyTorch uses; the
run's log names the device PyTorch actually used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

AUTO = "Automatic"
CPU = "CPU"
SEPARATOR = " — "  # between "cuda:1" and the GPU's name in the list


def _nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if os.name == "nt":  # the driver installs it here, not always on PATH
        candidate = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        return str(candidate) if candidate.is_file() else None
    return None


def nvidia_gpu_present() -> bool:
    """True when this machine has an NVIDIA driver: the CUDA build of PyTorch is worth its size."""
    if sys.platform == "darwin":
        return False  # no CUDA on macOS
    return _nvidia_smi() is not None or Path("/proc/driver/nvidia").exists()


def _visible(indices: list[int]) -> list[int]:
    """Apply CUDA_VISIBLE_DEVICES (a list of indices) the way CUDA renumbers the GPUs it shows."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return indices
    chosen = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit():
            break  # CUDA stops at the first entry it cannot parse (UUIDs are not mapped here)
        chosen.append(int(part))
    return [i for i in chosen if i in indices]


@lru_cache(maxsize=1)
def cuda_devices() -> tuple[tuple[int, str], ...]:
    """((cuda index, GPU name), ...) as the NVIDIA driver lists them; () without an NVIDIA GPU."""
    exe = _nvidia_smi()
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--query-gpu=index,name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    names = {}
    for line in out.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            names[int(index)] = name.strip()
    return tuple((cuda, names[physical]) for cuda, physical in enumerate(_visible(sorted(names))))


def device_options() -> list[str]:
    """What the Device parameter lists: Automatic, CPU, then 'cuda:N — name' for each NVIDIA GPU."""
    return [AUTO, CPU] + [f"cuda:{i}{SEPARATOR}{name}" for i, name in cuda_devices()]


def engine_device(value: str | None) -> str:
    """A Device value (a list entry, or what scripts write: auto, cpu, cuda, cuda:1) -> the engine's name.

    Raises ValueError for anything else.
    """
    text = (value or "").split(SEPARATOR)[0].strip().lower()
    if text in ("", "auto", "automatic"):
        return "auto"
    if text == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", text):
        return text
    raise ValueError(value)


def list_entry(value: str | None, options: list[str]) -> str | None:
    """The entry of ``options`` a Device value stands for (so 'cpu' is accepted for 'CPU'), or None."""
    try:
        device = engine_device(value)
    except ValueError:
        return None
    if device == "cuda":
        device = "cuda:0"
    for option in options:
        if engine_device(option) == device:
            return option
    return None
