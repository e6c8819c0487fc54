"""Training pairs (reference README 1.5): one scale per batch from U(1, 8), HR crops, LR by PIL bicubic.

Every random choice of batch ``g`` (the images, the scale, each crop and flip) is a pure function of
(seed, g, rank), so the data order does not depend on the number of worker processes and a resumed run
continues with exactly the batches it would have seen. Reading pictures, the degradation and the validation
crops are the evaluator's protocol (``e2diffsr_core.evaluation.protocol``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import E2DiffSRError
from ..evaluation.protocol import bicubic_pil, image_size, read_rgb, to_model


def check_sizes(files: list[Path], need: int, why: str) -> None:
    """Every image must hold a ``need`` x ``need`` crop; name the first that does not."""
    for p in files:
        w, h = image_size(p)
        if min(w, h) < need:
            raise E2DiffSRError(f"image {p.name} is {w} x {h} px, smaller than the {need} px crop {why}; "
                                "use larger images or a smaller crop / scale_max")


# -- pairs --------------------------------------------------------------------------------------------------
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
