"""`medattn models load-check FILE`: a SAM/MedSAM checkpoint checked key by key, exit 1 when it differs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

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
