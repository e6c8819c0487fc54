"""Find the engine and its dependencies from inside QGIS, and explain exactly what is missing.

QGIS runs plugins in its own Python (Debian: /usr/bin/python3; Windows: the OSGeo4W Python), which rarely has
PyTorch. This module must import with nothing but the standard library and PyQGIS, so that the provider
always loads and the algorithm can tell the user how to fix the environment.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import site
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
LIB_DIR = PLUGIN_DIR / "lib"               # the bundled engine, in the built plugin
ENV_VAR = "E2DIFFSR_PYTHONPATH"          # os.pathsep-separated site-packages folders (e.g. of a venv)
SETTING = "e2diffsr/pythonpath"          # the same, as a QGIS setting (Settings > Options > Advanced)

_paths_added = False


def _extra_site_dirs() -> list[str]:
    dirs = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    try:
        from qgis.core import QgsSettings

        value = QgsSettings().value(SETTING, "")
        if value:
            dirs += [d for d in str(value).split(os.pathsep) if d]
    except Exception:  # no QGIS (plain Python): the environment variable alone counts
        pass
    return dirs


def add_paths() -> None:
    """Make the bundled e2diffsr_core and any configured site-packages importable (idempotent)."""
    global _paths_added
    if _paths_added:
        return
    _paths_added = True
    before = list(sys.path)
    for d in _extra_site_dirs():
        if os.path.isdir(d):
            site.addsitedir(d)  # also runs .pth files, so editable installs in a venv work
    # The configured environment supplies PyTorch *and its dependencies*: its folders go before the system's,
    # or an older system copy of one of them (Debian 12's sympy, which torch's compiler stack cannot use)
    # is imported instead. Modules QGIS has imported already (numpy, the Qt bindings) stay as they are.
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in sys.path if p not in added]
    # The plugin zip carries its own copy of the engine in lib/ (scripts/build_plugin.py); it must win over
    # any other installed version so the plugin and the engine always match. lib/ holds only e2diffsr_core,
    # so the plugin's own modules (plugin.py, provider.py...) never become top-level names.
    if (LIB_DIR / "e2diffsr_core" / "__init__.py").is_file() and str(LIB_DIR) not in sys.path:
        sys.path.insert(0, str(LIB_DIR))


def _try(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, but also a broken binary (OSError, RuntimeError)
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def torch_missing() -> bool:
    """Cheap check for plugin start-up: is there a torch package at all? (Importing it takes seconds; a
    broken install is caught when the algorithm runs.)"""
    add_paths()
    try:
        return importlib.util.find_spec("torch") is None
    except (ImportError, ValueError):
        return True


def missing() -> tuple[list[str], list[str]]:
    """(what is missing, in words; the pip packages that supply it), both empty when the engine can run."""
    add_paths()
    missing: list[str] = []
    packages: list[str] = []
    numpy_major = None
    err = _try("numpy")
    if err:
        missing.append(f"numpy ({err})")
        packages.append("numpy<2")
    else:
        import numpy

        numpy_major = int(numpy.__version__.split(".")[0])
        if numpy_major >= 2 and _try("osgeo.gdal_array"):
            missing.append(f"numpy < 2 (numpy {numpy.__version__} is too new for the GDAL bindings of this QGIS)")
            packages.append("numpy<2")
    err = _try("torch")
    if err:
        missing.append(f"PyTorch ({err})")
        # Pinning numpy<2 where QGIS has numpy 1 keeps pip from replacing the numpy GDAL was built against;
        # where QGIS already ships numpy 2, leave it alone.
        keep_numpy = ["numpy<2"] if numpy_major is not None and numpy_major < 2 else []
        packages = ["torch>=2.1"] + (packages or keep_numpy)
    err = _try("osgeo.gdal_array")
    if err and not packages:
        missing.append(f"GDAL's Python bindings ({err}); reinstall QGIS with its Python support")
    if not missing:
        err = _try("e2diffsr_core.raster")
        if err:
            missing.append(f"the e2diffsr_core engine ({err}); reinstall the plugin from its zip")
    return missing, packages


def install_plan(packages: list[str]):
    """The pip command for this QGIS's Python; the CPU-only PyTorch build where no NVIDIA GPU is found."""
    from .devices import nvidia_gpu_present
    from .installer import torch_plan

    return torch_plan(packages, gpu=nvidia_gpu_present())


def problem() -> str | None:
    """None when the engine can run here, else one message: what is missing and the command to install it."""
    # QGIS may embed an older Python than the project targets (e.g. 3.9 in older OSGeo4W builds).
    if sys.version_info < (3, 10):  # noqa: UP036
        return (f"E2DiffSR needs Python 3.10 or newer, but this QGIS runs Python {platform.python_version()}; "
                "install a QGIS build with a newer Python (e.g. a current OSGeo4W or QGIS 3.34+).")
    parts, packages = missing()
    if not parts:
        return None
    where = f"Python {platform.python_version()} in {sys.exec_prefix}"
    msg = f"E2DiffSR cannot run: the Python that QGIS uses ({where}) lacks " + "; ".join(parts) + "."
    if packages:
        plan = install_plan(packages)
        msg += (f" Raster > E2DiffSR > Set up PyTorch... installs it, or run ({plan.build}): {plan.command()} "
                "and restart QGIS.")
        msg += (f" Or set the environment variable {ENV_VAR} (or the QGIS setting {SETTING}) to the "
                "site-packages folder of a Python environment that has it.")
    return msg
