"""Run records: CSV logs (training and validation), TensorBoard when it is installed, running means."""

from __future__ import annotations

import csv
from pathlib import Path

import torch


class Meter:
    """Running sums of detached tensors; read (one device sync) only when a row is written."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, logs: dict) -> None:
        for k, v in logs.items():
            if isinstance(v, torch.Tensor):
                self.sums[k] = self.sums.get(k, 0.0) + v.float()
                self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        out = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out


class CSVLog:
    """Appends rows; on resume, rows past the resumed step (written after the last checkpoint) are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, columns
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(float(r.get("step") or 0)) <= resume_step]
            self._rewrite(kept)
        elif not path.is_file() or resume_step is None:
            self._rewrite([])

    def _rewrite(self, rows) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class RunLog:
    def __init__(self, out: Path, log_keys, enabled: bool, tensorboard: bool, resume_step: int | None,
                 val_columns: list[str] | None = None):
        self.enabled = enabled
        self.train = self.val = self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.train = CSVLog(out / "log.csv", ["step", "time_s", "lr", "images_per_s", *log_keys, "skipped"],
                            resume_step)
        self.val = CSVLog(out / "val.csv", val_columns or ["step", "psnr", "psnr_bicubic", "images"], resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: the CSV logs hold the same numbers
                print("note: TensorBoard is not installed (pip install tensorboard), so the run logs to log.csv "
                      "and val.csv only; plot them with training/plot_log.py")
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(out / "tensorboard"))

    def log_train(self, row: dict) -> None:
        if self.enabled:
            self.train.write(row)
            self._tb("train", row)

    def log_val(self, row: dict) -> None:
        if self.enabled:
            self.val.write(row)
            self._tb("val", row)

    def _tb(self, prefix: str, row: dict) -> None:
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
