"""The authors' picture protocol, shared by the evaluator and the trainer (reference README 1.1, 1.2, 1.5).

Pictures are read as RGB uint8; the LR of an HR picture is its PIL bicubic (antialiased) resize to
(int(W/s), int(H/s)); the model takes x/255 mapped to [-1, 1]. Split files name the pictures of each subset,
and validation during training scores centre crops with the same degradation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import E2DiffSRError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
_PIL_MODES = {"RGB", "RGBA", "L", "LA", "P", "CMYK", "YCbCr", "1"}

Image.MAX_IMAGE_PIXELS = None  # large GeoTIFF tiles are legitimate training and test data


# -- finding and reading pictures -----------------------------------------------------------------------------
def find_images(root: str | Path) -> list[Path]:
    """All images under ``root`` (recursive), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise E2DiffSRError(f"data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise E2DiffSRError(f"no images (PNG, JPEG or TIFF) found under {root}")
    return files


def _split_entries(split: Path, subset: str) -> list:
    """The '``subset``' list of a split file, or an error that names the lists it has."""
    if not split.is_file():
        raise E2DiffSRError(f"split file not found: {split}")
    try:
        table = json.loads(split.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise E2DiffSRError(f"split file {split} is not valid JSON: {e}") from None
    entries = table.get(subset) if isinstance(table, dict) else None
    if not isinstance(entries, list):
        keys = [k for k, v in table.items() if isinstance(v, list)] if isinstance(table, dict) else []
        raise E2DiffSRError(f"split file {split} has no '{subset}' list (it has: {', '.join(keys) or 'none'})")
    return entries


def select_split(root: str | Path, files: list[Path], split: str | Path | None, subset: str) -> list[Path]:
    """The files of one subset of a split file {"train": [...], "val": [...], "test": [...]}.

    Entries are relative paths or bare file names; a relative path match wins, a base name must be unique.
    """
    if split is None:
        return files
    split = Path(split)
    entries = _split_entries(split, subset)
    root = Path(root)
    by_rel = {p.relative_to(root).as_posix(): p for p in files}
    by_name: dict[str, list[Path]] = {}
    for p in files:
        by_name.setdefault(p.name, []).append(p)
    chosen = []
    for entry in entries:
        entry = str(entry).replace("\\", "/").removeprefix("./")
        if entry in by_rel:
            chosen.append(by_rel[entry])
        elif len(by_name.get(Path(entry).name, [])) == 1:
            chosen.append(by_name[Path(entry).name][0])
    if not chosen:
        raise E2DiffSRError(f"none of the {len(entries)} '{subset}' entries of {split.name} were found under {root}")
    return chosen


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        ds = _gdal_open(path)
        return ds.RasterXSize, ds.RasterYSize


def _gdal_open(path: Path):
    try:
        from osgeo import gdal
    except ImportError:
        raise E2DiffSRError(f"cannot read {path}: not an 8-bit image PIL can open, and GDAL is not installed") from None
    gdal.UseExceptions()
    try:
        return gdal.Open(str(path))
    except RuntimeError as e:
        raise E2DiffSRError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def _stretch(band: np.ndarray) -> np.ndarray:
    """Map a non-8-bit band to uint8 with its 2nd-98th percentiles (16-bit and float imagery)."""
    lo, hi = np.percentile(band, [2, 98])
    scaled = (band.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8. 8-bit images through PIL; multi-band or 16-bit rasters through GDAL (first 3 bands)."""
    try:
        with Image.open(path) as im:
            if im.mode in _PIL_MODES:
                return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        pass
    ds = _gdal_open(path)
    bands = [ds.GetRasterBand(i + 1).ReadAsArray() for i in range(min(ds.RasterCount, 3))]
    bands = [b if b.dtype == np.uint8 else _stretch(b) for b in bands]
    while len(bands) < 3:
        bands.append(bands[0])
    return np.stack(bands, axis=-1)


# -- degradation and the model's value range ------------------------------------------------------------------
def to_model(u8: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32 in [-1, 1] (x/255 in float32, then (x - 0.5) / 0.5)."""
    x = torch.from_numpy(np.array(u8, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() * (1.0 / 255.0)
    return (x - 0.5) / 0.5


def bicubic_pil(u8: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The authors' LR: PIL bicubic (antialiased) resize of the uint8 image."""
    return np.asarray(Image.fromarray(u8).resize(size_wh, Image.BICUBIC))


def make_lr(hr: np.ndarray, scale: float) -> np.ndarray:
    """The authors' HR_downsampled LR: PIL bicubic to (int(W/s), int(H/s))."""
    h, w = hr.shape[:2]
    return bicubic_pil(hr, (int(w / scale), int(h / scale)))


# -- validation pictures ----------------------------------------------------------------------------------------
def validation_items(files: list[Path], count: int, size: int, scale: float) -> list[dict]:
    """Centre crops (side a multiple of 8, at most ``size``) with their PIL-bicubic LR at ``scale``."""
    items = []
    for p in files[:count]:
        img = read_rgb(p)
        h, w = img.shape[:2]
        side = min(size, h, w) // 8 * 8
        if side < 40:
            continue
        y, x = (h - side) // 2, (w - side) // 2
        hr = np.ascontiguousarray(img[y:y + side, x:x + side])
        lr_side = max(1, int(side / scale))
        items.append({"name": p.name, "hr": hr, "lr": bicubic_pil(hr, (lr_side, lr_side)), "scale": scale})
    return items
