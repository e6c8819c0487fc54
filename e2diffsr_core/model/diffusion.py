"""The T = 4 latent diffusion (paper Sec. III-C, Algorithm 2) with the released code's schedule and variance."""

import numpy as np
import torch
from torch import nn


def make_schedule(timesteps: int = 4, linear_start: float = 0.1, linear_end: float = 0.99) -> dict[str, torch.Tensor]:
    """sqrt-linear betas, every quantity derived in float64 and stored as float32 (as the release)."""
    betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    abar = np.cumprod(alphas, axis=0)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    out = {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


class Schedule(nn.Module):
    """Holds the schedule as buffers (names as in the released checkpoints) and does the per-step algebra."""

    def __init__(self, timesteps: int = 4, linear_start: float = 0.1, linear_end: float = 0.99,
                 variance: str = "posterior"):
        super().__init__()
        if variance not in ("posterior", "beta"):
            raise ValueError(f"unknown variance {variance!r}; use 'posterior' (release) or 'beta' (paper text)")
        self.timesteps = timesteps
        self.variance = variance
        for name, value in make_schedule(timesteps, linear_start, linear_end).items():
            self.register_buffer(name, value)

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return self.sqrt_alphas_cumprod[t] * x0 + self.sqrt_one_minus_alphas_cumprod[t] * noise

    def predict_x0(self, z: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(1/abar_t) z - sqrt(1/abar_t - 1) eps (no clamp, as the release)."""
        return self.sqrt_recip_alphas_cumprod[t] * z - self.sqrt_recipm1_alphas_cumprod[t] * eps

    def step(self, z: torch.Tensor, t: int, eps: torch.Tensor, noise: torch.Tensor | None):
        """One reverse step z_t -> z_{t-1}: posterior mean plus noise scaled by the chosen std (0 at t = 0)."""
        x0 = self.predict_x0(z, t, eps)
        mean = self.posterior_mean_coef1[t] * x0 + self.posterior_mean_coef2[t] * z
        if t == 0 or noise is None:
            return mean, x0
        if self.variance == "posterior":
            std = torch.exp(0.5 * self.posterior_log_variance_clipped[t])
        else:
            std = torch.sqrt(self.betas[t])
        return mean + std * noise, x0
