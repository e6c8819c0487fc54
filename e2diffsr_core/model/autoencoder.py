"""First stage (paper Sec. III-B): DPEncoder + KL posterior + DPESR decoder, with the 1x1 quant convs."""

import torch
from torch import nn

from .common import bicubic
from .dpencoder import DiagonalGaussian, DPEncoder
from .dpesr import DPESRDecoder
from .geometry import Geometry
from .quantize import VectorQuantizer


class AutoencoderKL(nn.Module):
    """Encodes the difference between HR and bicubic(LR) into a 4-channel latent on the 1/8 grid."""

    def __init__(self, cfg):
        super().__init__()
        self.encoder = DPEncoder(cfg.enc_ch, cfg.enc_ch_mult, cfg.enc_num_res_blocks, cfg.embed_dim)
        self.decoder = DPESRDecoder(
            cfg.embed_dim, cfg.dec_ch, cfg.dec_ch_mult, cfg.dec_num_res_blocks, cfg.num_sr_modules,
            cfg.csum_hidden, cfg.csum_scale_hidden, cfg.modulation, cfg.prior_branch, cfg.sr_branch)
        self.quant_conv = nn.Conv2d(2 * cfg.embed_dim, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 1)
        # VQ ablation (paper Table V) only; the KL default adds no module and no key.
        self.quantize = VectorQuantizer.from_config(cfg) if getattr(cfg, "regularizer", "kl") == "vq" else None

    def encode(self, hr: torch.Tensor, lr: torch.Tensor) -> DiagonalGaussian:
        """hr, lr in [-1, 1]; the encoder sees cat[bicubic(LR -> HR size), HR] (LR first)."""
        x = torch.cat([bicubic(lr, (hr.shape[2], hr.shape[3])), hr], dim=1)
        moments = self.quant_conv(self.encoder(x))
        if self.quantize is not None:
            return self.quantize.posterior(moments)
        return DiagonalGaussian(moments)

    def decode(self, z: torch.Tensor, lr: torch.Tensor, geo: Geometry | tuple[int, int]) -> torch.Tensor:
        """z in the unscaled latent space; returns the [-1, 1] image, unclamped."""
        if not isinstance(geo, Geometry):
            geo = Geometry.whole((lr.shape[2], lr.shape[3]), geo)
        return self.decoder(self.post_quant_conv(z), lr, geo)

    def forward(self, hr: torch.Tensor, lr: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None):
        posterior = self.encode(hr, lr)
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        return self.decode(z, lr, (hr.shape[2], hr.shape[3])), posterior
