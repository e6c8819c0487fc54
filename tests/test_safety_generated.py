"""The generated safety suite: random small rasters and options, and the invariants every run must keep.

Hypothesis builds a raster (data type, 1 to 6 bands, photometric and colour interpretations, nodata per band,
holes, NaN, an internal mask, an alpha band, scale/offset, metadata domains, sometimes a raster attribute
table; a GeoTIFF, a VRT of it or a VRT of single-band files), leaves side files of an earlier output at
OUTPUT, and picks creation options, --cog, --bands, --range and --overwrite. Whatever it draws, a run either

- refuses in one line starting with "error:", before the model is loaded, leaving the folder as it was; or
- writes an output that describes itself as the input does (size, documented differences aside: colour
  interpretation, nodata, scale, offset, units, descriptions, metadata domains, CRS), whose invalid pixels
  per band are exactly those over the input's invalid pixels, whose values are of the input's type (finite
  where valid), and beside which lies nothing but what the run wrote;

and no file it read changed. In CI the examples are fixed (derandomized) and few; ``make fuzz`` runs many
more with fresh randomness (``E2DIFFSR_FUZZ_EXAMPLES``). Hypothesis shrinks a failure to the smallest raster.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from osgeo import gdal, osr

from e2diffsr_core.__main__ import main

gdal.UseExceptions()
G = gdal
FUZZ = int(os.environ.get("E2DIFFSR_FUZZ_EXAMPLES", "0"))
SUITE = settings(
    max_examples=FUZZ or 6, derandomize=not FUZZ, deadline=None, database=None, print_blob=True,
    # every example runs the model: a long fuzz reports its first failing case as drawn rather than shrink it
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([] if FUZZ else [Phase.shrink]),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TYPES = [G.GDT_Byte, G.GDT_UInt16, G.GDT_Int16, G.GDT_Int32, G.GDT_Float32, G.GDT_Float64]
NUMPY = {G.GDT_Byte: np.uint8, G.GDT_UInt16: np.uint16, G.GDT_Int16: np.int16, G.GDT_Int32: np.int32,
         G.GDT_Float32: np.float32, G.GDT_Float64: np.float64}
LEVELS = {G.GDT_Byte: (10, 240), G.GDT_UInt16: (100, 5000), G.GDT_Int16: (-400, 600), G.GDT_Int32: (-5e4, 9e4),
          G.GDT_Float32: (-20.0, 330.0), G.GDT_Float64: (0.001, 0.9)}
NODATA = {G.GDT_Byte: [0, 255], G.GDT_UInt16: [0, 65535], G.GDT_Int16: [-9999, 0], G.GDT_Int32: [-99999],
          G.GDT_Float32: [-9999.0, float(np.float32(-3.4e38)), float("nan")], G.GDT_Float64: [-1.0, float("nan")]}
COLOURS = [G.GCI_Undefined, G.GCI_GrayIndex, G.GCI_RedBand, G.GCI_GreenBand, G.GCI_BlueBand]
OPTIONS = [[]] * 10 + [["COMPRESS=ZSTD"], ["COMPRESS=LZW"], ["COMPRESS=JPEG"], ["COMPRESS=WEBP"], ["NBITS=12"],
           ["BLOCKXSIZE=100"], ["TFW=YES"], ["PHOTOMETRIC=CIELAB"], ["PIXELTYPE=SIGNEDBYTE"], ["ALPHA=YES"],
           ["COMPRESS=LERC", "MAX_Z_ERROR=0.5"]]
SIDES = [None] * 8 + ["out.tif.aux.xml", "out.tif.ovr", "out.tif.msk", "out.tfw"]
SCALE = 2  # whole, so the output pixels over an input pixel are exactly a 2 x 2 block


@dataclass
class Case:
    dtype: int
    bands: int
    h: int
    w: int
    seed: int
    rgb: bool
    colours: list[int]
    alpha: bool
    nodata: list[float | None]          # per band; differing values only through the separate-band VRT
    holes: bool
    nan: bool
    mask: bool
    scale_offset: bool
    domains: bool
    rat: bool
    container: str                       # "tif", "vrt" or "separate"
    side: str | None
    overwrite: bool
    options: list[str]
    cog: bool
    select: list[int] | None
    ranges: str | None                   # None, "fit" or "huge"
    extra: dict = field(default_factory=dict)


@st.composite
def cases(draw) -> Case:
    dtype = draw(st.sampled_from(TYPES))
    n = draw(st.integers(1, 6))
    rgb = n >= 3 and dtype in (G.GDT_Byte, G.GDT_UInt16) and draw(st.booleans())
    alpha = n >= 2 and dtype in (G.GDT_Byte, G.GDT_UInt16) and draw(st.booleans())
    colours = [G.GCI_RedBand, G.GCI_GreenBand, G.GCI_BlueBand] if rgb else []
    colours += [draw(st.sampled_from(COLOURS)) for _ in range(n - len(colours))]
    if alpha:
        colours[-1] = G.GCI_AlphaBand
    container = draw(st.sampled_from(["tif", "tif", "vrt", "separate"]))
    kind = draw(st.sampled_from(["none", "one", "per band"] if container == "separate" else ["none", "one"]))
    if kind == "none":
        nodata = [None] * n
    elif kind == "one":
        nodata = [draw(st.sampled_from(NODATA[dtype]))] * n
    else:
        nodata = [draw(st.sampled_from([None, *NODATA[dtype]])) for _ in range(n)]
    select = None
    if draw(st.booleans()):
        select = draw(st.lists(st.integers(1, n), min_size=1, max_size=n, unique=True))
    return Case(
        dtype=dtype, bands=n, h=draw(st.integers(8, 14)), w=draw(st.integers(8, 14)), seed=draw(st.integers(0, 99)),
        rgb=rgb, colours=colours, alpha=alpha, nodata=nodata, holes=draw(st.booleans()),
        nan=dtype in (G.GDT_Float32, G.GDT_Float64) and draw(st.booleans()), mask=draw(st.booleans()),
        scale_offset=draw(st.booleans()), domains=draw(st.booleans()), rat=draw(st.integers(0, 19)) == 0,
        container=container, side=draw(st.sampled_from(SIDES)), overwrite=draw(st.booleans()),
        options=draw(st.sampled_from(OPTIONS)), cog=draw(st.integers(0, 4)) == 0, select=select,
        ranges=draw(st.sampled_from([None] * 6 + ["fit"] * 3 + ["huge"])),
    )


# -- building the input ---------------------------------------------------------------------------------------
def _values(case: Case, rng) -> np.ndarray:
    lo, hi = LEVELS[case.dtype]
    yy, xx = np.mgrid[0:case.h, 0:case.w]
    data = np.stack([lo + (hi - lo) * np.clip((np.sin(xx / (2 + b)) + np.cos(yy / 3) + 2) / 4
                                               + 0.05 * rng.standard_normal((case.h, case.w)), 0, 1)
                     for b in range(case.bands)])
    if case.alpha:
        data[-1] = np.where(rng.random((case.h, case.w)) < 0.2, 0, 255)
    data = data.astype(NUMPY[case.dtype])
    for b in range(case.bands):
        nd = case.nodata[b]
        if case.holes and nd is not None and not (case.alpha and b == case.bands - 1):
            y, x = rng.integers(0, case.h - 3), rng.integers(0, case.w - 3)
            data[b, y:y + 3, x:x + 2] = nd
        if case.nan and b % 2 == 0:
            data[b, rng.integers(0, case.h), rng.integers(0, case.w)] = np.nan
    return data


def _describe(ds, case: Case) -> None:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((500000.0, 2.0, 0.0, 4000000.0, 0.0, -2.0))
    if case.domains:
        ds.SetMetadata({"SATELLITEID": "S1", "CLOUDCOVER": "4"}, "IMAGERY")
        ds.SetMetadata({"NOTE": "kept"}, "CUSTOM")


def _describe_band(band, case: Case, b: int) -> None:
    if case.nodata[b] is not None:
        band.SetNoDataValue(case.nodata[b])
    band.SetColorInterpretation(case.colours[b])
    band.SetDescription(f"band {b + 1}")
    if case.scale_offset:
        band.SetScale(0.5 + b)
        band.SetOffset(-3.0)
        band.SetUnitType("m")
    if case.domains:
        band.SetMetadata({"WAVELENGTH": str(400 + 50 * b)}, "CALIBRATION")
    if case.rat and b == 0:
        rat = gdal.RasterAttributeTable()
        rat.CreateColumn("Value", gdal.GFT_Integer, gdal.GFU_MinMax)
        rat.CreateColumn("Class", gdal.GFT_String, gdal.GFU_Name)
        for i, name in enumerate(["water", "land"]):
            rat.SetValueAsInt(i, 0, i)
            rat.SetValueAsString(i, 1, name)
        band.SetDefaultRAT(rat)


def _tif(path: str, data: np.ndarray, case: Case, bands: range) -> str:
    options = ["PHOTOMETRIC=RGB" if case.rgb and len(bands) >= 3 else "PHOTOMETRIC=MINISBLACK"]
    if case.alpha and len(bands) > 1:
        options.append("ALPHA=YES" if case.rgb and len(bands) == 4 else "ALPHA=UNSPECIFIED")
    ds = gdal.GetDriverByName("GTiff").Create(path, case.w, case.h, len(bands), case.dtype, options=options)
    _describe(ds, case)
    for i, b in enumerate(bands):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[b])
        _describe_band(band, case, b)
    if case.mask and len(bands) == case.bands:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
        try:
            ds.CreateMaskBand(gdal.GMF_PER_DATASET)
            m = np.full((case.h, case.w), 255, np.uint8)
            m[: case.h // 3, case.w // 2:] = 0
            ds.GetRasterBand(1).GetMaskBand().WriteArray(m)
        finally:
            gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    ds = None
    return path


def build_input(folder: Path, case: Case) -> str:
    data = _values(case, np.random.default_rng(case.seed))
    if case.container == "separate":  # a VRT of single-band files: each band its own nodata
        files = [_tif(str(folder / f"b{b}.tif"), data, case, range(b, b + 1)) for b in range(case.bands)]
        path = str(folder / "in.vrt")
        vrt = gdal.BuildVRT(path, files, separate=True)
        _describe(vrt, case)
        for b in range(case.bands):
            _describe_band(vrt.GetRasterBand(b + 1), case, b)
        vrt = None
        return path
    tif = _tif(str(folder / "in.tif"), data, case, range(case.bands))
    if case.container == "vrt":
        path = str(folder / "in.vrt")
        gdal.Translate(path, tif, format="VRT")
        return path
    return tif


# -- what a user would see ------------------------------------------------------------------------------------
def _alpha_band(ds) -> int | None:
    alphas = [b for b in range(1, ds.RasterCount + 1)
              if ds.GetRasterBand(b).GetColorInterpretation() == G.GCI_AlphaBand]
    return alphas[-1] if alphas else None


def invalid(ds, bands: list[int], alpha: int | None) -> np.ndarray:
    """Per band: nodata value, NaN/infinity, a GDAL mask other than nodata, transparent alpha."""
    out = []
    for b in bands:
        band = ds.GetRasterBand(b)
        raw = band.ReadAsArray()
        bad = ~np.isfinite(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
        nd = band.GetNoDataValue()
        if nd is not None and not np.isnan(nd):
            bad |= raw == raw.dtype.type(nd)
        flags = band.GetMaskFlags()
        if not flags & (G.GMF_ALL_VALID | G.GMF_NODATA | G.GMF_ALPHA):
            bad |= band.GetMaskBand().ReadAsArray() == 0
        if alpha is not None:
            bad |= ds.GetRasterBand(alpha).ReadAsArray() == 0
        out.append(bad)
    return np.stack(out)


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def band_description(ds, b: int, alpha_as_data: bool, position: int) -> dict:
    band = ds.GetRasterBand(b)
    colour = band.GetColorInterpretation()
    if alpha_as_data and colour == G.GCI_AlphaBand:
        colour = G.GCI_Undefined
    if position == 1 and colour == G.GCI_Undefined:
        colour = G.GCI_GrayIndex  # an undefined first band of a grey-level file reads as Gray
    domains = {d: band.GetMetadata(d) for d in (band.GetMetadataDomainList() or [])
               if d not in ("", "IMAGE_STRUCTURE") and band.GetMetadata(d)}  # a VRT's empty LocationInfo
    return {"colour": colour, "nodata": band.GetNoDataValue(), "scale": band.GetScale() or 1.0,
            "offset": band.GetOffset() or 0.0, "unit": band.GetUnitType(), "description": band.GetDescription(),
            "domains": domains}


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def run_cli(args: list[str], model) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["superresolve", *args, "--model", str(model), "--quiet"])
    return rc, err.getvalue()


def _args(case: Case, src: str, out: Path) -> list[str]:
    args = [src, str(out), "--scale", str(SCALE)]
    args += [f"--co={o}" for o in case.options] + (["--cog"] if case.cog else [])
    args += ["--overwrite"] if case.overwrite else []
    if case.select is not None:
        args += ["--bands", ",".join(map(str, case.select))]
    chosen = case.select or [b + 1 for b in range(case.bands) if not (case.alpha and b == case.bands - 1)]
    if case.ranges == "fit":
        lo, hi = LEVELS[case.dtype]
        args += [f"--range={lo},{hi}"] * len(chosen)
    elif case.ranges == "huge":
        args += ["--range=-1e308,1e308"] * len(chosen)
    return args


def check_output(src: str, out: Path, case: Case) -> None:
    sds, ods = gdal.Open(src), gdal.Open(str(out))
    alpha = _alpha_band(sds)
    selected = case.select or [b for b in range(1, sds.RasterCount + 1) if b != alpha]
    alpha_as_data = alpha in selected
    if alpha_as_data:
        alpha = None
    out_alpha = _alpha_band(ods)
    assert (ods.RasterXSize, ods.RasterYSize) == (sds.RasterXSize * SCALE, sds.RasterYSize * SCALE)
    assert ods.RasterCount == len(selected) + (alpha is not None)
    assert (out_alpha is not None) == (alpha is not None)
    assert osr.SpatialReference(ods.GetProjection()).IsSame(osr.SpatialReference(sds.GetProjection()))
    for d in ("IMAGERY", "CUSTOM"):
        assert ods.GetMetadata(d) == sds.GetMetadata(d)
    for i, b in enumerate(selected):
        want, got = band_description(sds, b, alpha_as_data, i + 1), band_description(ods, i + 1, False, i + 1)
        assert ods.GetRasterBand(i + 1).DataType == sds.GetRasterBand(b).DataType
        if sds.GetRasterBand(b).DataType == G.GDT_Float32 and want["nodata"] is not None and got["nodata"] is not None:
            # GDAL writes a nodata value as text: equal as the band's Float32, which is what pixels compare with
            want["nodata"], got["nodata"] = float(np.float32(want["nodata"])), float(np.float32(got["nodata"]))
        if sds.GetRasterBand(b).DataType in (G.GDT_Float32, G.GDT_Float64):
            # docs/rasters.md: for floating point, "no nodata value" and NaN count as the same (NaN is invalid
            # either way), so a band without one may share the output's NaN
            want["nodata"], got["nodata"] = (math.nan if v is None else v for v in (want["nodata"], got["nodata"]))
        for key in want:
            assert _same(got[key], want[key]), (key, b, got[key], want[key])
    before = invalid(sds, selected, alpha)
    after = invalid(ods, list(range(1, len(selected) + 1)), out_alpha)
    expected = np.kron(before, np.ones((1, SCALE, SCALE), bool))
    assert np.array_equal(after, expected), f"validity differs in {int((after != expected).sum())} pixels"
    values = ods.ReadAsArray(band_list=list(range(1, len(selected) + 1))).reshape(after.shape)
    if values.dtype.kind == "f":
        assert np.isfinite(values[~after]).all()


# -- the suite ------------------------------------------------------------------------------------------------
@SUITE
@given(case=cases())
def test_every_run_refuses_cleanly_or_keeps_what_the_input_says(case, tiny_model_file):
    folder = Path(tempfile.mkdtemp(prefix="e2diffsr-gen-"))
    try:
        src = build_input(folder, case)
        if case.side:
            (folder / case.side).write_bytes(b"from an earlier file")
        out = folder / "out.tif"
        before = snapshot(folder)
        rc, err = run_cli(_args(case, src, out), tiny_model_file)
        assert "Traceback" not in err, err
        after = snapshot(folder)
        event("refused" if rc else "written")
        if rc != 0:
            lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
            assert len(lines) == 1, err
            assert "device:" not in err, f"refused only after the model was loaded: {err}"
            assert after == before, "a refused run changed the folder"
            return
        read = {n: h for n, h in before.items() if n != case.side}
        assert {n: after.get(n) for n in read} == read, "a file the run read changed"
        made = set(after) - set(read)
        allowed = {"out.tif", "out.tif.aux.xml"} | ({"out.tfw"} if "TFW=YES" in case.options else set())
        assert made <= allowed and "out.tif" in made, sorted(made)
        if case.side and case.side not in allowed:
            assert case.side not in after, f"{case.side} of an earlier file was left beside the output"
        elif case.side in after:  # the run wrote its own in its place
            assert after[case.side] != before[case.side]
        check_output(src, out, case)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
