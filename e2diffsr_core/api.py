"""Array-level Python API: build or load a model and super-resolve a batch at a float scale."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_model
from .errors import E2DiffSRError
from .model import E2DiffSR, Geometry, preset
from .model.geometry import min_side_padding
from .rules import check_scale, check_temperature, output_size

__all__ = ["build_model", "check_scale", "default_model_path", "open_model", "output_size", "resolve_device",
           "superresolve_tensor"]
BUNDLED_MODEL = Path(__file__).resolve().parent / "weights" / "e2diffsr_lite.pt"
NO_MODEL = "no model file given and no bundled model is installed; give one (--model FILE, or Model file in QGIS)"


def build_model(config: str = "tiny", seed: int | None = 0) -> E2DiffSR:
    """A freshly initialised model of a preset (random weights, for training or tests)."""
    if seed is not None:
        torch.manual_seed(seed)
    return E2DiffSR(preset(config)).eval()


def default_model_path() -> Path | None:
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """'auto' picks CUDA when available (the ``local_rank``-th GPU under torchrun); 'cuda' or 'cuda:N' must exist.
    The one device rule of inference, training and evaluation."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise E2DiffSRError(f"device {device!r} was asked for but PyTorch sees no CUDA GPU; use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise E2DiffSRError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) found")
        return dev
    raise E2DiffSRError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def open_model(model: str | Path | E2DiffSR | None, device: str | torch.device = "cpu") -> E2DiffSR:
    """A model object, a checkpoint path, or None for the bundled model."""
    if isinstance(model, E2DiffSR):
        return model.to(resolve_device(device)).eval()
    if model is None:
        model = default_model_path()
        if model is None:
            raise E2DiffSRError(NO_MODEL)
    return load_model(model, resolve_device(device))


@torch.no_grad()
def superresolve_tensor(model: E2DiffSR, lr: torch.Tensor, scale: float, seed: int | None = 0,
                  noises: list[torch.Tensor] | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Super-resolve a batch ``lr`` [B, 3, h, w] in [0, 1] to [B, 3, int(h*s), int(w*s)] in [0, 1].

    The model's own output (no consistency correction), by default with the authors' sampling: same seed,
    same result (noise is drawn on the CPU, so also across devices up to kernel rounding). ``noises`` replaces
    the seed: [z_T, n_{T-1}, ..., n_1], each [B, 4, H/8, W/8] (integer division). ``temperature`` multiplies
    the noise (0: none, the raster tools' default for one sample).
    """
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise E2DiffSRError(f"expected a batch of RGB images [B, 3, H, W], got shape {tuple(lr.shape)}")
    scale = check_scale(scale, model.cfg.max_scale)
    h, w = lr.shape[2], lr.shape[3]
    out_h, out_w = output_size(h, w, scale)
    if out_h < 1 or out_w < 1:
        raise E2DiffSRError(f"an input of {w} x {h} px at x{scale:g} has no output pixels")
    device = next(model.parameters()).device
    x = (lr.to(device=device, dtype=torch.float32) - 0.5) / 0.5
    # Outputs under 16 px a side have (almost) no latent grid: pad the LR by replication, crop afterwards.
    ph, pw = min_side_padding(h, scale), min_side_padding(w, scale)
    if ph or pw:
        if noises is not None:
            raise E2DiffSRError("explicit noises need an output of at least 16 px per side")
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    geo = Geometry.whole((x.shape[2], x.shape[3]), output_size(x.shape[2], x.shape[3], scale))
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    out = model.sample(x, geo, noises=noises, generator=generator, temperature=check_temperature(temperature))
    out = out[:, :, :out_h, :out_w]
    return (out.clamp(-1, 1) * 0.5 + 0.5).float()
