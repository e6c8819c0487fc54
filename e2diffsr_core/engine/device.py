"""Where and how precisely a run computes: autocast precision, CPU threads, tile size from free memory.

The engine (tiled) asks these once per run; nothing here depends on the raster being processed.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import threading

import torch

from ..model import E2DiffSR


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX): where bf16 pays on a CPU."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32.

    auto: bf16 on CUDA (fp16 where bf16 is missing); on a CPU, bf16 where the CPU has AMX, else fp32. With
    AMX the convolutions run 2-3x faster in bf16 and, with the whole-image maps kept in bf16 too, the README
    job runs about 1.3x faster than fp32 with 59 dB agreement on its 8-bit output (benchmarks/RESULTS_engine.md);
    without AMX bf16 is emulated and slower. The choice depends on the CPU alone, never on a timing, so runs of
    the same seed on one machine (and every rank of a split raster there) give the same pixels. fp32 and bf16
    force a choice on either device; fp16 is for CUDA (a CPU runs it as fp32).
    """
    if precision == "fp32":
        return None
    if device.type != "cuda":
        return torch.bfloat16 if precision == "bf16" or (precision == "auto" and cpu_has_amx()) else None
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


# glibc mallopt parameters and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_reuse_lock = threading.Lock()
_reuse_runs = 0


@contextlib.contextmanager
def reused_memory():
    """Large buffers come from the heap and are reused for the run instead of being mapped and unmapped.

    glibc serves large allocations (above a threshold of at most 32 MiB) with a fresh mmap, whose pages the
    kernel zeroes on first touch: the engine's bands of feature maps (tens of MiB each, allocated and freed by
    every layer) then spend more time in page faults than in arithmetic (4 s of system time in the README job;
    an elementwise pass over a band ran 3-5x slower than with reused memory). For the duration of a run,
    large blocks come from the heap and freed memory is kept for the next band; when the last run of the
    process ends (runs in several threads, e.g. two QGIS tasks, share the setting) the defaults come back and
    the heap is trimmed, so the process (e.g. QGIS) gets the memory back. Other C libraries: nothing changes."""
    global _reuse_runs
    libc = _glibc()
    if libc is None:
        yield
        return
    with _reuse_lock:
        _reuse_runs += 1
        if _reuse_runs == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_runs -= 1
            if _reuse_runs == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                libc.malloc_trim(0)


def skipped_level(levels: int, scale: float) -> int:
    """How many times the output grid the CSUM's last level lies at where the engine does not build it but
    reduces it straight from a level below (2: from the level below, engine.decode._averaged_level, x4 for
    four levels; 4: from the level on the output grid, the level between not built either, _composed_level,
    x2); 0 at every other scale (an output aligned to another grid builds it too)."""
    ratio = 2 ** (levels - 1) / scale
    return int(ratio) if levels >= 3 and ratio in (2.0, 4.0) else 0


def bytes_per_output_pixel(model: E2DiffSR, scale: float, shortcut: bool = True) -> float:
    """Rough peak activation memory per output pixel of one tile (fp32), dominated by the CSUM; ``shortcut``:
    the engine's shortcuts apply on the output grid (engine.decode.shortcut_grid), so it does not build the
    levels it can reduce (False: an output aligned to another raster's grid, which builds every level)."""
    cfg = model.cfg
    csum = (4 * cfg.dec_ch + 3 * cfg.csum_hidden) * 4.0
    # the largest CSUM level built and its pre-shuffle conv: the last level, except where it lies at four
    # times the output grid and neither it nor the level below is built (both come from the level on the
    # output grid: engine.decode._composed_level); at twice the output grid it is counted all the same
    levels = model.first_stage_model.decoder.upsampler.levels
    top = 2.0 ** (levels - (3 if shortcut and skipped_level(levels, scale) == 4 else 1))
    x8_level = cfg.dec_ch * 4 * 4.0 * (top / scale) ** 2 * 2
    cond = cfg.cond_ch * max(cfg.cond_ch_mult[:1]) * 4.0 * 3
    return 1.5 * (csum + x8_level + cond)


def auto_tile(model: E2DiffSR, device: torch.device, scale: float, batch: int = 1,
              ram_budget: float | None = None, shortcut: bool = True) -> int:
    """Largest tile (output px, multiple of 64) whose estimated working set fits the device's free memory
    (``shortcut`` as :func:`bytes_per_output_pixel`'s)."""
    budget = _cuda_budget(device) if device.type == "cuda" else tile_budget(ram_budget)
    px = budget / (bytes_per_output_pixel(model, scale, shortcut) * max(1, batch))
    side = int(math.sqrt(max(px, 1.0))) // 64 * 64
    return int(min(max(side, 128), 1024 if device.type == "cpu" else 2048))


def unet_bytes_per_cell(model: E2DiffSR) -> float:
    """Rough peak memory of one UNet evaluation per latent cell and image (fp32): the skip maps of every
    level and a few working maps (measured 2.3 / 2.6 / 4.8 KiB for tiny / lite / paper)."""
    cfg = model.cfg
    per_level = sum(cfg.unet_channels * m / 4 ** k for k, m in enumerate(cfg.unet_channel_mult))
    return 4.0 * per_level * (cfg.unet_num_res_blocks + 2) * 4


def windows_per_call(model: E2DiffSR, device: torch.device, window_cells: int, batch: int) -> int:
    """UNet windows evaluated together (one batch): 1 on a CPU, which gains nothing from larger batches; on a
    GPU as many as a quarter of its budget holds (at most 8), so that small windows still fill the card."""
    if device.type != "cuda":
        return 1
    each = unet_bytes_per_cell(model) * window_cells * max(1, batch)
    return int(min(8, max(1, _cuda_budget(device) / 4 // each)))


CUDA_BUDGET = 6 * 2**30  # working set aimed at on a GPU, so that a run stays under ~8 GiB whatever the raster


def _cuda_budget(device: torch.device) -> float:
    free, _total = torch.cuda.mem_get_info(device)
    return min(0.5 * free, CUDA_BUDGET)


def available_memory() -> int:
    """Bytes of memory the system can give without swapping (MemAvailable; 8 GiB where it is unknown)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info.get("MemAvailable", 8 << 30)
    except (OSError, ValueError, IndexError):
        return 8 << 30


def default_memory() -> int:
    """The memory budget of a run when ``--memory`` is not given: half the memory available now (at least
    512 MiB), so a run uses the machine it has and still leaves the rest to everything else."""
    return max(512 << 20, available_memory() // 2)


def memory_budget(ram_budget: float | None = None) -> int:
    return int(ram_budget) if ram_budget else default_memory()


def tile_budget(ram_budget: float | None = None) -> float:
    """Bytes of a CPU tile's working set: half the memory budget, at most 2 GiB (larger tiles gain nothing)."""
    return min(0.5 * memory_budget(ram_budget), 2.0 * (1 << 30))


def feature_budget(device: torch.device, ram_budget: float | None = None) -> int:
    """Bytes of whole-image feature maps kept in memory (the rest goes to temporary files): half the memory
    budget on a CPU; on a GPU a quarter of its budget, which also holds the tiles' working set."""
    if device.type == "cuda":
        return int(_cuda_budget(device) / 4)
    return int(memory_budget(ram_budget) / 2)


def exact_bytes(model: E2DiffSR, lr_size, out_size, batch: int, itemsize: int) -> int:
    """Peak bytes of the exact engine's whole-image maps (engine_stream): the LR image, then the larger of
    CondNet's three maps of its widest level and the decoder's five LR-grid maps with its prior maps."""
    lr_px, out_px = lr_size[0] * lr_size[1], out_size[0] * out_size[1]
    enc = model.cond_stage_model
    widths = [enc.conv_in.out_channels] + [lv.block[-1].conv2.out_channels for lv in enc.down if len(lv.block)]
    cond = max(3 * c * out_px / 4 ** k for k, c in enumerate(widths))
    dec = model.first_stage_model.decoder
    prior = 4 * dec.conv_in.out_channels * out_px / 64 * 4
    lr_maps = 5 * dec.head.out_channels * lr_px
    return int(12 * lr_px * batch + batch * max(cond, lr_maps + prior) * itemsize)


BLOCK_MAPS = 16  # a CondNet block's peak memory in maps of its widest level (fp32), halo included: measured


def block_side(model: E2DiffSR, device: torch.device, groups: int, ram_budget: float | None = None,
               halo: int = 0) -> int:
    """Output pixels a side of the bounded engine's CondNet blocks (engine_bounded.encode_blocks): as large as
    the tile budget holds with the block's ``halo`` each side, 256 to 2048, a multiple of 64. A block's peak
    is about BLOCK_MAPS maps of CondNet's widest level (the layer's input and output, the normalised and
    activated copies, the conv's channels-last copies and what the allocator keeps): measured 1.9 KB per
    pixel of block for the bundled model (32 channels), where six maps had been assumed and a 4 GiB budget
    peaked at 8140 MiB."""
    budget = _cuda_budget(device) if device.type == "cuda" else tile_budget(ram_budget)
    per_px = BLOCK_MAPS * 4 * model.cond_stage_model.conv_in.out_channels * max(1, groups)
    side = (int(math.sqrt(budget / per_px)) - 2 * halo) // 64 * 64
    return min(2048, max(256, side))


def parse_memory(text) -> int:
    """``--memory``: bytes from '512M', '4G', '1.5G', '2048K' or a number of bytes; a clear error otherwise."""
    from ..errors import E2DiffSRError

    units = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B") if str(text).strip() else ""
    unit = raw[-1:] if raw[-1:] in units and raw[-1:] else ""
    try:
        value = float(raw[:-1] if unit else raw) * units[unit]
    except ValueError:
        value = -1.0
    if not value >= 64 << 20 or value != value or value == float("inf"):
        raise E2DiffSRError(f"--memory {text}: give a size of at least 64M, e.g. 512M or 4G")
    return int(value)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
