"""Per-component shapes and sizes, presets, determinism, and tiny inputs the authors' code cannot run."""

import pytest
import torch

from e2diffsr_core.api import build_model, super_resolve
from e2diffsr_core.errors import E2DiffSRError
from e2diffsr_core.inspect_model import flops_per_output_pixel, parameter_counts
from e2diffsr_core.model import E2DiffSR, Geometry, preset
from e2diffsr_core.model.csum import CSUM
from e2diffsr_core.model.dpencoder import DPEncoder
from e2diffsr_core.model.sr_branch import FRU, IMDB


def test_paper_preset_has_the_papers_31_25M_inference_parameters():
    counts = parameter_counts(E2DiffSR(preset("paper")))
    assert counts["inference_total"] == 31_252_708  # 31.253 M, paper Table: 31.25 M
    assert counts["UNet"] == 18_373_124
    assert counts["CondNet"] == 6_071_620


def test_lite_costs_at_most_an_eighth_of_paper_per_output_pixel():
    paper = flops_per_output_pixel(E2DiffSR(preset("paper")), lr_side=16)
    lite = flops_per_output_pixel(E2DiffSR(preset("lite")), lr_side=16)
    assert paper["total"] == pytest.approx(2.61e6, rel=0.02)  # ~2.6 TFLOP per output megapixel
    assert lite["total"] <= paper["total"] / 8


def test_component_shapes():
    enc = DPEncoder(32, (1, 1, 1, 1), 1)
    assert enc(torch.zeros(1, 6, 82, 70)).shape == (1, 8, 10, 8)  # floor-halved three times
    assert IMDB(64)(torch.zeros(2, 64, 9, 7)).shape == (2, 64, 9, 7)
    fru = FRU(64, 12)
    assert sum(p.numel() for p in fru.parameters()) == 12 * sum(p.numel() for p in IMDB(64).parameters()) + (
        768 * 64 + 64) + (64 * 64 * 9 + 64)
    csum = CSUM(64)
    out = csum(torch.zeros(1, 64, 10, 12), Geometry.whole((10, 12), (34, 40)))
    assert out.shape == (1, 3, 34, 40)


@pytest.mark.parametrize("lr_hw,scale,out_hw", [((24, 20), 3.4, (81, 68)), ((16, 16), 2.0, (32, 32)),
                                                 ((4, 5), 2.0, (8, 10)), ((30, 17), 1.5, (45, 25))])
def test_output_size_and_range(lr_hw, scale, out_hw):
    model = build_model("tiny")
    out = super_resolve(model, torch.rand(2, 3, *lr_hw), scale, seed=1)
    assert out.shape == (2, 3, *out_hw)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


def test_same_seed_same_result_other_seed_other_result():
    model = build_model("tiny")
    lr = torch.rand(1, 3, 20, 24)
    a = super_resolve(model, lr, 2.5, seed=7)
    b = super_resolve(model, lr, 2.5, seed=7)
    c = super_resolve(model, lr, 2.5, seed=8)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_explicit_noises_replace_the_seed():
    model = build_model("tiny")
    lr = torch.rand(1, 3, 20, 24)
    gen = torch.Generator().manual_seed(3)
    noises = [torch.randn(1, 4, 6, 7, generator=gen) for _ in range(4)]
    a = super_resolve(model, lr, 2.5, noises=noises)
    b = super_resolve(model, lr, 2.5, seed=3)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("bad", [1.0, 0.5, -2, float("nan"), float("inf"), 17.0, "x"])
def test_bad_scales_are_refused(bad):
    with pytest.raises(E2DiffSRError, match="scale"):
        super_resolve(build_model("tiny"), torch.rand(1, 3, 16, 16), bad)


def test_scale_beyond_trained_range_warns():
    with pytest.warns(UserWarning, match="beyond the trained range"):
        out = super_resolve(build_model("tiny"), torch.rand(1, 3, 8, 8), 10.0)
    assert out.shape == (1, 3, 80, 80)


def test_ablation_variants_build_and_run():
    for kw in [dict(modulation="concat"), dict(prior_branch=False), dict(sr_branch=False),
               dict(variance="beta"), dict(unet_scale_input="float")]:
        model = E2DiffSR(preset("tiny").replace(**kw)).eval()
        with torch.no_grad():
            out = super_resolve(model, torch.rand(1, 3, 16, 16), 3.0)
        assert out.shape == (1, 3, 48, 48)
