import os
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"

# Same thread count as the reference fixture, for reproducible float rounding.
torch.set_num_threads(2)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """A tiny model with random weights, saved as our self-describing checkpoint."""
    from e2diffsr_core.api import build_model
    from e2diffsr_core.checkpoint import save_model

    model = build_model("tiny", seed=0)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_model(model, path, {"note": "random weights for tests"})
    return path
