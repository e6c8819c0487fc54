"""Where every output pixel samples the LR image: the whole-image mapping, or a tile's view of a global one.

The model resizes in four places (CondNet input, DPDecoder prior maps, CSUM levels, the bicubic skip).
On a whole image these are ``F.interpolate`` calls, exactly as in the release. A tile of a larger image
must sample where the whole-image pass would, or a non-integer scale shifts each tile by a fraction of a
pixel; a :class:`Geometry` built with :meth:`Geometry.tile` carries the global coordinates and the same
resizes are then done with explicit interpolation matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _cubic_weights(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys cubic convolution weights for taps at -1, 0, 1, 2 around floor(src)."""
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def interp_matrix(src: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Matrix M (len(src) x size) with M @ signal = signal sampled at ``src`` (pixel-centre coordinates).

    Boundary handling matches ``F.interpolate(align_corners=False)``: bilinear clamps the source coordinate
    at 0 and the taps at the last sample; bicubic clamps each of its four taps.
    """
    src = src.to(torch.float64)
    rows = torch.arange(src.numel())
    m = torch.zeros(src.numel(), size, dtype=torch.float64)
    if mode == "bilinear":
        src = src.clamp(min=0)
        i0 = src.floor().long().clamp(max=size - 1)
        lam = src - i0
        i1 = (i0 + 1).clamp(max=size - 1)
        m.index_put_((rows, i0), 1 - lam, accumulate=True)
        m.index_put_((rows, i1), lam, accumulate=True)
    elif mode == "bicubic":
        i = src.floor().long()
        w = _cubic_weights(src - i)
        for k in range(4):
            m.index_put_((rows, (i - 1 + k).clamp(0, size - 1)), w[:, k], accumulate=True)
    else:
        raise ValueError(mode)
    return m


def resize_with(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """Separable resize of x [B, C, H, W] by row matrices my [B, H', H] and column matrices mx [B, W', W]."""
    my = my.to(device=x.device, dtype=x.dtype)
    mx = mx.to(device=x.device, dtype=x.dtype)
    return torch.einsum("bph,bchw,bqw->bcpq", my, x, mx)


@dataclass
class Geometry:
    """Sizes, the model's scale inputs and (for tiles) the global sampling coordinates of one forward pass.

    A tiled pass may hold a batch of tiles of one size: ``lr_origins`` / ``out_origins`` give each one's
    position in the whole image.
    """

    lr_size: tuple[int, int]        # LR input of this pass (a tile's LR window including its margin)
    out_size: tuple[int, int]       # output of this pass
    global_lr: tuple[int, int]      # the whole LR image
    global_out: tuple[int, int]     # the whole output
    lr_origins: tuple[tuple[int, int], ...] = ((0, 0),)   # LR window origin of each batch element
    out_origins: tuple[tuple[int, int], ...] = ((0, 0),)  # output origin of each batch element
    tiled: bool = False

    @classmethod
    def whole(cls, lr_size, out_size) -> Geometry:
        return cls(tuple(lr_size), tuple(out_size), tuple(lr_size), tuple(out_size))

    @classmethod
    def tile(cls, global_lr, global_out, lr_origin, lr_size, out_origin, out_size) -> Geometry:
        return cls.tiles(global_lr, global_out, [lr_origin], lr_size, [out_origin], out_size)

    @classmethod
    def tiles(cls, global_lr, global_out, lr_origins, lr_size, out_origins, out_size) -> Geometry:
        return cls(tuple(lr_size), tuple(out_size), tuple(global_lr), tuple(global_out),
                   tuple(tuple(o) for o in lr_origins), tuple(tuple(o) for o in out_origins), tiled=True)

    # Scale inputs, always from the whole image (reference README 1.2 and 1.4: height ratios).
    @property
    def s(self) -> float:
        """Decoder modulation input H_out / H_lr (float32 in the model)."""
        return self.global_out[0] / self.global_lr[0]

    @property
    def r(self) -> float:
        """CSUM input H_lr / H_out."""
        return self.global_lr[0] / self.global_out[0]

    @property
    def unet_scale(self) -> int:
        """UNet scale condition: the float32 height ratio truncated to an integer."""
        return int(np.float32(self.global_out[0] / self.global_lr[0]))

    @property
    def osize(self) -> int:
        """UNet output-size condition: the output height."""
        return self.global_out[0]

    @property
    def latent_size(self) -> tuple[int, int]:
        return (self.out_size[0] // 8, self.out_size[1] // 8)

    def _lr_coords(self, axis: int, k: int) -> torch.Tensor:
        """LR coordinate (in element k's LR window) that each output pixel of element k samples."""
        n = self.out_size[axis]
        start = self.out_origins[k][axis]
        g = torch.arange(start, start + n, dtype=torch.float64)
        ratio = self.global_lr[axis] / self.global_out[axis]
        return (g + 0.5) * ratio - 0.5 - self.lr_origins[k][axis]

    def _matrices(self, x: torch.Tensor, mode: str, factor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        mats = []
        for axis in (0, 1):
            per = [interp_matrix((self._lr_coords(axis, k) + 0.5) * factor - 0.5, x.shape[2 + axis], mode)
                   for k in range(len(self.out_origins))]
            m = torch.stack(per)
            if m.shape[0] != x.shape[0]:  # one geometry per tile, repeated for groups/samples of that tile
                m = m.repeat_interleave(x.shape[0] // m.shape[0], dim=0)
            mats.append(m)
        return mats[0], mats[1]

    # The four resizes of the model.
    def lr_to_out(self, x: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
        """Resize an LR-grid tensor to the output grid (CondNet input, bicubic skip)."""
        if not self.tiled:
            return F.interpolate(x, size=self.out_size, mode=mode, align_corners=False)
        return resize_with(x, *self._matrices(x, mode))

    def level_to_out(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """Bilinear resize of a CSUM level (LR grid x factor) to the output grid."""
        if not self.tiled:
            return F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return resize_with(x, *self._matrices(x, "bilinear", factor))

    def latent_to_lr(self, x: torch.Tensor) -> torch.Tensor:
        """Legacy nearest resize of a latent-grid map to the LR grid (DPDecoder prior maps)."""
        if not self.tiled:
            return F.interpolate(x, size=self.lr_size, mode="nearest")
        n = len(self.out_origins)
        per = x.shape[0] // n
        outs = []
        for k in range(n):
            idx = []
            for axis in (0, 1):
                glat = self.global_out[axis] // 8
                lo = self.lr_origins[k][axis]
                g = torch.arange(lo, lo + self.lr_size[axis], dtype=torch.float64)
                # nearest: floor(dst * in / out) in whole-image pixels, then local to this tile's latent window
                src = torch.floor(g * (glat / self.global_lr[axis])).long() - self.out_origins[k][axis] // 8
                idx.append(src.clamp(0, x.shape[2 + axis] - 1).to(x.device))
            xs = x[k * per:(k + 1) * per]
            outs.append(xs.index_select(2, idx[0]).index_select(3, idx[1]))
        return torch.cat(outs) if n > 1 else outs[0]


def check_tile_alignment(out_origin: tuple[int, int]) -> None:
    if out_origin[0] % 8 or out_origin[1] % 8:
        raise ValueError("tile outputs must start on the latent grid (multiples of 8 output pixels)")


def min_side_padding(lr_side: int, scale: float, minimum: int = 16) -> int:
    """LR pixels to add so that an output side reaches ``minimum`` (tiny inputs the release cannot run)."""
    pad = 0
    while int((lr_side + pad) * scale) < minimum:
        pad += 1
    return pad


__all__ = ["Geometry", "interp_matrix", "resize_with", "min_side_padding", "check_tile_alignment", "math"]
