"""`sam_adapter`: starts as the pretrained SAM, takes other input sizes, trains only adapters and decoder."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import ConfigError, GeometryError
from medattn.models import create

IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
BOXES = torch.tensor([[8.0, 12.0, 40.0, 50.0], [3.0, 20.0, 60.0, 33.0]])


@pytest.fixture
def sam_file(tmp_path):
    """A random tiny SAM saved as a checkpoint file, as a pretrained SAM/MedSAM would be."""
    torch.manual_seed(0)
    model = create("sam", 2, 3, 1, variant="tiny")
    path = tmp_path / "sam_tiny.pth"
    torch.save({key: torch.randn_like(t) * 0.5 for key, t in model.state_dict().items()}, path)
    return str(path)


def test_a_sam_checkpoint_loads_and_the_untrained_adapters_change_nothing(sam_file):
    sam = create("sam", 2, 3, 1, variant="tiny", checkpoint=sam_file).eval()
    adapted = create("sam_adapter", 2, 3, 1, variant="tiny", checkpoint=sam_file).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(IMAGES, boxes=BOXES), sam(IMAGES, boxes=BOXES))
    # Only the adapters may be absent from a SAM file; anything else still fails loudly.
    state = torch.load(sam_file, weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, sam_file)
    with pytest.raises(ConfigError, match="1 missing key.*mask_decoder.iou_token.weight"):
        create("sam_adapter", 2, 3, 1, variant="tiny", checkpoint=sam_file)


@pytest.mark.parametrize("size", [32, 48, 80, 128])
def test_inputs_of_any_multiple_of_16_work(sam_file, size):
    """The position adapter resizes the 4x4 position grid (and SAM the relative tables) to the input."""
    model = create("sam_adapter", 2, 3, 1, variant="tiny", checkpoint=sam_file).eval()
    image = torch.nn.functional.interpolate(IMAGES, size=(size, size), mode="bilinear")
    box = BOXES * size / 64  # the same box in this input's pixels
    with torch.no_grad():
        logits = model(image, boxes=box)
        other = model(image, boxes=box.flip(0))
    assert logits.shape == (2, 1, size, size) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, other, atol=1e-3)
    with pytest.raises(GeometryError, match="multiple of 16"):
        model(torch.zeros(1, 3, size + 8, size))


def test_only_adapters_and_mask_decoder_train(sam_file):
    model = create("sam_adapter", 2, 3, 1, variant="tiny", checkpoint=sam_file)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    adapter_parts = (".adapter.", ".mlp_adapter.", "image_encoder.position_adapter.")
    adapters = {n for n in trainable if any(part in n for part in adapter_parts)}
    # The mask decoder trains, less the IoU head and the mask tokens the single output does not use.
    unused = (
        "mask_decoder.iou_prediction_head.",
        *(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3)),
    )
    decoder = {
        n for n, _ in model.named_parameters() if n.startswith("mask_decoder.") and not n.startswith(unused)
    }
    assert adapters and trainable - adapters == decoder
    adapter_count = sum(p.numel() for n, p in model.named_parameters() if n in adapters)
    decoder_count = sum(p.numel() for n, p in model.named_parameters() if n in trainable - adapters)
    assert model.parameter_count(trainable_only=True) == adapter_count + decoder_count

    # A training step leaves the ViT and the prompt encoder exactly as loaded.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    image = torch.nn.functional.interpolate(IMAGES, size=(32, 32), mode="bilinear")
    model(image, boxes=BOXES / 2).square().mean().backward()
    optimiser.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert not any(n.startswith(("prompt_encoder.", "image_encoder.blocks.0.attn.")) for n in changed)


def test_vit_b_trains_about_a_tenth_of_its_parameters():
    with torch.device("meta"):
        model = create("sam_adapter", 2, 3, 1, variant="vit_b")
    total, trainable = model.parameter_count(), model.parameter_count(trainable_only=True)
    # 12 blocks x 2 adapters of 2 x 768 x 192 weights (7.1 M), a depthwise position correction, the mask
    # decoder (~4 M): about 11 % of the 101 M.
    assert 10_000_000 < trainable < 0.12 * total
    with pytest.raises(ConfigError, match="adapter_ratio"):
        create("sam_adapter", 2, 3, 1, variant="tiny", adapter_ratio=0)


def test_blocks_carry_medical_sam_adapters_space_and_mlp_adapters():
    """Their defaults: hidden width 0.25 x D in both adapters, the MLP adapter without residual at 0.5."""
    with torch.device("meta"):
        model = create("sam_adapter", 2, 3, 1, variant="vit_b")
    for block in model.image_encoder.blocks:
        assert (block.adapter.down.out_features, block.adapter.residual) == (192, True)
        assert (block.mlp_adapter.down.out_features, block.mlp_adapter.residual) == (192, False)
        assert block.mlp_adapter_scale == 0.5
    plain = create("sam_adapter", 2, 3, 1, variant="tiny", mlp_adapter=False)
    assert all(block.mlp_adapter is None for block in plain.image_encoder.blocks)


def test_the_mlp_adapter_runs_beside_the_mlp_on_the_same_normalised_tokens():
    """x' = x + adapter(attn(norm1(x))); out = x' + mlp(norm2(x')) + 0.5 * up(GELU(down(norm2(x')))),
    computed here from the block's parts, with every adapter weight random (not the identity start)."""
    torch.manual_seed(3)
    model = create("sam_adapter", 2, 3, 1, variant="tiny")
    block = model.image_encoder.blocks[1]  # the global-attention block
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(0.2 * torch.randn_like(parameter))
    tokens = torch.randn(2, 4, 4, 32)
    with torch.no_grad():
        space = block.adapter
        attended = block.attn(block.norm1(tokens))
        x = tokens + attended + space.up(torch.nn.functional.gelu(space.down(attended)))
        normed = torch.nn.functional.layer_norm(x, (32,), block.norm2.weight, block.norm2.bias, eps=1e-6)
        side = block.mlp_adapter
        expected = x + block.mlp(normed) + 0.5 * side.up(torch.nn.functional.gelu(side.down(normed)))
        torch.testing.assert_close(block(tokens), expected)
