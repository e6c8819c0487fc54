"""The last phase of the engine: the decoder's CSUM and bicubic skip on output tiles, each final at once.

Tiles are exact (decode), so they need no overlap and no blending. With the consistency correction
on, a tile is computed with the halo its back-projection needs (consistency) and cropped afterwards; the
guard (consistency.local_bounds) needs only the input pixels around the tile, so it keeps tiles exact too.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import check_cancel
from .consistency import Placement, back_project, halo
from .decode import csum_tile, level_weights, skip_window, valid_out
from .plan import RunIO, RunPlan


class TileDecoder:
    """Decodes the tiles of ``plan`` from the LR-grid features ``feats`` and hands them to ``io``.

    The model's grid may extend beyond the image (RunPlan.bordered): the CSUM runs on that grid, while the
    correction, the guard, validity and writes are the image's own (its grid, its LR pixels), exactly as
    without a border."""

    def __init__(self, st, model, feats, plan: RunPlan, io: RunIO, *, passes: int, device: torch.device,
                 guard: int = 0):
        self.st, self.feats, self.plan, self.io = st, feats, plan, io
        self.csum = model.first_stage_model.decoder.upsampler
        self.passes, self.guard, self.device = passes, guard, device
        self.level_w = level_weights(self.csum, plan.grid, feats.shape[0], device)
        image = plan.image_grid
        self.margin = halo(image.lr_size, image.out_size, passes, image) if passes else 0

    def run(self, tick=None) -> None:
        for tile in self.plan.tiles():
            check_cancel(self.io.cancel)
            self.decode(tile)
            if tick is not None:
                tick()

    def decode(self, tile: tuple[int, int, int, int]) -> None:
        """One output tile (y0, y1, x0, x1) of the model's grid: compute it with its halo, correct it, crop it,
        write it."""
        plan, m, image = self.plan, self.margin, self.plan.image_grid
        (H, W), (h, w), (oy, ox, my, mx) = image.out_size, image.lr_size, plan.origin
        y0, y1, x0, x1 = tile
        ext = (max(oy, y0 - m), min(oy + H, y1 + m), max(ox, x0 - m), min(ox + W, x1 + m))
        lx, ly, lw, lh = skip_window(ext, plan.grid)
        data, valid = self.io.read(lx, ly, lw, lh)
        lr01 = np.ascontiguousarray(data[np.array(plan.groups)], np.float32)  # [G, 3, lh, lw]
        lr = torch.from_numpy(lr01)
        if self.device.type == "cuda":  # page-locked: the copy to the card does not wait for the host
            lr = lr.pin_memory()
        lr = (lr.to(self.device, non_blocking=True) - 0.5) / 0.5
        out = csum_tile(self.st, self.csum, self.feats, lr.repeat(plan.samples, 1, 1, 1), (ly, lx), ext,
                        plan.grid, self.level_w)
        out = (out.clamp(-1, 1) * 0.5 + 0.5).float().cpu().numpy()  # [S*G, 3, eh, ew]
        # the image's own LR pixels in the window, and where the window lies in the image
        iy, ix = (max(ly, my), min(ly + lh, my + h)), (max(lx, mx), min(lx + lw, mx + w))
        inside = (slice(iy[0] - ly, iy[1] - ly), slice(ix[0] - lx, ix[1] - lx))
        lr01, valid, lr_at = lr01[(Ellipsis, *inside)], valid[inside], (iy[0] - my, ix[0] - mx)
        delta = None
        if self.passes or self.guard:
            where = Placement(image.lr_size, image.out_size, lr_at, (ext[0] - oy, ext[2] - ox), image)
            out, delta = back_project(out, np.tile(lr01, (plan.samples, 1, 1, 1)), valid, self.passes, where,
                                      self.device, guard=self.guard)
        keep = (slice(None), slice(None), slice(y0 - ext[0], y1 - ext[0]), slice(x0 - ext[2], x1 - ext[2]))
        ok = valid_out(valid, image, lr_at, (y0 - oy, x0 - ox), (y1 - y0, x1 - x0))
        self._emit(x0 - ox, y0 - oy, out[keep], ok, None if delta is None else delta[keep])

    def _per_sample(self, out: np.ndarray) -> np.ndarray:
        """[S*G, 3, h, w] -> [S, C, h, w]: each sample's band groups put back together."""
        G = len(self.plan.groups)
        return np.stack([self.io.ungroup([out[k * G + g] for g in range(G)]) for k in range(self.plan.samples)])

    def _emit(self, x0: int, y0: int, out: np.ndarray, ok: np.ndarray, delta: np.ndarray | None) -> None:
        """Hand a tile to the writer: the mean over samples, their spread, and the correction's size."""
        stack = self._per_sample(out)
        mean = stack.mean(0)
        std = np.sqrt(np.maximum((stack * stack).mean(0) - mean * mean, 0.0)) if self.plan.samples > 1 else None
        channels = self.plan.channels
        self.io.write(x0, y0, mean[:channels], ok, std)
        if self.io.correction is not None:
            d = np.abs(delta) if delta is not None else np.zeros_like(out)
            self.io.correction(x0, y0, self._per_sample(d).mean(0)[:channels], ok, None)


__all__ = ["TileDecoder"]
