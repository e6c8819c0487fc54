"""Find the engine and its dependencies from inside QGIS, and explain exactly what is missing.

QGIS runs plugins in its own Python (Debian: /usr/bin/python3; Windows: the OSGeo4W Python), which rarely has
PyTorch. This module must import with nothing but the standard library and PyQGIS, so that the provider
always loads and the algorithm can tell the user how to fix the environment.
"""

from __future__ import annotations

import importlib
import os
import platform
import site
import sys
import sysconfig
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
    for d in _extra_site_dirs():
        if os.path.isdir(d):
            site.addsitedir(d)  # also runs .pth files, so editable installs in a venv work
    # The plugin zip carries its own copy of the engine in lib/ (scripts/build_plugin.py); it must win over
    # any other installed version so the plugin and the engine always match. lib/ holds only e2diffsr_core,
    # so the plugin's own modules (plugin.py, provider.py...) never become top-level names.
    if (LIB_DIR / "e2diffsr_core" / "__init__.py").is_file() and str(LIB_DIR) not in sys.path:
        sys.path.insert(0, str(LIB_DIR))


def qgis_python() -> str:
    """The command that starts the Python interpreter QGIS embeds (sys.executable is QGIS itself)."""
    if os.name == "nt":
        return "python"  # in the OSGeo4W Shell, this is the Python QGIS uses
    exe = Path(sys.exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if exe.is_file():
        # Debian/Ubuntu: /usr/bin/python3.11 is what /usr/bin/python3 points at; name the stable link.
        short = exe.with_name(f"python{sys.version_info.major}")
        return str(short if short.is_file() and short.resolve() == exe.resolve() else exe)
    return f"python{sys.version_info.major}"


def _externally_managed() -> bool:
    """Debian 12+ and Ubuntu 23.04+ mark the system Python as managed by apt (PEP 668)."""
    try:
        return (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").is_file()
    except Exception:
        return False


def install_command(packages: list[str]) -> str:
    quoted = " ".join(f'"{p}"' if any(c in p for c in "<>=") else p for p in packages)
    if os.name == "nt":
        return f"python -m pip install {quoted}   (in the OSGeo4W Shell, as administrator; then restart QGIS)"
    flags = "--user --break-system-packages" if _externally_managed() else "--user"
    where = "macOS" if platform.system() == "Darwin" else "Linux"
    return f"{qgis_python()} -m pip install {flags} {quoted}   ({where}; then restart QGIS)"


def _try(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, but also a broken binary (OSError, RuntimeError)
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def problem() -> str | None:
    """None when the engine can run here, else one message: what is missing and the command to install it."""
    add_paths()
    # QGIS may embed an older Python than the project targets (e.g. 3.9 in older OSGeo4W builds).
    if sys.version_info < (3, 10):  # noqa: UP036
        return (f"E2DiffSR needs Python 3.10 or newer, but this QGIS runs Python {platform.python_version()}; "
                "install a QGIS build with a newer Python (e.g. a current OSGeo4W or QGIS 3.34+).")
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
        if err is None:
            return None
        missing.append(f"the e2diffsr_core engine ({err}); reinstall the plugin from its zip")
    where = f"Python {platform.python_version()} in {sys.exec_prefix}"
    msg = f"E2DiffSR cannot run: the Python that QGIS uses ({where}) lacks " + "; ".join(missing) + "."
    if packages:
        msg += " Install it with: " + install_command(packages)
        msg += (f". Or set the environment variable {ENV_VAR} (or the QGIS setting {SETTING}) to the "
                "site-packages folder of a Python environment that has it.")
    return msg
