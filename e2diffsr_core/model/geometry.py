"""Where every output pixel samples the LR image: the whole-image mapping, or a tile's view of a global one.

The model resizes in four places (CondNet input, DPDecoder prior maps, CSUM levels, the bicubic skip).
On a whole image these are ``F.interpolate`` calls, exactly as in the release. A tile of a larger image
must sample where the whole-image pass would, or a non-integer scale shifts each tile by a fraction of a
pixel; a :class:`Geometry` built with :meth:`Geometry.tile` carries the global coordinates and the same
resizes are then done with ``grid_sample`` at those coordinates (the prior maps by index selection).
Where output pixels lie on the LR grid comes from one :class:`~e2diffsr_core.gridmap.GridMap`: by default
the sizes' own mapping; an output aligned to another grid (a pixel size and origin of its own) has a step
and a shift, and then even the whole image is sampled with ``grid_sample``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..gridmap import GridMap


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
    grid: GridMap | None = None  # where output pixels lie on the LR grid (None: the sizes' own mapping)

    @classmethod
    def whole(cls, lr_size, out_size, grid: GridMap | None = None) -> Geometry:
        return cls(tuple(lr_size), tuple(out_size), tuple(lr_size), tuple(out_size), grid=grid)

    @classmethod
    def tile(cls, global_lr, global_out, lr_origin, lr_size, out_origin, out_size) -> Geometry:
        return cls.tiles(global_lr, global_out, [lr_origin], lr_size, [out_origin], out_size)

    @classmethod
    def tiles(cls, global_lr, global_out, lr_origins, lr_size, out_origins, out_size,
              grid: GridMap | None = None) -> Geometry:
        return cls(tuple(lr_size), tuple(out_size), tuple(global_lr), tuple(global_out),
                   tuple(tuple(o) for o in lr_origins), tuple(tuple(o) for o in out_origins), tiled=True, grid=grid)

    @property
    def maps(self) -> GridMap:
        return GridMap.of(self.grid, self.global_lr, self.global_out)

    # Scale inputs, always from the whole image (reference README 1.2 and 1.4: height ratios); the true
    # scale of the rows when the output is aligned to another grid.
    @property
    def s(self) -> float:
        """Decoder modulation input H_out / H_lr (float32 in the model)."""
        return self.maps.y.scale

    @property
    def r(self) -> float:
        """CSUM input H_lr / H_out."""
        return self.maps.y.ratio

    @property
    def unet_scale(self) -> int:
        """UNet scale condition: the float32 height ratio truncated to an integer."""
        return int(np.float32(self.maps.y.scale))

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
        return self.maps.axes[axis].centre(g) - self.lr_origins[k][axis]

    def _grid(self, x: torch.Tensor, factor: int = 1) -> torch.Tensor:
        """grid_sample grid [B, H', W', 2] of each element's sampling positions in x (a level at LR x factor)."""
        h_in, w_in = x.shape[2], x.shape[3]
        grids = []
        for k in range(len(self.out_origins)):
            ys = (self._lr_coords(0, k) + 0.5) * factor - 0.5
            xs = (self._lr_coords(1, k) + 0.5) * factor - 0.5
            # align_corners=False normalisation, in float64; only the 1-D coordinates cross to the device
            gy = ((2 * ys + 1) / h_in - 1).to(device=x.device, dtype=torch.float32)
            gx = ((2 * xs + 1) / w_in - 1).to(device=x.device, dtype=torch.float32)
            grids.append(torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1))
        grid = torch.stack(grids)
        if grid.shape[0] != x.shape[0]:  # one geometry per tile, repeated for the groups/samples of that tile
            grid = grid.repeat_interleave(x.shape[0] // grid.shape[0], dim=0)
        return grid

    def _sample(self, x: torch.Tensor, mode: str, factor: int = 1) -> torch.Tensor:
        # Border padding clamps the source coordinate (bilinear) or each tap (bicubic), which is exactly how
        # F.interpolate(align_corners=False) treats the image edge; cost is linear in the output.
        out = F.grid_sample(x.float(), self._grid(x, factor), mode=mode, padding_mode="border", align_corners=False)
        return out.to(x.dtype)

    # The four resizes of the model.
    def lr_to_out(self, x: torch.Tensor, mode: str = "bicubic") -> torch.Tensor:
        """Resize an LR-grid tensor to the output grid (CondNet input, bicubic skip)."""
        if not self.tiled and not self.maps.aligned:
            return F.interpolate(x, size=self.out_size, mode=mode, align_corners=False)
        return self._sample(x, mode)

    def level_to_out(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """Bilinear resize of a CSUM level (LR grid x factor) to the output grid."""
        if not self.tiled and not self.maps.aligned:
            return F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return self._sample(x, "bilinear", factor)

    def latent_to_lr(self, x: torch.Tensor) -> torch.Tensor:
        """Legacy nearest resize of a latent-grid map to the LR grid (DPDecoder prior maps)."""
        if not self.tiled and not self.maps.aligned:
            return F.interpolate(x, size=self.lr_size, mode="nearest")
        n = len(self.out_origins)
        per = x.shape[0] // n
        outs = []
        for k in range(n):
            idx = []
            for axis in (0, 1):
                lo = self.lr_origins[k][axis]
                g = torch.arange(lo, lo + self.lr_size[axis], dtype=torch.float64)
                src = latent_index(self.maps.axes[axis], g, torch.floor) - self.out_origins[k][axis] // 8
                idx.append(src.long().clamp(0, x.shape[2 + axis] - 1).to(x.device))
            xs = x[k * per:(k + 1) * per]
            outs.append(xs.index_select(2, idx[0]).index_select(3, idx[1]))
        return torch.cat(outs) if n > 1 else outs[0]


def latent_index(am, i, floor=np.floor):
    """Latent cell (8 output pixels) whose value LR pixel(s) ``i`` take in the legacy nearest resize of the
    prior maps: floor(i * n_latent / n_lr) in whole-image pixels for the default mapping, and the cell under
    the LR pixel's first edge for an aligned grid. Not clipped."""
    if am.sized:
        return floor(i * ((am.n_out // 8) / am.n_lr))
    return floor(am.out_edge(i) / 8)


def min_side_padding(lr_side: int, scale: float, minimum: int = 16) -> int:
    """LR pixels to add so that an output side reaches ``minimum`` (tiny inputs the release cannot run)."""
    pad = 0
    while int((lr_side + pad) * scale) < minimum:
        pad += 1
    return pad


__all__ = ["Geometry", "latent_index", "min_side_padding"]
