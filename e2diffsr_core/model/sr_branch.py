"""SR branch of the DPESR decoder (paper Sec. III-B): IMDB blocks grouped into feature refinement units."""

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.05)


class ContrastChannelAttention(nn.Module):
    """CCA of IMDN: (per-channel population std + mean) -> 1x1 squeeze/excite -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = x.size(2) * x.size(3)
        mean = x.sum(3, keepdim=True).sum(2, keepdim=True) / hw
        var = (x - mean).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / hw
        return x * self.conv_du(var.pow(0.5) + mean)


class IMDB(nn.Module):
    """Information multi-distillation block: keep 1/4 of the channels at each of 4 steps, fuse, gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.distilled = channels // 4
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, padding=1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, padding=1)
        self.cca = ContrastChannelAttention(self.distilled * 4)
        self.c5 = nn.Conv2d(self.distilled * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(_lrelu(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(_lrelu(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(_lrelu(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)
        out = torch.cat([d1, d2, d3, d4], dim=1)
        return self.c5(self.cca(out)) + x


class FRU(nn.Module):
    """Feature refinement unit: IMDBs in sequence, all outputs concatenated, 1x1 fuse, 3x3 conv, residual."""

    def __init__(self, channels: int, num_blocks: int):
        super().__init__()
        self.IMDB = nn.ModuleList([IMDB(channels) for _ in range(num_blocks)])
        self.c = nn.Sequential(nn.Conv2d(channels * num_blocks, channels, 1), nn.LeakyReLU(0.05))
        self.LR_conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        h = x
        for block in self.IMDB:
            h = block(h)
            outs.append(h)
        return self.LR_conv(self.c(torch.cat(outs, dim=1))) + x
