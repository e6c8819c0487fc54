"""The training loop shared by both stages: data, resume, logging, validation, checkpoints, time limit.

    train(cfg, 1, "AID", "runs/s1", max_steps=1000)   # what python -m e2diffsr_core.train --stage 1 runs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import FORMAT, load_state, safe_load
from ..errors import E2DiffSRError
from ..model import E2DiffSR, ModelConfig
from .check import DataPlan, check_data
from .config import TrainConfig
from .data import PairDataset, ScaleBatchSampler, make_loader
from .losses import NLayerDiscriminator
from .record import STATE_FORMAT, Recorder
from .runfolder import RunStopped, StopSignals, drop_if_created, prepare_out
from .runtime import Dist, seed_everything, set_rng_state, step_seed
from .stage1 import Stage1
from .stage2 import Stage2, load_first_stage, stage1_file
from .validate import validation_items


def _data(cfg: TrainConfig, stage: int, plan: DataPlan) -> PairDataset:
    bands = list(cfg.data.bands) or None
    if stage == 1:
        s = cfg.stage1
        smallest = int(s.lr_patch * cfg.data.scale_min)
        if s.disc_weight > 0 and smallest < NLayerDiscriminator.min_input(s.disc_layers):
            raise E2DiffSRError(
                f"stage-1 HR crops can be {smallest} px, too small for a {s.disc_layers}-layer discriminator "
                f"(at least {NLayerDiscriminator.min_input(s.disc_layers)}); raise lr_patch or lower disc_layers")
        return PairDataset(plan.train, 1, lr_patch=s.lr_patch, bands=bands, min_valid=cfg.data.min_valid)
    return PairDataset(plan.train, 2, hr_crop=cfg.stage2.hr_crop, bands=bands, min_valid=cfg.data.min_valid)


def load_init(model: E2DiffSR, path) -> None:
    """Warm start: every weight from an exported model file (fp16 or fp32) whose configuration is this run's."""
    obj = safe_load(path, "--init model")
    if obj.get("format") != FORMAT or "config" not in obj:
        raise E2DiffSRError(f"--init {path} is not an E2DiffSR model file; give a model.pt or an exported model")
    theirs, ours = obj["config"], model.cfg.to_dict()
    differ = [k for k in ours if k != "notes" and json.dumps(theirs.get(k)) != json.dumps(ours[k])]
    if differ:
        k = differ[0]
        raise E2DiffSRError(f"--init {Path(path).name} has model.{k} = {theirs.get(k)!r} but this config says "
                            f"{ours[k]!r}; warm-start from a model of the same configuration")
    load_state(model, obj.get("state_dict", {}), f"--init {path}")


def _build(cfg: TrainConfig, stage: int, rt: Dist, state: dict | None, stage1, init=None):
    seed_everything(cfg.run.seed)   # same initial weights (and LPIPS/discriminator) on every rank and resume
    if stage == 2 and state is not None:   # resume: the run's own model config, weights come from the state
        return Stage2(cfg, E2DiffSR(ModelConfig.from_dict(state["state"]["model_config"])), rt)
    model = E2DiffSR(cfg.model)
    if init is not None and state is None:
        load_init(model, init)             # before Stage2 copies the UNet into its EMA
    if stage == 1:
        return Stage1(cfg, model, rt)
    load_first_stage(model, stage1_file(stage1))
    return Stage2(cfg, model, rt)


def _load_state(path: Path, stage: int) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise E2DiffSRError(f"cannot resume: {path} is unreadable ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise E2DiffSRError(f"cannot resume: {path} is not a training state written by e2diffsr_core.train")
    if state["stage"] != stage:
        raise E2DiffSRError(f"cannot resume: {path} is a stage-{state['stage']} run, not stage {stage}")
    return state


@dataclass(frozen=True)
class RunSettings:
    """One stage's run as the command line gives it: where the data and the run folder are, how it starts
    (new, ``resume`` or warm from ``init``) and when it stops (``steps``, ``minutes``; 0: no time limit)."""

    stage: int
    data: Path
    out: Path
    steps: int
    minutes: float
    split: str | Path | None = None
    resume: bool = False
    stage1: str | Path | None = None
    init: str | Path | None = None

    @classmethod
    def of(cls, cfg: TrainConfig, stage: int, data, out, *, max_steps: int | None = None,
           max_minutes: float | None = None, **start) -> RunSettings:
        """Checked settings; ``max_steps`` and ``max_minutes`` override the configuration's."""
        if stage not in (1, 2):
            raise E2DiffSRError(f"--stage must be 1 or 2, got {stage}")
        if start.get("init") is not None and start.get("resume"):
            raise E2DiffSRError("--init starts a new run from a model and --resume continues a run: give one of them")
        s = cfg.stage1 if stage == 1 else cfg.stage2
        return cls(stage, Path(data), Path(out), s.max_steps if max_steps is None else max_steps,
                   cfg.run.max_minutes if max_minutes is None else max_minutes, **start)

    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    @property
    def model_path(self) -> Path:
        return self.out / "model.pt"


def train(cfg: TrainConfig, stage: int, data, out, *, split=None, resume: bool = False, stage1=None,
          max_steps: int | None = None, max_minutes: float | None = None, device: str | None = None,
          init=None) -> Path:
    """Run one stage; returns the path of the model file written (RUN_DIR/model.pt). ``init``: a model file
    to start from instead of random weights (stage 2 still takes its first stage from ``stage1``)."""
    run = RunSettings.of(cfg, stage, data, out, max_steps=max_steps, max_minutes=max_minutes, split=split,
                         resume=resume, stage1=stage1, init=init)
    rt = Dist(device or cfg.run.device)
    try:
        return _train(cfg, run, rt)
    finally:
        rt.close()


def _start(cfg: TrainConfig, run: RunSettings, rt: Dist):
    """(trainer, first step, the run's own records): a new model, or the run's state.pt with its RNG state
    on --resume."""
    state = _load_state(run.state_path, run.stage) if run.resume else None
    trainer = _build(cfg, run.stage, rt, state, run.stage1, run.init)
    if state is None:
        return trainer, 0, {}
    trainer.load_state_dict(state["state"])
    set_rng_state(state["rng"])
    return trainer, int(state["step"]), state.get("records", {})


def _checked(cfg: TrainConfig, run: RunSettings, rt: Dist) -> tuple[DataPlan, bool]:
    """The run folder (writable, before any work), the stage-1 model and the data check: (plan, whether this
    run created the folder)."""
    created = prepare_out(run.out, run.resume) if rt.is_main else False
    try:
        plan = check_data(cfg, run.stage, run.data, run.split)
        _data(cfg, run.stage, plan)
        if run.stage == 2 and not run.resume:
            stage1_file(run.stage1)
    except BaseException:
        drop_if_created(run.out, created)
        raise
    if rt.is_main and run.split is None and cfg.run.val_every > 0:
        tqdm.write("note: no --split, so validation scores training images (how well the model fits them, not how "
                   "it does on unseen ones)")
    return plan, created


def _train(cfg: TrainConfig, run: RunSettings, rt: Dist) -> Path:
    plan, created = _checked(cfg, run, rt)
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dataset = _data(cfg, run.stage, plan)
    try:
        trainer, step, extra = _start(cfg, run, rt)
    except BaseException:   # a refused model (e.g. a stage-1 file of another configuration) leaves no folder
        drop_if_created(run.out, created)
        raise
    s = cfg.stage1 if run.stage == 1 else cfg.stage2
    sampler = ScaleBatchSampler(len(dataset), s.batch_size, cfg.run.seed, (cfg.data.scale_min, cfg.data.scale_max),
                                rt.rank, rt.world, start=step)
    loader = make_loader(dataset, sampler, cfg.data.num_workers, pin_memory=rt.device.type == "cuda")
    val_items = validation_items(plan.val, cfg.data.val_max_images, cfg.data.val_size, cfg.data.val_scales,
                                 list(cfg.data.bands) or None, cfg.data.min_valid, cfg.run.seed) \
        if rt.is_main and cfg.run.val_every > 0 else []
    rec = Recorder(cfg, run, rt, trainer, step, val_items, plan.report, extra)
    try:
        _loop(cfg, run, rt, trainer, loader, rec)
    finally:
        rec.close()
        del loader
    return run.model_path


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _loop(cfg: TrainConfig, run: RunSettings, rt: Dist, trainer, loader, rec: Recorder) -> None:
    """The steps from ``rec.step`` to ``run.steps``: log, validate and checkpoint when due, stop on the time
    limit, on SIGTERM / SIGINT (after saving a resumable checkpoint) or after ``max_bad_steps`` skipped steps in
    a row; a last validation and checkpoint at the end."""
    batches = iter(loader)
    try:
        with StopSignals() as signals:
            step = _steps(cfg, run, rt, trainer, rec, batches, signals)
            if step is None:   # saved while the handlers still hold: a second SIGTERM cannot cut it short
                rec.save(rec.step)
    finally:
        del batches
    if step is not None:
        return
    name = signals.name
    raise RunStopped(f"{name} at step {rec.step}: saved {run.state_path}; continue with the same command and "
                     "--resume", 128 + signals.signum)


def _steps(cfg: TrainConfig, run: RunSettings, rt: Dist, trainer, rec: Recorder, batches, signals) -> int | None:
    """Run the steps; returns the last step, or None when a stop signal came (``rec.step`` is the last step)."""
    step = start = rec.step
    spent = 0.0  # share of the time limit used, the same on every rank
    while step < run.steps:
        batch = next(batches)
        gen = torch.Generator(device=rt.device).manual_seed(step_seed(cfg.run.seed, step, rt.rank))
        if step == 0:
            trainer.prepare(batch, gen)
        trainer.schedule(step, max(step / max(1, run.steps), spent))
        logs = trainer.step(batch, step, gen)
        step += 1
        rec.count_crops(batch)
        if rec.train_row(step, logs) >= cfg.run.max_bad_steps:
            raise E2DiffSRError(
                f"stopped at step {step}: {rec.bad} consecutive steps had non-finite losses or gradients; lower "
                f"the learning rate or check the data (the last checkpoint, if any, is {run.state_path})")
        if rt.any(signals.name is not None):
            rec.step = step
            return None
        if _due(step, cfg.run.val_every):
            rec.validate(step)
        if _due(step, cfg.run.ckpt_every):
            rec.save(step)
        spent = rt.max(rec.seconds()) / (run.minutes * 60) if run.minutes > 0 else 0.0
        if spent > 1:
            tqdm.write(f"time limit of {run.minutes:g} min reached at step {step}; saving") if rt.is_main else None
            break
    if cfg.run.val_every > 0 and step % cfg.run.val_every != 0 and step > start:
        rec.validate(step)
    rec.save(step)
    return step
