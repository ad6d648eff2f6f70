"""`medattn models load-check FILE --model NAME`: a weights file checked key by key, exit 1 if it differs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from official_layouts import BasicBlock, OfficialPraNet, TorchvisionResNet

from medattn.cli.main import main
from medattn.models import create


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    """A multi-GPU MedSAM-style ViT-B file made of meta tensors: the real key set and shapes in a few kB."""
    with torch.device("meta"):
        state = create("sam", 2, 3, 1, variant="vit_b").state_dict()
    path = tmp_path_factory.mktemp("checkpoints") / "medsam_vit_b.pth"
    torch.save({"model": {f"module.{key}": value for key, value in state.items()}}, path)
    return path


def test_a_matching_file_passes(vit_b_file, capsys):
    assert main(["models", "load-check", str(vit_b_file)]) == 0
    out = capsys.readouterr().out
    assert "'module.' prefix removed" in out
    assert "314 tensor(s) match" in out and "OK" in out


def test_another_variant_lists_the_differences_and_fails(vit_b_file, capsys):
    assert main(["models", "load-check", str(vit_b_file), "--variant", "vit_l", "--limit", "2"]) == 1
    out = capsys.readouterr().out
    assert "168 missing (in the model, not in the file):" in out
    assert "image_encoder.patch_embed.proj.weight: (768, 3, 16, 16) vs (1024, 3, 16, 16)" in out
    assert "... and 166 more" in out
    assert "looks like vit_b (--variant vit_b)" in out


def test_a_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["models", "load-check", str(tmp_path / "absent.pth")]) == 1
    assert "absent.pth: checkpoint file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:300]),
        lambda path: torch.save(torch.nn.Linear(2, 2), path),
    ],
    ids=["cut short", "a pickled module"],
)
def test_a_damaged_or_foreign_file_is_one_error_line(vit_b_file, tmp_path, capsys, damage):
    path = tmp_path / "damaged.pth"
    path.write_bytes(vit_b_file.read_bytes())
    damage(path)
    assert main(["models", "load-check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: " in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_cli_imports_torch_only_when_a_command_runs():
    code = "import sys, medattn.cli.main; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_official_pranet_checkpoint_fits_the_default_pranet(tmp_path, capsys):
    """PraNet-19.pth's full key set and shapes (made of meta tensors, a few kB) map onto medattn's pranet."""
    with torch.device("meta"):
        state = OfficialPraNet(width=64, blocks=(3, 4, 6, 3), channel=32).state_dict()
    path = tmp_path / "PraNet-19.pth"
    torch.save(state, path)
    assert main(["models", "load-check", str(path), "--model", "pranet"]) == 0
    out = capsys.readouterr().out
    assert "as: PraNet (official checkpoint" in out
    assert f"{len(state) - 2} tensor(s) match" in out and "2 unused" in out and "resnet.fc.weight" in out


def test_a_backbone_file_is_checked_with_the_models_options(tmp_path, capsys):
    path = tmp_path / "resnet.pth"
    torch.save(TorchvisionResNet(BasicBlock, (4, 8, 8, 16), (1, 1, 1, 1)).state_dict(), path)
    options = '{"features": 8, "backbone_channels": [4, 8, 8, 16], "backbone_blocks": [1, 1, 1, 1]}'
    command = ["models", "load-check", str(path), "--model", "msga", "--model-kwargs", options]
    assert main([*command, "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    assert "as: torchvision ResNet" in out and "summed into 1" in out and "OK" in out
    assert main(["models", "load-check", str(path), "--model", "msga"]) == 1  # default widths differ
    out = capsys.readouterr().out
    assert "shape mismatches (file vs model)" in out and "backbone.stem.0.weight: (4, 3, 7, 7)" in out


def test_bad_options_are_one_error_line(tmp_path, capsys):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    assert main(["models", "load-check", str(path), "--model", "pranett"]) == 1
    assert "unknown model 'pranett'. Did you mean pranet" in capsys.readouterr().err
    assert main(["models", "load-check", str(path), "--model", "msga", "--model-kwargs", "{width"]) == 2
    assert "is not JSON" in capsys.readouterr().err
