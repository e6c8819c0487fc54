"""Exponential moving average of the UNet weights (README 1.5: decay 0.9999, warm-up (1+n)/(10+n))."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in module.named_parameters()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.num_updates += 1
        names = [n for n, _ in module.named_parameters()]
        params = [p.detach().float() for _, p in module.named_parameters()]
        # shadow += (1 - decay) * (param - shadow), one fused kernel per dtype/device group
        torch._foreach_lerp_([self.shadow[n] for n in names], params, 1.0 - self.current_decay())

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for n, p in module.named_parameters():
            p.copy_(self.shadow[n].to(p.dtype))

    @contextmanager
    def swapped_in(self, module: nn.Module):
        """Run with the EMA weights, then put the raw weights back."""
        raw = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for n, p in module.named_parameters():
                    p.copy_(raw[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {n: t.detach().cpu().clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)

    def to(self, device) -> EMA:
        self.shadow = {n: t.to(device) for n, t in self.shadow.items()}
        return self
