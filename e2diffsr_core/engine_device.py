"""Where and how precisely a run computes: autocast precision, CPU threads, tile size from free memory.

The engine (engine.py) asks these once per run; nothing here depends on the raster being processed.
"""

from __future__ import annotations

import math
import os

import torch

from .model import E2DiffSR


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32.

    auto: bf16 on CUDA (fp16 where bf16 is missing); fp32 on a CPU. bf16 autocast on CPUs with native bf16
    (AVX512-BF16, AMX) speeds up the convolutions themselves 2-3x, but the engine keeps its whole-image maps
    in fp32, and the conversions around every conv made whole runs slower than fp32 (measured, see
    benchmarks/RESULTS_engine.md); a choice made by timing at start-up also made two runs of the same seed
    differ when the machine was busy. fp32 and bf16 force a choice on either device; fp16 is for CUDA (a CPU
    runs it as fp32).
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if precision == "bf16" else None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def set_cpu_threads() -> None:
    """No more threads than cores the process may run on (PyTorch may count the machine's, not the process's).
    Never more than the caller chose: float sums depend on the thread count, and a caller that set it (e.g.
    the ranks of superresolve-batch, to match single-process results) keeps it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)


def bytes_per_output_pixel(model: E2DiffSR, scale: float) -> float:
    """Rough peak activation memory per output pixel of one tile (fp32), dominated by the CSUM."""
    cfg = model.cfg
    csum = (4 * cfg.dec_ch + 3 * cfg.csum_hidden) * 4.0
    x8_level = cfg.dec_ch * 4 * 4.0 * (8.0 / scale) ** 2 * 2  # the x8 level and its pre-shuffle conv
    cond = cfg.cond_ch * max(cfg.cond_ch_mult[:1]) * 4.0 * 3
    return 1.5 * (csum + x8_level + cond)


def auto_tile(model: E2DiffSR, device: torch.device, scale: float, batch: int = 1,
              ram_budget: float | None = None) -> int:
    """Largest tile (output px, multiple of 64) whose estimated working set fits the device's free memory."""
    if device.type == "cuda":
        budget = _cuda_budget(device)
    else:
        budget = ram_budget if ram_budget is not None else _cpu_budget()
    px = budget / (bytes_per_output_pixel(model, scale) * max(1, batch))
    side = int(math.sqrt(max(px, 1.0))) // 64 * 64
    return int(min(max(side, 128), 1024 if device.type == "cpu" else 2048))


CUDA_BUDGET = 6 * 2**30  # working set aimed at on a GPU, so that a run stays under ~8 GiB whatever the raster


def _cuda_budget(device: torch.device) -> float:
    free, _total = torch.cuda.mem_get_info(device)
    return min(0.5 * free, CUDA_BUDGET)


def _cpu_budget() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        avail = info.get("MemAvailable", 4 << 30)
    except OSError:
        avail = 4 << 30
    return min(0.25 * avail, 2.0 * (1 << 30))


def feature_budget(device: torch.device, ram_budget: float | None = None, tile: int = 0) -> int:
    """Bytes of whole-image feature maps kept in memory (the rest goes to temporary files, so memory does
    not grow with the area): half the memory budget on a CPU, a quarter on a GPU, whose budget also holds
    the tiles' working set. A tile the user chose (``tile``, the memory knob; 0 when automatic) also bounds it
    to 64 bytes per tile pixel (at least 16 MiB)."""
    budget = _cuda_budget(device) if device.type == "cuda" else (ram_budget or _cpu_budget())
    share = budget / (4 if device.type == "cuda" else 2)
    if tile:
        share = min(share, max(16 << 20, 64 * tile * tile))
    return int(share)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
