"""Training pairs (reference README 1.5): one scale per batch from U(1, 8), HR crops, LR by PIL bicubic.

Every random choice of batch ``g`` (the images, the scale, each crop and flip) is a pure function of
(seed, g, rank), so the data order does not depend on the number of worker processes and a resumed run
continues with exactly the batches it would have seen. Pictures are read as ``superresolve`` reads rasters
(``raster_io.training_read``); crops are drawn where the picture is valid; the degradation is the evaluator's
protocol (``e2diffsr_core.evaluation.protocol``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import E2DiffSRError
from ..evaluation.protocol import bicubic_pil, to_model
from ..raster_io.training_read import TrainingPicture, crop_share_map, read_picture

#: Random corners tried before falling back to the list of every acceptable corner (on a grid).
CROP_TRIES = 64


def corner_stride(h: int, w: int, side: int) -> int:
    """Grid step of the corners examined when random tries fail: about 250,000 corners at most."""
    return max(1, int(math.sqrt(max(1, (h - side + 1) * (w - side + 1)) / 250_000)))


def valid_corner(valid: np.ndarray, side: int, min_share: float, rng: np.random.Generator) -> tuple[int, int]:
    """(y, x) of a ``side`` px crop at least ``min_share`` valid, drawn with ``rng``: uniform random corners
    first (the whole picture when every pixel is valid), then one of the acceptable corners on a grid."""
    h, w = valid.shape
    for _ in range(CROP_TRIES):
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        if min_share <= 0 or valid[y:y + side, x:x + side].mean() >= min_share:
            return y, x
    stride = corner_stride(h, w, side)
    ys, xs = np.nonzero(crop_share_map(valid, side, stride) >= min_share)
    if ys.size == 0:
        raise E2DiffSRError(f"no {side} px crop is {min_share:.0%} valid")
    k = int(rng.integers(0, ys.size))
    return int(ys[k]) * stride, int(xs[k]) * stride


# -- pairs --------------------------------------------------------------------------------------------------
class PairDataset(Dataset):
    """Item key (image index, scale, seed) -> (HR, LR, valid): HR and LR in [-1, 1], ``valid`` [1, H, W] bool
    (the HR pixels every loss counts). Stage 1: LR lr_patch, HR int(lr_patch s); stage 2: HR hr_crop,
    LR int(hr_crop / s). Crops are at least ``min_valid`` valid (``data.min_valid``)."""

    CACHE_BYTES = 512 << 20  # decoded images kept per worker process: large pictures decode once

    def __init__(self, files: list[Path], stage: int, lr_patch: int = 48, hr_crop: int = 256,
                 bands: list[int] | None = None, min_valid: float = 0.99):
        self.files, self.stage, self.lr_patch, self.hr_crop = list(files), stage, lr_patch, hr_crop
        self.bands, self.min_valid = bands, min_valid
        self._cache: OrderedDict[int, TrainingPicture] = OrderedDict()

    def _image(self, index: int) -> TrainingPicture:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        pic = read_picture(self.files[index], self.bands)
        self._cache[index] = pic
        while sum(p.rgb.nbytes + p.valid.nbytes for p in self._cache.values()) > self.CACHE_BYTES \
                and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return pic

    def __len__(self) -> int:
        return len(self.files)

    def sizes(self, scale: float) -> tuple[int, int]:
        if self.stage == 1:
            return int(self.lr_patch * scale), self.lr_patch
        return self.hr_crop, max(1, int(self.hr_crop / scale))

    def __getitem__(self, key):
        index, scale, seed = key
        rng = np.random.default_rng(seed)
        pic = self._image(index)
        hr_side, lr_side = self.sizes(scale)
        h, w = pic.valid.shape
        if min(h, w) < hr_side:
            raise E2DiffSRError(f"image {self.files[index].name} is {w} x {h} px, smaller than the {hr_side} px crop")
        try:
            y, x = valid_corner(pic.valid, hr_side, self.min_valid, rng)
        except E2DiffSRError as e:
            raise E2DiffSRError(f"image {self.files[index].name}: {e}") from None
        hr = np.concatenate([pic.rgb[y:y + hr_side, x:x + hr_side],
                             pic.valid[y:y + hr_side, x:x + hr_side, None].view(np.uint8)], axis=2)
        flip_h, flip_v, transpose = rng.random(3) < 0.5   # the 8 flips / 90-degree rotations
        if flip_h:
            hr = hr[:, ::-1]
        if flip_v:
            hr = hr[::-1]
        if transpose:
            hr = hr.transpose(1, 0, 2)
        hr = np.ascontiguousarray(hr)
        valid = torch.from_numpy(hr[..., 3] > 0)[None]
        hr = np.ascontiguousarray(hr[..., :3])
        lr = bicubic_pil(hr, (lr_side, lr_side))
        return to_model(hr), to_model(lr), valid


def collate(items):
    hr = torch.stack([it[0] for it in items])
    lr = torch.stack([it[1] for it in items])
    return {"hr": hr, "lr": lr, "valid": torch.stack([it[2] for it in items])}


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
