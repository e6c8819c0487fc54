"""Raster input and output for super-resolution: windowed GDAL reads and writes, nothing else.

Pure GDAL + numpy (no torch, no Qt), so front ends and tests can use it without the model. By role:

- :mod:`.reader`: opening, band selection, windowed normalised reads, every kind of invalid pixel;
- :mod:`.values`: data types, per-band value ranges and the conversion back to the output's type;
- :mod:`.bands`: band groups of three for the model, and back;
- :mod:`.georef`: output size, geotransform / GCPs / RPCs of the output, output-to-input pixel mapping;
- :mod:`.align`: an output on another raster's grid (``--align-to``): its size, geotransform and mapping;
- :mod:`.writer`: the one safe writer (GeoTIFF or COG);
- :mod:`.files`, :mod:`.options`, :mod:`.gdal_errors`: file handling (same-file checks, the run folder,
  moving into place), creation options tried out before any work, GDAL failures that cannot pass unseen.

Every problem a user can fix raises :class:`~e2diffsr_core.errors.E2DiffSRError` with a one-line message.
What happens to masks, alpha, NaN, nodata, scale/offset, RPCs and GCPs, value ranges and mixed types is
described in docs/rasters.md.
"""

from .bands import make_groups, ungroup
from .georef import scaled_geotransform, size_for_gdal
from .reader import STATS_MAX_PIXELS, RasterReader
from .values import STATS_PERCENTILES, SUPPORTED_TYPES, BandRange
from .writer import RasterWriter

__all__ = [
    "BandRange", "RasterReader", "RasterWriter", "STATS_MAX_PIXELS", "STATS_PERCENTILES", "SUPPORTED_TYPES",
    "make_groups", "scaled_geotransform", "size_for_gdal", "ungroup",
]
