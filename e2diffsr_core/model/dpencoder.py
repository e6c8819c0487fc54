"""DPEncoder (paper Sec. III-B, Eq. 5) and its KL-regularised posterior; CondNet shares the encoder body."""

import torch
from torch import nn

from .common import Downsample, MidBlocks, Normalize, ResnetBlock, swish


class _Level(nn.Module):
    def __init__(self, block: nn.ModuleList, downsample: nn.Module | None):
        super().__init__()
        self.block = block
        if downsample is not None:
            self.downsample = downsample


class GAPEncoder(nn.Module):
    """Convolutional encoder to the 1/8 latent grid: levels of ResnetBlocks, 3 downsamples, no attention."""

    def __init__(self, in_channels: int, ch: int, ch_mult, num_res_blocks: int, z_channels: int,
                 double_z: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            block_in = ch * in_mult[level]
            block_out = ch * mult
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            last = level == len(ch_mult) - 1
            self.down.append(_Level(blocks, None if last else Downsample(block_in)))
        self.mid = MidBlocks(block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class DiagonalGaussian:
    """KL posterior N(mean, exp(logvar)) from the 8 moment channels; logvar clamped to [-30, 20]."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                                dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent elements, one value per batch element."""
        var = torch.exp(self.logvar)
        return 0.5 * torch.sum(self.mean.pow(2) + var - 1.0 - self.logvar, dim=[1, 2, 3])


def DPEncoder(ch: int, ch_mult, num_res_blocks: int, z_channels: int = 4) -> GAPEncoder:
    """E(cat[bicubic(LR), HR]) -> 2 x z_channels posterior moments (before quant_conv)."""
    return GAPEncoder(6, ch, ch_mult, num_res_blocks, z_channels, double_z=True)
