"""Ranks that share a list of jobs through torch.distributed's own key-value store (c10d).

Under ``torchrun`` every rank joins the usual env:// rendezvous and process group (NCCL when the ranks run
on GPUs, gloo on CPUs); the jobs are handed out by the store's atomic counter, so a rank takes the next
job the moment it is free and one slow job never holds back the rest. Without ``torchrun`` the same code
runs as one rank with a local counter.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from ..api import resolve_device

# Ranks wait for each other by polling the store, never in a collective: a rank may spend hours on one
# large raster, far longer than any collective timeout.
_POLL_S = 0.2
_RENDEZVOUS_TIMEOUT = timedelta(minutes=30)
_EXIT_GRACE_S = 1.0  # for the other ranks' processes to end after they said they are leaving


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def rank_device(device: str, local_rank: int) -> str:
    """The device of one rank: its own GPU (LOCAL_RANK) for auto or cuda, anything else as given."""
    name = (device or "auto").strip().lower()
    if name in ("auto", "cuda") and torch.cuda.is_available():
        # more ranks than GPUs on a machine share them round-robin rather than fail
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return str(resolve_device(name))


class Ranks:
    """This process's place among the ranks, and the shared job counter."""

    def __init__(self, device: str = "auto", threads: int = 0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.device = rank_device(device, self.local_rank) if self.world > 1 else device
        self._next = 0
        self._store = None
        self._owns_group = False
        if threads:
            torch.set_num_threads(threads)
        elif self.world > 1 and not self.device.startswith("cuda"):
            # torchrun starts every worker with one thread; the ranks of a machine split its cores instead
            torch.set_num_threads(max(1, _cpu_count() // max(1, self.local_world)))
        if self.world > 1:
            self._join()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _join(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        store, rank, world = next(dist.rendezvous("env://", timeout=_RENDEZVOUS_TIMEOUT))
        if not dist.is_initialized():
            backend = "nccl" if self.device.startswith("cuda") else "gloo"
            dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank,
                                    world_size=world, timeout=_RENDEZVOUS_TIMEOUT)
            self._owns_group = True
        # torchrun's store outlives a restart of the workers: each attempt counts from zero again
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self._store = dist.PrefixStore(f"e2diffsr-batch/{attempt}", store)

    def claim(self) -> int:
        """The index of the next job nobody has taken (0, 1, 2 ... over all ranks together)."""
        if self._store is None:
            self._next += 1
            return self._next - 1
        return int(self._store.add("next", 1)) - 1

    def share(self, key: str, value=None):
        """Rank 0's ``value`` (JSON), on every rank."""
        if self._store is None:
            return value
        if self.is_main:
            self._store.set(key, json.dumps(value))
            return value
        return self._get(key)

    def gather(self, key: str, value) -> list | None:
        """Every rank's ``value`` (JSON), in rank order, on rank 0; None elsewhere."""
        if self._store is None:
            return [value]
        self._store.set(f"{key}/{self.rank}", json.dumps(value))
        if not self.is_main:
            return None
        return [self._get(f"{key}/{r}") for r in range(self.world)]

    def _get(self, key: str):
        while not self._store.check([key]):
            time.sleep(_POLL_S)
        return json.loads(self._store.get(key))

    def close(self, wait: bool = True) -> None:
        """Leave together: torchrun stops the ranks still running when one exits with an error, so the
        rank that reports (rank 0) exits last."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        if self._store is None or not wait:
            return
        if not self.is_main:
            self._store.add("left", 1)
            return
        while int(self._store.add("left", 0)) < self.world - 1:
            time.sleep(_POLL_S)
        time.sleep(_EXIT_GRACE_S)
