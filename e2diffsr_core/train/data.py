"""Training pairs (reference README 1.5): one scale per batch from U(1, 8), HR crops, LR by PIL bicubic.

Every random choice of batch ``g`` (the images, the scale, each crop and flip) is a pure function of
(seed, g, rank), so the data order does not depend on the number of worker processes and a resumed run
continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import E2DiffSRError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
_PIL_MODES = {"RGB", "RGBA", "L", "LA", "P", "CMYK", "YCbCr", "1"}

Image.MAX_IMAGE_PIXELS = None  # large GeoTIFF tiles are legitimate training data


# -- finding and reading images -----------------------------------------------------------------------------
def find_images(root: str | Path) -> list[Path]:
    """All images under ``root`` (recursive), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise E2DiffSRError(f"data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise E2DiffSRError(f"no images (PNG, JPEG or TIFF) found under {root}")
    return files


def select_split(root: str | Path, files: list[Path], split: str | Path | None, subset: str) -> list[Path]:
    """The files of one subset of a split file {"train": [...], "val": [...], "test": [...]}.

    Entries are relative paths or bare file names; a relative path match wins, a base name must be unique.
    """
    if split is None:
        return files
    split = Path(split)
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


def check_sizes(files: list[Path], need: int, why: str) -> None:
    """Every image must hold a ``need`` x ``need`` crop; name the first that does not."""
    for p in files:
        w, h = image_size(p)
        if min(w, h) < need:
            raise E2DiffSRError(f"image {p.name} is {w} x {h} px, smaller than the {need} px crop {why}; "
                                "use larger images or a smaller crop / scale_max")


# -- pairs --------------------------------------------------------------------------------------------------
def to_model(u8: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32 in [-1, 1] (x/255 in float32, then (x - 0.5) / 0.5)."""
    x = torch.from_numpy(np.array(u8, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() * (1.0 / 255.0)
    return (x - 0.5) / 0.5


def bicubic_pil(u8: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The authors' LR: PIL bicubic (antialiased) resize of the uint8 image."""
    return np.asarray(Image.fromarray(u8).resize(size_wh, Image.BICUBIC))


class PairDataset(Dataset):
    """Item key (image index, scale, seed) -> (HR, LR) in [-1, 1]. Stage 1: LR lr_patch, HR int(lr_patch s);
    stage 2: HR hr_crop, LR int(hr_crop / s)."""

    CACHE_BYTES = 512 << 20  # decoded images kept per worker process: large pictures decode once

    def __init__(self, files: list[Path], stage: int, lr_patch: int = 48, hr_crop: int = 256):
        self.files, self.stage, self.lr_patch, self.hr_crop = list(files), stage, lr_patch, hr_crop
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _image(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        img = read_rgb(self.files[index])
        self._cache[index] = img
        while sum(a.nbytes for a in self._cache.values()) > self.CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return img

    def __len__(self) -> int:
        return len(self.files)

    def sizes(self, scale: float) -> tuple[int, int]:
        if self.stage == 1:
            return int(self.lr_patch * scale), self.lr_patch
        return self.hr_crop, max(1, int(self.hr_crop / scale))

    def __getitem__(self, key):
        index, scale, seed = key
        rng = np.random.default_rng(seed)
        img = self._image(index)
        hr_side, lr_side = self.sizes(scale)
        h, w = img.shape[:2]
        if min(h, w) < hr_side:
            raise E2DiffSRError(f"image {self.files[index].name} is {w} x {h} px, smaller than the {hr_side} px crop")
        y = int(rng.integers(0, h - hr_side + 1))
        x = int(rng.integers(0, w - hr_side + 1))
        hr = img[y:y + hr_side, x:x + hr_side]
        flip_h, flip_v, transpose = rng.random(3) < 0.5   # the 8 flips / 90-degree rotations
        if flip_h:
            hr = hr[:, ::-1]
        if flip_v:
            hr = hr[::-1]
        if transpose:
            hr = hr.transpose(1, 0, 2)
        hr = np.ascontiguousarray(hr)
        lr = bicubic_pil(hr, (lr_side, lr_side))
        return to_model(hr), to_model(lr)


def collate(items):
    hr = torch.stack([it[0] for it in items])
    lr = torch.stack([it[1] for it in items])
    return {"hr": hr, "lr": lr}


class ScaleBatchSampler:
    """Endless batches of keys for :class:`PairDataset`, starting at batch ``start``.

    The global batch g holds positions g*B*world .. of an endless sequence of per-epoch permutations;
    rank r takes its share. The scale of batch g is shared by all ranks.
    """

    def __init__(self, n: int, batch_size: int, seed: int, scale_range: tuple[float, float],
                 rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.scale_range, self.rank, self.world, self.start = scale_range, rank, world, start
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)
        return self._perms[epoch]

    def scale(self, g: int) -> float:
        lo, hi = self.scale_range
        return float(np.random.default_rng([self.seed, 1, g]).uniform(lo, hi))

    def batch(self, g: int) -> list[tuple[int, float, int]]:
        s = self.scale(g)
        keys = []
        for j in range(self.batch_size):
            p = (g * self.world + self.rank) * self.batch_size + j
            index = int(self._perm(p // self.n)[p % self.n])
            seed = int(np.random.SeedSequence([self.seed, 2, g, self.rank, j]).generate_state(1)[0])
            keys.append((index, s, seed))
        return keys

    def __iter__(self):
        g = self.start
        while True:
            yield self.batch(g)
            g += 1


def make_loader(dataset: PairDataset, sampler: ScaleBatchSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      pin_memory=pin_memory, **kw)


# -- validation images ----------------------------------------------------------------------------------------
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
