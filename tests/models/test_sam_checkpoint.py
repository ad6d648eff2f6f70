"""SAM/MedSAM checkpoint files: strict loading, MedSAM's wrappers and `module.` prefix, clear errors."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import InputNotFoundError, PackageError
from medattn.models import create
from medattn.models.backbones import check_file
from medattn.models.sam.variants import guess_variant
from medattn.weights import read_state_dict


def _random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create("sam", 2, 3, 1, variant="tiny")
    return {key: torch.randn_like(t) for key, t in model.state_dict().items()}


def test_a_multi_gpu_medsam_checkpoint_loads_strictly(tmp_path):
    """MedSAM's training script saves {"model": state_dict, "epoch": ...}; multi-GPU runs add `module.`."""
    state = _random_state()
    path = tmp_path / "medsam_tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, path)
    model = create("sam", 2, 3, 1, variant="tiny", checkpoint=str(path))
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    assert read_state_dict(path)[1] is True  # the prefix was found and removed


def test_missing_unexpected_and_mis_shaped_keys_are_all_named(tmp_path):
    state = _random_state()
    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.blocks.9.attn.qkv.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(PackageError) as caught:
        create("sam", 2, 1, 1, variant="tiny", checkpoint=str(path))
    message = str(caught.value)
    assert str(path) in message
    assert "1 missing key(s): mask_decoder.iou_token.weight" in message
    assert "1 unexpected key(s): image_encoder.blocks.9.attn.qkv.weight" in message
    # The model was built for 1 input channel; the file has SAM's 3.
    assert "image_encoder.patch_embed.proj.weight (file (32, 3, 16, 16), model (32, 1, 16, 16))" in message


def test_unreadable_and_absent_files(tmp_path):
    with pytest.raises(InputNotFoundError, match="not found"):
        create("sam", 2, 3, 1, variant="tiny", checkpoint=str(tmp_path / "absent.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PackageError, match="garbage.pth: not a PyTorch weights file"):
        read_state_dict(garbage)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([torch.zeros(1)], "holds a list, not a state dict"),
        (torch.zeros(3), "holds a Tensor, not a state dict"),
        ({"model": {"a": 1}}, "holds a mapping whose values include int, not a state dict"),
        (torch.nn.Linear(2, 2), "holds pickled Python objects, not only tensors"),
    ],
    ids=["list", "tensor", "numbers", "module"],
)
def test_a_checkpoint_that_is_not_a_state_dict_is_refused_without_unpickling_it(tmp_path, content, message):
    """A module would only load with weights_only=False (running pickled code); it is refused, not loaded."""
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(PackageError, match=f"odd.pth: {message}"):
        read_state_dict(path)


def test_a_cut_short_checkpoint_says_so(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"a": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PackageError, match="cut.pth: the file is cut short"):
        read_state_dict(path)


def test_check_names_the_variant_a_file_has_without_loading_it(tmp_path):
    """A ViT-B-shaped file made of meta tensors (no data, a few kB) checked against ViT-B and ViT-L."""
    with torch.device("meta"):
        vit_b = create("sam", 2, 3, 1, variant="vit_b").state_dict()
    path = tmp_path / "vit_b_shapes.pth"
    torch.save(vit_b, path)
    assert guess_variant(vit_b) == "vit_b"
    report = check_file(path, "sam", variant="vit_b").report
    assert report.ok and report.matched == len(vit_b) and report.looks_like == "vit_b"
    wrong = check_file(path, "sam", variant="vit_l").report
    assert not wrong.ok and wrong.looks_like == "vit_b"
    assert "image_encoder.blocks.23.mlp.lin2.weight" in wrong.missing  # ViT-L has 24 blocks, ViT-B 12
    assert ("image_encoder.pos_embed", (1, 64, 64, 768), (1, 64, 64, 1024)) in wrong.mismatched
