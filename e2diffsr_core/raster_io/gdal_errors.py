"""GDAL error handling shared by reading and writing: one-line messages, failures that cannot pass unseen.

GDAL reports some failures only through its error handler (a block that a codec cannot compress is reported
while the block cache is flushed, and the call itself may still succeed), so every write, flush and close of an
output goes through :func:`collect_failures`, which turns any such report into an exception.
"""

from __future__ import annotations

import contextlib

from osgeo import gdal

gdal.UseExceptions()


def one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def collect_failures(errors: list[str] | None = None, quiet: bool = False):
    """Collect every GDAL failure reported inside the block; raise RuntimeError with the first one afterwards.

    With ``quiet`` the failures are only collected into ``errors`` (for clean-up paths that must not raise).
    """
    errors = [] if errors is None else errors

    def handler(err_class, _err_no, message):
        if err_class >= gdal.CE_Failure:
            errors.append(one_line(message) or "GDAL gave no reason")

    gdal.PushErrorHandler(handler)
    try:
        yield errors
    except RuntimeError as exc:  # a call that raised also went through the handler; keep GDAL's own words
        if not errors:
            errors.append(one_line(exc) or "GDAL gave no reason")
        if not quiet:
            raise RuntimeError(errors[0]) from None
    finally:
        gdal.PopErrorHandler()
    if errors and not quiet:
        raise RuntimeError(errors[0])


def close_dataset(holder: list) -> list[str]:
    """Close the dataset held (only) in ``holder``; return the GDAL failure messages closing produced.

    Closing flushes cached blocks, so it can fail (e.g. disk full, a codec that cannot encode the data). The
    bindings cannot raise from a destructor, so exceptions are paused while closing and the messages collected.
    """
    errors: list[str] = []
    use_exceptions = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    try:
        with collect_failures(errors, quiet=True):
            holder.clear()
    finally:
        gdal.ErrorReset()
        if use_exceptions:
            gdal.UseExceptions()
    return errors


@contextlib.contextmanager
def internal_masks():
    """Masks created inside the GeoTIFF itself (not as a side ``.msk`` file that moving the file would lose)."""
    old = gdal.GetConfigOption("GDAL_TIFF_INTERNAL_MASK")
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
    try:
        yield
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", old)
