"""The README main job timed against another checkout of the project, alternately, in one run (JSON).

    .venv/bin/python benchmarks/bench_main_job.py --other PATH_TO_OTHER_CHECKOUT [--repeats 3]

Each round runs ``python -m e2diffsr_core superresolve <bundled sample> out.tif --scale 4`` once with this
checkout and once with the other (e.g. ``git worktree add ../old <commit>``), each as a fresh process with
its own tree first on PYTHONPATH, so that both see the same machine load. Prints the wall times, their
medians and the ratio other / this.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run_once(tree: Path, out: Path, scale: float) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    sample = HERE / "e2diffsr_core" / "data" / "sample.tif"
    cmd = [sys.executable, "-m", "e2diffsr_core", "superresolve", str(sample), str(out), "--scale", str(scale),
           "--overwrite"]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=True, help="another checkout of the project (the baseline)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=4.0)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):
            for name, tree in (("other", Path(args.other).resolve()), ("this", HERE)):
                times[name].append(round(run_once(tree, Path(d) / f"{name}.tif", args.scale), 2))
                print(name, times[name][-1], file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"job": f"superresolve sample.tif --scale {args.scale:g}", "runs_s": times, "median_s": med,
                      "speedup": round(med["other"] / med["this"], 2)}, indent=2))


if __name__ == "__main__":
    main()
