"""Helpers shared by the benchmarks: timing medians and the machine description."""

from __future__ import annotations

import platform
import statistics
import time

import torch


def machine() -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn, repeats: int, sync: bool = False) -> dict:
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "runs_s": [round(x, 4) for x in times]}
