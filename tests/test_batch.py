"""The batch command as a user runs it: one process or torchrun ranks, resuming, and bad files in the list."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from e2diffsr_core.__main__ import main

gdal.UseExceptions()
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "e2diffsr_core" / "data" / "sample.tif"
RECORDS = ".e2diffsr-batch"
# (name, x, y, width, height): small crops of the real sample, of different sizes so the order matters
CROPS = [("field", 100, 120, 24, 24), ("road", 10, 20, 32, 28), ("trees", 200, 40, 24, 30),
         ("roof", 300, 300, 28, 24)]


def make_inputs(folder: Path, crops=CROPS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, x, y, w, h in crops:
        path = folder / f"{name}.tif"
        gdal.Translate(str(path), str(SAMPLE), srcWin=[x, y, w, h])
        paths.append(path)
    return paths


def pixels(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def run_batch(args, capsys):
    rc = main(["superresolve-batch", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, nproc=2, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "-m", "e2diffsr_core", "superresolve-batch", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def status_lines(text: str) -> dict[str, str]:
    """input name -> 'done' / 'skipped' / 'FAILED' from the per-raster lines."""
    found = {}
    for line in text.splitlines():
        for word in ("done", "skipped", "FAILED"):
            if f": {word}" in line and "/" in line:
                found[Path(line.split(f": {word}")[0].split()[-1]).name] = word
    return found


def test_two_ranks_give_the_pixels_of_single_process_runs(tmp_path, capsys, tiny_model_file):
    inputs = make_inputs(tmp_path / "in")
    options = ["--scale", "2", "--seed", "7", "--model", str(tiny_model_file)]
    reference = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums depend on the thread count: the same one as each rank's
    try:
        for path in inputs:
            out = tmp_path / "single" / path.name
            out.parent.mkdir(exist_ok=True)
            assert main(["superresolve", str(path), str(out), *options, "--quiet"]) == 0
            reference[path.name] = out
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()

    proc = torchrun([*inputs, "--out-dir", "sr", *options, "--threads", "1"], cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "summary: 4 rasters on 2 ranks" in log and "4 done, 0 skipped, 0 failed" in log, log
    assert "[rank 0]" in log and "[rank 1]" in log  # both ranks took rasters
    for path in inputs:
        out = tmp_path / "sr" / path.name
        src, dst = gdal.Open(str(path)), gdal.Open(str(out))
        assert (dst.RasterXSize, dst.RasterYSize) == (2 * src.RasterXSize, 2 * src.RasterYSize)
        assert dst.GetGeoTransform() == gdal.Open(str(reference[path.name])).GetGeoTransform()
        np.testing.assert_array_equal(pixels(out), pixels(reference[path.name]))
    # largest first: the 32 x 28 raster is the first one taken
    first = next(line for line in log.splitlines() if " 1/4 " in line)
    assert "road.tif" in first


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the rank processes through /proc")
def test_a_killed_rank_then_the_same_command_finishes_without_redoing_work(tmp_path):
    # the bundled model, slow enough that the kill lands while most rasters are still to do
    crops = [("big1", 0, 0, 64, 64), ("big2", 100, 100, 64, 64)] + CROPS
    inputs = make_inputs(tmp_path / "in", crops)
    args = ["in/*.tif", "--out-dir", "sr", "--scale", "2"]
    records = tmp_path / "sr" / RECORDS

    proc = torchrun(args, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not (records.is_dir() and any(records.glob("*.json"))):
        assert proc.poll() is None and time.monotonic() < deadline, "no raster finished"
        time.sleep(0.02)
    os.kill(_children(proc.pid)[0], signal.SIGKILL)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, log
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sr").glob("*.tif")
                if (records / f"{p.name}.json").exists()}
    assert 1 <= len(finished) < len(inputs), log

    proc = torchrun(args, cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    status = status_lines(log)
    assert status == {p.name: "skipped" if p.name in finished else "done" for p in inputs}, log
    assert f"{len(inputs) - len(finished)} done, {len(finished)} skipped, 0 failed" in log
    for name, mtime in finished.items():
        assert (tmp_path / "sr" / name).stat().st_mtime_ns == mtime  # not written again
    assert sorted(p.name for p in (tmp_path / "sr").glob("*.tif")) == sorted(p.name for p in inputs)
    assert not list((tmp_path / "sr").glob(".e2diffsr-run-*"))  # the killed rank's run folder is gone


def test_a_corrupt_file_is_reported_and_the_others_finish(tmp_path, tiny_model_file):
    inputs = make_inputs(tmp_path / "in", CROPS)
    bad = tmp_path / "in" / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not a GeoTIFF")
    listing = tmp_path / "list.txt"
    listing.write_text("# survey\n" + "\n".join(map(str, [inputs[0], bad, *inputs[1:]])) + "\n\n")

    proc = torchrun(["--inputs-from", listing, "--out-dir", "sr", "--scale", "2", "--model", tiny_model_file],
                    cwd=tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, log
    assert status_lines(log) == {**{p.name: "done" for p in inputs}, "broken.tif": "FAILED"}, log
    # rank 0 reports for both ranks, whichever one met the corrupt file
    assert "summary: 5 rasters on 2 ranks" in log and "4 done, 0 skipped, 1 failed" in log, log
    failed = [line for line in log.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "broken.tif" in failed[0] and "GDAL cannot open" in failed[0], log
    out_dir = tmp_path / "sr"
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in inputs)
    assert "Traceback (most recent call last)" not in log.split("summary:")[0]
    # torchrun's traceback after the summary is announced as the exit status of the failed raster
    assert "torchrun reports it below as a ChildFailedError" in log.split("summary:")[1], log


def test_outputs_are_redone_only_when_their_input_or_options_change(tmp_path, capsys, tiny_model_file):
    (inp,) = make_inputs(tmp_path / "in", CROPS[:1])
    out = tmp_path / "sr" / "field.tif"
    args = [inp, "--out-dir", tmp_path / "sr", "--scale", "2", "--model", tiny_model_file]
    assert run_batch(args, capsys)[0] == 0
    first = out.stat().st_mtime_ns, pixels(out)

    rc, log, _ = run_batch(args, capsys)
    assert rc == 0 and status_lines(log) == {"field.tif": "skipped"}
    assert out.stat().st_mtime_ns == first[0]
    # how it is computed (--compile) and the default temperature spelt out do not make another result
    rc, log, _ = run_batch([*args, "--compile", "--temperature", "0"], capsys)
    assert rc == 0 and status_lines(log) == {"field.tif": "skipped"}
    assert out.stat().st_mtime_ns == first[0]

    # another sampling is another result: the old file is not replaced without --overwrite
    rc, log, _ = run_batch([*args, "--seed", "3", "--temperature", "1"], capsys)
    assert rc != 0 and "exists" in log and "--overwrite" in log
    assert out.stat().st_mtime_ns == first[0]
    rc, log, _ = run_batch([*args, "--seed", "3", "--temperature", "1", "--overwrite"], capsys)
    assert rc == 0 and status_lines(log) == {"field.tif": "done"}
    assert not np.array_equal(pixels(out), first[1])

    # an input replaced by other pixels is done again
    gdal.Translate(str(inp), str(SAMPLE), srcWin=[50, 50, 24, 24])
    os.utime(inp, ns=(time.time_ns(), time.time_ns() + 10**9))
    rc, log, _ = run_batch([*args, "--seed", "3", "--overwrite"], capsys)
    assert rc == 0 and status_lines(log) == {"field.tif": "done"}


def test_inputs_that_would_share_an_output_stop_before_any_work(tmp_path, capsys):
    a = make_inputs(tmp_path / "a", CROPS[:1])[0]
    b = make_inputs(tmp_path / "b", CROPS[:1])[0]
    rc, out, err = run_batch([a, b, "--out-dir", tmp_path / "sr", "--scale", "2"], capsys)
    assert rc == 2
    assert err.startswith("error:") and "field.tif" in err and "rename" in err and "Traceback" not in err
    assert not (tmp_path / "sr").exists()

    rc, _, err = run_batch([tmp_path / "none" / "*.tif", "--out-dir", tmp_path / "sr", "--scale", "2"], capsys)
    assert rc == 2 and "no file matches" in err

    rc, _, err = run_batch([a, "--out-dir", tmp_path / "a", "--scale", "2"], capsys)
    assert rc == 2 and "would replace it" in err

    rc, out, err = run_batch([a, "--out-dir", tmp_path / "sr", "--scale", "1"], capsys)
    assert rc == 2 and "scale must be greater than 1" in err and "summary" not in out
    assert not (tmp_path / "sr").exists()
