"""The SAM-family adapters share one input contract: any multiple of 16 pixels, 256 x 256 included."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import GeometryError
from medattn.models import create, describe

ADAPTERS = ("sam_adapter", "ccsam", "medsam_ca")
#: Sizes around the tiny variant's img_size of 64: smaller, equal, larger, non-square (W, H).
SIZES = [(32, 32), (64, 64), (96, 96), (48, 80)]


def _tiny(name: str, out_channels: int = 1):
    torch.manual_seed(0)
    model = create(name, 2, 3, out_channels, **describe(name).tiny)
    with torch.no_grad():  # random weights everywhere, so the zero-initialised adapters do something
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_adapter_takes_the_same_input_sizes(name, size):
    """Logits at the input size, and prompts that still steer the mask; a size off the 16-pixel grid is a
    GeometryError naming the fix."""
    model = _tiny(name).eval()
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    width, height = size
    boxes = torch.tensor([[2.0, 4.0, width / 2, height - 6.0], [width / 3, 2.0, width - 3.0, height / 2]])
    with torch.no_grad():
        logits = model(images, boxes=boxes)
        swapped = model(images, boxes=boxes.flip(0))
    assert logits.shape == (2, 1, *size) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, swapped, atol=1e-4)
    with pytest.raises(GeometryError, match="multiple of 16"):
        model(torch.zeros(1, 3, width + 8, height))


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_adapter_trains_at_a_smaller_size(name):
    """At a quarter of img_size's area a training step reaches the trainable parts through the resized
    position embedding."""
    model = _tiny(name, out_channels=2).train()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model(
        images, boxes=torch.tensor([[2.0, 2.0, 20.0, 28.0], [10.0, 4.0, 30.0, 16.0]])
    ).square().mean().backward()
    adapters = [p for n, p in model.named_parameters() if ".adapter." in n and p.requires_grad]
    assert adapters and all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapters)


@pytest.mark.parametrize("name", ADAPTERS)
def test_vit_b_takes_256_pixel_frames(name):
    """The real size: ViT-B's 64 x 64 position grid (1024 px) fitted to a 256 x 256 frame (16 x 16 tokens).
    Shapes only, on PyTorch's meta device, so the 90 M parameters are never allocated."""
    with torch.device("meta"):
        model = create(name, 2, 3, 1).eval()
        logits = model(torch.zeros(1, 3, 256, 256), boxes=torch.tensor([[30.0, 40.0, 200.0, 220.0]]))
    assert logits.shape == (1, 1, 256, 256)
    assert model.fixed_input_size is None


def test_plain_sam_keeps_its_fixed_size():
    model = create("sam", 2, 3, 1, variant="tiny").eval()
    assert model.fixed_input_size == (64, 64)
    with pytest.raises(GeometryError, match="exactly"):
        model(torch.zeros(1, 3, 32, 32))
