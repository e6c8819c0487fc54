"""The data check every training run makes before it builds a model (and ``--check-data`` makes alone).

Every image of the split is read in full through the reader ``superresolve`` uses, so a corrupt or truncated
file, an image too small for the crops, one without enough valid area, split entries that match nothing,
train/val overlap and a split without a validation list are found before any GPU time is spent. Each problem
is one line; the result is also a report (``data.json`` in the run folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import E2DiffSRError
from ..evaluation.protocol import _split_entries, find_images, match_split, unmatched_message
from ..raster_io.training_read import best_crop_share, read_picture
from .config import TrainConfig

#: Smallest validation crop (the UNet's padding needs 40 px).
MIN_VAL_SIDE = 40


class DataProblems(E2DiffSRError):
    """One or more problems with the data; ``lines`` holds one line for each."""

    def __init__(self, lines: list[str], report: dict | None = None):
        super().__init__("\n".join(lines))
        self.lines, self.report = lines, report or {}


@dataclass
class DataPlan:
    """The checked data of a run: training and validation files, and the report (``data.json``)."""

    train: list[Path]
    val: list[Path]
    report: dict = field(default_factory=dict)


def crop_side(cfg: TrainConfig, stage: int) -> int:
    """The largest HR crop the stage draws."""
    if stage == 1:
        return int(cfg.stage1.lr_patch * cfg.data.scale_max)
    return cfg.stage2.hr_crop


def _has_list(split: Path, subset: str) -> bool:
    try:
        _split_entries(split, subset)
    except E2DiffSRError:
        return False
    return True


def _subsets(cfg: TrainConfig, data: Path, split, problems: list[str]) -> tuple[list[Path], list[Path], str]:
    """(train, val, where validation comes from); problems with the split are appended to ``problems``."""
    files = find_images(data)
    if split is None:
        return files, files, "the training images (no --split)" if cfg.run.val_every > 0 else "off"
    train, missing = match_split(data, files, split, "train")
    if missing:
        problems.append(unmatched_message(split, "train", missing, data))
    if not train and not missing:
        problems.append(f"the 'train' list of {Path(split).name} is empty; name the training images in it")
    val: list[Path] = []
    if _has_list(Path(split), "val"):
        val, missing = match_split(data, files, split, "val")
        if missing:
            problems.append(unmatched_message(split, "val", missing, data))
        both = sorted({p.relative_to(data).as_posix() for p in train} & {p.relative_to(data).as_posix() for p in val})
        if both:
            problems.append(f"{len(both)} image{'s are' if len(both) > 1 else ' is'} both in 'train' and 'val' of "
                            f"{Path(split).name}: {', '.join(both[:3])}{' ...' if len(both) > 3 else ''}; "
                            "validation must use held-out images")
    elif cfg.run.val_every > 0:
        problems.append(f"{Path(split).name} has no 'val' list: there is no validation set; add one with held-out "
                        "images (or set run.val_every = 0 to train without validation)")
    return train, val, f"the 'val' list of {Path(split).name}" if val else "off"


def _image_problem(pic, name: str, need: int, min_valid: float, role: str) -> str | None:
    """The problem of one image read in full, or None."""
    h, w = pic.valid.shape
    if min(h, w) < need:
        return (f"{name} ({role}) is {w} x {h} px, smaller than the {need} px crop; use larger images or a smaller "
                "crop / scale_max")
    if not pic.valid.any():
        return f"{name} ({role}) has no valid pixels (nodata, mask or alpha everywhere); leave it out of the split"
    best = best_crop_share(pic.valid, need)
    if best < min_valid:
        return (f"{name} ({role}) is {w} x {h} px with {pic.valid_fraction:.1%} valid pixels, but no {need} px crop is "
                f"{min_valid:.0%} valid (the best is {best:.1%}); leave it out, use a smaller crop or lower "
                "data.min_valid")
    return None


def check_data(cfg: TrainConfig, stage: int, data, split=None) -> DataPlan:
    """Read every image of the split in full and check it; raises :class:`DataProblems` listing every problem."""
    data = Path(data)
    problems: list[str] = []
    train, val, validation = _subsets(cfg, data, split, problems)
    need, bands = crop_side(cfg, stage), list(cfg.data.bands) or None
    images = []
    in_train = set(train)
    for role, files in (("train", train), ("val", [p for p in val if p not in in_train])):
        for p in files:
            name = p.relative_to(data).as_posix()
            try:
                pic = read_picture(p, bands)
            except E2DiffSRError as e:
                problems.append(f"{name} ({role}): {e}")
                continue
            side = need if role == "train" else max(MIN_VAL_SIDE, min(cfg.data.val_size, *pic.valid.shape) // 8 * 8)
            problem = _image_problem(pic, name, side, cfg.data.min_valid, role)
            if problem:
                problems.append(problem)
            images.append({"role": role, **pic.describe(), "path": name})
    report = {"data": str(data), "split": str(split) if split else None, "stage": stage, "crop_px": need,
              "min_valid": cfg.data.min_valid, "bands": list(cfg.data.bands) or "red, green, blue by colour "
              "interpretation", "validation": validation, "train_images": len(train), "val_images": len(val),
              "images": images, "problems": problems}
    if problems:
        raise DataProblems(problems, report)
    return DataPlan(train, val, report)


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
