"""Build the installable QGIS plugin: dist/e2diffsr_qgis.zip (QGIS: Plugins > Manage and Install > Install from ZIP).

The zip holds one folder, e2diffsr_qgis/, with metadata.txt, the plugin code (qgis_plugin/), and in
e2diffsr_qgis/lib/ a copy of the e2diffsr_core engine (without caches or tests) with the bundled model when
e2diffsr_core/weights/ has one. lib/ holds nothing else, so putting it on sys.path exposes only the engine.
The zip is written to a temporary file and moved into place, so a failed build never leaves a broken zip.

    python scripts/build_plugin.py [--out dist/e2diffsr_qgis.zip]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "e2diffsr_qgis"
LIB = "lib"  # must match qgis_plugin/deps.py
SKIP_DIRS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}
# A fixed timestamp makes two builds of the same sources byte-identical.
DATE_TIME = (2025, 1, 1, 0, 0, 0)


def _files(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix in SKIP_SUFFIXES or name.startswith("."):
                continue
            yield path


def plugin_entries(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(source file, name inside the zip) for every file of the plugin."""
    entries = [(root / "metadata.txt", f"{PLUGIN_NAME}/metadata.txt")]
    if (root / "LICENSE").is_file():
        entries.append((root / "LICENSE", f"{PLUGIN_NAME}/LICENSE"))
    for path in _files(root / "qgis_plugin"):
        entries.append((path, f"{PLUGIN_NAME}/{path.relative_to(root / 'qgis_plugin').as_posix()}"))
    core = root / "e2diffsr_core"
    for path in _files(core):
        entries.append((path, f"{PLUGIN_NAME}/{LIB}/e2diffsr_core/{path.relative_to(core).as_posix()}"))
    return entries


def check_versions(root: Path = ROOT) -> str:
    """metadata.txt and pyproject.toml must agree on the version; returns it."""
    meta = re.search(r"^version=(\S+)", (root / "metadata.txt").read_text(encoding="utf-8"), re.M)
    proj = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if not meta:
        raise SystemExit("metadata.txt has no version= line")
    if proj and proj.group(1) != meta.group(1):
        raise SystemExit(f"version mismatch: metadata.txt says {meta.group(1)}, pyproject.toml {proj.group(1)}")
    return meta.group(1)


def build(out: Path, root: Path = ROOT) -> Path:
    version = check_versions(root)
    entries = plugin_entries(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for src, arcname in entries:
                info = zipfile.ZipInfo(arcname, DATE_TIME)
                info.external_attr = 0o644 << 16
                # Model weights do not compress; storing them keeps the build fast.
                info.compress_type = zipfile.ZIP_STORED if src.suffix in {".pt", ".pth"} else zipfile.ZIP_DEFLATED
                zf.writestr(info, src.read_bytes())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    models = [a for _, a in entries if "/weights/" in a and a.endswith((".pt", ".pth"))]
    print(f"wrote {out} (version {version}, {len(entries)} files, "
          f"{out.stat().st_size / 1e6:.1f} MB, bundled model: {', '.join(models) or 'none'})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / f"{PLUGIN_NAME}.zip")
    args = parser.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
