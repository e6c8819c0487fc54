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
from ..evaluation.protocol import find_images, select_split, validation_items
from ..model import E2DiffSR, ModelConfig
from .config import TrainConfig
from .data import PairDataset, ScaleBatchSampler, check_sizes, make_loader
from .losses import NLayerDiscriminator
from .record import STATE_FORMAT, Recorder
from .runtime import Dist, seed_everything, set_rng_state, step_seed
from .stage1 import Stage1
from .stage2 import Stage2, load_first_stage, stage1_file


def _split_has(split, subset: str) -> bool:
    if split is None:
        return False
    try:
        return isinstance(json.loads(Path(split).read_text(encoding="utf-8")).get(subset), list)
    except (OSError, ValueError, AttributeError):
        return False


def _data(cfg: TrainConfig, stage: int, data, split):
    files = find_images(data)
    train_files = select_split(data, files, split, "train")
    val_files = select_split(data, files, split, "val") if _split_has(split, "val") else train_files
    if stage == 1:
        s = cfg.stage1
        need = int(s.lr_patch * cfg.data.scale_max)
        check_sizes(train_files, need, f"stage 1 needs (lr_patch {s.lr_patch} x scale_max {cfg.data.scale_max:g})")
        smallest = int(s.lr_patch * cfg.data.scale_min)
        if s.disc_weight > 0 and smallest < NLayerDiscriminator.min_input(s.disc_layers):
            raise E2DiffSRError(
                f"stage-1 HR crops can be {smallest} px, too small for a {s.disc_layers}-layer discriminator "
                f"(at least {NLayerDiscriminator.min_input(s.disc_layers)}); raise lr_patch or lower disc_layers")
        dataset = PairDataset(train_files, 1, lr_patch=s.lr_patch)
    else:
        check_sizes(train_files, cfg.stage2.hr_crop, "stage 2 needs (hr_crop)")
        dataset = PairDataset(train_files, 2, hr_crop=cfg.stage2.hr_crop)
    return dataset, val_files


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


def _check_out(run: RunSettings) -> None:
    if run.resume and not run.state_path.is_file():
        raise E2DiffSRError(f"nothing to resume: {run.state_path} not found")
    if not run.resume and run.state_path.exists():
        raise E2DiffSRError(f"{run.out} already holds a run (state.pt); pass --resume to continue it "
                            "or choose another --out")


def _start(cfg: TrainConfig, run: RunSettings, rt: Dist):
    """(trainer, first step): a new model, or the run's state.pt with its RNG state on --resume."""
    state = _load_state(run.state_path, run.stage) if run.resume else None
    trainer = _build(cfg, run.stage, rt, state, run.stage1, run.init)
    if state is None:
        return trainer, 0
    trainer.load_state_dict(state["state"])
    set_rng_state(state["rng"])
    return trainer, int(state["step"])


def _train(cfg: TrainConfig, run: RunSettings, rt: Dist) -> Path:
    _check_out(run)
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dataset, val_files = _data(cfg, run.stage, run.data, run.split)
    trainer, step = _start(cfg, run, rt)
    s = cfg.stage1 if run.stage == 1 else cfg.stage2
    sampler = ScaleBatchSampler(len(dataset), s.batch_size, cfg.run.seed, (cfg.data.scale_min, cfg.data.scale_max),
                                rt.rank, rt.world, start=step)
    loader = make_loader(dataset, sampler, cfg.data.num_workers, pin_memory=rt.device.type == "cuda")
    val_items = validation_items(val_files, cfg.data.val_max_images, cfg.data.val_size, cfg.data.val_scale) \
        if rt.is_main and cfg.run.val_every > 0 else []
    rec = Recorder(cfg, run, rt, trainer, step, val_items)
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
    limit or after ``max_bad_steps`` skipped steps in a row; a last validation and checkpoint at the end."""
    step = start = rec.step
    batches = iter(loader)
    spent = 0.0  # share of the time limit used, the same on every rank
    try:
        while step < run.steps:
            batch = next(batches)
            gen = torch.Generator(device=rt.device).manual_seed(step_seed(cfg.run.seed, step, rt.rank))
            if step == 0:
                trainer.prepare(batch, gen)
            trainer.schedule(step, max(step / max(1, run.steps), spent))
            logs = trainer.step(batch, step, gen)
            step += 1
            if rec.train_row(step, logs) >= cfg.run.max_bad_steps:
                raise E2DiffSRError(
                    f"stopped at step {step}: {rec.bad} consecutive steps had non-finite losses or gradients; lower "
                    f"the learning rate or check the data (the last checkpoint, if any, is {run.state_path})")
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
    finally:
        del batches
