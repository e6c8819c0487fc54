"""What `superresolve-batch --split` divides among the ranks and what every rank repeats (JSON).

    .venv/bin/python benchmarks/bench_split.py [--scale 4] [--ranks 2] [--tile 0]

On the bundled sample and model, once each, as fresh processes:
- ``one``: ``superresolve-batch SAMPLE --split`` in one process (all the machine's cores);
- ``ranks``: the same under ``torchrun --nproc_per_node=RANKS`` (the ranks share the cores);
- ``engine``: the engine alone in this process (no reading or writing of files), whole, then with
  ``out_rows=(0, 0)``: everything but the decoder's upsampler on output tiles (``repeated``), the work
  every rank repeats.
``split_share`` = 1 - repeated / engine is the share of the engine's work divided among the ranks, and
``ideal_ranks_s`` = one * (1 - split_share + split_share / RANKS) what RANKS ranks on devices of their own
would take.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # this checkout's package, as in the commands timed
SAMPLE = HERE / "e2diffsr_core" / "data" / "sample.tif"


def timed_command(cmd: list[str], cwd: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def engine_times(scale: float, tile: int) -> tuple[float, float]:
    """(whole engine, the engine without decoding any output tile) in this process."""
    import numpy as np
    import torch

    from e2diffsr_core.api import open_model, resolve_device
    from e2diffsr_core.engine import TiledSR
    from e2diffsr_core.raster_io import RasterReader

    dev = resolve_device("auto")
    with RasterReader(str(SAMPLE)) as reader:
        lr, _ = reader.read(0, 0, reader.width, reader.height)
        size = (reader.height, reader.width)
    engine = TiledSR(open_model(None, dev), dev, tile=tile)
    times = []
    for rows in (None, (0, 0)):
        t = time.perf_counter()
        engine.run(lambda x, y, w, h: (np.clip(lr[:, y:y + h, x:x + w], 0, 1), np.ones((h, w), bool)),
                   lambda *_: None, size, scale, out_rows=rows)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tile", type=int, default=0)
    args = ap.parse_args()
    common = [str(SAMPLE), "--scale", str(args.scale), "--tile", str(args.tile), "--split", "--quiet"]
    batch = ["-m", "e2diffsr_core", "superresolve-batch"]
    with tempfile.TemporaryDirectory() as tmp:
        one = timed_command([sys.executable, *batch, *common, "--out-dir", "one"], tmp)
        ranks = timed_command([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.ranks}",
                               "--master_port=29577", *batch, *common, "--out-dir", "ranks"], tmp)
    whole, repeated = engine_times(args.scale, args.tile)
    share = 1 - repeated / whole
    report = {"input": f"{SAMPLE.name} x{args.scale:g}", "cpu_cores": os.cpu_count(), "one_s": round(one, 1),
              f"{args.ranks}_ranks_s": round(ranks, 1), "engine_s": round(whole, 1), "repeated_s": round(repeated, 1),
              "split_share": round(share, 3), "ideal_ranks_s": round(one * (1 - share + share / args.ranks), 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
