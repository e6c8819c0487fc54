"""Warm start (--init MODEL): a new training run begins from a trained model's weights."""

from pathlib import Path

import pytest
import torch

from e2diffsr_core.checkpoint import save_model
from e2diffsr_core.model import E2DiffSR
from e2diffsr_core.train import load_config, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny.toml"
DATA = Path(__file__).parent / "data"
QUICK = ["--set", "data.scale_max=4", "--set", "run.val_every=0", "--set", "run.ckpt_every=0"]
FROZEN = ["--set", "stage1.base_lr=0", "--set", "stage2.base_lr=0", "--set", "stage1.disc_start=100"]


def train(*args):
    return main(["--config", str(TINY), "--data", str(DATA), *QUICK, *map(str, args)])


def weights(path: Path) -> dict:
    return {k: v.float() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    """A trained-looking model of the tiny configuration, exported in fp16 as the bundled model is."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("donor") / "donor.pt"
    save_model(E2DiffSR(load_config(str(TINY)).model), path, half=True)
    return path


def test_stage1_starts_from_the_init_model(tmp_path, donor):
    # a zero learning rate leaves the starting point in model.pt: it is the donor, not a random model
    assert train("--stage", 1, "--out", tmp_path / "warm", "--max-steps", 1, "--init", donor, *FROZEN) == 0
    assert train("--stage", 1, "--out", tmp_path / "cold", "--max-steps", 1, *FROZEN) == 0
    given, warm, cold = weights(donor), weights(tmp_path / "warm" / "model.pt"), weights(tmp_path / "cold" / "model.pt")
    assert warm.keys() == given.keys()
    assert all(torch.equal(warm[k], given[k]) for k in given)
    assert not all(torch.equal(cold[k], given[k]) for k in given)


def test_stage2_keeps_the_init_diffusion_and_the_stage1_first_stage(tmp_path, donor):
    s1 = tmp_path / "s1"
    assert train("--stage", 1, "--out", s1, "--max-steps", 1, *FROZEN) == 0
    out = tmp_path / "s2"
    assert train("--stage", 2, "--out", out, "--max-steps", 1, "--stage1", s1, "--init", donor, *FROZEN) == 0
    given, first, got = weights(donor), weights(s1 / "model.pt"), weights(out / "model.pt")
    for k in (k for k in got if k != "scale_factor"):   # stage 2 measures it on its own first stage
        expect = first[k] if k.startswith("first_stage_model.") else given[k]
        assert torch.equal(got[k], expect), k


def test_a_model_of_another_configuration_is_refused(tmp_path, capsys):
    other = load_config(str(TINY)).model.replace(csum_hidden=32)
    save_model(E2DiffSR(other), tmp_path / "other.pt")
    assert train("--stage", 1, "--out", tmp_path / "o", "--max-steps", 1, "--init", tmp_path / "other.pt") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --init other.pt has model.csum_hidden = 32 but this config says 64; "
                   "warm-start from a model of the same configuration")
    assert not (tmp_path / "o" / "model.pt").exists()


def test_init_and_resume_together_and_a_foreign_file(tmp_path, donor, capsys):
    assert train("--stage", 1, "--out", tmp_path / "o", "--init", donor, "--resume") == 2
    assert "give one of them" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    assert train("--stage", 1, "--out", tmp_path / "p", "--max-steps", 1, "--init", junk) == 2
    assert capsys.readouterr().err.strip() == (f"error: --init {junk} is not an E2DiffSR model file; "
                                               "give a model.pt or an exported model")
