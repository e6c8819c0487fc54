"""Large rasters: time per output Mpx, temporary bytes written per output pixel and peak RSS (JSON).

    nice -n 5 .venv/bin/python benchmarks/bench_large.py [--sizes readme,2.5,16,64x4] [--with-64] [--memory 4G]
        [--bounded-memory 256M] [--other CHECKOUT] [--repeats 1]

Each run is a fresh process running ``superresolve`` with the bundled model on the CPU (default settings):
``readme`` is the README job (the bundled 400 x 400 sample at x4, 2.56 Mpx of output), ``16`` a 2000 x 2000
mosaic of the sample at x2 (16 Mpx), ``64`` (``--with-64``, slow) a 4000 x 4000 mosaic at x2, ``2.5`` an
800 x 800 mosaic at x2 (the README job's output area at the large rasters' scale); ``16x4`` and ``64x4`` the
same output areas as ``16`` and ``64`` at the README job's scale (1000 x 1000 and 2000 x 2000 mosaics at
x4). ``--bounded-memory SIZE`` runs every size a second time with that budget (small enough to force the
bounded engine): the two engines side by side on the same raster. Reported per run: engine seconds,
output Mpx/s and seconds per output Mpx, the bytes the process wrote to disk (``/proc/self/io``
write_bytes) less the output file, per output pixel, the largest size the run folder reached (sampled
every 0.2 s), and the peak RSS. With ``--other`` every size also runs on that checkout, alternately (the
machine is shared: compare ratios measured side by side, not absolute times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "e2diffsr_core" / "data" / "sample.tif"

CHILD = r"""
import json, os, resource, sys, time
from e2diffsr_core.raster import superresolve_raster

def io_written():
    with open("/proc/self/io") as f:
        return dict(line.split(": ") for line in f.read().splitlines()).get("write_bytes", "0")

options = json.loads(sys.argv[4])
before = int(io_written())
t = time.perf_counter()
info = superresolve_raster(sys.argv[1], sys.argv[2], float(sys.argv[3]), device="cpu", **options)
seconds = time.perf_counter() - t
written = int(io_written()) - before
print(json.dumps({"seconds": seconds, "written": written, "tile": info["tile"], "width": info["width"],
                  "height": info["height"], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_mosaic(path: Path, side: int) -> None:
    """A side x side raster tiled from the bundled sample (real imagery repeated)."""
    from osgeo import gdal

    src = gdal.Open(str(SAMPLE))
    arr = src.ReadAsArray()
    reps = (1, -(-side // arr.shape[1]), -(-side // arr.shape[2]))
    write_like_sample(path, np.tile(arr, reps)[:, :side, :side], src)


def write_like_sample(path: Path, data: np.ndarray, src) -> None:
    """``data`` [bands, h, w] as a tiled Byte GeoTIFF with the georeferencing of ``src`` (the sample)."""
    from osgeo import gdal

    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0], gdal.GDT_Byte,
                                              options=["TILED=YES"])
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i in range(data.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(data[i])
    ds = None


def folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def run_one(code: Path, raster: Path, scale: float, out_dir: Path, options: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "out.tif"
    env = dict(os.environ, PYTHONPATH=str(code))
    peak = [0]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(raster), str(out), str(scale), json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(code))

    def watch():  # the run folder sits beside the output: everything in out_dir but the output is temporary
        while proc.poll() is None:
            peak[0] = max(peak[0], folder_size(out_dir) - (out.stat().st_blocks * 512 if out.exists() else 0))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"run failed ({code}):\n{stderr[-2000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    px = res["width"] * res["height"]
    temp = max(0, res["written"] - out.stat().st_size)
    out.unlink()
    return {"output": f"{res['width']} x {res['height']}", "output_mpx": round(px / 1e6, 3),
            "seconds": round(res["seconds"], 2), "mpx_per_s": round(px / 1e6 / res["seconds"], 4),
            "s_per_mpx": round(res["seconds"] / (px / 1e6), 3), "temp_bytes_written": temp,
            "temp_bytes_per_px": round(temp / px, 2), "peak_run_folder_mib": round(peak[0] / 2**20, 1),
            "peak_rss_mib": round(res["peak_rss_mib"], 1), "tile": res["tile"]}


# size name: (mosaic side, scale)
MOSAICS = {"2.5": (800, 2.0), "16": (2000, 2.0), "64": (4000, 2.0), "16x4": (1000, 4.0), "64x4": (2000, 4.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="readme,16", help="comma-separated: readme, 2.5, 16, 64, 16x4, 64x4")
    ap.add_argument("--with-64", action="store_true", help="add the 64 Mpx case (4000 x 4000 at x2; slow)")
    ap.add_argument("--memory", default=None, help="--memory of every run (default: the engine's own)")
    ap.add_argument("--bounded-memory", default=None, help="also run every size with this --memory")
    ap.add_argument("--other", default=None, help="another checkout to run alternately (e.g. the base commit)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where rasters and outputs go (default: a temporary folder)")
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    sizes += ["64"] if args.with_64 and "64" not in sizes else []
    options = {} if args.memory is None else {"memory": args.memory}
    variants = {"this": (ROOT, options)}
    if args.bounded_memory:
        variants[f"this --memory {args.bounded_memory}"] = (ROOT, {"memory": args.bounded_memory})
    if args.other:
        variants["other"] = (Path(args.other).resolve(), {})
    report: dict = {"machine": {"cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()},
                    "memory": args.memory, "runs": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        d = Path(d)
        for size in sizes:
            if size == "readme":
                raster, scale = SAMPLE, 4.0
            else:
                side, scale = MOSAICS[size]
                raster = d / f"mosaic{side}.tif"
                make_mosaic(raster, side)
            runs: dict[str, list[dict]] = {name: [] for name in variants}
            for k in range(args.repeats):
                for n, (name, (code, opts)) in enumerate(variants.items()):
                    runs[name].append(run_one(code, raster, scale, d / f"v{n}-{size}-{k}", opts))
            report["runs"][size] = {name: _summary(rs) for name, rs in runs.items()}
            print(json.dumps({size: report["runs"][size]}), file=sys.stderr, flush=True)
    if "readme" in report["runs"]:
        base = report["runs"]["readme"]["this"]["s_per_mpx"]
        report["s_per_mpx_vs_readme"] = {s: round(r["this"]["s_per_mpx"] / base, 3)
                                         for s, r in report["runs"].items()}
    report["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def _summary(runs: list[dict]) -> dict:
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("seconds", "mpx_per_s", "s_per_mpx", "temp_bytes_per_px", "peak_rss_mib", "peak_run_folder_mib"):
        out[key] = statistics.median(r[key] for r in runs)
    out["seconds_runs"] = [r["seconds"] for r in runs]
    return out


if __name__ == "__main__":
    main()
