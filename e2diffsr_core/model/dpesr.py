"""DPESR decoder (paper Sec. III-B, Fig. 3): DPDecoder prior branch + SR branch + modulation + CSUM."""

import torch
from torch import nn

from .csum import CSUM
from .dpdecoder import DPDecoderPrior
from .geometry import Geometry
from .sr_branch import FRU


class _Unused(nn.Module):
    """``decoder.style.weight`` exists in the released checkpoints but no computation reads it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1), requires_grad=False)


class DPESRDecoder(DPDecoderPrior):
    """Decoder(z, LR, out_size) = CSUM(SR-branch features modulated by the prior maps) + bicubic(LR).

    ``prior_branch=False`` is the paper's Model-I (SR branch only; z is ignored), ``sr_branch=False`` is
    Model-II (the prior maps are mixed into the head features without FRUs).
    """

    def __init__(self, z_channels: int = 4, ch: int = 64, ch_mult=(1, 1, 1, 1), num_res_blocks: int = 2,
                 num_sr_modules=(12, 12, 12, 12), csum_hidden: int = 256, csum_scale_hidden: int = 64,
                 modulation: str = "scale_aware", prior_branch: bool = True, sr_branch: bool = True,
                 in_channels: int = 3, out_channels: int = 3):
        super().__init__(z_channels, ch, ch_mult, num_res_blocks, ch, modulation)
        if len(num_sr_modules) != len(ch_mult):
            raise ValueError("num_sr_modules needs one entry per prior group")
        self.prior_branch = prior_branch
        self.sr_branch = sr_branch
        self.style = _Unused()
        self.head = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.FRUList = nn.ModuleList([FRU(ch, n) for n in num_sr_modules] if sr_branch else [])
        self.upsampler = CSUM(ch, csum_hidden, csum_scale_hidden, out_channels=out_channels)

    def forward(self, z: torch.Tensor | None, lr: torch.Tensor, geo: Geometry) -> torch.Tensor:
        """z: latent after post_quant_conv; lr in [-1, 1]; returns the image in [-1, 1] space (unclamped)."""
        # The modulation's scale input is the height ratio H_out / H_lr in float32 (reference README 1.4).
        s = torch.full((lr.shape[0], 1), geo.s, dtype=torch.float32, device=lr.device).to(lr.dtype)
        f = self.head(lr)
        if self.prior_branch:
            maps = super().forward(z, geo)
            groups = list(reversed(self.up))
            for k in range(len(maps)):
                f = groups[k].modulation(f, maps[k].to(f.dtype), s)
                if self.sr_branch:
                    f = self.FRUList[k](f)
        else:
            for fru in self.FRUList:
                f = fru(f)
        return self.upsampler(f, geo) + geo.lr_to_out(lr, "bicubic")
