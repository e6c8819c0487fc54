"""Colour interpretation of the output's bands: every band comes back as the input described it.

A GeoTIFF stores colour meaning in two tags, PHOTOMETRIC (how the first bands read) and EXTRASAMPLES (what
each further band is, alpha or unspecified); GDAL fills both with guesses when it is not told: a 3- or 4-band
Byte file becomes RGB, and the fourth band of an RGB file becomes alpha. An RGB + NIR image tagged
MINISBLACK would then come back as Gray, Green, Blue, Alpha, its NIR band turned into transparency. So the
writer states PHOTOMETRIC and ALPHA itself, sets every band's interpretation (Undefined included), and the
creation options are tried out with these colours before any work (:func:`check_colours`).
"""

from __future__ import annotations

from osgeo import gdal

RGB = [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand]
#: Types a TIFF reader accepts as RGB samples (others keep PHOTOMETRIC=MINISBLACK and name colours per band).
_RGB_TYPES = (gdal.GDT_Byte, gdal.GDT_UInt16)


def photometric_options(colours: list[int], dtype: int, user: dict[str, str]) -> dict[str, str]:
    """PHOTOMETRIC (and ALPHA) for an output whose bands have ``colours`` (alpha band included), unless the
    user chose them: RGB when the first three bands are red, green, blue; MINISBLACK otherwise, so that GDAL
    never guesses RGB for three or four bands of grey levels."""
    out: dict[str, str] = {}
    rgb = len(colours) >= 3 and colours[:3] == RGB and dtype in _RGB_TYPES
    if "PHOTOMETRIC" not in user:
        if rgb:
            out["PHOTOMETRIC"] = "RGB"
        elif len(colours) > 1:
            out["PHOTOMETRIC"] = "MINISBLACK"
    first_extra = 3 if (user.get("PHOTOMETRIC", out.get("PHOTOMETRIC", "")).upper() in ("RGB", "YCBCR")) else 1
    if "ALPHA" not in user and len(colours) > first_extra and colours[first_extra] != gdal.GCI_AlphaBand \
            and (rgb or out.get("PHOTOMETRIC")):
        # GDAL marks the first extra band of a 4-band RGB file as alpha unless told otherwise
        out["ALPHA"] = "UNSPECIFIED"
    return out


def apply_colours(ds, colours: list[int]) -> None:
    """Set every band's colour interpretation, Undefined included (clearing a default alpha)."""
    for i, colour in enumerate(colours):
        band = ds.GetRasterBand(i + 1)
        if band.GetColorInterpretation() != colour:
            band.SetColorInterpretation(colour)


def colour_names(colours) -> str:
    return ", ".join(gdal.GetColorInterpretationName(c) for c in colours)


def same_colours(wanted: list[int], found: list[int]) -> bool:
    """True when ``found`` reads as ``wanted``; GDAL reports an undefined first band of a grey-level file as
    Gray, which means the same."""
    if len(wanted) != len(found):
        return False
    for i, (w, f) in enumerate(zip(wanted, found, strict=True)):
        if w != f and not (i == 0 and {w, f} == {gdal.GCI_Undefined, gdal.GCI_GrayIndex}):
            return False
    return True


def colours_of(ds) -> list[int]:
    return [ds.GetRasterBand(i + 1).GetColorInterpretation() for i in range(ds.RasterCount)]
