"""E2DiffSR super-resolution for QGIS: a Processing provider over the e2diffsr_core engine."""

from . import deps

# Before anything imports the engine: the bundled e2diffsr_core and any configured site-packages.
deps.add_paths()


def classFactory(iface):  # noqa: N802 (name required by QGIS)
    from .plugin import E2DiffSRPlugin

    return E2DiffSRPlugin(iface)
