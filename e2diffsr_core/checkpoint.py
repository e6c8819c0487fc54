"""Our self-describing checkpoint: safe loading (never runs code) and atomic saving.

The authors' (LDCSR) Lightning checkpoints are converted by :mod:`e2diffsr_core.tools.convert_official`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from .errors import E2DiffSRError
from .model import E2DiffSR, ModelConfig

FORMAT = "e2diffsr-checkpoint"
VERSION = 1



def safe_load(path: str | os.PathLike, what: str = "model file") -> dict:
    """torch.load with weights_only=True and one-line errors; a file can never run code here."""
    path = Path(path)
    if not path.is_file():
        raise E2DiffSRError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise E2DiffSRError(
                f"refusing to load {path}: it contains Python objects that could run code "
                f"({first[:120]}); use a checkpoint written by e2diffsr or convert-official") from None
        raise E2DiffSRError(f"{path} is not a PyTorch checkpoint ({first[:120]})") from None
    except Exception as e:  # the unpickler raises many types (KeyError, EOFError, ...) on foreign bytes
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise E2DiffSRError(f"{path} is corrupt or not a PyTorch checkpoint ({msg[:120]})") from None
    if not isinstance(obj, dict):
        raise E2DiffSRError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a dict")
    return obj


def _check_keys(model_keys, given_keys, source: str) -> None:
    missing = sorted(set(model_keys) - set(given_keys))
    unexpected = sorted(set(given_keys) - set(model_keys))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise E2DiffSRError(f"{source} does not match the model: {'; '.join(parts)}")


def load_state(model: E2DiffSR, state: dict, source: str) -> None:
    """Strict load with a one-line error naming missing/unexpected keys or the first shape mismatch."""
    own = model.state_dict()
    _check_keys(own.keys(), state.keys(), source)
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise E2DiffSRError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def save_model(model: E2DiffSR, path: str | os.PathLike, meta: dict | None = None, half: bool = False) -> None:
    """Write a checkpoint that rebuilds its model with no other file; atomically (temp file + rename)."""
    state = {k: (v.half() if half and v.is_floating_point() and k != "scale_factor" else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "config": model.cfg.to_dict(), "state_dict": state,
           "meta": dict(meta or {})}
    atomic_save(obj, Path(path))


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: never a half-written file. The one
    atomic save of the project (models, training states)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> E2DiffSR:
    """Rebuild a model from one of our checkpoints (config inside), in eval mode."""
    obj = safe_load(path)
    if obj.get("format") != FORMAT:
        if "state_dict" in obj and any(k.startswith("model_ema.") for k in obj["state_dict"]):
            raise E2DiffSRError(f"{path} is an original LDCSR checkpoint; convert it first with "
                                "'python -m e2diffsr_core convert-official --second-stage FILE --out model.pt'")
        raise E2DiffSRError(f"{path} is not an E2DiffSR model file (no '{FORMAT}' header)")
    try:
        cfg = ModelConfig.from_dict(obj["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise E2DiffSRError(f"{path} has an invalid model configuration: {e}") from None
    model = E2DiffSR(cfg)
    load_state(model, obj.get("state_dict", {}), str(path))
    model.meta = obj.get("meta", {})
    return model.to(device).eval()
