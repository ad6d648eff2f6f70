"""`sam`: prompts, the output-channel conventions, input checks and what fine-tuning freezes."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import ConfigError, GeometryError
from medattn.models import create

SIZE = 64  # the tiny variant's img_size


def _tiny(out_channels: int = 1, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create("sam", 2, 3, out_channels, variant="tiny", **kwargs)
    # Random values everywhere (SAM zero-initialises its position tables), so every part matters.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    return model.eval()


IMAGES = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
BOXES = torch.tensor([[8.0, 12.0, 40.0, 50.0], [3.0, 20.0, 60.0, 33.0]])


def test_output_channel_conventions_share_one_mask_logit():
    """1 channel: SAM's logit; 2: softmax foreground == sigmoid(logit); 3: background 0, two mask tokens."""
    one, two, three = _tiny(1), _tiny(2), _tiny(3)
    two.load_state_dict(one.state_dict())
    three.load_state_dict(one.state_dict())
    with torch.no_grad():
        logit = one(IMAGES, boxes=BOXES)
        pair = two(IMAGES, boxes=BOXES)
        triple = three(IMAGES, boxes=BOXES)
    assert logit.shape == (2, 1, SIZE, SIZE) and pair.shape == (2, 2, SIZE, SIZE)
    torch.testing.assert_close(pair.softmax(1)[:, 1:], logit.sigmoid())
    assert torch.equal(triple[:, :1], torch.zeros_like(logit))
    torch.testing.assert_close(triple[:, 1:2], logit)  # mask token 0 is SAM's single-mask output
    assert not torch.allclose(triple[:, 2:], logit, atol=1e-3)
    with pytest.raises(ConfigError, match="at most 5"):
        create("sam", 2, 3, 6, variant="tiny")


def test_prompts_steer_the_mask_and_default_to_the_no_prompt_embedding():
    model = _tiny()
    with torch.no_grad():
        boxed = model(IMAGES, boxes=BOXES)
        moved = model(IMAGES, boxes=BOXES + 10)
        plain = model(IMAGES)
        by_points = model(IMAGES, points=BOXES.view(2, 2, 2))
        labelled = model(IMAGES, points=(BOXES.view(2, 2, 2), torch.ones(2, 2, dtype=torch.long)))
        prior = model(IMAGES, mask_inputs=torch.randn(2, 1, 40, 40))
    assert not torch.allclose(boxed, moved, atol=1e-3) and not torch.allclose(boxed, plain, atol=1e-3)
    assert torch.equal(by_points, labelled)  # bare coordinates are foreground points
    assert not torch.allclose(prior, plain, atol=1e-3)


def test_bad_prompts_and_inputs_raise_clear_errors():
    model = _tiny()
    with pytest.raises(GeometryError, match=r"boxes must have shape \(2, 4\)"):
        model(IMAGES, boxes=BOXES[:1])
    with pytest.raises(GeometryError, match="point coordinates must have shape"):
        model(IMAGES, points=torch.zeros(2, 3))
    with pytest.raises(GeometryError, match="3 point coordinates but 2 labels"):
        model(IMAGES, points=(torch.zeros(2, 3, 2), torch.ones(2, 2)))
    with pytest.raises(GeometryError, match=r"mask_inputs must be \(2, 1, h, w\)"):
        model(IMAGES, mask_inputs=torch.zeros(2, 16, 16))
    with pytest.raises(GeometryError, match=r"exactly \(64, 64\)"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="2D model"):
        type(model)(3, 3, 1, variant="tiny")
    with pytest.raises(ConfigError, match="unknown SAM variant 'vit_x'.*vit_b"):
        create("sam", 2, 3, 1, variant="vit_x")


def test_fine_tuning_freezes_the_prompt_encoder_and_the_parts_no_loss_reaches():
    model = _tiny(out_channels=3)  # uses mask tokens 0 and 1
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith("prompt_encoder.") for name in trainable)
    assert not any(name.startswith("mask_decoder.iou_prediction_head.") for name in trainable)
    hypernetworks = {name.split(".")[2] for name in trainable if ".output_hypernetworks_mlps." in name}
    assert hypernetworks == {"0", "1"}
    assert any(name.startswith("image_encoder.") for name in trainable)

    # One optimiser step on a box-prompted loss moves what trains and nothing frozen.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(IMAGES, boxes=BOXES).square().mean().backward()
    optimiser.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable

    unfrozen = create("sam", 2, 3, 1, variant="tiny", freeze_prompt_encoder=False)
    assert all(p.requires_grad for p in unfrozen.prompt_encoder.parameters())
    assert unfrozen.freeze_encoder() == len(list(unfrozen.image_encoder.parameters()))
