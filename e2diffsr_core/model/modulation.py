"""Scale-aware modulation (paper Sec. III-B, Eq. 7): mixes SR-branch features with a DPDecoder prior map."""

import torch
import torch.nn.functional as F
from torch import nn


class ScaleAwareModulation(nn.Module):
    """LeakyReLU(f * a1(s) + h * a2(s)); a1, a2 per channel from Linear(1, C), normalised jointly.

    Attribute names (condition_scale1/2) follow the released checkpoints. With ``mode="concat"`` it is the
    paper's Model-III ablation: a 1x1 conv over [f, h] with no scale input.
    """

    def __init__(self, channels: int, mode: str = "scale_aware"):
        super().__init__()
        self.mode = mode
        if mode == "scale_aware":
            self.condition_scale1 = nn.Linear(1, channels)
            self.condition_scale2 = nn.Linear(1, channels)
        elif mode == "concat":
            self.concat_conv = nn.Conv2d(2 * channels, channels, 1)
        else:
            raise ValueError(f"unknown modulation mode {mode!r}; use 'scale_aware' or 'concat'")

    def forward(self, f: torch.Tensor, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return F.leaky_relu(self.concat_conv(torch.cat([f, h], dim=1)), 0.01)
        a1 = self.condition_scale1(s)
        a2 = self.condition_scale2(s)
        norm = torch.sqrt(a1 * a1 + a2 * a2 + 1e-8)
        a1 = (a1 / norm)[:, :, None, None]
        a2 = (a2 / norm)[:, :, None, None]
        return F.leaky_relu(f * a1 + h * a2, 0.01)
