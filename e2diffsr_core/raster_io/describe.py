"""What the output says about itself besides pixels and georeferencing: metadata domains, one nodata value.

Metadata: every domain of the dataset and of each band is carried over (IMAGERY, custom domains, XMP and
other ``xml:`` domains), except those that describe the file's encoding or pixel grid and would be false of
the output: IMAGE_STRUCTURE (GDAL writes the output's own), SUBDATASETS, DERIVED_SUBDATASETS, GEOLOCATION
(arrays on the input's pixel grid), RPC (scaled to the output by :mod:`.georef`), and per-band statistics.

Nodata: a GeoTIFF holds one nodata value for all bands. Bands with different nodata values cannot be written
without turning holes of one band into data of another, so they are refused (:func:`check_one_nodata`).
"""

from __future__ import annotations

import math
import re

from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError

SKIP_DOMAINS = {"IMAGE_STRUCTURE", "SUBDATASETS", "DERIVED_SUBDATASETS", "GEOLOCATION", "RPC"}
_STATISTICS = re.compile(r"^STATISTICS_")


def copy_metadata(src, dst) -> None:
    """Every metadata domain of ``src`` (a dataset or a band) that is still true of ``dst``."""
    for domain in src.GetMetadataDomainList() or []:
        if domain in SKIP_DOMAINS:
            continue
        if domain.startswith("xml:"):
            md = src.GetMetadata(domain)
        else:
            md = {k: v for k, v in (src.GetMetadata(domain) or {}).items() if not _STATISTICS.match(k)}
        if md:
            dst.SetMetadata(md, domain)


def carry_lost_metadata(source: str, cog: str) -> None:
    """The COG driver of GDAL before 3.8 copies only some metadata domains; the others are added through GDAL's
    own side file (``.aux.xml``, written on closing a file opened read-only), which leaves the COG's layout
    intact and is published with the output."""
    src, dst = gdal.Open(source), gdal.Open(cog)
    pairs = [(src, dst)] + [(src.GetRasterBand(b), dst.GetRasterBand(b)) for b in range(1, src.RasterCount + 1)]
    for s_obj, d_obj in pairs:
        for domain in s_obj.GetMetadataDomainList() or []:
            if domain not in SKIP_DOMAINS and s_obj.GetMetadata(domain) and d_obj.GetMetadata(domain) != \
                    s_obj.GetMetadata(domain):
                d_obj.SetMetadata(s_obj.GetMetadata(domain), domain)
    pairs = None
    src = dst = None


def _key(v: float | None, is_float: bool):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN" if is_float else None  # NaN marks a float band invalid with or without a nodata value
    return float(v)


def check_one_nodata(nodata: list[float | None], bands: list[int], is_float: bool, path: str) -> None:
    """Refuse selected ``bands`` whose nodata values differ (one set and one not counts as different)."""
    keys = [_key(v, is_float) for v in nodata]
    if len(set(keys)) <= 1:
        return
    shown = ", ".join(f"band {b}: {'none' if v is None else f'{v:g}'}" for b, v in zip(bands, nodata, strict=True))
    raise E2DiffSRError(
        f"the selected bands of {path} have different nodata values ({shown}), but a GeoTIFF holds one nodata "
        "value for all its bands, so holes of one band would become data of another; super-resolve bands that "
        "share one separately (--bands), or give every band one nodata value first (gdalwarp -dstnodata VALUE "
        "IN OUT.tif turns each band's holes into it)")
