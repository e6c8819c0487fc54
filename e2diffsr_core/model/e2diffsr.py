"""The whole E2DiffSR model (paper Fig. 2): CondNet -> T reverse steps of the UNet -> DPESR decoder."""

from __future__ import annotations

import torch
from torch import nn

from .autoencoder import AutoencoderKL
from .condnet import CondNet
from .config import ModelConfig
from .diffusion import Schedule
from .geometry import Geometry
from .unet import UNet


class E2DiffSR(nn.Module):
    """Both stages. Images enter and leave in [-1, 1]; the latent space is scaled by ``scale_factor``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.first_stage_model = AutoencoderKL(cfg)
        self.cond_stage_model = CondNet(cfg.cond_ch, cfg.cond_ch_mult, cfg.cond_num_res_blocks, cfg.embed_dim)
        self.unet = UNet(2 * cfg.embed_dim, cfg.embed_dim, cfg.unet_channels, cfg.unet_channel_mult,
                         cfg.unet_num_res_blocks, cfg.unet_attention_resolutions, cfg.unet_head_channels)
        self.schedule = Schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end, cfg.variance)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    # -- pieces -------------------------------------------------------------------------------------------
    def condition(self, lr: torch.Tensor, geo: Geometry) -> torch.Tensor:
        """CondNet(bicubic(LR -> output grid)): the one-shot latent estimate, in the scaled latent space."""
        return self.cond_stage_model(geo.lr_to_out(lr, "bicubic"))

    def embedding(self, t: int, geo: Geometry, batch: int, device) -> torch.Tensor:
        scale = geo.unet_scale if self.cfg.unet_scale_input == "floor" else geo.s
        dtype = torch.int64 if self.cfg.unet_scale_input == "floor" else torch.float32
        return self.unet.embedding(
            torch.full((batch,), t, dtype=torch.int64, device=device),
            torch.full((batch,), scale, dtype=dtype, device=device),
            torch.full((batch,), geo.osize, dtype=torch.int64, device=device))

    def denoise_step(self, z: torch.Tensor, c: torch.Tensor, t: int, geo: Geometry,
                     noise: torch.Tensor | None, emb: torch.Tensor | None = None, unet=None):
        """One reverse step (Algorithm 2): returns (z_{t-1}, eps, x0_hat). ``unet``: the UNet to call instead
        of ``self.unet`` (the same module compiled, for the inference engine)."""
        if emb is None:
            emb = self.embedding(t, geo, z.shape[0], z.device)
        eps = (unet or self.unet)(torch.cat([z, c], dim=1), None, None, None, emb=emb)
        z_prev, x0 = self.schedule.step(z.float(), t, eps.float(), None if noise is None else noise.float())
        return z_prev, eps, x0

    def decode(self, z_scaled: torch.Tensor, lr: torch.Tensor, geo: Geometry) -> torch.Tensor:
        """DPESR(LR, z0_hat / scale_factor); [-1, 1] space, unclamped."""
        z = (1.0 / self.scale_factor) * z_scaled
        return self.first_stage_model.decoder(self.first_stage_model.post_quant_conv(z.to(lr.dtype)), lr, geo)

    def draw_noises(self, shape, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """z_T and one noise per step with t > 0, drawn in that order (CPU generator: same on every device)."""
        return [torch.randn(shape, generator=generator) for _ in range(self.cfg.timesteps)]

    # -- the whole pass -----------------------------------------------------------------------------------
    def sample(self, lr: torch.Tensor, geo: Geometry, noises: list[torch.Tensor] | None = None,
               generator: torch.Generator | None = None, record: dict | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """Super-resolve lr ([-1, 1], B x 3 x h x w) to geo.out_size; returns [-1, 1], unclamped.

        ``noises``: [z_T, n_{T-1}, ..., n_1] (a last n_0 is accepted and ignored: it is multiplied by 0).
        ``temperature`` multiplies every noise (1: the authors' sampling, exactly; 0: the chain from z_T = 0
        without added noise, the most faithful output).
        """
        c = self.condition(lr, geo)
        shape = (lr.shape[0], self.cfg.embed_dim, *geo.latent_size)
        if tuple(c.shape) != shape:
            raise RuntimeError(f"CondNet latent {tuple(c.shape)} does not match the expected {shape}")
        if noises is None:
            noises = self.draw_noises(shape, generator)
        noises = [n.to(device=lr.device, dtype=torch.float32) for n in noises]
        if temperature != 1.0:
            noises = [n * float(temperature) for n in noises]
        z = noises[0]
        if record is not None:
            record.update(c=c, eps=[], x0=[], z=[])
        for i, t in enumerate(reversed(range(self.cfg.timesteps))):
            noise = noises[i + 1] if t > 0 else None
            z, eps, x0 = self.denoise_step(z, c, t, geo, noise)
            if record is not None:
                record["eps"].append(eps)
                record["x0"].append(x0)
                record["z"].append(z)
        if record is not None:
            record["z0_hat"] = z
        return self.decode(z, lr, geo)

    def forward(self, lr: torch.Tensor, out_size: tuple[int, int], **kw) -> torch.Tensor:
        return self.sample(lr, Geometry.whole((lr.shape[2], lr.shape[3]), out_size), **kw)
