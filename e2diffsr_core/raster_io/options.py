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


def gtiff_options(dtype: int, user: dict[str, str], rgb: bool) -> dict[str, str]:
    """Our GeoTIFF defaults (tiled, DEFLATE with a predictor, BIGTIFF when needed), overridden by ``user``."""
    opts = {
        "TILED": "YES", "BLOCKXSIZE": str(BLOCK), "BLOCKYSIZE": str(BLOCK), "COMPRESS": "DEFLATE",
        "PREDICTOR": "3" if is_float_type(dtype) else "2", "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",  # compress blocks on every core: with a GPU, writing is the bottleneck
    }
    if rgb and dtype in (gdal.GDT_Byte, gdal.GDT_UInt16):  # keeps R,G,B interpretation inside the TIFF itself
        opts["PHOTOMETRIC"] = "RGB"
    if user.get("COMPRESS", "DEFLATE").upper() not in PREDICTOR_CODECS and "PREDICTOR" not in user:
        del opts["PREDICTOR"]
    opts.update(user)
    return opts


def cog_options(user: dict[str, str]) -> dict[str, str]:
    opts = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BIGTIFF": "IF_SAFER"}
    if user.get("COMPRESS", "DEFLATE").upper() not in PREDICTOR_CODECS and "PREDICTOR" not in user:
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


def probe(dtype: int, bands: int, gtiff: dict[str, str], cog: dict[str, str] | None, mask: bool,
          label: str, path: str) -> None:
    """Write a small file with these options in memory; a GDAL failure becomes a clear error now.

    This is what catches a codec that cannot encode the data: with several compression threads (our default)
    GDAL reports such a failure from a worker thread, where no error handler of ours can see it.
    """
    mem = f"/vsimem/e2diffsr-probe-{secrets.token_hex(4)}.tif"
    cog_mem = mem.replace(".tif", ".cog.tif")
    size = min(2 * BLOCK, 96)
    # one thread: GDAL reports a codec's failure from its worker threads past any error handler
    single = as_list({k: v for k, v in gtiff.items() if k != "NUM_THREADS"})
    errors: list[str] = []
    use_exceptions = gdal.GetUseExceptions()
    gdal.DontUseExceptions()  # failures come through the handler; no traceback keeps a dataset alive
    try:
        with collect_failures(errors, quiet=True):
            ds = gdal.GetDriverByName("GTiff").Create(mem, size, size, bands, dtype, options=single)
            if ds is not None:
                if mask:
                    with internal_masks():
                        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
                values = _probe_values(dtype, (size, size))
                for i in range(bands):
                    ds.GetRasterBand(i + 1).WriteArray(values)
                ds.FlushCache()
            ds = None
            if not errors and cog is not None:
                out = gdal.Translate(cog_mem, mem, format="COG", creationOptions=as_list(cog))
                if out is None and not errors:
                    errors.append(gdal.GetLastErrorMsg() or "GDAL gave no reason")
                out = None
    finally:
        gdal.ErrorReset()
        if use_exceptions:
            gdal.UseExceptions()
        for m in (mem, cog_mem):
            if gdal.VSIStatL(m) is not None:
                gdal.Unlink(m)
    errors = [e.replace(f"{mem}: ", "").replace(f"{cog_mem}: ", "").replace(mem, "the file") for e in errors]
    if errors:
        fmt = "COG" if cog is not None else "GeoTIFF"
        chosen = ", ".join(f"{k}={v}" for k, v in (cog if cog is not None else gtiff).items()
                           if k in ("COMPRESS", "PREDICTOR", "PHOTOMETRIC", "QUALITY", "JPEG_QUALITY", "NBITS"))
        raise E2DiffSRError(
            f"{label} {path}: the {fmt} options ({chosen}) cannot store {bands} band(s) of "
            f"{gdal.GetDataTypeName(dtype)} data (GDAL: {errors[0]}); choose another compression, "
            "e.g. COMPRESS=DEFLATE")
