"""Devices, mixed precision, torchrun/DDP, RNG state and atomic files: the parts of a run that are not math."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist


class Dist:
    """Rank/world from torchrun's environment; a single process when it is absent."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = pick_device(device_name, self.local_rank if self.world > 1 else None)
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, device_id=self.device if backend == "nccl" else None)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.broadcast(t, src=0)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (stop decisions must agree)."""
        return self.max(1.0 if flag else 0.0) > 0

    def max(self, value: float) -> float:
        """The largest of every rank's ``value`` (e.g. elapsed time: decisions taken from it agree)."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64 if self.device.type == "cpu" else torch.float32,
                         device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device of this process (the inference rule, api.resolve_device), made current on CUDA."""
    from ..api import resolve_device

    dev = resolve_device(name, local_rank)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev.index)
    return dev


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA, nothing on CPU (one code path for both, as nanoGPT)."""
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A seed for the noise of one step on one rank (independent of any global RNG state)."""
    return int(np.random.SeedSequence([seed, 7, stream, step, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain tensors/lists (loadable with weights_only=True)."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])
