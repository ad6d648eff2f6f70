"""medsam_ca: frozen SAM beside a trained CBR-Net, SAM-biased encoder fusion, Atte-FFB gates, SAM loading."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from medattn.errors import ConfigError
from medattn.models import create
from medattn.models.sam.model import Prompts
from medattn.models.sam_fusion import (
    BiasedEncoderFusion,
    CBRNet,
    MultiHeadGateFusion,
    hypernetwork_masks,
    two_way_decode,
)

TINY = {"variant": "tiny", "cnn_channels": (8, 16, 32, 64)}
SIZE = 64  # the tiny SAM's img_size


def disk_example(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1, 3, size, size), label (1, 1, size, size), box (1, 4)): a noisy bright disk and its box."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre, radius = (0.45 * size, 0.55 * size), 0.2 * size
    label = (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2).float()[None, None]
    image = label + 0.3 * torch.randn(1, 3, size, size, generator=generator)
    box = torch.tensor(
        [[centre[1] - radius - 3, centre[0] - radius - 3, centre[1] + radius + 3, centre[0] + radius + 3]]
    )
    return image, label, box


def test_cbr_net_has_the_papers_widths_and_strides():
    features = CBRNet(3)(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


def test_only_the_branches_adapters_and_decoder_learn():
    model = create("medsam_ca", 2, 3, 1, **TINY)
    model.train()
    image, _, box = disk_example()
    model(image, boxes=box).square().mean().backward()
    for name, parameter in model.named_parameters():
        adapter = ".adapter." in name
        if (
            name.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.output_upscaling."))
            and not adapter
        ):
            assert not parameter.requires_grad and parameter.grad is None, name
        if name.startswith(("cnn.", "encoder_fusion.", "decoder_fusion.", "upscaling.")) or adapter:
            assert parameter.requires_grad and parameter.grad is not None, name
    trainable = model.parameter_count(trainable_only=True)
    assert 0 < trainable < model.parameter_count()


def test_at_vit_b_the_whole_sam_encoder_is_frozen():
    with torch.device("meta"):
        model = create("medsam_ca", 2, 3, 1)
    encoder = sum(p.numel() for n, p in model.image_encoder.named_parameters() if ".adapter." not in n)
    frozen = model.parameter_count() - model.parameter_count(trainable_only=True)
    assert frozen >= encoder > 85e6


def test_encoder_fusion_starts_sam_biased_and_stays_in_b_to_1():
    fusion = BiasedEncoderFusion(channels=8, cnn_channels=8)
    assert fusion.bias_factor.item() == pytest.approx(0.8)
    sam, cnn = 10 * torch.randn(2, 8, 5, 5), 10 * torch.randn(2, 8, 5, 5)
    weights = fusion.weights(sam, cnn)
    assert weights.min() >= 0.8 and weights.max() <= 1.0
    assert weights.min() < 0.81 and weights.max() > 0.99  # large inputs saturate the gate both ways
    torch.testing.assert_close(fusion(sam, cnn), weights * sam + (1 - weights) * cnn)
    with torch.no_grad():
        fusion.bias_factor.fill_(1.7)  # a learnt b that left [0, 1] is clamped: w' stays a convex weight
    assert fusion.weights(sam, cnn).max() <= 1.0


def test_atte_ffb_equals_four_separate_sigmoid_heads():
    """Their MultiHeadAttentionFusion: a 1x1 conv per head on [cnn, decoder], sigmoids averaged."""
    fusion = MultiHeadGateFusion(cnn_channels=6, decoder_channels=4, heads=4)
    decoder, cnn = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    projected = fusion.project(torch.nn.functional.interpolate(cnn, size=(8, 8), mode="bilinear"))
    combined = torch.cat([projected, decoder], dim=1)
    heads = [
        torch.sigmoid(
            torch.nn.functional.conv2d(combined, fusion.heads.weight[i : i + 1], fusion.heads.bias[i : i + 1])
        )
        for i in range(4)
    ]
    weights = torch.stack(heads).mean(dim=0)
    torch.testing.assert_close(fusion(decoder, cnn), weights * decoder + (1 - weights) * projected)


def test_split_decoding_equals_sams_decoder():
    """SAM.encode_prompts + two_way_decode + hypernetwork_masks with SAM's own upscaler give `SAM.decode`."""
    sam = create("sam", 2, 3, 3, variant="tiny").eval()
    embedding = torch.randn(2, 32, 4, 4)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [10.0, 10.0, 30.0, 60.0]])
    points = (torch.tensor([[[20.0, 30.0]], [[15.0, 40.0]]]), torch.tensor([[1], [0]]))
    prompts = Prompts(boxes=boxes, points=points)
    with torch.no_grad():
        expected = sam.decode(embedding, (SIZE, SIZE), prompts)
        sparse, dense = sam.encode_prompts(prompts, (SIZE, SIZE), (4, 4), batch=2)
        tokens, image = two_way_decode(
            sam.mask_decoder, embedding, sam.prompt_encoder.get_dense_pe((4, 4)), sparse, dense
        )
        masks = hypernetwork_masks(sam.mask_decoder, tokens, sam.mask_decoder.output_upscaling(image), 2)
    torch.testing.assert_close(masks, expected)


def test_fusion_maps_are_weights_on_the_input_grid():
    model = create("medsam_ca", 2, 3, 2, **TINY).eval()
    image, _, box = disk_example()
    with torch.no_grad():
        out = model(image, boxes=box)
    assert out.shape == (1, 2, SIZE, SIZE)
    maps = model.attention_maps()
    assert sorted(maps) == [
        "decoder_fusion.0",
        "decoder_fusion.1",
        "decoder_fusion.2",
        "decoder_fusion.3",
        "encoder_fusion",
    ]
    for name, weights in maps.items():
        assert weights.shape == (1, 1, SIZE, SIZE) and weights.min() >= 0 and weights.max() <= 1, name
    assert maps["encoder_fusion"].min() >= 0.8


@pytest.mark.parametrize(
    ("switches", "maps"),
    [
        ({"encoder_fusion": False}, 4),
        ({"decoder_fusion": False}, 1),
        ({"encoder_fusion": False, "decoder_fusion": False, "encoder_adapters": False}, 0),
    ],
)
def test_components_switch_off_cleanly(switches, maps):
    model = create("medsam_ca", 2, 3, 1, **TINY, **switches)
    image, _, box = disk_example()
    model(image, boxes=box).mean().backward()
    assert len(model.attention_maps()) == maps
    assert (model.cnn is None) == (maps == 0)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_sam_state_dict_loads_strictly_into_the_sam_part(tmp_path):
    sam = create("sam", 2, 3, 1, variant="tiny")
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.normal_()
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    model = create("medsam_ca", 2, 3, 1, checkpoint=str(path), **TINY)
    ours = model.state_dict()
    for key, value in sam.state_dict().items():
        assert torch.equal(ours[key], value), key
    # Only medsam_ca's own parts are absent from a SAM file; anything else the file lacks is an error.
    damaged = {k: v for k, v in sam.state_dict().items() if k != "mask_decoder.iou_token.weight"}
    torch.save(damaged, path)
    with pytest.raises(ConfigError, match="iou_token"):
        create("medsam_ca", 2, 3, 1, checkpoint=str(path), **TINY)


def test_tiny_medsam_ca_overfits_one_image():
    model = create("medsam_ca", 2, 3, 1, **TINY, layout="hw")  # disk_example is in SAM's (H, W) layout
    image, label, box = disk_example()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    loss_function = DiceCELoss(sigmoid=True)
    model.train()
    for _ in range(25):  # batch-norm running statistics settle by then
        optimizer.zero_grad()
        loss_function(model(image, boxes=box), label).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = (model(image, boxes=box) > 0).float()
    dice = 2 * (prediction * label).sum() / (prediction.sum() + label.sum())
    assert dice > 0.9
