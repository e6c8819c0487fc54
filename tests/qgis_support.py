"""Shared pieces of the QGIS tests: the registered provider, small test rasters, run helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from osgeo import gdal, osr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the plugin package qgis_plugin/ lives at the project root

from qgis.core import QgsProcessingFeedback  # noqa: E402

from qgis_plugin.plugin import E2DiffSRPlugin  # noqa: E402

ALG = "e2diffsr:superresolve"
SAMPLE = ROOT / "e2diffsr_core" / "data" / "sample.tif"

gdal.UseExceptions()


@pytest.fixture(scope="module")
def provider(qgis_processing):
    """The plugin's provider, registered the way QGIS does it (initProcessing)."""
    plugin = E2DiffSRPlugin(None)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """Small georeferenced RGB crops of the bundled sample (EPSG:32617)."""
    folder = tmp_path_factory.mktemp("rasters")
    crops = {"a48": [100, 100, 48, 48], "b40x32": [200, 150, 40, 32], "c64": [0, 0, 64, 64]}
    for name, win in crops.items():
        gdal.Translate(str(folder / f"{name}.tif"), str(SAMPLE), srcWin=win)
    return {name: folder / f"{name}.tif" for name in crops}


def run(params, feedback=None):
    import processing

    return processing.run(ALG, params, feedback=feedback or QgsProcessingFeedback())


def check_output(path, source, scale):
    """Size int(W*s) x int(H*s), same CRS and origin, pixel size scaled by W/W_out and H/H_out."""
    src, out = gdal.Open(str(source)), gdal.Open(str(path))
    w, h = src.RasterXSize, src.RasterYSize
    assert (out.RasterXSize, out.RasterYSize) == (int(w * scale), int(h * scale))
    assert out.RasterCount == src.RasterCount
    assert out.GetRasterBand(1).DataType == src.GetRasterBand(1).DataType
    s_crs, o_crs = osr.SpatialReference(src.GetProjection()), osr.SpatialReference(out.GetProjection())
    assert s_crs.GetAuthorityCode(None) == "32617" and o_crs.IsSame(s_crs)
    sg, og = src.GetGeoTransform(), out.GetGeoTransform()
    assert og[0] == pytest.approx(sg[0]) and og[3] == pytest.approx(sg[3])
    assert og[1] == pytest.approx(sg[1] * w / out.RasterXSize)
    assert og[5] == pytest.approx(sg[5] * h / out.RasterYSize)
    stats = out.GetRasterBand(1).ComputeRasterMinMax(False)
    assert stats[1] > stats[0]  # an image, not a constant


def leftovers(folder: Path, keep=()):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


class Recorder(QgsProcessingFeedback):
    """Collects progress and log lines (in order); optionally cancels at the first progress report above 0."""

    def __init__(self, cancel_at_first_progress=False):
        super().__init__()
        self.progress, self.infos, self.lines = [], [], []
        self.cancel_at_first_progress = cancel_at_first_progress
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value):
        self.progress.append(value)
        if self.cancel_at_first_progress and value > 0:
            self.cancel()

    def pushInfo(self, info):  # noqa: N802 (Qt name)
        self.infos.append(info)
        self.lines.append(("info", info))
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802 (Qt name)
        self.lines.append(("warning", warning))
        super().pushWarning(warning)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 (Qt names)
        self.lines.append(("error", error))
        super().reportError(error, fatalError)
