"""Two-stage E2DiffSR trainer: ``python -m e2diffsr_core.train`` (see __main__.py for the commands)."""

from .config import TrainConfig, load_config, parse_config
from .loop import train

__all__ = ["TrainConfig", "load_config", "main", "parse_config", "train"]


def main(argv: list[str] | None = None) -> int:
    from .__main__ import main as _main

    return _main(argv)
