"""What a training run leaves behind while it runs: the progress bar, log rows, validation and checkpoints."""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import torch
from tqdm import tqdm

from ..checkpoint import atomic_save
from .logs import Meter, RunLog
from .runtime import rng_state
from .validate import val_columns, validate

STATE_FORMAT = "e2diffsr-train-state"


CHECKPOINTS = "checkpoints"


class Recorder:
    """The run folder of one stage from ``step`` on: log.csv rows (every ``log_every`` steps, at the last step
    and before a stop), validation rows and pictures, best.pt (best validation PSNR), state.pt, numbered
    checkpoints, model.pt and data.json (the data check, and the share of invalid pixels in the crops drawn).
    Only the main process writes. ``records``: what a resumed run carries on (best PSNR, crop counts)."""

    def __init__(self, cfg, run, rt, trainer, step: int, val_items: list[dict], data_report: dict,
                 records: dict | None = None):
        self.cfg, self.run, self.rt, self.trainer, self.val_items = cfg, run, rt, trainer, val_items
        self.step, self.data_report = step, data_report
        self.records = {"crops": [0.0, 0], "best_psnr": None, "best_step": None, **(records or {})}
        self.log = RunLog(run.out, trainer.log_keys, rt.is_main, cfg.run.tensorboard, step if run.resume else None,
                          val_columns(cfg.data.val_scales))
        if rt.is_main:
            (run.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            self._write_data_json()
        self.meta = {"stage": run.stage, "preset": cfg.preset, "config": cfg.source, "data": run.data.name,
                     "train": cfg.to_dict(), "world_size": rt.world}
        self.bar = tqdm(total=run.steps, initial=step, disable=not (rt.is_main and cfg.run.progress),
                        dynamic_ncols=True, desc=f"stage {run.stage}", mininterval=1.0)
        self.meter, self.bad, self.t0 = Meter(), 0, time.time()
        self.t_log, self.step_log = self.t0, step
        self.images_per_step = trainer.cfg.batch_size * rt.world

    def seconds(self) -> float:
        """Seconds since the run (or its resumption) started."""
        return time.time() - self.t0

    def count_crops(self, batch: dict) -> None:
        """Add the invalid share of each crop of ``batch`` (this process's) to data.json's mean."""
        valid = batch.get("valid")
        if valid is not None:
            invalid = 1.0 - valid.flatten(1).float().mean(dim=1)
            self.records["crops"] = [self.records["crops"][0] + float(invalid.sum()),
                                     self.records["crops"][1] + int(invalid.numel())]

    def _write_data_json(self) -> None:
        total, n = self.records["crops"]
        report = {**self.data_report, "crops_drawn": n, "crop_invalid_fraction": round(total / n, 6) if n else None}
        path = self.run.out / "data.json"
        tmp = path.with_name(".data.json.partial")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def train_row(self, step: int, logs: dict) -> int:
        """Count step ``step``'s losses; returns how many steps in a row were skipped (non-finite)."""
        self.bar.update(1)
        skipped = bool(logs.pop("skipped"))
        self.bad = self.bad + 1 if skipped else 0
        self.meter.add({**logs, "skipped": torch.tensor(float(skipped))})
        if step % self.cfg.run.log_every == 0 or step == self.run.steps or self.bad >= self.cfg.run.max_bad_steps:
            now = time.time()
            row = {"step": step, "time_s": round(now - self.t0, 2), "lr": self.trainer.lr,
                   "images_per_s": round(self.images_per_step * (step - self.step_log) / max(now - self.t_log, 1e-9),
                                         2),
                   **self.meter.means()}
            self.t_log, self.step_log = now, step
            self.log.log_train(row)
            self.bar.set_postfix(loss=f"{row.get('loss', math.nan):.4g}", img_s=row["images_per_s"])
        return self.bad

    def validate(self, step: int) -> None:
        """A validation row; best.pt when its PSNR (mean over the validation scales) is the best so far."""
        if self.rt.is_main and self.val_items:
            row = validate(self.trainer, self.val_items, step, self.run.out / "val", self.cfg.data.val_grid_images,
                           self.cfg.run.seed)
            if row:
                self.log.log_val({"step": step, **row})
                best = self.records["best_psnr"]
                if best is None or row["psnr"] > best:
                    self.records.update(best_psnr=row["psnr"], best_step=step)
                    self.trainer.export(self.run.out / "best.pt", {**self.meta, "step": step, "val_psnr": row["psnr"]})

    def save(self, step: int) -> None:
        """state.pt (to resume), a numbered copy of it in checkpoints/ (the last ``keep_checkpoints`` kept),
        model.pt (the model file) and data.json; each written whole or not at all."""
        if not self.rt.is_main:
            return
        atomic_save({"format": STATE_FORMAT, "version": 1, "stage": self.run.stage, "step": step,
                     "data_position": step, "state": self.trainer.state_dict(), "rng": rng_state(),
                     "config": self.cfg.to_dict(), "records": self.records}, self.run.state_path)
        self._number(step)
        self.trainer.export(self.run.model_path, {**self.meta, "step": step})
        self._write_data_json()

    def _number(self, step: int) -> None:
        """checkpoints/state_STEP.pt: a hard link to this state.pt (no second write), a copy where links fail."""
        folder = self.run.out / CHECKPOINTS
        folder.mkdir(exist_ok=True)
        target = folder / f"state_{step:07d}.pt"
        target.unlink(missing_ok=True)
        try:
            os.link(self.run.state_path, target)
        except OSError:
            shutil.copy2(self.run.state_path, target)
        keep = self.cfg.run.keep_checkpoints
        numbered = sorted(folder.glob("state_*.pt"))
        for old in numbered[:-keep] if keep > 0 else []:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self.bar.close()
        self.log.close()
