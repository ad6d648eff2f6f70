"""PraNet: medattn's logit contract, deep-supervision order, ablation switches, training with its loss."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric

from medattn.errors import ConfigError
from medattn.losses import DeepSupervisionLoss, create_loss
from medattn.models import create, describe
from medattn.models.pranet_blocks import (
    ConcatDecoder,
    PartialDecoder,
    ReceptiveFieldBlock,
    ReverseAttention,
)

TINY = dict(describe("pranet").tiny)


def _pranet(out_channels: int = 2, **options) -> torch.nn.Module:
    return create("pranet", 2, 3, out_channels, **{**TINY, **options})


def _module_types(model: torch.nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def synthetic_polyps(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(RGB images (count, 3, size, size), labels (count, 1, size, size)): a darker red disk (the polyp) on
    pink mucosa, with pixel noise sd 0.1."""
    axes = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axes, axes, indexing="ij")
    images, labels = [], []
    for _ in range(count):
        cy, cx = (size * (0.3 + 0.4 * torch.rand(2, generator=generator))).tolist()
        radius = size * (0.12 + 0.12 * torch.rand(1, generator=generator).item())
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).float()
        mucosa = torch.tensor([0.85, 0.55, 0.5]).view(3, 1, 1)
        polyp = torch.tensor([0.65, 0.25, 0.25]).view(3, 1, 1)
        image = mucosa * (1 - disk) + polyp * disk + 0.1 * torch.randn(3, size, size, generator=generator)
        images.append(image)
        labels.append(disk.long())
    return torch.stack(images), torch.stack(labels).unsqueeze(1)


def test_two_channel_output_is_pranet_sigmoid_under_softmax():
    """out_channels=2 returns [0, f]: its softmax over channels is sigmoid(f) of the 1-channel model."""
    binary = _pranet(out_channels=1).eval()
    two = _pranet(out_channels=2).eval()
    two.load_state_dict(binary.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f, logits = binary(x), two(x)
    assert f.shape == (2, 1, 32, 32) and logits.shape == (2, 2, 32, 32)
    assert torch.equal(logits[:, :1], torch.zeros_like(f))
    torch.testing.assert_close(torch.softmax(logits, dim=1)[:, 1:], torch.sigmoid(f))


def test_deep_supervision_returns_four_full_size_maps_final_first():
    model = _pranet(deep_supervision=True).train()
    plain = _pranet(deep_supervision=False).train()
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    outputs = model(x)
    assert len(outputs) == 4 and all(o.shape == (2, 2, 64, 64) for o in outputs)
    torch.testing.assert_close(outputs[0], plain(x))  # the last stage's map is the prediction


def test_pranet_deep_supervision_sums_four_equal_structure_losses():
    """The code's training loss: loss2 + loss3 + loss4 + loss5, every map at full resolution."""
    model = _pranet().train()
    image, labels = synthetic_polyps(2, 64, torch.Generator().manual_seed(3))
    outputs = model(image)
    single = create_loss("structure", num_classes=2)
    total = DeepSupervisionLoss(single, weights=[1.0] * 4)(outputs, labels)
    torch.testing.assert_close(total, sum(single(o, labels) for o in outputs))
    total.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_reverse_attention_weights_are_one_minus_sigmoid_of_the_largest_foreground_map():
    model = _pranet(out_channels=3).eval()
    seen = {}
    model.stages[2].attention.register_forward_hook(lambda module, args, out: seen.update(maps=args[1]))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    maps = seen["maps"]
    assert maps.shape[1] == 2  # K - 1 foreground maps
    expected = 1 - torch.sigmoid(maps.amax(dim=1, keepdim=True))
    torch.testing.assert_close(model.stages[2].attention.last_attention_map, expected)
    assert set(model.attention_maps()) == {f"stages.{i}.attention" for i in range(3)}


@pytest.mark.parametrize(
    ("option", "removed", "added"),
    [
        ("reverse_attention", ReverseAttention, None),
        ("rfb", ReceptiveFieldBlock, None),
        ("partial_decoder", PartialDecoder, ConcatDecoder),
    ],
)
def test_switching_a_component_off_changes_the_network(option, removed, added):
    full, ablated = _pranet(), _pranet(**{option: False})
    assert removed in _module_types(full) and removed not in _module_types(ablated)
    if added is not None:
        assert added in _module_types(ablated)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = ablated.eval()(x)
    assert out.shape == (1, 2, 32, 32) and torch.isfinite(out).all()
    if option == "reverse_attention":
        # Same parameters, so the weighting alone is measured; no attention maps without it.
        assert ablated.parameter_count() == full.parameter_count()
        assert ablated.attention_maps() == {}


def test_resnet_backbone_and_bad_options():
    model = _pranet(backbone="resnet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ConfigError, match="backbone must be one of"):
        _pranet(backbone="vit")
    with pytest.raises(ConfigError, match="spatial_dims"):
        create("pranet", 3, 3, 2, **TINY)


def test_tiny_pranet_learns_synthetic_polyps():
    generator = torch.Generator().manual_seed(0)
    images, labels = synthetic_polyps(4, 64, generator)
    # Group norm: batch norm's running statistics need more steps than a fast test has to settle, and
    # the eval-mode prediction is what counts here.
    model = _pranet(norm="group")
    loss_function = DeepSupervisionLoss(create_loss("structure", num_classes=2), weights=[1.0] * 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(25):
        optimizer.zero_grad()
        loss_function(model(images), labels).backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        prediction = model(images).argmax(dim=1, keepdim=True)
    dice = DiceMetric(include_background=False)(prediction.float(), labels.float())
    assert dice.mean() > 0.9, f"Dice on the training polyps {dice.flatten().tolist()}"
