"""Nothing lost, round two: ordinary 4-band imagery, side files of earlier files, codecs and creation options,
thematic rasters, values that overflow. Every case writes real GDAL files and runs the command line with a
tiny model, then reads back what a user (or the next tool) would see.
"""

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from raster_support import make_raster
from test_data_safety import cli, stop_once_running
from test_data_safety import one_error as base_one_error
from test_data_safety import texture as base_texture

from e2diffsr_core.__main__ import main

gdal.UseExceptions()
GT = (500000.0, 2.0, 0.0, 4000000.0, 0.0, -2.0)
make = functools.partial(make_raster, gt=GT)
G = gdal


texture = functools.partial(base_texture, h=16, w=20)  # smaller pictures: every case runs the model


def one_error(rc, err, *expect):
    """The first round's one-line refusal, made before the model was loaded."""
    line = base_one_error(rc, err, *expect)
    assert "device:" not in err
    return line


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def colours(path):
    ds = gdal.Open(str(path))
    return [gdal.GetColorInterpretationName(ds.GetRasterBand(i + 1).GetColorInterpretation())
            for i in range(ds.RasterCount)]


# -- 1. colour interpretation of every band comes back as it was ----------------------------------------------
@pytest.mark.parametrize("n, dtype, photometric, colour, cog", [
    (4, G.GDT_Byte, "MINISBLACK", None, False),                                   # RGB + NIR as aerial imagery is
    (4, G.GDT_Byte, "MINISBLACK", None, True),
    (4, G.GDT_Byte, "MINISBLACK", [G.GCI_GrayIndex, G.GCI_GreenBand, G.GCI_BlueBand, G.GCI_Undefined], False),
    (4, G.GDT_Byte, "RGB", [G.GCI_RedBand, G.GCI_GreenBand, G.GCI_BlueBand, G.GCI_Undefined], True),
    (3, G.GDT_Byte, "MINISBLACK", None, False),                                   # three grey bands stay grey
    (4, G.GDT_Byte, "RGB", None, False),                                          # real RGBA keeps its alpha
    (5, G.GDT_UInt16, "MINISBLACK", None, False),
    (2, G.GDT_Byte, "MINISBLACK", [G.GCI_GrayIndex, G.GCI_AlphaBand], False),
])
def test_every_band_keeps_its_colour_interpretation(tmp_path, capsys, tiny_model_file, n, dtype, photometric,
                                                     colour, cog):
    data = texture(n)
    if colour and colour[-1] == G.GCI_AlphaBand or (photometric == "RGB" and n == 4 and colour is None):
        data[-1] = 255
    src = make(tmp_path / "in.tif", data.astype(np.uint8), dtype, colour=colour,
               options=[f"PHOTOMETRIC={photometric}"])
    before = colours(src)
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", *(["--cog"] if cog else [])], capsys, tiny_model_file)
    assert rc == 0, err
    assert colours(tmp_path / "out.tif") == before
    assert "AlphaBand" not in before or before.count("AlphaBand") == 1


def test_nir_named_in_bands_of_an_rgba_file_stays_imagery(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(4).astype(np.uint8), options=["PHOTOMETRIC=RGB", "ALPHA=YES"])
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--bands", "1,2,3,4"], capsys, tiny_model_file)
    assert rc == 0, err
    assert colours(tmp_path / "out.tif") == ["Red", "Green", "Blue", "Undefined"]


def test_a_photometric_option_that_would_change_a_band_into_alpha_is_refused(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(4).astype(np.uint8), options=["PHOTOMETRIC=MINISBLACK"])
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--co", "PHOTOMETRIC=CMYK"], capsys, tiny_model_file)
    one_error(rc, err, "would read back as", "Alpha", "instead of Gray, Undefined, Undefined, Undefined")
    assert listing(tmp_path) == ["in.tif"]


# -- 2. side files of an earlier file never apply to the new output ---------------------------------------------
def _old_output_with_side_files(tmp_path):
    old = make(tmp_path / "out.tif", np.full((1, 8, 8), 99, np.uint8), epsg=4326)
    ds = gdal.Open(old)
    ds.BuildOverviews("NEAREST", [2])  # read-only: GDAL writes out.tif.ovr
    ds = None
    ds = gdal.Open(old)
    ds.GetRasterBand(1).SetNoDataValue(50)  # read-only: GDAL writes out.tif.aux.xml
    ds.GetRasterBand(1).SetScale(10.0)
    ds = None
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "NO")
    try:
        ds = gdal.Open(old)
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)  # out.tif.msk
        ds.GetRasterBand(1).GetMaskBand().WriteArray(np.zeros((8, 8), np.uint8))
        ds = None
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    (tmp_path / "out.tfw").write_text("9\n0\n0\n-9\n1\n1\n")
    return old


def test_overwrite_removes_the_side_files_of_the_file_it_replaces(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8), epsg=None, gt=None)  # no georeferencing at all
    _old_output_with_side_files(tmp_path)
    assert {"out.tif.ovr", "out.tif.aux.xml", "out.tif.msk", "out.tfw"} <= set(listing(tmp_path))
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--overwrite"], capsys, tiny_model_file)
    assert rc == 0, err
    assert listing(tmp_path) == ["in.tif", "out.tif"]
    ds = gdal.Open(str(tmp_path / "out.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetOverviewCount() == 0 and band.GetNoDataValue() is None and band.GetScale() in (None, 1.0)
    assert band.GetMaskFlags() == gdal.GMF_ALL_VALID
    assert ds.GetGeoTransform(can_return_null=True) is None and ds.GetProjection() == ""
    assert ds.GetFileList() == [str(tmp_path / "out.tif")]


@pytest.mark.parametrize("side", ["out.tif.ovr", "out.tif.aux.xml", "out.tif.msk", "out.tfw", "OUT.TIF.OVR"])
def test_a_leftover_side_file_alone_is_refused_without_overwrite(tmp_path, capsys, tiny_model_file, side):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    (tmp_path / side).write_bytes(b"left over")
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    one_error(rc, err, side, "--overwrite")
    assert listing(tmp_path) == sorted(["in.tif", side]) and (tmp_path / side).read_bytes() == b"left over"


def test_a_requested_world_file_moves_with_the_output(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--co", "TFW=YES"], capsys, tiny_model_file)
    assert rc == 0, err
    assert listing(tmp_path) == ["in.tif", "out.tfw", "out.tif"]
    lines = [float(v) for v in (tmp_path / "out.tfw").read_text().split()]
    assert lines[0] == pytest.approx(1.0) and lines[3] == pytest.approx(-1.0)  # the output's 1 m pixels
    assert not any(n.startswith(".e2diffsr") for n in os.listdir(tmp_path))


# -- 3. codecs and creation options that would change the data ------------------------------------------------
@pytest.mark.parametrize("setup, options, expect", [
    ("nodata", ["--co", "COMPRESS=JPEG"], ["COMPRESS=JPEG is lossy", "nodata value 0", "DEFLATE"]),
    ("nodata", ["--cog", "--co", "COMPRESS=JPEG"], ["COMPRESS=JPEG is lossy", "nodata value 0"]),
    ("alpha", ["--co", "COMPRESS=WEBP"], ["COMPRESS=WEBP is lossy", "alpha band"]),
    ("alpha", ["--cog", "--co", "COMPRESS=WEBP", "--co", "QUALITY=90"], ["COMPRESS=WEBP is lossy", "alpha band"]),
    ("plain", ["--co", "PHOTOMETRIC=CIELAB"], ["PHOTOMETRIC=CIELAB", "leave PHOTOMETRIC out"]),
    ("plain", ["--co", "PIXELTYPE=SIGNEDBYTE"], ["PIXELTYPE=SIGNEDBYTE", "negative"]),
    ("plain", ["--co", "NBITS=4"], ["NBITS=4 stores values up to 15", "reaches 2"]),
    ("plain", ["--co", "BLOCKXSIZE=100"], ["BLOCKXSIZE=100", "multiple of 16"]),
    ("plain", ["--co", "PHOTOMETRIC=YCBCR"], ["PHOTOMETRIC=YCBCR", "COMPRESS=JPEG"]),
    ("plain", ["--cog", "--co", "TILING_SCHEME=GoogleMapsCompatible"], ["TILING_SCHEME", "gdalwarp"]),
    ("plain", ["--cog", "--co", "TARGET_SRS=EPSG:4326"], ["TARGET_SRS", "another grid"]),
])
def test_options_that_would_change_the_data_are_refused_with_their_real_cause(tmp_path, capsys, tiny_model_file,
                                                                              setup, options, expect):
    data = texture(4 if setup == "alpha" else 3).astype(np.uint8)
    if setup == "alpha":
        data[3] = 255
        data[3, :4] = 0
    src = make(tmp_path / "in.tif", data, nodata=0 if setup == "nodata" else None,
               options=["PHOTOMETRIC=RGB", "ALPHA=YES"] if setup == "alpha" else [])
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", *options], capsys, tiny_model_file)
    line = one_error(rc, err, *expect)
    if "COMPRESS" not in " ".join(options):
        assert "compression" not in line
    assert listing(tmp_path) == ["in.tif"]


def test_a_bit_depth_that_holds_the_data_is_written_without_a_predictor_clash(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", (texture(1) * 10).astype(np.uint16), gdal.GDT_UInt16)  # at most 2300
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--co", "NBITS=12"], capsys, tiny_model_file)
    assert rc == 0, err
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert ds.GetRasterBand(1).GetMetadataItem("NBITS", "IMAGE_STRUCTURE") == "12"
    out = ds.ReadAsArray().astype(float)
    assert 150 < out.min() and out.max() < 2500  # the input's range, not bits cut away


def _masked_float(path):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 22, 26, 3, gdal.GDT_Float32, options=["TILED=YES"])
    ds.SetGeoTransform((500000, 1, 0, 4000000, 0, -1))
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(base_texture(1, 26, 22, seed=b)[0].astype(np.float32) - 20)
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
    try:
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        mask = np.full((26, 22), 255, np.uint8)
        mask[:6, :5] = 0
        ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
        ds = None
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    return str(path)


def test_lerc_output_of_a_masked_float_raster_reads_back(tmp_path, capsys, tiny_model_file):
    # found by the generated suite: GDAL 3.6 wrote LERC pixel-interleaved tiles with a mask that it could not
    # read back, and the run said "wrote"
    src = _masked_float(tmp_path / "in.tif")
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--co", "COMPRESS=LERC"], capsys, tiny_model_file)
    assert rc == 0, err
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert out.ReadAsArray().shape == (3, 52, 44)
    assert (out.GetRasterBand(1).GetMaskBand().ReadAsArray()[:12, :10] == 0).all()
    # a layout asked for explicitly that the codec cannot read back: refused, nothing published
    rc, err = cli([src, tmp_path / "pix.tif", "--scale", "2", "--co", "COMPRESS=LERC", "--co", "INTERLEAVE=PIXEL"],
                  capsys, tiny_model_file)
    if rc != 0:  # GDAL versions that read it back write it
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and "could not write output" in errors[0] and "Traceback" not in err
        assert not (tmp_path / "pix.tif").exists()
    assert sorted(listing(tmp_path)) == sorted(["in.tif", "out.tif"] + (["pix.tif"] if rc == 0 else []))


def test_checking_the_bit_depth_leaves_a_vrt_input_unchanged(tmp_path, capsys, tiny_model_file):
    # found by the generated suite: GDAL's min/max of a VRT band stored statistics into the VRT file itself
    tif = make(tmp_path / "data.tif", texture(2).astype(np.uint8), nodata=255)
    gdal.BuildVRT(str(tmp_path / "in.vrt"), [tif]).FlushCache()
    before = (tmp_path / "in.vrt").read_bytes()
    rc, err = cli([str(tmp_path / "in.vrt"), tmp_path / "out.tif", "--scale", "2", "--co", "NBITS=12"], capsys,
                  tiny_model_file)
    assert rc == 0, err
    assert (tmp_path / "in.vrt").read_bytes() == before
    assert sorted(listing(tmp_path)) == ["data.tif", "in.vrt", "out.tif"]


def test_an_internal_mask_survives_a_lossy_codec(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(3).astype(np.uint8))
    gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
    try:
        ds = gdal.Open(src, gdal.GA_Update)
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        mask = np.full((16, 20), 255, np.uint8)
        mask[4:9, 5:12] = 0
        ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
        ds = None
    finally:
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--co", "COMPRESS=JPEG"], capsys, tiny_model_file)
    assert rc == 0, err
    ds = gdal.Open(str(tmp_path / "out.tif"))  # held: a band outliving its dataset crashes GDAL
    out_mask = ds.GetRasterBand(1).GetMaskBand().ReadAsArray()
    assert np.array_equal(out_mask > 0, np.kron(mask > 0, np.ones((2, 2), bool)))


# -- 5. thematic rasters are not interpolated into classes that do not exist ----------------------------------
def _class_map(path, kind):
    classes = (np.indices((16, 20)).sum(0) // 7 % 5).astype(np.uint8)  # classes 0..4
    src = make(path, classes)
    ds = gdal.Open(src)  # read-only: the class description goes to the .aux.xml, as GDAL does for many files
    band = ds.GetRasterBand(1)
    if kind == "rat":
        rat = gdal.RasterAttributeTable()
        rat.CreateColumn("Value", gdal.GFT_Integer, gdal.GFU_MinMax)
        rat.CreateColumn("Class", gdal.GFT_String, gdal.GFU_Name)
        for i, name in enumerate(["water", "forest", "crop", "urban", "bare"]):
            rat.SetValueAsInt(i, 0, i)
            rat.SetValueAsString(i, 1, name)
        band.SetDefaultRAT(rat)
    elif kind == "categories":
        band.SetCategoryNames(["water", "forest", "crop", "urban", "bare"])
    else:
        table = gdal.ColorTable()
        for i in range(5):
            table.SetColorEntry(i, (50 * i, 0, 0, 255))
        band.SetColorTable(table)
        band.SetColorInterpretation(gdal.GCI_GrayIndex)  # a colour table on a grey band: still classes
    ds = None
    return src


@pytest.mark.parametrize("kind, what", [("rat", "raster attribute table"), ("categories", "category names"),
                                        ("colours", "colour table")])
def test_thematic_rasters_are_refused_with_advice(tmp_path, capsys, tiny_model_file, kind, what):
    src = _class_map(tmp_path / "classes.tif", kind)
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    one_error(rc, err, "band 1", what, "cannot be interpolated", "gdalwarp -r near", "-r mode")
    assert not (tmp_path / "out.tif").exists()



# -- 8. values that would overflow ----------------------------------------------------------------------------
def _terrain(fill=None):
    dem = texture(1, lo=120, hi=330)[0]
    if fill is not None:
        dem[:5, :6] = fill
    return dem


@pytest.mark.parametrize("dtype, data, expect", [
    (G.GDT_Float32, _terrain(-3.4e38), "-3.4e+38"),                          # a fill value nobody declared
    (G.GDT_Float64, 1e308 - _terrain() * 1e300, "e+307"),                    # values near the type's limit
    (G.GDT_Float64, np.where(np.arange(320).reshape(16, 20) == 77, 1e300, _terrain()), "1e+300"),  # one outlier
])
def test_values_too_large_to_compute_with_are_refused(tmp_path, capsys, tiny_model_file, dtype, data, expect):
    src = make(tmp_path / "in.tif", data, dtype)
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    one_error(rc, err, "band 1", expect, "nodata")
    assert listing(tmp_path) == ["in.tif"]


def test_a_declared_fill_value_is_nodata_and_the_terrain_comes_back_in_its_range(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", _terrain(-3.4e38), gdal.GDT_Float32, nodata=float(np.float32(-3.4e38)))
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    assert rc == 0, err
    ds = gdal.Open(str(tmp_path / "out.tif"))
    out, nodata = ds.ReadAsArray(), ds.GetRasterBand(1).GetNoDataValue()
    hole = out == np.float32(nodata)
    assert np.array_equal(hole, np.kron(_terrain(-3.4e38) < -1e30, np.ones((2, 2), bool)))
    assert 100 < out[~hole].min() and out[~hole].max() < 350


def test_a_range_too_wide_to_compute_with_is_refused(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", _terrain(), gdal.GDT_Float64)
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2", "--range=-1e308,1e308"], capsys, tiny_model_file)
    one_error(rc, err, "value range -1e+308,1e+308", "too wide", "--range")
    assert listing(tmp_path) == ["in.tif"]


# -- 4. per-band nodata ---------------------------------------------------------------------------------------
def _vrt_of_bands(tmp_path, nodatas):
    files = []
    for i, nd in enumerate(nodatas):
        band = texture(1, seed=i)[0].astype(np.uint8)
        if nd is not None:
            band[2:5, 3:7] = nd
        files.append(make(tmp_path / f"b{i}.tif", band, nodata=nd))
    gdal.BuildVRT(str(tmp_path / "stack.vrt"), files, separate=True).FlushCache()  # on disk once released
    return files


@pytest.mark.parametrize("nodatas", [[0, 255, 0], [None, 7, None]])
def test_bands_with_different_nodata_values_are_refused(tmp_path, capsys, tiny_model_file, nodatas):
    _vrt_of_bands(tmp_path, nodatas)
    rc, err = cli([tmp_path / "stack.vrt", tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    one_error(rc, err, "different nodata values", "band 2: " + str(nodatas[1]), "--bands", "gdalwarp -dstnodata")
    assert not (tmp_path / "out.tif").exists()


def test_bands_that_share_a_nodata_value_are_written_with_it(tmp_path, capsys, tiny_model_file):
    _vrt_of_bands(tmp_path, [0, 255, 0])
    rc, err = cli([tmp_path / "stack.vrt", tmp_path / "out.tif", "--scale", "2", "--bands", "1,3"], capsys,
                  tiny_model_file)
    assert rc == 0, err
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert [ds.GetRasterBand(i).GetNoDataValue() for i in (1, 2)] == [0, 0]
    holes = np.kron(np.pad(np.ones((3, 4), bool), ((2, 11), (3, 13))), np.ones((2, 2), bool))
    for i in (1, 2):
        assert np.array_equal(ds.GetRasterBand(i).ReadAsArray() == 0, holes)


# -- 6. metadata: every domain GDAL reports comes back ----------------------------------------------------------
def _info(path):
    info = gdal.Info(str(path), format="json", options=["-mdd", "all"])
    for key in ("description", "files", "size", "geoTransform", "cornerCoordinates", "wgs84Extent"):
        info.pop(key, None)
    for key in ("proj:shape", "proj:transform"):
        info.get("stac", {}).pop(key, None)
    info["metadata"].pop("IMAGE_STRUCTURE", None)
    info["metadata"].pop("DERIVED_SUBDATASETS", None)
    for band in info["bands"]:
        band.pop("block", None)
        band.get("metadata", {}).pop("IMAGE_STRUCTURE", None)
    return info


def test_gdalinfo_of_input_and_output_agree_but_for_size_and_grid(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(3).astype(np.uint16) * 100, gdal.GDT_UInt16, nodata=0,
               colour=[G.GCI_RedBand, G.GCI_GreenBand, G.GCI_BlueBand], descriptions=["r", "g", "b"],
               metadata={"ACQUISITION": "2024-05-01"}, band_metadata=[{"WAVELENGTH": str(w)} for w in (650, 560, 480)])
    ds = gdal.Open(src, gdal.GA_Update)
    ds.SetMetadata({"SATELLITEID": "XYZ", "CLOUDCOVER": "3"}, "IMAGERY")
    ds.SetMetadata({"PROCESSOR": "test"}, "CUSTOM")
    ds.SetMetadata(["<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax"
                    "-ns#'/></x:xmpmeta>"], "xml:XMP")
    for i in range(3):
        band = ds.GetRasterBand(i + 1)
        band.SetMetadata({"GAIN": str(1.5 + i)}, "CALIBRATION")
        band.SetScale(0.01)
        band.SetOffset(-1.0)
        band.SetUnitType("W/m2/sr/um")
    ds = None
    rc, err = cli([src, tmp_path / "out.tif", "--scale", "2"], capsys, tiny_model_file)
    assert rc == 0, err
    before, after = _info(src), _info(tmp_path / "out.tif")
    assert after == before
    assert after["metadata"]["IMAGERY"]["SATELLITEID"] == "XYZ" and "xml:XMP" in after["metadata"]


# -- 7. files reached through other names are never overwritten --------------------------------------------------
def _vrt_xml(path, source, extra=""):
    Path(path).write_text(
        f'<VRTDataset rasterXSize="20" rasterYSize="16"><GeoTransform>{", ".join(map(str, GT))}</GeoTransform>'
        f'<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="0">{source}'
        f"</SourceFilename><SourceBand>1</SourceBand></SimpleSource>{extra}</VRTRasterBand></VRTDataset>")
    return str(path)


@pytest.mark.parametrize("how", ["GTIFF_DIR", "vrt://", "overview", "vsisparse", "mask"])
def test_a_file_behind_another_name_is_never_replaced(tmp_path, capsys, tiny_model_file, how):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    hidden = make(tmp_path / "hidden.tif", texture(1, seed=3).astype(np.uint8))  # reached only through `how`
    if how == "GTIFF_DIR":
        inp = _vrt_xml(tmp_path / "a.vrt", f"GTIFF_DIR:1:{hidden}")
    elif how == "vrt://":
        inp = _vrt_xml(tmp_path / "a.vrt", f"vrt://{hidden}?bands=1")
    elif how == "overview":
        inp = _vrt_xml(tmp_path / "a.vrt", src, f'<Overview><SourceFilename relativeToVRT="0">{hidden}'
                                                 "</SourceFilename><SourceBand>1</SourceBand></Overview>")
    elif how == "vsisparse":
        size = os.path.getsize(hidden)
        (tmp_path / "s.xml").write_text(
            f'<VSISparseFile><Length>{size}</Length><SubfileRegion><Filename relative="0">{hidden}</Filename>'
            f"<DestinationOffset>0</DestinationOffset><SourceOffset>0</SourceOffset><RegionLength>{size}"
            "</RegionLength></SubfileRegion></VSISparseFile>")
        inp = f"/vsisparse/{tmp_path / 's.xml'}"
    else:
        inp = _vrt_xml(tmp_path / "a.vrt", src)
        text = Path(inp).read_text().replace(
            "</VRTDataset>", f'<MaskBand><VRTRasterBand dataType="Byte"><SimpleSource><SourceFilename '
                             f'relativeToVRT="0">{hidden}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
                             "</VRTRasterBand></MaskBand></VRTDataset>")
        Path(inp).write_text(text)
    before = Path(hidden).read_bytes()
    rc, err = cli([inp, hidden, "--scale", "2", "--overwrite"], capsys, tiny_model_file)
    one_error(rc, err, "hidden.tif", "choose a different output")
    assert Path(hidden).read_bytes() == before


def test_the_input_behind_standard_input_is_never_replaced(tmp_path, tiny_model_file):
    import subprocess
    import sys

    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    before = Path(src).read_bytes()
    with open(src, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "e2diffsr_core", "superresolve", "/vsistdin/", src, "--scale",
                               "2", "--overwrite", "--model", str(tiny_model_file), "--quiet"], stdin=stdin,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "in.tif" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert Path(src).read_bytes() == before


def test_the_align_to_reference_is_never_replaced(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    ref = make(tmp_path / "ref.tif", np.zeros((4, 4), np.uint8), gt=(500000.0, 1.0, 0.0, 4000000.0, 0.0, -1.0))
    before = Path(ref).read_bytes()
    rc, err = cli([src, ref, "--align-to", ref, "--overwrite"], capsys, tiny_model_file)
    one_error(rc, err, "reference grid (--align-to)", "ref.tif")
    assert Path(ref).read_bytes() == before


# -- 9. the run itself ----------------------------------------------------------------------------------------
def test_a_closed_log_stream_does_not_throw_away_a_finished_run(tmp_path, tiny_model_file):
    import subprocess
    import sys

    src = make(tmp_path / "in.tif", texture(3).astype(np.uint8))
    # as `... 2>&1 | head -c 1`: the reader of the log goes away before the run has finished
    proc = subprocess.Popen([sys.executable, "-m", "e2diffsr_core", "superresolve", src, str(tmp_path / "out.tif"),
                             "--scale", "2", "--model", str(tiny_model_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    proc.stdout.read(1)
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (40, 32)
    assert listing(tmp_path) == ["in.tif", "out.tif"]


def test_all_outputs_are_published_together_or_none(tmp_path, tiny_model_file):
    from e2diffsr_core.errors import E2DiffSRError
    from e2diffsr_core.raster import superresolve_raster

    src = make(tmp_path / "in.tif", texture(3).astype(np.uint8))
    unc = tmp_path / "unc.tif"

    def someone_else_writes_the_uncertainty_path(_fraction):
        if not unc.exists():
            unc.write_bytes(b"another program's file")

    with pytest.raises(E2DiffSRError, match="unc.tif was created by something else"):
        superresolve_raster(src, str(tmp_path / "out.tif"), 2.0, model=str(tiny_model_file), samples=2,
                            uncertainty=str(unc), progress=someone_else_writes_the_uncertainty_path)
    assert listing(tmp_path) == ["in.tif", "unc.tif"] and unc.read_bytes() == b"another program's file"


def test_a_raster_given_as_the_model_is_named_as_such(tmp_path, capsys):
    src = make(tmp_path / "in.tif", texture(3).astype(np.uint8))
    rc = main(["superresolve", src, str(tmp_path / "out.tif"), "--scale", "2", "--model", src, "--quiet"])
    line = one_error(rc, capsys.readouterr().err, "is a raster (GTiff), not a model file")
    assert "could run code" not in line and listing(tmp_path) == ["in.tif"]


def test_the_leftover_sweep_removes_only_the_tools_own_names(tmp_path, capsys, tiny_model_file):
    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    mine = tmp_path / ".thesis.partial-draft.txt"  # a user's hidden file that merely contains ".partial-"
    old = tmp_path / ".out.tif.partial-1234abcd.tif"  # an older version's leftover
    for f in (mine, old):
        f.write_bytes(b"x")
        os.utime(f, (0, 0))  # far older than a day
    rc, err = cli([src, tmp_path / "o.tif", "--scale", "2"], capsys, tiny_model_file)
    assert rc == 0, err
    assert mine.exists() and not old.exists()


# -- 10. batch ------------------------------------------------------------------------------------------------
def test_a_resumed_batch_does_not_take_its_outputs_for_inputs(tmp_path, capsys, tiny_model_file):
    survey = tmp_path / "survey"
    (survey / "a").mkdir(parents=True)
    for name in ("one", "two"):
        make(survey / "a" / f"{name}.tif", texture(1, seed=len(name)).astype(np.uint8))
    args = ["superresolve-batch", str(survey / "**" / "*.tif"), "--out-dir", str(survey / "sr"), "--scale", "2",
            "--model", str(tiny_model_file), "--quiet"]
    assert main(args) == 0, capsys.readouterr()
    first = sorted(p.name for p in (survey / "sr").iterdir())
    rc = main(args)  # the documented resume: the same command again
    out = capsys.readouterr()
    assert rc == 0, out
    assert "0 done, 2 skipped, 0 failed" in out.out.replace("\n", " ") or "2 skipped" in out.out, out.out
    assert sorted(p.name for p in (survey / "sr").iterdir()) == first  # no output of an output


@pytest.mark.parametrize("sig,procs", [(signal.SIGHUP, 1), (signal.SIGTERM, 1), (signal.SIGHUP, 2)])
def test_a_batch_stopped_by_a_signal_leaves_no_run_folder(tmp_path, tiny_model_file, sig, procs):
    for name in ("one", "two"):
        make(tmp_path / f"{name}.tif", base_texture(3, 160, 160, seed=len(name)).astype(np.uint8))
    out = tmp_path / "sr"
    proc = subprocess.Popen([sys.executable, "-m", "e2diffsr_core", "superresolve-batch", str(tmp_path / "one.tif"),
                             str(tmp_path / "two.tif"), "--out-dir", str(out), "--scale", "4", "--tile", "128",
                             "--model", str(tiny_model_file), "--quiet", "--procs", str(procs)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    stop_once_running(proc, out, sig)
    assert not [n for n in listing(out) if n.startswith(".")], listing(out)  # no run folder, no partial file


def test_a_batch_on_ranks_of_its_own_ends_with_its_summary_and_status(tmp_path, tiny_model_file):
    for name in ("one", "two", "three"):
        make(tmp_path / f"{name}.tif", base_texture(3, 24, 32, seed=len(name)).astype(np.uint8))
    (tmp_path / "broken.tif").write_bytes(b"II*\0 not a whole TIFF")
    out = tmp_path / "sr"
    run = subprocess.run([sys.executable, "-m", "e2diffsr_core", "superresolve-batch", str(tmp_path / "*.tif"),
                          "--out-dir", str(out), "--scale", "2", "--model", str(tiny_model_file), "--quiet",
                          "--procs", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode == 1, text  # one raster failed: the batch's own status, no launcher's
    assert "3 done" in text and "1 failed" in text and "broken.tif" in text, text
    assert "Traceback" not in text and "ChildFailedError" not in text
    assert sorted(p.name for p in out.iterdir() if p.name != ".e2diffsr-batch") == ["one.tif", "three.tif", "two.tif"]
    for name in ("one", "two", "three"):
        assert gdal.Open(str(out / f"{name}.tif")).RasterXSize == 64


def test_procs_under_torchrun_is_refused(tmp_path, capsys, monkeypatch, tiny_model_file):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = main(["superresolve-batch", str(tmp_path / "x.tif"), "--out-dir", str(tmp_path / "sr"), "--scale", "2",
               "--procs", "2"])
    one_error(rc, capsys.readouterr().err, "--procs starts the ranks itself")


def test_one_consistency_map_for_several_rasters_is_refused(tmp_path, capsys, tiny_model_file):
    for name in ("one", "two"):
        make(tmp_path / f"{name}.tif", texture(1).astype(np.uint8))
    rc = main(["superresolve-batch", str(tmp_path / "one.tif"), str(tmp_path / "two.tif"), "--out-dir",
               str(tmp_path / "sr"), "--scale", "2", "--consistency-map", str(tmp_path / "map.tif"), "--model",
               str(tiny_model_file), "--quiet"])
    captured = capsys.readouterr()
    assert rc != 0 and "--consistency-map names one file but the batch has 2 rasters" in captured.err + captured.out
    assert not (tmp_path / "map.tif").exists() and not (tmp_path / "sr").exists()


def test_replacing_another_users_file_in_a_sticky_folder_is_refused_up_front(tmp_path, capsys, tiny_model_file,
                                                                            monkeypatch):
    from e2diffsr_core.raster_io import files

    src = make(tmp_path / "in.tif", texture(1).astype(np.uint8))
    sticky = tmp_path / "shared"
    sticky.mkdir()
    theirs = make(sticky / "out.tif", texture(1).astype(np.uint8))
    os.chmod(sticky, 0o1777)
    owner = os.stat(theirs).st_uid
    monkeypatch.setattr(files.os, "geteuid", lambda: owner + 1000)  # another, unprivileged user
    rc, err = cli([src, theirs, "--scale", "2", "--overwrite"], capsys, tiny_model_file)
    one_error(rc, err, "belongs to another user", "sticky bit")
