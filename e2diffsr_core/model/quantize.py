"""Vector quantisation of the first-stage latent: the paper's VQ-regularisation ablation (Sec. V, Table V).

The codebook size is not in the paper; the default is that of the LDM "vq-f8" autoencoder (16384 x 4) and can
be changed through ``ModelConfig.notes["vq_n_embed"]``, which the checkpoint carries.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_CODEBOOK = 16384


class VectorQuantizer(nn.Module):
    """Nearest codebook vector per latent position, straight-through gradient, codebook + beta commitment loss."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    @classmethod
    def from_config(cls, cfg) -> VectorQuantizer:
        return cls(int(cfg.notes.get("vq_n_embed", DEFAULT_CODEBOOK)), cfg.embed_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, C, H, W] -> (quantised z with straight-through gradient, loss per image [B])."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codes = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t().to(flat.dtype) + codes.pow(2).sum(1)[None]
        zq = codes[dist.argmin(dim=1)].view(b, h, w, c).permute(0, 3, 1, 2).to(z.dtype)
        loss = (zq - z.detach()).pow(2).mean(dim=(1, 2, 3)) + self.beta * (zq.detach() - z).pow(2).mean(dim=(1, 2, 3))
        return z + (zq - z).detach(), loss

    def posterior(self, moments: torch.Tensor) -> QuantizedLatent:
        """Quantise the first ``embed_dim`` moment channels (the ones a KL model uses as the mean)."""
        return QuantizedLatent(*self(moments[:, : self.embedding.embedding_dim]))


class QuantizedLatent:
    """Stands where :class:`DiagonalGaussian` does: sample() and mode() give the code, kl() the VQ loss."""

    def __init__(self, zq: torch.Tensor, loss: torch.Tensor):
        self.mean, self._loss = zq, loss

    def sample(self, noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        return self._loss
