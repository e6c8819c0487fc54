"""What a batch run has to do: the list of rasters, their outputs, and which outputs are already complete.

An output counts as complete when a record beside it (``DIR/.e2diffsr-batch/<name>.json``, written right
after the output was moved into place) names the same input (name, size, modification time), the same
options and model, and the output's own size and modification time. Anything else is redone: a file
killed halfway never reached its final name, and one replaced or made with other options no longer
matches its record.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from osgeo import gdal

from ..api import default_model_path
from ..errors import E2DiffSRError
from ..rules import check_temperature

RECORDS = ".e2diffsr-batch"
_PATTERN_CHARS = set("*?[")


def read_list(path: str) -> list[str]:
    """Paths from a text file, one a line; blank lines and lines starting with # are ignored."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise E2DiffSRError(f"cannot read the list of inputs {path} ({exc.strerror}); check the path") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _inside(path: str, folder: str | None) -> bool:
    if folder is None:
        return False
    root = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), root]) == root


def expand_inputs(items: list[str], out_dir: str | None = None) -> list[str]:
    """Paths and patterns (``tiles/*.tif``, ``**/*.tif``) as a list of files, each once, in the given order.
    A pattern never matches what lies in ``out_dir``: the outputs of an earlier run are not inputs of the
    resumed one."""
    paths, seen = [], set()
    for item in items:
        if os.path.isdir(item):
            raise E2DiffSRError(f"input {item} is a folder; give files or a pattern such as {item}/*.tif")
        if _PATTERN_CHARS & set(item) and not os.path.exists(item):
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m)
                             and not _inside(m, out_dir))
            if not matches:
                raise E2DiffSRError(f"no file matches {item}; check the pattern")
        else:
            matches = [item]  # a missing file is reported with the others, it does not stop the batch
        for m in matches:
            key = os.path.realpath(m)
            if key not in seen:
                seen.add(key)
                paths.append(m)
    if not paths:
        raise E2DiffSRError("no input rasters given; name files, patterns or --inputs-from FILE")
    return paths


def output_for(out_dir: str, input_path: str, suffix: str = ".tif") -> str:
    return os.path.join(out_dir, Path(input_path).stem + suffix)


def _work(path: str) -> int:
    """Pixels times bands: the size that orders the jobs (unreadable files last; they fail fast)."""
    try:
        ds = gdal.Open(path)
    except RuntimeError:
        return -1
    if ds is None:
        return -1
    return ds.RasterXSize * ds.RasterYSize * max(1, ds.RasterCount)


def plan_jobs(inputs: list[str], out_dir: str, suffix: str = ".tif") -> list[dict]:
    """One job per input, largest first; stops before any work when two inputs would share an output."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise E2DiffSRError(f"--out-dir {out_dir} is a file; give a folder")
    owners: dict[str, str] = {}
    jobs = []
    for path in inputs:
        out = output_for(out_dir, path, suffix)
        key = os.path.normcase(Path(out).name).casefold()  # a.tif and A.tif are one file on some systems
        if key in owners:
            raise E2DiffSRError(f"{owners[key]} and {path} would both be written to {out}; rename one of "
                                "them or run them with different --out-dir folders")
        owners[key] = path
        if os.path.exists(path) and os.path.realpath(out) == os.path.realpath(path):
            raise E2DiffSRError(f"input {path} is in --out-dir and its output would replace it; "
                                "choose another --out-dir")
        jobs.append({"input": path, "output": out, "work": _work(path)})
    # stable sort: equal sizes keep the order given
    return sorted(jobs, key=lambda j: -j["work"])


def model_identity(model: str | None) -> dict:
    path = Path(model) if model else default_model_path()
    if path is None or not path.is_file():
        raise E2DiffSRError(f"model file not found: {model}; give an existing --model file")
    return {"path": str(path.resolve()), **_identity(str(path))}


def _identity(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# Options that change how a result is computed, not the result: a complete output stays complete.
HOW_NOT_WHAT = {"compile"}


def fingerprint(input_path: str, options: dict, model: dict) -> dict:
    """What the output depends on; a record with another fingerprint describes another result."""
    # the model file is known by its identity, not by how the command line spelt its path
    options = {k: v for k, v in options.items() if k != "model" and k not in HOW_NOT_WHAT}
    if "temperature" in options:  # the default spelt out: the same result as leaving it out
        try:
            options["temperature"] = check_temperature(options["temperature"], options.get("samples", 1))
        except E2DiffSRError:
            pass  # the run itself reports it
    return {"input": {"name": Path(input_path).name, **_identity(input_path)},
            "options": json.loads(json.dumps(options)), "model": model}


def record_path(output: str) -> Path:
    out = Path(output)
    return out.parent / RECORDS / (out.name + ".json")


def is_complete(output: str, expected: dict) -> bool:
    try:
        record = json.loads(record_path(output).read_text(encoding="utf-8"))
        return record["fingerprint"] == expected and record["output"] == _identity(output)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_record(output: str, fp: dict, info: dict) -> None:
    """Written after the output is in place, and atomically, so a record never outlives a wrong file."""
    path = record_path(output)
    path.parent.mkdir(exist_ok=True)
    body = {"fingerprint": fp, "output": _identity(output),
            "result": {k: info.get(k) for k in ("width", "height", "device", "tiles", "seconds")}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    os.replace(tmp, path)
