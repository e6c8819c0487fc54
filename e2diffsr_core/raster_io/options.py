"""GeoTIFF / COG creation options: parsed against the driver, completed with our defaults, and tried out on
a small in-memory file before any computation, so that a codec that cannot encode the data (JPEG on UInt16,
WEBP on two bands, ...) is refused up front instead of after the whole run."""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET

import numpy as np
from osgeo import gdal

from e2diffsr_core.errors import E2DiffSRError

from .colours import apply_colours, colour_names, colours_of, photometric_options, same_colours
from .gdal_errors import collect_failures, internal_masks
from .values import is_float_type, numpy_type, type_limits

BLOCK = 512
#: Codecs that take a PREDICTOR; with others (JPEG, WEBP, LERC, ...) the default predictor is dropped.
PREDICTOR_CODECS = ("DEFLATE", "LZW", "ZSTD", "LZMA")
_OPTION_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)=(.*)$")
_BOOL_WORDS = {"YES", "NO", "TRUE", "FALSE", "ON", "OFF", "1", "0"}
_specs: dict[str, dict[str, tuple[str, set[str]]]] = {}
_LABEL = {"GTiff": "GeoTIFF", "COG": "COG"}
_DOC = {"GTiff": "https://gdal.org/drivers/raster/gtiff.html", "COG": "https://gdal.org/drivers/raster/cog.html"}


def _driver_options(driver_name: str) -> dict[str, tuple[str, set[str]]]:
    """{OPTION: (type, allowed values upper-cased or empty)} from the driver's creation option list."""
    if driver_name not in _specs:
        spec: dict[str, tuple[str, set[str]]] = {}
        xml = gdal.GetDriverByName(driver_name).GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            root = None
        for opt in root.iter("Option") if root is not None else ():
            values = set()
            for v in opt.iter("Value"):
                if v.text:
                    values.add(v.text.strip().upper())
                if v.get("alias"):
                    values.add(v.get("alias").strip().upper())
            spec[opt.get("name", "").upper()] = (opt.get("type", "string"), values)
        _specs[driver_name] = spec
    return _specs[driver_name]


def _check_value(key: str, value: str, kind: str, allowed: set[str]) -> None:
    if allowed and value.upper() not in allowed:
        raise E2DiffSRError(
            f"invalid value {value!r} for creation option {key}; use one of {', '.join(sorted(allowed))}")
    if kind == "int" and not re.fullmatch(r"[+-]?\d+", value):
        raise E2DiffSRError(f"creation option {key} needs a whole number, got {value!r}")
    if kind == "float":
        try:
            float(value)
        except ValueError:
            raise E2DiffSRError(f"creation option {key} needs a number, got {value!r}") from None
    if kind == "boolean" and value.upper() not in _BOOL_WORDS:
        raise E2DiffSRError(f"creation option {key} needs YES or NO, got {value!r}")


def parse_creation_options(options, driver_name: str) -> dict[str, str]:
    """Validate KEY=VALUE creation options against the driver; returns {KEY: VALUE} (keys upper-cased)."""
    if isinstance(options, str):
        options = [options]
    spec = _driver_options(driver_name)
    parsed: dict[str, str] = {}
    for opt in options or ():
        m = _OPTION_RE.match(opt.strip()) if isinstance(opt, str) else None
        if m is None:
            raise E2DiffSRError(f"malformed creation option {opt!r}; write it as KEY=VALUE, e.g. ZLEVEL=9")
        key, value = m.group(1).upper(), m.group(2).strip()
        if spec:
            if key not in spec:
                raise E2DiffSRError(f"unknown {_LABEL[driver_name]} creation option {key}; "
                                    f"see {_DOC[driver_name]} for the valid ones")
            _check_value(key, value, *spec[key])
        parsed[key] = value
    return parsed


def gtiff_options(dtype: int, user: dict[str, str], colours: list[int]) -> dict[str, str]:
    """Our GeoTIFF defaults (tiled, DEFLATE with a predictor, BIGTIFF when needed, PHOTOMETRIC and ALPHA from
    the bands' ``colours``, see :mod:`.colours`), overridden by ``user``."""
    opts = {
        "TILED": "YES", "BLOCKXSIZE": str(BLOCK), "BLOCKYSIZE": str(BLOCK), "COMPRESS": "DEFLATE",
        "PREDICTOR": "3" if is_float_type(dtype) else "2", "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",  # compress blocks on every core: with a GPU, writing is the bottleneck
    }
    opts.update(photometric_options(colours, dtype, user))
    # our own predictor must not clash with a codec or a bit depth the user chose (GDAL would refuse the pair)
    if (user.get("COMPRESS", "DEFLATE").upper() not in PREDICTOR_CODECS or "NBITS" in user) and "PREDICTOR" not in user:
        del opts["PREDICTOR"]
    if user.get("COMPRESS", "").upper().startswith("LERC") and "INTERLEAVE" not in user:
        opts["INTERLEAVE"] = "BAND"  # GDAL 3.6 wrote LERC pixel-interleaved tiles of a masked raster unreadably
    opts.update(user)
    return opts


def cog_options(user: dict[str, str]) -> dict[str, str]:
    opts = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BIGTIFF": "IF_SAFER"}
    if (user.get("COMPRESS", "DEFLATE").upper() not in PREDICTOR_CODECS or "NBITS" in user) and "PREDICTOR" not in user:
        del opts["PREDICTOR"]
    opts.update(user)
    return opts


def as_list(opts: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in opts.items()]


def _probe_values(dtype: int, shape) -> np.ndarray:
    """A gradient across the data type's range (the codec sees realistic, varied values)."""
    limits = type_limits(dtype)
    lo, hi = (0.0, 1000.0) if limits is None else (max(limits[0], 0.0), min(limits[1], 60000.0))
    ramp = np.linspace(lo, hi, shape[-1] * shape[-2]).reshape(shape[-2:])
    return np.broadcast_to(ramp, shape).astype(numpy_type(dtype))


def _probe_write(mem: str, cog_mem: str, dtype: int, colours: list[int], gtiff, cog, mask: bool,
                 errors: list[str]) -> list[int] | None:
    """Write the probe file (and its COG); the colours GDAL reads back from the finished file."""
    size = min(2 * BLOCK, 96)
    # one thread: GDAL reports a codec's failure from its worker threads past any error handler
    single = as_list({k: v for k, v in gtiff.items() if k != "NUM_THREADS"})
    with collect_failures(errors, quiet=True):
        ds = gdal.GetDriverByName("GTiff").Create(mem, size, size, len(colours), dtype, options=single)
        if ds is not None:
            apply_colours(ds, colours)
            if mask:
                with internal_masks():
                    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
            values = _probe_values(dtype, (size, size))
            for i in range(len(colours)):
                ds.GetRasterBand(i + 1).WriteArray(values)
            ds.FlushCache()
        ds = None
        if not errors and cog is not None:
            out = gdal.Translate(cog_mem, mem, format="COG", creationOptions=as_list(cog))
            if out is None and not errors:
                errors.append(gdal.GetLastErrorMsg() or "GDAL gave no reason")
            out = None
        if errors:
            return None
        ds = gdal.Open(cog_mem if cog is not None else mem)
        found = None if ds is None else colours_of(ds)
        ds = None
    return found


def probe(dtype: int, colours: list[int], gtiff: dict[str, str], cog: dict[str, str] | None, mask: bool,
          label: str, path: str) -> None:
    """Write a small file with these options in memory, its bands with ``colours``; a GDAL failure, or colours
    that do not read back as they were set, become a clear error now.

    This is what catches a codec that cannot encode the data: with several compression threads (our default)
    GDAL reports such a failure from a worker thread, where no error handler of ours can see it.
    """
    mem = f"/vsimem/e2diffsr-probe-{secrets.token_hex(4)}.tif"
    cog_mem = mem.replace(".tif", ".cog.tif")
    errors: list[str] = []
    use_exceptions = gdal.GetUseExceptions()
    gdal.DontUseExceptions()  # failures come through the handler; no traceback keeps a dataset alive
    try:
        found = _probe_write(mem, cog_mem, dtype, colours, gtiff, cog, mask, errors)
    finally:
        gdal.ErrorReset()
        if use_exceptions:
            gdal.UseExceptions()
        for m in (mem, cog_mem):
            for f in (m, m + ".aux.xml"):
                if gdal.VSIStatL(f) is not None:
                    gdal.Unlink(f)
    fmt, opts = ("COG", cog) if cog is not None else ("GeoTIFF", gtiff)
    chosen = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in _OUR_PLUMBING)
    errors = [e.replace(f"{mem}: ", "").replace(f"{cog_mem}: ", "").replace(mem, "the file") for e in errors]
    if errors:
        codec = _is_codec_failure(opts.get("COMPRESS", "DEFLATE"), errors[0])
        hint = "choose another compression, e.g. COMPRESS=DEFLATE" if codec else "change or leave out these options"
        raise E2DiffSRError(
            f"{label} {path}: the {fmt} options ({chosen}) cannot store {len(colours)} band(s) of "
            f"{gdal.GetDataTypeName(dtype)} data (GDAL: {errors[0]}); {hint}")
    if found is not None and not same_colours(colours, found):
        raise E2DiffSRError(
            f"{label} {path}: with the {fmt} options ({chosen}) the bands would read back as {colour_names(found)} "
            f"instead of {colour_names(colours)}; leave out the PHOTOMETRIC and ALPHA options (the output takes the "
            "input's colour interpretation by itself)")


#: Options that say how to write, not what: left out of messages about what the options change.
_OUR_PLUMBING = ("NUM_THREADS", "BIGTIFF", "TILED")


def _is_codec_failure(codec: str, message: str) -> bool:
    """Whether GDAL's message blames the codec the user chose (only then is "another compression" the advice)."""
    low, codec = message.lower(), codec.lower()
    return codec != "deflate" and (codec.split("_")[0] in low or "compress" in low or "codec" in low)


# -- what the options would change ----------------------------------------------------------------------------
#: COG options that put the output on another grid (reprojected, resampled): never this tool's output.
COG_REGRID = ("TILING_SCHEME", "TARGET_SRS", "RES", "EXTENT", "ALIGNED_LEVELS", "ZOOM_LEVEL", "ZOOM_LEVEL_STRATEGY")


def lossy_codec(opts: dict[str, str]) -> str | None:
    """The lossy codec these options choose (``COMPRESS=JPEG``, lossy WEBP or LERC), else None."""
    codec = opts.get("COMPRESS", "").upper()
    lossless_webp = opts.get("WEBP_LOSSLESS", "NO").upper() in ("YES", "TRUE", "ON", "1")
    if codec == "JPEG" or (codec == "WEBP" and not lossless_webp):
        return f"COMPRESS={codec}"
    if codec.startswith("LERC") and float(opts.get("MAX_Z_ERROR", "0") or 0) > 0:
        return f"COMPRESS={codec} with MAX_Z_ERROR={opts['MAX_Z_ERROR']}"
    return None


def check_lossy(user: dict[str, str], validity: str | None) -> None:
    """Refuse a lossy codec for an output whose validity lives in its values (a nodata value or an alpha band,
    described by ``validity``): the codec would blur holes into data. An internal mask is stored losslessly
    whatever the codec, so it needs no check."""
    codec = lossy_codec(user)
    if codec and validity:
        raise E2DiffSRError(f"{codec} is lossy: it would change {validity}, so invalid pixels would read back as "
                            "data (and data as invalid); choose a lossless codec, e.g. COMPRESS=DEFLATE or ZSTD")


def check_meaning(user: dict[str, str], cog: bool, dtype: int, data_max: float | None) -> None:
    """Refuse options that would change what the output means or that GDAL refuses, each with its real cause:
    colour spaces and pixel types that read back as other values, a bit depth below the data's largest value
    (``data_max``), a block size GDAL cannot tile with, a COG on another grid."""
    photometric = user.get("PHOTOMETRIC", "").upper()
    if photometric in ("CIELAB", "ICCLAB", "ITULAB", "PALETTE"):
        raise E2DiffSRError(f"PHOTOMETRIC={photometric} reinterprets the band values, which would read back "
                            "different; leave PHOTOMETRIC out (the output takes the input's colours by itself)")
    if photometric == "YCBCR" and user.get("COMPRESS", "").upper() != "JPEG":
        raise E2DiffSRError("PHOTOMETRIC=YCBCR is only written together with COMPRESS=JPEG (and 3 Byte bands); "
                            "add COMPRESS=JPEG or leave PHOTOMETRIC out")
    if user.get("PIXELTYPE", "DEFAULT").upper() == "SIGNEDBYTE":
        raise E2DiffSRError("PIXELTYPE=SIGNEDBYTE would make values above 127 read back as negative numbers; "
                            "leave PIXELTYPE out (the output keeps the input's data type)")
    _check_nbits(user.get("NBITS"), dtype, data_max)
    _check_blocks(user, cog)
    regrid = [k for k in COG_REGRID if k in user and not (k == "TILING_SCHEME" and user[k].upper() == "CUSTOM")]
    if cog and regrid:
        raise E2DiffSRError(f"the COG option {regrid[0]}={user[regrid[0]]} would reproject or resample the output "
                            "onto another grid; leave it out and reproject the output afterwards with gdalwarp")


def _check_nbits(nbits: str | None, dtype: int, data_max: float | None) -> None:
    if nbits is None:
        return
    n, limits = int(nbits), type_limits(dtype)
    width = 8 * numpy_type(dtype).itemsize
    if n >= width:
        return
    name = gdal.GetDataTypeName(dtype)
    if limits is None or limits[0] < 0:
        what = "as half-precision floats" if limits is None else "with their sign"
        raise E2DiffSRError(f"NBITS={n} cannot store {name} values unchanged ({what}); leave NBITS out")
    top = 2**n - 1
    if data_max is None or data_max > top:
        seen = "" if data_max is None else f" and the input (with its nodata value) reaches {data_max:g}"
        raise E2DiffSRError(f"NBITS={n} stores values up to {top} only, but the output is {name}{seen}; "
                            "leave NBITS out or give a bit depth that holds the data")


def _check_blocks(user: dict[str, str], cog: bool) -> None:
    tiled = cog or user.get("TILED", "YES").upper() in ("YES", "TRUE", "ON", "1")
    for key in ("BLOCKSIZE",) if cog else ("BLOCKXSIZE", "BLOCKYSIZE") if tiled else ():  # strips: any height
        if key in user and (int(user[key]) < 16 or int(user[key]) % 16):
            raise E2DiffSRError(f"{key}={user[key]}: tiles must be a multiple of 16 pixels a side; use e.g. "
                                f"{key}=256 or {key}=512")
