"""The authors' inference reproduced from their checkpoint layout, through our converter (reference README 4)."""

import json

import pytest
import torch

from e2diffsr_core.__main__ import main
from e2diffsr_core.checkpoint import load_model
from e2diffsr_core.model import Geometry, preset
from e2diffsr_core.tools.convert_official import convert_official_state

# Measured agreement here (torch 2.14.1, 2 threads) vs. the fixture (torch 2.13.0+cpu): images <= 1.9e-6,
# latents <= 1.4e-4 (|z| ~ 70, i.e. 2e-6 relative; the t=3 step multiplies eps by ~20). The mistakes the
# reference README lists move sr_raw by 7.2e-5 to 0.5, so these bounds still catch every one of them.
IMG_ATOL = 1e-5
LAT_RTOL = 5e-6


@pytest.fixture(scope="module")
def golden(data_dir):
    return torch.load(data_dir / "ldcsr_golden_tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(golden, tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    torch.save({"state_dict": golden["first_stage_state_dict"], "epoch": 1}, d / "first.ckpt")
    torch.save({"state_dict": golden["second_stage_state_dict"], "epoch": 1}, d / "second.ckpt")
    rc = main(["convert-official", "--first-stage", str(d / "first.ckpt"), "--second-stage",
               str(d / "second.ckpt"), "--out", str(d / "model.pt")])
    assert rc == 0
    return load_model(d / "model.pt")


def _close_latent(a, b):
    assert a.shape == b.shape
    tol = LAT_RTOL * b.abs().max().item()
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


def _close_image(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= IMG_ATOL, (a - b).abs().max().item()


def test_converter_reads_scale_factor_and_ema(model, golden):
    assert model.scale_factor.item() == pytest.approx(0.7319)
    assert model.meta["weights"] == "ema"
    assert model.meta["num_updates"] == golden["second_stage_state_dict"]["model_ema.num_updates"].item()


@torch.no_grad()
def test_first_stage_reconstruction(model, golden):
    fs = golden["first_stage"]
    posterior = model.first_stage_model.encode(fs["hr_m11"], fs["lr_m11"])
    _close_image(posterior.mean, fs["posterior_mean"])
    _close_image(posterior.logvar, fs["posterior_logvar_clamped"])
    rec = model.first_stage_model.decode(posterior.mode(), fs["lr_m11"], tuple(fs["hr_m11"].shape[2:]))
    _close_image(rec, fs["recon_mode_raw"])
    sample = posterior.sample(noise=fs["official_logimages_noises"][0])
    rec01 = model.first_stage_model.decode(sample, fs["lr_m11"], tuple(fs["hr_m11"].shape[2:]))
    _close_image(rec01.clamp(-1, 1) * 0.5 + 0.5, fs["official_logimages_reconstructions_01"])


@pytest.mark.parametrize("case", ["caseA", "caseB"])
@torch.no_grad()
def test_sampling_chain_and_image(model, golden, case):
    c = golden[case]
    geo = Geometry.whole(tuple(c["lr_m11"].shape[2:]), tuple(c["out_size"]))
    assert geo.unet_scale == c["unet_c_scale"].item()
    assert geo.osize == c["unet_c_osize"].item()
    assert torch.tensor(geo.s, dtype=torch.float32) == c["decoder_scale_h_ratio"][0]
    assert torch.tensor(geo.r, dtype=torch.float32) == c["csum_r"][0]
    rec = {}
    # noises[0] is the discarded first-stage draw; z_T and the step noises follow.
    out = model.sample(c["lr_m11"], geo, noises=list(c["noises"][1:]), record=rec)
    _close_latent(rec["c"], c["cond_latent_c_concat"])
    for mine, ref in zip(rec["eps"], c["unet_eps_per_step"]):
        _close_image(mine, ref)
    for mine, ref in zip(rec["x0"], c["x0_pred_per_step"]):
        _close_latent(mine, ref)
    for mine, ref in zip(rec["z"], c["x_prev_per_step"]):
        _close_latent(mine, ref)
    _close_latent(rec["z0_hat"], c["z0_hat"])
    _close_image(out, c["sr_raw"])
    img01 = out.clamp(-1, 1) * 0.5 + 0.5
    _close_image(img01, c["log_sr_01"])
    u8 = torch.round(torch.clamp(img01 * 255, 0, 255)).to(torch.uint8)[0].permute(1, 2, 0)
    assert (u8.int() - c["sr_u8_hwc"].int()).abs().max().item() <= 1
    assert (u8 != c["sr_u8_hwc"]).float().mean().item() < 0.001
    # the one-shot CondNet result (sr_kd) too
    _close_image(model.decode(rec["c"], c["lr_m11"], geo), c["sr_kd_raw"])


@torch.no_grad()
def test_raw_unet_weights_differ_from_ema(golden):
    _, meta = convert_official_state(golden["second_stage_state_dict"], use_ema=False)
    assert meta["weights"] == "raw"
    model, _ = convert_official_state(golden["second_stage_state_dict"], use_ema=False)
    c = golden["caseA"]
    rec = {}
    model.sample(c["lr_m11"], Geometry.whole((24, 20), (81, 68)), noises=list(c["noises"][1:]), record=rec)
    _close_latent(rec["z0_hat"], c["diagnostic_z0_hat_without_ema"])


def _fake_state(rows):
    return {r["key"]: torch.zeros(r["shape"], dtype=getattr(torch, r["dtype"])) for r in rows}


def test_release_key_lists_map_onto_paper_model(data_dir):
    first = json.loads((data_dir / "ldcsr_first_stage_keys.json").read_text())["keys"]
    second = json.loads((data_dir / "ldcsr_second_stage_keys.json").read_text())["keys"]
    sd2 = _fake_state(second)
    sd2["scale_factor"] = torch.tensor(0.5)
    model, meta = convert_official_state(sd2, _fake_state(first))
    assert model.cfg == preset("paper")
    own = model.state_dict()
    # one of our weights per non-EMA key of the release (the EMA copies fill the UNet), none left over
    assert len(own) == sum(1 for r in second if not r["key"].startswith("model_ema."))
    assert sum(1 for r in second if r["key"].startswith("model_ema.diffusion_model")) == len(
        [k for k in own if k.startswith("unet.")])
    assert meta["scale_factor"] == 0.5


def test_release_key_list_with_an_extra_or_missing_key_fails(data_dir):
    from e2diffsr_core.errors import E2DiffSRError

    second = json.loads((data_dir / "ldcsr_second_stage_keys.json").read_text())["keys"]
    sd = _fake_state(second)
    sd["cond_stage_model.something_new.weight"] = torch.zeros(3)
    with pytest.raises(E2DiffSRError, match="unexpected.*something_new"):
        convert_official_state(sd)
    sd = _fake_state(second)
    del sd["model_ema.diffusion_modelout2weight"]
    with pytest.raises(E2DiffSRError, match="EMA"):
        convert_official_state(sd)
    sd = _fake_state(second)
    del sd["first_stage_model.decoder.upsampler.fuse.8.bias"]
    with pytest.raises(E2DiffSRError, match="missing.*fuse.8.bias"):
        convert_official_state(sd)
