"""What both training stages share: the process and device, the model on it, batches moved to it, Adam at the
global batch's learning rate, gradient clipping with the NaN/inf guard."""

from __future__ import annotations

import math

import torch

from ..model import E2DiffSR
from .config import TrainConfig
from .runtime import Dist


def clip_and_check(params, max_norm: float) -> tuple[bool, torch.Tensor]:
    """Clip (max_norm > 0) and report whether every gradient is finite (the NaN/inf guard)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return bool(torch.isfinite(norm)), norm


def adam_for(params, s, rt: Dist, device: torch.device) -> tuple[float, torch.optim.Adam]:
    """The stage's Adam at base_lr x global batch (as the authors, unless scale_lr is off); fused on CUDA."""
    lr = s.base_lr * (s.batch_size * rt.world if s.scale_lr else 1)
    return lr, torch.optim.Adam(params, lr=lr, betas=tuple(s.betas), fused=device.type == "cuda")


def lr_factor(schedule: str, warmup_steps: int, step: int, progress: float) -> float:
    """The base learning rate's multiplier for step ``step`` (0-based): a linear warm-up over ``warmup_steps``,
    then constant, or a cosine from 1 to 0 over ``progress`` (0..1, the share of the run's budget spent:
    steps or minutes, whichever ends the run first; windows of fixed wall time end at 0)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return warm


class StageBase:
    """``cfg``: the stage's own settings ([stage1] or [stage2]); ``run``: the [run] table."""

    def __init__(self, cfg: TrainConfig, stage_cfg, model: E2DiffSR, rt: Dist):
        self.cfg, self.run, self.rt, self.device = stage_cfg, cfg.run, rt, rt.device
        self.model = model.to(self.device)
        self.channels_last = cfg.run.channels_last and self.device.type == "cuda"

    def _optimise(self, params) -> None:
        """Adam over those of ``params`` that require gradients (``self.params``, clipped every step)."""
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.opt = adam_for(self.params, self.cfg, self.rt, self.device)
        self.base_lr = self.lr

    def optimisers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def schedule(self, step: int, progress: float) -> None:
        """Set every optimiser's learning rate for ``step`` from the stage's schedule (``self.lr`` is logged)."""
        self.lr = self.base_lr * lr_factor(self.cfg.lr_schedule, self.cfg.warmup_steps, step, progress)
        for opt in self.optimisers():
            for group in opt.param_groups:
                group["lr"] = self.lr

    def _inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's HR and LR on the device (channels-last where the run asks for it, on CUDA)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        hr = batch["hr"].to(self.device, non_blocking=True).contiguous(memory_format=fmt)
        lr = batch["lr"].to(self.device, non_blocking=True).contiguous(memory_format=fmt)
        return hr, lr

    def _valid(self, batch) -> torch.Tensor | None:
        """The HR pixels the losses count, [B, 1, H, W] bool on the device; None when every pixel counts
        (decided on the host, so full batches cost nothing)."""
        valid = batch.get("valid")
        if valid is None or bool(valid.all()):
            return None
        return valid.to(self.device, non_blocking=True)
