"""The two-stage trainer on CPU with the tiny config and the real pictures in tests/data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e2diffsr_core.api import superresolve_tensor
from e2diffsr_core.checkpoint import load_model, save_model
from e2diffsr_core.evaluation.protocol import find_images, select_split
from e2diffsr_core.model import E2DiffSR
from e2diffsr_core.train import load_config, main
from e2diffsr_core.train.data import PairDataset, ScaleBatchSampler

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
TINY = CONFIGS / "tiny.toml"
DATA = Path(__file__).parent / "data"

# Small, quick settings: HR crops 24..96 px in stage 1, 64 px in stage 2, a row per step, no validation.
QUICK = ["--set", "data.scale_max=4", "--set", "run.log_every=1", "--set", "run.val_every=0",
         "--set", "run.ckpt_every=0"]


def train(*args, config=TINY, quick=True):
    argv = ["--config", str(config), "--data", str(DATA), *(QUICK if quick else []), *map(str, args)]
    return main(argv)


def rows(run: Path, name: str = "log.csv") -> list[dict]:
    with (run / name).open(newline="") as f:
        return list(csv.DictReader(f))


def column(run: Path, key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows(run)])


def flat_tensors(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_tensors(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def assert_same_weights(a: Path, b: Path):
    sa = flat_tensors(torch.load(a / "state.pt", weights_only=True)["state"])
    sb = flat_tensors(torch.load(b / "state.pt", weights_only=True)["state"])
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    ma = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    mb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("s1")
    assert train("--stage", 1, "--out", out, "--max-steps", 2) == 0
    return out


# -- configs and data ------------------------------------------------------------------------------------------
def test_shipped_configs_parse_with_the_papers_learning_rates():
    paper = load_config(CONFIGS / "paper.toml")
    assert paper.stage1.base_lr * paper.stage1.batch_size == pytest.approx(1.8e-5)   # paper: 1.8e-5, batch 4
    assert paper.stage2.base_lr * paper.stage2.batch_size == pytest.approx(8e-5)     # paper: 8e-5, batch 8
    assert (paper.stage1.lr_patch, paper.stage2.hr_crop, paper.data.scale_max) == (48, 256, 8.0)
    lite = load_config(CONFIGS / "lite.toml")
    assert lite.stage1.perceptual_weight == 0 and lite.run.max_minutes > 0
    assert load_config(TINY).model.csum_hidden == 64


def test_pairs_follow_the_authors_sizes_and_bicubic():
    files = find_images(DATA)
    s1 = PairDataset(files, 1, lr_patch=48)
    hr, lr, valid = s1[(1, 3.4, 7)]
    assert valid.shape == (1, *hr.shape[1:]) and bool(valid.all())   # PNG pictures: every pixel valid
    assert hr.shape == (3, int(48 * 3.4), int(48 * 3.4)) and lr.shape == (3, 48, 48)
    # The LR is PIL bicubic of the uint8 HR crop.
    hr_u8 = np.round((hr.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
    expect = np.asarray(Image.fromarray(hr_u8).resize((48, 48), Image.BICUBIC))
    got = np.round((lr.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)
    assert np.array_equal(got, expect)
    hr2, lr2, _ = PairDataset(files, 2, hr_crop=256)[(1, 3.4, 7)]
    assert hr2.shape[-1] == 256 and lr2.shape[-1] == int(256 / 3.4)


def test_one_scale_per_batch_reproducible_and_resumable():
    a = ScaleBatchSampler(4, 3, seed=5, scale_range=(1.0, 8.0))
    batches = [b for _, b in zip(range(6), a)]
    for b in batches:
        assert len({k[1] for k in b}) == 1 and 1.0 <= b[0][1] <= 8.0
    assert len({b[0][1] for b in batches}) == 6
    later = ScaleBatchSampler(4, 3, seed=5, scale_range=(1.0, 8.0), start=4)
    assert next(iter(later)) == batches[4]
    # Two ranks split each global batch without overlap within an epoch.
    r0 = ScaleBatchSampler(4, 2, seed=5, scale_range=(1, 8), rank=0, world=2).batch(0)
    r1 = ScaleBatchSampler(4, 2, seed=5, scale_range=(1, 8), rank=1, world=2).batch(0)
    assert sorted(k[0] for k in r0 + r1) == [0, 1, 2, 3] and r0[0][1] == r1[0][1]


def test_split_matches_relative_paths_and_base_names(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"source": "test", "train": ["SOAP_031.png", "sub/SOAP_061.png"],
                                 "val": ["./YELL_2_541000_4977000_crop256.png"]}))
    files = find_images(DATA)
    assert [p.name for p in select_split(DATA, files, split, "train")] == ["SOAP_031.png", "SOAP_061.png"]
    assert [p.name for p in select_split(DATA, files, split, "val")] == ["YELL_2_541000_4977000_crop256.png"]


# -- the two stages --------------------------------------------------------------------------------------------
def test_stage1_loss_falls_and_writes_a_loadable_model(tmp_path):
    out = tmp_path / "s1"
    assert train("--stage", 1, "--out", out, "--max-steps", 16, "--set", "data.scale_min=3",
                 "--set", "data.scale_max=3", "--set", "stage1.base_lr=2.5e-4", "--set", "run.val_every=16") == 0
    # Reconstruction L1 relative to bicubic on the same batch (crops differ from step to step).
    ratio = column(out, "l1") / column(out, "l1_bicubic")
    assert ratio[:3].mean() > ratio[-5:].mean() + 0.03, ratio
    model = load_model(out / "model.pt")
    assert model.meta["stage"] == 1 and model.meta["step"] == 16
    assert (out / "val" / "step_0000016.png").is_file()
    grid = Image.open(out / "val" / "step_0000016.png")
    assert grid.width == 3 * 64                              # bicubic | model | HR
    val = rows(out, "val.csv")[-1]
    assert float(val["psnr_bicubic"]) > 15


def test_stage2_loss_falls_and_the_engine_runs_the_result(tmp_path, stage1_run):
    out = tmp_path / "s2"
    assert train("--stage", 2, "--out", out, "--stage1", stage1_run, "--max-steps", 15,
                 "--set", "stage2.base_lr=5e-4", "--set", "data.scale_min=3", "--set", "data.scale_max=3") == 0
    loss = column(out, "diffusion")
    # one scale and a rate that makes the fall clear; batches still differ in their crops
    assert loss[-5:].mean() < 0.7 * loss[:5].mean(), loss
    model = load_model(out / "model.pt")
    assert model.meta["unet_weights"] == "ema" and model.meta["stage"] == 2
    assert float(model.scale_factor) != 1.0                  # set from the first batch's latents
    s1 = load_model(stage1_run / "model.pt")
    assert torch.equal(model.first_stage_model.encoder.conv_in.weight, s1.first_stage_model.encoder.conv_in.weight)
    # model.pt holds the EMA UNet, state.pt the raw one.
    raw = torch.load(out / "state.pt", weights_only=True)["state"]["model"]
    assert not torch.equal(raw["unet.out.2.weight"], model.unet.out[2].weight)
    lr = torch.rand(1, 3, 20, 24)
    assert superresolve_tensor(model, lr, 2.5).shape == (1, 3, 50, 60)


def test_cosine_schedule_with_warm_up(tmp_path, stage1_run):
    """stage2.lr_schedule = "cosine" with a warm-up: the logged rate climbs, then falls towards 0 at the end."""
    out = tmp_path / "cos"
    assert train("--stage", 2, "--out", out, "--stage1", stage1_run, "--max-steps", 8,
                 "--set", 'stage2.lr_schedule="cosine"', "--set", "stage2.warmup_steps=2") == 0
    lr = column(out, "lr")
    assert len(lr) == 8
    peak = lr[1]  # step 2: warm-up done, cosine at 1/8 of the run
    assert lr[0] == pytest.approx(peak * 0.5 / (0.5 * (1 + np.cos(np.pi / 8))), rel=1e-6)
    assert lr[-1] == pytest.approx(peak * 0.5 * (1 + np.cos(7 * np.pi / 8)) / (0.5 * (1 + np.cos(np.pi / 8))),
                                   rel=1e-6)
    assert all(a > b for a, b in zip(lr[1:], lr[2:]))
    constant = tmp_path / "const"
    assert train("--stage", 2, "--out", constant, "--stage1", stage1_run, "--max-steps", 3) == 0
    assert len(set(column(constant, "lr"))) == 1  # the authors' constant rate stays the default


def test_schedule_follows_the_time_limit_when_it_ends_the_run_first():
    from e2diffsr_core.train.common import lr_factor

    assert lr_factor("constant", 0, 5, 0.9) == 1.0
    assert lr_factor("cosine", 0, 0, 0.0) == 1.0
    assert lr_factor("cosine", 0, 10, 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 0, 10, 1.3) == 0.0  # past the budget: 0, never negative
    assert lr_factor("constant", 4, 1, 0.0) == 0.5


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, stage1_run, stage):
    extra = ["--set", "stage1.disc_start=3"] if stage == 1 else ["--stage1", stage1_run]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train("--stage", stage, "--out", straight, "--max-steps", 10, *extra) == 0
    assert train("--stage", stage, "--out", split, "--max-steps", 5, *extra) == 0
    assert train("--stage", stage, "--out", split, "--max-steps", 10, "--resume", *extra) == 0
    assert_same_weights(straight, split)
    assert [r["step"] for r in rows(split)] == [str(i) for i in range(1, 11)]
    assert rows(split)[-1]["loss"] == rows(straight)[-1]["loss"]


def test_torchrun_two_processes_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    for stage, out, extra in ((1, s1, ["--set", "stage1.disc_start=1"]), (2, s2, ["--stage1", str(s1)])):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "e2diffsr_core.train", "--config", str(TINY), "--data", str(DATA), "--stage", str(stage),
               "--out", str(out), "--max-steps", "3", "--device", "cpu", *QUICK, *extra]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("wrote") == 1                 # only rank 0 writes
        model = load_model(out / "model.pt")
        assert model.meta["world_size"] == 2 and model.meta["step"] == 3
        assert [r["step"] for r in rows(out)] == ["1", "2", "3"]


# -- ablations (paper Sec. V) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("switch", ["model.prior_branch=false", "model.sr_branch=false",
                                    'model.modulation="concat"', 'model.regularizer="vq"'])
def test_model_variants_train_both_stages(tmp_path, switch):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    variant = ["--set", switch]
    assert train("--stage", 1, "--out", s1, "--max-steps", 1, "--set", "stage1.disc_start=0", *variant) == 0
    assert train("--stage", 2, "--out", s2, "--max-steps", 1, "--stage1", s1, *variant) == 0
    model = load_model(s2 / "model.pt")
    assert model.cfg == load_config(TINY, [switch]).model
    if "vq" in switch:
        assert "first_stage_model.quantize.embedding.weight" in model.state_dict()
    # A stage-2 config that disagrees with the stage-1 model is refused.
    assert train("--stage", 2, "--out", tmp_path / "bad", "--max-steps", 1, "--stage1", s1) == 2


@pytest.mark.parametrize("switch, present, absent", [
    ('stage2.timestep_sampling="random"', "diffusion", None),
    ("stage2.distill_weight=0", "diffusion", "distill"),
    ("stage2.diffusion_weight=0", "distill", "diffusion"),
    ('stage2.loss_type="l1"', "diffusion", None),
])
def test_training_switches_run_a_step(tmp_path, stage1_run, switch, present, absent):
    out = tmp_path / "s2"
    assert train("--stage", 2, "--out", out, "--max-steps", 2, "--stage1", stage1_run, "--set", switch) == 0
    row = rows(out)[-1]
    assert np.isfinite(float(row[present]))
    if absent:
        assert row[absent] == ""
    if "diffusion_weight" in switch:  # without the diffusion loss the UNet is not trained
        raw = torch.load(out / "state.pt", weights_only=True)["state"]["model"]
        torch.manual_seed(load_config(TINY).run.seed)
        ref = E2DiffSR(load_config(TINY).model)
        assert torch.equal(raw["unet.out.2.weight"], ref.unet.out[2].weight)


def test_lpips_term_with_a_random_backbone(tmp_path):
    out = tmp_path / "s1"
    assert train("--stage", 1, "--out", out, "--max-steps", 1, "--set", "stage1.perceptual_weight=1.0",
                 "--set", "stage1.lpips_random_backbone=true") == 0
    assert float(rows(out)[0]["lpips"]) >= 0


def test_nan_guard_skips_and_stops(tmp_path, stage1_run, monkeypatch, capsys):
    real = PairDataset.__getitem__
    calls = []

    def poisoned(self, key):  # the first batch (2 images) is clean, every later one is NaN
        calls.append(key)
        hr, lr, valid = real(self, key)
        return (hr if len(calls) <= 2 else hr * float("nan")), lr, valid

    monkeypatch.setattr(PairDataset, "__getitem__", poisoned)
    out = tmp_path / "s2"
    rc = train("--stage", 2, "--out", out, "--max-steps", 10, "--stage1", stage1_run, "--set", "run.max_bad_steps=3")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "3 consecutive steps had non-finite" in err and len(err.splitlines()) == 1
    assert [r["skipped"] for r in rows(out)] == ["0", "1", "1", "1"]
    assert not (out / "state.pt").exists()


# -- errors a user can fix: one line, non-zero exit --------------------------------------------------------------
def _error(capsys, *args, **kw) -> str:
    assert train(*args, **kw) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_missing_and_empty_data_folders(tmp_path, capsys):
    argv = ["--config", str(TINY), "--stage", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--data", str(tmp_path / "nowhere")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--data", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err


def test_images_smaller_than_the_crop(tmp_path, capsys):
    assert train("--stage", 2, "--out", tmp_path / "o", "--stage1", tmp_path, "--set", "stage2.hr_crop=320") == 2
    err = capsys.readouterr().err.strip().splitlines()   # one line for each picture too small
    assert len(err) == 2 and all("256 x 256 px" in e and "320 px crop" in e for e in err), err
    assert not (tmp_path / "o").exists()
    assert train("--stage", 1, "--out", tmp_path / "o", "--set", "stage1.lr_patch=48", "--set", "data.scale_max=8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("256 x 256 px, smaller than the 384 px crop" in e for e in err), err


def test_unknown_config_keys(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("[stage2]", "[stage2]\nhr_crp = 64"))
    err = _error(capsys, "--stage", 2, "--out", tmp_path / "o", config=bad)
    assert "unknown key 'hr_crp' in [stage2]" in err
    err = _error(capsys, "--stage", 1, "--out", tmp_path / "o", "--set", "model.widht=3")
    assert "unknown key 'widht' in [model]" in err
    err = _error(capsys, "--stage", 1, "--out", tmp_path / "o", "--set", "trainer.steps=3")
    assert "unknown table [trainer]" in err
    err = _error(capsys, "--stage", 1, "--out", tmp_path / "o", "--set", "stage1.batch_size=two")
    assert "[stage1] batch_size must be int" in err


def test_stage2_needs_a_stage1_checkpoint(tmp_path, capsys):
    err = _error(capsys, "--stage", 2, "--out", tmp_path / "o")
    assert "stage 2 needs the stage-1 result" in err and "--stage1" in err
    assert not (tmp_path / "o").exists()    # refused before any work: no run folder left behind
    err = _error(capsys, "--stage", 2, "--out", tmp_path / "o2", "--stage1", tmp_path / "missing")
    assert "stage-1 checkpoint not found" in err


def test_resume_and_overwrite_are_explicit(tmp_path, stage1_run, capsys):
    err = _error(capsys, "--stage", 1, "--out", tmp_path / "fresh", "--resume")
    assert "nothing to resume" in err
    err = _error(capsys, "--stage", 1, "--out", stage1_run)
    assert "already holds a run" in err and "--resume" in err
    err = _error(capsys, "--stage", 2, "--out", stage1_run, "--resume", "--stage1", stage1_run)
    assert "stage-1 run, not stage 2" in err


def test_lpips_without_weights_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    err = _error(capsys, "--stage", 1, "--out", tmp_path / "o", "--set", "stage1.perceptual_weight=1.0")
    assert "vgg16-397923af.pth" in err and "perceptual_weight = 0" in err


def test_command_line_process_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "e2diffsr_core.train", "--config", str(TINY), "--stage", "1",
                           "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: data folder not found: {tmp_path / 'none'}"]


def test_a_saved_random_model_is_accepted_as_stage1(tmp_path):
    # Any E2DiffSR model file with a matching first stage can start stage 2 (e.g. a converted release).
    model = E2DiffSR(load_config(TINY).model)
    save_model(model, tmp_path / "m.pt")
    assert train("--stage", 2, "--out", tmp_path / "s2", "--max-steps", 1, "--stage1", tmp_path / "m.pt") == 0
