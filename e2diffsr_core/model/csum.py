"""Continuous-scale upsampling module, CSUM (paper Sec. III-B, Eq. 8-9)."""

import torch
from torch import nn

from .geometry import Geometry


class CSUM(nn.Module):
    """Features at x1, x2, x4, x8 of the LR grid, resized to the output, weighted by an MLP of r, fused per pixel.

    r = H_lr / H_out. The per-pixel fusion is a stack of 1x1 convs (width ``hidden``, 256 in the release).
    """

    def __init__(self, channels: int, hidden: int = 256, scale_hidden: int = 64, levels: int = 4,
                 out_channels: int = 3):
        super().__init__()
        self.levels = levels
        self.scale_aware_layer = nn.Sequential(
            nn.Linear(1, scale_hidden), nn.ReLU(inplace=True), nn.Linear(scale_hidden, levels), nn.Sigmoid())
        self.UPNet_x2_list = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
             for _ in range(levels - 1)])
        layers: list[nn.Module] = [nn.Conv2d(levels * channels, hidden, 1)]
        for _ in range(3):
            layers += [nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1)]
        layers += [nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)]
        self.fuse = nn.Sequential(*layers)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for up in self.UPNet_x2_list:
            feats.append(up(feats[-1]))
        return feats

    def level_weights(self, r: torch.Tensor) -> torch.Tensor:
        return self.scale_aware_layer(r)

    def forward(self, x: torch.Tensor, geo: Geometry) -> torch.Tensor:
        r = torch.full((x.shape[0], 1), geo.r, dtype=torch.float32, device=x.device).to(x.dtype)
        w = self.level_weights(r)
        feats = [geo.level_to_out(f, 2 ** i) * w[:, i, None, None, None] for i, f in enumerate(self.pyramid(x))]
        return self.fuse(torch.cat(feats, dim=1))
