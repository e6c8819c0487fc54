"""DPDecoder prior branch (paper Sec. III-B, Eq. 6): latent z -> four prior maps h_0..h_3 on the LR grid."""

import torch
from torch import nn

from .common import MidBlocks, ResnetBlock
from .geometry import Geometry
from .modulation import ScaleAwareModulation


class PriorGroup(nn.Module):
    """One group of ResnetBlocks at latent resolution, a 1x1 ``transfer`` conv, and the group's modulation.

    The released code keeps the modulation's parameters inside this group (``up.{i}.condition_scale*``);
    the checkpoint converter maps them onto ``up.{i}.modulation.*``.
    """

    def __init__(self, block_in: int, block_out: int, num_res_blocks: int, sr_channels: int, modulation: str):
        super().__init__()
        blocks = []
        for _ in range(num_res_blocks):
            blocks.append(ResnetBlock(block_in, block_out))
            block_in = block_out
        self.block = nn.ModuleList(blocks)
        self.transfer = nn.Conv2d(block_out, sr_channels, 1)
        self.modulation = ScaleAwareModulation(sr_channels, modulation)


class DPDecoderPrior(nn.Module):
    """conv_in, two middle blocks, then groups up[3], up[2], up[1], up[0] chained (no upsampling)."""

    def __init__(self, z_channels: int, ch: int, ch_mult, num_res_blocks: int, sr_channels: int,
                 modulation: str = "scale_aware"):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = MidBlocks(block_in)
        groups: list[PriorGroup] = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            groups.insert(0, PriorGroup(block_in, block_out, num_res_blocks, sr_channels, modulation))
            block_in = block_out
        self.up = nn.ModuleList(groups)

    def forward(self, z: torch.Tensor, geo: Geometry) -> list[torch.Tensor]:
        """Prior maps in processing order (h_0 comes from ``up[3]``), each resized (nearest) to the LR grid."""
        h = self.mid(self.conv_in(z))
        maps = []
        for group in reversed(self.up):
            for block in group.block:
                h = block(h)
            maps.append(geo.latent_to_lr(group.transfer(h)))
        return maps
