"""Stage-1 losses (paper Eq. 12 as the authors' code does it): L1 + LPIPS, KL (or VQ), PatchGAN hinge loss
with the adaptive weight. Stage-2 losses are one line each and live in stage2.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): n_layers stride-2 4x4 convs, one stride-1, a 1-channel logit map."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.n_layers = n_layers
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def min_input(n_layers: int) -> int:
        """Smallest side that still leaves one logit (n_layers halvings, then two 4x4 convs)."""
        return 3 * 2 ** n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """||dNLL/dW|| / ||dG/dW|| at the decoder's last layer W (Esser et al.), clamped to [0, 1e4], times ``scale``."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(g_nll) / (torch.norm(g_adv) + 1e-4)
    return torch.clamp(w, 0.0, 1e4).detach() * scale


def reconstruction_nll(hr: torch.Tensor, lr: torch.Tensor, rec: torch.Tensor, l1_weight: float,
                       perceptual: nn.Module | None, perceptual_weight: float) -> tuple[torch.Tensor, dict]:
    """Per-pixel L1 plus the per-image LPIPS broadcast to every pixel, summed over pixels, mean over the batch.

    The sum (not mean) over pixels is the authors' convention: it sets the balance with the KL weight 1e-6.
    """
    l1 = (hr - rec).abs()
    rec_loss = l1_weight * l1
    with torch.no_grad():  # the bicubic baseline on the same batch: l1 / l1_bicubic < 1 means better than bicubic
        base = (hr - F.interpolate(lr, size=hr.shape[2:], mode="bicubic", align_corners=False)).abs().mean()
    logs = {"l1": l1.mean().detach(), "l1_bicubic": base.float()}
    if perceptual is not None and perceptual_weight > 0:
        p = perceptual(hr.float().contiguous(), rec.float().contiguous())
        rec_loss = rec_loss + perceptual_weight * p
        logs["lpips"] = p.mean().detach()
    return rec_loss.sum() / rec_loss.shape[0], logs
