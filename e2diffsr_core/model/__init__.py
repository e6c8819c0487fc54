"""E2DiffSR model: pure PyTorch modules, one file per component of the paper, no I/O."""

from .config import PRESETS, ModelConfig, preset
from .e2diffsr import E2DiffSR
from .geometry import Geometry

__all__ = ["E2DiffSR", "Geometry", "ModelConfig", "PRESETS", "preset"]
