"""Stage 2 (paper Sec. III-C, Eq. 13; README 1.5): train CondNet and the UNet in the frozen first stage's latent
space. The authors do not sample a timestep: they noise the latent to t = T-1 and unroll the whole T-step
reverse chain with gradients, then compare its output with the latent; CondNet is distilled toward the latent."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..checkpoint import safe_load, save_model
from ..errors import E2DiffSRError
from ..model import E2DiffSR, Geometry, ModelConfig
from .common import StageBase, clip_and_check
from .config import TrainConfig
from .ema import EMA
from .runtime import Dist, autocast

LOG_KEYS = ("loss", "diffusion", "distill")

# ModelConfig fields that shape the first stage: they must agree with the stage-1 checkpoint.
FIRST_STAGE_FIELDS = ("embed_dim", "enc_ch", "enc_ch_mult", "enc_num_res_blocks", "dec_ch", "dec_ch_mult",
                      "dec_num_res_blocks", "num_sr_modules", "csum_hidden", "csum_scale_hidden", "modulation",
                      "prior_branch", "sr_branch", "regularizer")


def stage1_file(path: str | Path | None) -> Path:
    if not path:
        raise E2DiffSRError("stage 2 needs the stage-1 result: pass --stage1 RUN_DIR (or its model.pt)")
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise E2DiffSRError(f"stage-1 checkpoint not found: {p}")
    return p


def load_first_stage(model: E2DiffSR, path: Path) -> None:
    """Copy the first stage of a model file into ``model``; its first-stage config must match."""
    obj = safe_load(path, "stage-1 checkpoint")
    if "config" not in obj or "state_dict" not in obj:
        raise E2DiffSRError(f"{path} is not an E2DiffSR model file; give the model.pt a stage-1 run wrote")
    try:
        theirs = ModelConfig.from_dict(obj["config"])
    except (TypeError, ValueError, AttributeError) as e:
        raise E2DiffSRError(f"{path} has an invalid model configuration: {e}") from None
    def norm(v):
        return tuple(v) if isinstance(v, (list, tuple)) else v

    for name in FIRST_STAGE_FIELDS:
        a, b = getattr(model.cfg, name), getattr(theirs, name)
        if norm(a) != norm(b):
            raise E2DiffSRError(f"stage-1 checkpoint {path.name} has model.{name} = {b!r} but this config says {a!r}")
    prefix = "first_stage_model."
    state = {k[len(prefix):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
    try:
        model.first_stage_model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise E2DiffSRError(f"stage-1 checkpoint {path.name} does not fit the model: {first}") from None


def _loss(kind: str, a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L2 or L1; with ``weight`` [B, 1, h, w] (1: a latent cell of valid pixels) over the valid cells."""
    if weight is None:
        return F.mse_loss(a.float(), b.float()) if kind == "l2" else F.l1_loss(a.float(), b.float())
    err = (a.float() - b.float()) ** 2 if kind == "l2" else (a.float() - b.float()).abs()
    return (err * weight).sum() / (weight.sum() * a.shape[1]).clamp_min(1.0)


def latent_weight(valid: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """1 for each latent cell whose HR pixels are all valid, else 0 ([B, 1, h, w]); None when all are valid."""
    if valid is None:
        return None
    return 1.0 - F.adaptive_max_pool2d((~valid).float(), size)


class _Objective(nn.Module):
    """(LR, z0) -> weighted diffusion + distillation loss: the whole differentiable part, one DDP forward."""

    def __init__(self, model: E2DiffSR, s):
        super().__init__()
        self.model, self.s = model, s

    def forward(self, lr: torch.Tensor, z0: torch.Tensor, geo: Geometry, generator: torch.Generator,
                weight: torch.Tensor | None = None):
        m, s = self.model, self.s
        c = m.condition(lr, geo)
        logs = {}
        total = 0.0
        if s.distill_weight > 0:
            logs["distill"] = _loss(s.loss_type, c, z0, weight)
            total = total + s.distill_weight * logs["distill"]
        if s.diffusion_weight > 0:
            T = m.cfg.timesteps
            noise = torch.randn(z0.shape, generator=generator, device=z0.device)
            if s.timestep_sampling == "chain":
                z = m.schedule.q_sample(z0, T - 1, noise)
                for t in reversed(range(T)):
                    n = torch.randn(z0.shape, generator=generator, device=z0.device) if t > 0 else None
                    z, _, _ = m.denoise_step(z, c, t, geo, n)
                logs["diffusion"] = _loss(s.loss_type, z, z0, weight)
            else:  # DDPM-style ablation: one random t per image, predict the noise
                b = z0.shape[0]
                t = torch.randint(0, T, (b,), generator=generator, device=z0.device)
                sched = m.schedule
                z_t = (sched.sqrt_alphas_cumprod[t][:, None, None, None] * z0
                       + sched.sqrt_one_minus_alphas_cumprod[t][:, None, None, None] * noise)
                if m.cfg.unet_scale_input == "floor":
                    scale = torch.full((b,), geo.unet_scale, dtype=torch.int64, device=z0.device)
                else:
                    scale = torch.full((b,), geo.s, dtype=torch.float32, device=z0.device)
                osize = torch.full((b,), geo.osize, dtype=torch.int64, device=z0.device)
                emb = m.unet.embedding(t, scale, osize)
                eps = m.unet(torch.cat([z_t, c.to(z_t.dtype)], dim=1), None, None, None, emb=emb)
                logs["diffusion"] = _loss(s.loss_type, eps, noise, weight)
            total = total + s.diffusion_weight * logs["diffusion"]
        return total, logs


class Stage2(StageBase):
    stage = 2
    log_keys = LOG_KEYS

    def __init__(self, cfg: TrainConfig, model: E2DiffSR, rt: Dist):
        super().__init__(cfg, cfg.stage2, model, rt)
        self.ae = self.model.first_stage_model.eval().requires_grad_(False)
        self.model.unet.requires_grad_(self.cfg.diffusion_weight > 0)   # no diffusion loss: the UNet stays as it is
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._optimise(p for m in (self.model.unet, self.model.cond_stage_model) for p in m.parameters())
        self.ema = EMA(self.model.unet, self.cfg.ema_decay).to(self.device)
        self.objective = _Objective(self.model, self.cfg)
        if rt.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = DDP(self.objective, device_ids=ids)

    @torch.no_grad()
    def prepare(self, batch, generator) -> None:
        """scale_factor = 1 / std of the first batch's latents, the HR given as both HR and LR (as the authors)."""
        if self.cfg.scale_factor > 0:
            value = torch.tensor(float(self.cfg.scale_factor), device=self.device)
        else:
            hr = batch["hr"].to(self.device)
            z = self.ae.encode(hr, hr).sample(generator=generator)
            value = (1.0 / z.flatten().std()).float()
        self.rt.broadcast(value)
        if not torch.isfinite(value) or value <= 0:
            raise E2DiffSRError(f"the first batch gives latents whose std is not usable (scale_factor {value.item()}); "
                                "check the images or set [stage2] scale_factor")
        self.model.scale_factor.fill_(value.item())

    def step(self, batch, step: int, generator: torch.Generator) -> dict:
        hr, lr = self._inputs(batch)
        geo = Geometry.whole((lr.shape[2], lr.shape[3]), (hr.shape[2], hr.shape[3]))
        with torch.no_grad():  # the target latent, from the frozen first stage in full precision
            z0 = self.ae.encode(hr, lr).sample(generator=generator) * self.model.scale_factor
        weight = latent_weight(self._valid(batch), tuple(z0.shape[-2:]))
        with autocast(self.device, self.run.amp):
            loss, logs = self.objective(lr, z0, geo, generator, weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        ok, _ = clip_and_check(self.params, self.cfg.grad_clip)
        if ok:
            self.opt.step()
            self.ema.update(self.model.unet)
        logs = {k: v.detach() for k, v in logs.items()}
        logs.update(loss=loss.detach(), skipped=not ok)
        return logs

    @torch.no_grad()
    def predict(self, lr: torch.Tensor, hr: torch.Tensor, seed: int) -> torch.Tensor:
        """Validation image: the full sampler with the EMA UNet, fixed noise."""
        geo = Geometry.whole((lr.shape[2], lr.shape[3]), (hr.shape[2], hr.shape[3]))
        with self.ema.swapped_in(self.model.unet):
            return self.model.sample(lr, geo, generator=torch.Generator().manual_seed(seed))

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "model_config": self.model.cfg.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])

    def export(self, path, meta: dict) -> None:
        """model.pt with the EMA UNet (what inference uses, as in the released checkpoints)."""
        with self.ema.swapped_in(self.model.unet):
            save_model(self.model, path, {**meta, "unet_weights": "ema"})
