"""The training loop shared by both stages: data, resume, logging, validation, checkpoints, time limit."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import FORMAT, atomic_save, load_state, safe_load
from ..errors import E2DiffSRError
from ..model import E2DiffSR, ModelConfig
from .config import TrainConfig
from .data import PairDataset, ScaleBatchSampler, check_sizes, find_images, make_loader, select_split, validation_items
from .logs import Meter, RunLog
from .losses import NLayerDiscriminator
from .runtime import Dist, rng_state, seed_everything, set_rng_state, step_seed
from .stage1 import Stage1
from .stage2 import Stage2, load_first_stage, stage1_file
from .validate import validate

STATE_FORMAT = "e2diffsr-train-state"


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


def train(cfg: TrainConfig, stage: int, data, out, split=None, resume: bool = False, stage1=None,
          max_steps: int | None = None, max_minutes: float | None = None, device: str | None = None,
          init=None) -> Path:
    """Run one stage; returns the path of the model file written (RUN_DIR/model.pt). ``init``: a model file
    to start from instead of random weights (stage 2 still takes its first stage from ``stage1``)."""
    if stage not in (1, 2):
        raise E2DiffSRError(f"--stage must be 1 or 2, got {stage}")
    if init is not None and resume:
        raise E2DiffSRError("--init starts a new run from a model and --resume continues a run: give one of them")
    rt = Dist(device or cfg.run.device)
    try:
        return _train(cfg, stage, Path(data), Path(out), split, resume, stage1, max_steps, max_minutes, rt, init)
    finally:
        rt.close()


def _train(cfg, stage, data, out, split, resume, stage1, max_steps, max_minutes, rt: Dist, init=None) -> Path:
    s = cfg.stage1 if stage == 1 else cfg.stage2
    total = s.max_steps if max_steps is None else max_steps
    minutes = cfg.run.max_minutes if max_minutes is None else max_minutes
    state_path, model_path = out / "state.pt", out / "model.pt"
    if resume and not state_path.is_file():
        raise E2DiffSRError(f"nothing to resume: {state_path} not found")
    if not resume and state_path.exists():
        raise E2DiffSRError(f"{out} already holds a run (state.pt); pass --resume to continue it "
                            "or choose another --out")
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    dataset, val_files = _data(cfg, stage, data, split)
    state = _load_state(state_path, stage) if resume else None
    trainer = _build(cfg, stage, rt, state, stage1, init)
    step = 0
    if state is not None:
        trainer.load_state_dict(state["state"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        del state
    start = step

    sampler = ScaleBatchSampler(len(dataset), s.batch_size, cfg.run.seed, (cfg.data.scale_min, cfg.data.scale_max),
                                rt.rank, rt.world, start=step)
    loader = make_loader(dataset, sampler, cfg.data.num_workers, pin_memory=rt.device.type == "cuda")
    val_items = validation_items(val_files, cfg.data.val_max_images, cfg.data.val_size, cfg.data.val_scale) \
        if rt.is_main and cfg.run.val_every > 0 else []
    log = RunLog(out, trainer.log_keys, rt.is_main, cfg.run.tensorboard, start if resume else None)
    if rt.is_main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    meta = {"stage": stage, "preset": cfg.preset, "config": cfg.source, "data": data.name,
            "train": cfg.to_dict(), "world_size": rt.world}

    def save():
        if rt.is_main:
            atomic_save({"format": STATE_FORMAT, "version": 1, "stage": stage, "step": step, "data_position": step,
                         "state": trainer.state_dict(), "rng": rng_state(), "config": cfg.to_dict()}, state_path)
            trainer.export(model_path, {**meta, "step": step})

    def run_validation():
        if rt.is_main and val_items:
            row = validate(trainer, val_items, step, out / "val", cfg.data.val_grid_images, cfg.run.seed)
            if row:
                log.log_val({"step": step, **row})

    bar = tqdm(total=total, initial=step, disable=not (rt.is_main and cfg.run.progress), dynamic_ncols=True,
               desc=f"stage {stage}", mininterval=1.0)
    meter, bad, t0 = Meter(), 0, time.time()
    t_log, step_log = t0, step
    images_per_step = s.batch_size * rt.world
    batches = iter(loader)
    try:
        while step < total:
            batch = next(batches)
            gen = torch.Generator(device=rt.device).manual_seed(step_seed(cfg.run.seed, step, rt.rank))
            if step == 0:
                trainer.prepare(batch, gen)
            logs = trainer.step(batch, step, gen)
            step += 1
            bar.update(1)
            skipped = bool(logs.pop("skipped"))
            bad = bad + 1 if skipped else 0
            meter.add({**logs, "skipped": torch.tensor(float(skipped))})
            stop_bad = bad >= cfg.run.max_bad_steps
            if step % cfg.run.log_every == 0 or step == total or stop_bad:
                now = time.time()
                row = {"step": step, "time_s": round(now - t0, 2), "lr": trainer.lr,
                       "images_per_s": round(images_per_step * (step - step_log) / max(now - t_log, 1e-9), 2),
                       **meter.means()}
                t_log, step_log = now, step
                log.log_train(row)
                bar.set_postfix(loss=f"{row.get('loss', math.nan):.4g}", img_s=row["images_per_s"])
            if stop_bad:
                raise E2DiffSRError(
                    f"stopped at step {step}: {bad} consecutive steps had non-finite losses or gradients; lower the "
                    f"learning rate or check the data (the last checkpoint, if any, is {state_path})")
            if cfg.run.val_every > 0 and step % cfg.run.val_every == 0:
                run_validation()
            if cfg.run.ckpt_every > 0 and step % cfg.run.ckpt_every == 0:
                save()
            if minutes > 0 and rt.any(time.time() - t0 > minutes * 60):
                tqdm.write(f"time limit of {minutes:g} min reached at step {step}; saving") if rt.is_main else None
                break
        if cfg.run.val_every > 0 and step % cfg.run.val_every != 0 and step > start:
            run_validation()
        save()
    finally:
        bar.close()
        log.close()
        del batches, loader
    return model_path
