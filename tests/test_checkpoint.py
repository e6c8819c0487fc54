"""Model files: self-describing round trip, and clear refusals of everything that is not one."""

import os
import pickle

import pytest
import torch

from e2diffsr_core.__main__ import main
from e2diffsr_core.api import build_model, superresolve_tensor
from e2diffsr_core.checkpoint import load_model, save_model
from e2diffsr_core.errors import E2DiffSRError


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = build_model("tiny", seed=5)
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.cfg == model.cfg
    lr = torch.rand(1, 3, 16, 16)
    assert torch.equal(superresolve_tensor(model, lr, 2, seed=1), superresolve_tensor(again, lr, 2, seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_half_precision_file_loads_as_float32(tmp_path):
    save_model(build_model("tiny"), tmp_path / "h.pt", half=True)
    model = load_model(tmp_path / "h.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_missing_and_unexpected_keys(tmp_path):
    obj = torch.load(_saved(tmp_path), weights_only=True)
    del obj["state_dict"]["unet.out.2.bias"]
    obj["state_dict"]["unet.extra"] = torch.zeros(1)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(E2DiffSRError, match=r"1 missing \(e.g. unet.out.2.bias\); 1 unexpected \(e.g. unet.extra\)"):
        load_model(tmp_path / "bad.pt")


def test_corrupt_file(tmp_path):
    data = _saved(tmp_path).read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(E2DiffSRError, match="corrupt or not a PyTorch checkpoint"):
        load_model(tmp_path / "cut.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(E2DiffSRError, match="not a PyTorch checkpoint|corrupt"):
        load_model(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(E2DiffSRError, match="not an E2DiffSR model file"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(E2DiffSRError, match="not found"):
        load_model(tmp_path / "absent.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "e2diffsr-checkpoint", "x": evil}, f)
    with pytest.raises(E2DiffSRError, match="refusing to load|not a PyTorch checkpoint"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
    # the same payload inside torch's zip format
    torch.save({"format": "e2diffsr-checkpoint", "x": evil}, tmp_path / "evil2.pt")
    with pytest.raises(E2DiffSRError, match="refusing to load"):
        load_model(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_original_ldcsr_checkpoint_is_pointed_to_the_converter(tmp_path):
    torch.save({"state_dict": {"model_ema.decay": torch.tensor(0.9999)}}, tmp_path / "s2.ckpt")
    with pytest.raises(E2DiffSRError, match="convert-official"):
        load_model(tmp_path / "s2.ckpt")


def test_cli_info_reports_components_and_total(capsys):
    assert main(["info", "--config", "paper"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["parameters_inference_total_M"] == 31.253
    for part in ("DPEncoder", "DPDecoder_prior_branch", "SR_branch", "CSUM", "CondNet", "UNet"):
        assert report["parameters"][part] > 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["convert-official", "--second-stage", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "not found" in err
    assert not (tmp_path / "o.pt").exists()


def _saved(tmp_path):
    path = tmp_path / "good.pt"
    save_model(build_model("tiny"), path)
    return path
