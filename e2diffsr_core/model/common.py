"""Building blocks shared by the first-stage networks (DPEncoder, CondNet, DPDecoder prior branch)."""

import torch
import torch.nn.functional as F
from torch import nn


def Normalize(channels: int) -> nn.GroupNorm:
    """GroupNorm(32, eps 1e-6) of the first stage (reference README 1.4)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """Norm-swish-conv3x3 twice, 1x1 shortcut when the width changes (no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class MidBlocks(nn.Module):
    """The two ResnetBlocks at the bottom of the encoder and at the top of the DPDecoder (``mid.block_1/2``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding right and bottom by one: H -> floor(H/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The authors' in-model resize: torch bicubic (a=-0.75), align_corners=False, no antialias or clamp."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def latent_size(h: int, w: int, downsamples: int = 3) -> tuple[int, int]:
    """Latent grid of an image of h x w: halved with floor once per encoder downsample."""
    for _ in range(downsamples):
        h, w = h // 2, w // 2
    return h, w
