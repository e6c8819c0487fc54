"""The authors' picture protocol, shared by the evaluator and the trainer (reference README 1.1, 1.2, 1.5).

Pictures are read as RGB uint8; the LR of an HR picture is its PIL bicubic (antialiased) resize to
(int(W/s), int(H/s)); the model takes x/255 mapped to [-1, 1]. Split files name the pictures of each subset.
Pictures are read through the raster reader ``superresolve`` uses (``raster_io.training_read``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import E2DiffSRError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}

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


def match_split(root: str | Path, files: list[Path], split: str | Path, subset: str) -> tuple[list[Path], list[str]]:
    """(files, entries that match nothing) of one subset of a split file {"train": [...], "val": [...], ...}.

    Entries are relative paths or bare file names; a relative path match wins, a base name must be unique.
    """
    split = Path(split)
    entries = _split_entries(split, subset)
    root = Path(root)
    by_rel = {p.relative_to(root).as_posix(): p for p in files}
    by_name: dict[str, list[Path]] = {}
    for p in files:
        by_name.setdefault(p.name, []).append(p)
    chosen, missing = [], []
    for raw in entries:
        entry = str(raw).replace("\\", "/").removeprefix("./")
        if entry in by_rel:
            chosen.append(by_rel[entry])
        elif len(by_name.get(Path(entry).name, [])) == 1:
            chosen.append(by_name[Path(entry).name][0])
        else:
            missing.append(str(raw))
    return chosen, missing


def unmatched_message(split: str | Path, subset: str, missing: list[str], root) -> str:
    """One line about the entries of a split that match no image (or more than one by base name)."""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"{len(missing)} '{subset}' entr{'y' if len(missing) == 1 else 'ies'} of {Path(split).name} match no "
            f"single image under {root}: {shown}; fix the split file or the data folder")


def select_split(root: str | Path, files: list[Path], split: str | Path | None, subset: str) -> list[Path]:
    """The files of one subset of a split file (every file without one); every entry must match one image."""
    if split is None:
        return files
    chosen, missing = match_split(root, files, split, subset)
    if not chosen and not missing:
        raise E2DiffSRError(f"the '{subset}' list of {Path(split).name} is empty; name at least one image in it")
    if missing:
        raise E2DiffSRError(unmatched_message(split, subset, missing, root))
    return chosen


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header."""
    from ..raster_io.training_read import picture_size

    return picture_size(path)


def read_rgb(path: Path, bands: list[int] | None = None) -> np.ndarray:
    """H x W x 3 uint8 through the raster reader ``superresolve`` uses (``raster_io.training_read``): the bands
    tagged red, green, blue unless ``bands`` says otherwise, each band's working range mapped to 0..255,
    invalid pixels (nodata, masks, alpha 0) filled from their valid neighbours."""
    from ..raster_io.training_read import read_picture

    return read_picture(path, bands).rgb


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
