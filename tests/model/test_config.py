"""The presets (model/config.py): the paper's parameter count and the lite preset's cost."""

import pytest

from e2diffsr_core.model import E2DiffSR, preset
from e2diffsr_core.tools.inspect_model import flops_per_output_pixel, parameter_counts


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
