"""Stage 1 (paper Sec. III-B, Eq. 12): train DPEncoder + DPESR decoder as an autoencoder of the HR/LR
difference, with L1 + LPIPS reconstruction, KL (or VQ) regularisation and a PatchGAN discriminator."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..checkpoint import save_model
from ..evaluation.metrics import make_lpips
from ..model import E2DiffSR, Geometry
from .common import StageBase, adam_for, clip_and_check
from .config import TrainConfig
from .losses import NLayerDiscriminator, adaptive_weight, hinge_d_loss, reconstruction_nll
from .runtime import Dist, autocast

LOG_KEYS = ("loss", "l1", "l1_bicubic", "lpips", "reg", "g_loss", "d_weight", "d_loss")


class _Autoencode(nn.Module):
    """HR, LR -> (reconstruction, regulariser loss per image): the part of the step DDP synchronises."""

    def __init__(self, ae: nn.Module, sample: bool):
        super().__init__()
        self.ae, self.sample = ae, sample

    def forward(self, hr, lr, generator=None):
        posterior = self.ae.encode(hr, lr)
        z = posterior.sample(generator=generator) if self.sample else posterior.mode()
        return self.ae.decode(z, lr, (hr.shape[2], hr.shape[3])), posterior.kl()


class _DiscriminatePair(nn.Module):
    """D(real), D(fake) as two calls (separate BatchNorm statistics, as the authors) in one DDP forward."""

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, real, fake):
        return self.disc(real), self.disc(fake)


class Stage1(StageBase):
    stage = 1
    log_keys = LOG_KEYS

    def __init__(self, cfg: TrainConfig, model: E2DiffSR, rt: Dist):
        super().__init__(cfg, cfg.stage1, model, rt)
        s = self.cfg
        self.model.cond_stage_model.requires_grad_(False)
        self.model.unet.requires_grad_(False)
        self.ae = self.model.first_stage_model.train()
        if self.channels_last:
            self.ae.to(memory_format=torch.channels_last)
        self._optimise(self.ae.parameters())
        self.gen = _Autoencode(self.ae, s.sample_posterior)
        self.disc = NLayerDiscriminator(3, s.disc_channels, s.disc_layers).to(self.device)
        _, self.opt_disc = adam_for(self.disc.parameters(), s, rt, self.device)
        self.pair = _DiscriminatePair(self.disc)
        if rt.enabled:
            # Model-I leaves the prior branch without gradients; DDP must be told to expect that.
            unused = not cfg.model.prior_branch
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.gen = DDP(self.gen, device_ids=ids, find_unused_parameters=unused)
            self.pair = DDP(self.pair, device_ids=ids)
        self.perceptual = None
        if s.perceptual_weight > 0:
            self.perceptual = make_lpips(s.perceptual_net, s.perceptual_weights or None,
                                         s.lpips_random_backbone).to(self.device)
        self.last_layer = self.ae.decoder.upsampler.fuse[-1].weight
        self.reg_weight = s.codebook_weight if cfg.model.regularizer == "vq" else s.kl_weight

    def optimisers(self) -> list[torch.optim.Optimizer]:
        return [self.opt, self.opt_disc]

    def prepare(self, batch, generator) -> None:
        """Nothing to set up before the first step of stage 1."""

    def step(self, batch, step: int, generator: torch.Generator) -> dict:
        s = self.cfg
        hr, lr = self._inputs(batch)
        valid = self._valid(batch)
        disc_on = s.disc_weight > 0 and step >= s.disc_start
        with autocast(self.device, self.run.amp):
            rec, reg = self.gen(hr, lr, generator)
            if valid is not None:  # invalid pixels take the target's values: no loss sees them (L1, LPIPS, GAN)
                rec = torch.where(valid, rec, hr.to(rec.dtype))
            nll, logs = reconstruction_nll(hr, lr, rec, s.l1_weight, self.perceptual, s.perceptual_weight)
            reg = reg.float().mean()
            loss = nll + self.reg_weight * reg
            if disc_on:
                self.disc.requires_grad_(False)
                g_loss = -self.disc(rec).float().mean()
                d_weight = adaptive_weight(nll, g_loss, self.last_layer, s.disc_weight)
                loss = loss + d_weight * g_loss
                logs.update(g_loss=g_loss.detach(), d_weight=d_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        ok, _ = clip_and_check(self.params, s.grad_clip)
        if ok:
            self.opt.step()
        logs.update(loss=loss.detach(), reg=reg.detach())
        if disc_on:
            self.disc.requires_grad_(True)
            with autocast(self.device, self.run.amp):
                real, fake = self.pair(hr.detach(), rec.detach())
                d_loss = hinge_d_loss(real.float(), fake.float())
            self.opt_disc.zero_grad(set_to_none=True)
            d_loss.backward()
            d_ok, _ = clip_and_check(list(self.disc.parameters()), s.grad_clip)
            if d_ok and ok:
                self.opt_disc.step()
            ok = ok and d_ok
            logs["d_loss"] = d_loss.detach()
        logs["skipped"] = not ok
        return logs

    @torch.no_grad()
    def predict(self, lr: torch.Tensor, hr: torch.Tensor, seed: int) -> torch.Tensor:
        """Validation image: the autoencoder's reconstruction from (HR, LR), posterior mode."""
        geo = Geometry.whole((lr.shape[2], lr.shape[3]), (hr.shape[2], hr.shape[3]))
        z = self.ae.encode(hr, lr).mode()
        return self.ae.decode(z, lr, geo)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "disc": self.disc.state_dict(),
                "opt": self.opt.state_dict(), "opt_disc": self.opt_disc.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
        self.opt_disc.load_state_dict(state["opt_disc"])

    def export(self, path, meta: dict) -> None:
        save_model(self.model, path, meta)
