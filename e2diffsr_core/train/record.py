"""What a training run leaves behind while it runs: the progress bar, log rows, validation and checkpoints."""

from __future__ import annotations

import json
import math
import time

import torch
from tqdm import tqdm

from ..checkpoint import atomic_save
from .logs import Meter, RunLog
from .runtime import rng_state
from .validate import validate

STATE_FORMAT = "e2diffsr-train-state"


class Recorder:
    """The run folder of one stage from ``step`` on: log.csv rows (every ``log_every`` steps, at the last step
    and before a stop), validation rows and pictures, state.pt and model.pt. Only the main process writes."""

    def __init__(self, cfg, run, rt, trainer, step: int, val_items: list[dict]):
        self.cfg, self.run, self.rt, self.trainer, self.val_items = cfg, run, rt, trainer, val_items
        self.step = step
        self.log = RunLog(run.out, trainer.log_keys, rt.is_main, cfg.run.tensorboard, step if run.resume else None)
        if rt.is_main:
            (run.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
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
        if self.rt.is_main and self.val_items:
            row = validate(self.trainer, self.val_items, step, self.run.out / "val", self.cfg.data.val_grid_images,
                           self.cfg.run.seed)
            if row:
                self.log.log_val({"step": step, **row})

    def save(self, step: int) -> None:
        """state.pt (to resume) and model.pt (the model file), both written whole or not at all."""
        if self.rt.is_main:
            atomic_save({"format": STATE_FORMAT, "version": 1, "stage": self.run.stage, "step": step,
                         "data_position": step, "state": self.trainer.state_dict(), "rng": rng_state(),
                         "config": self.cfg.to_dict()}, self.run.state_path)
            self.trainer.export(self.run.model_path, {**self.meta, "step": step})

    def close(self) -> None:
        self.bar.close()
        self.log.close()
