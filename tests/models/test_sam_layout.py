"""SAM wrappers take medattn's (B, C, W, H) layout: the transpose of SAM's own, with boxes and points in
(x, y) pixels of the input image either way; MedSAM's jittered training boxes from label patches."""

from __future__ import annotations

import copy

import pytest
import torch

from medattn.errors import ConfigError
from medattn.models import create, describe
from medattn.models.sam.prompts import component_boxes, expand_box, jittered_boxes, mask_box

WIDTH, HEIGHT = 48, 64  # non-square, so a missed transpose cannot pass unnoticed


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Random values everywhere (SAM zero-initialises position tables and adapters), so every part counts."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.5)
    return model.eval()


IMAGES = torch.rand(2, 3, WIDTH, HEIGHT, generator=torch.Generator().manual_seed(1))  # medattn: (B, C, W, H)
BOXES = torch.tensor([[4.0, 10.0, 30.0, 50.0], [20.0, 2.0, 44.0, 20.0]])  # (x0, y0, x1, y1)
POINTS = (
    torch.tensor([[[10.0, 40.0], [40.0, 8.0]], [[30.0, 12.0], [5.0, 60.0]]]),
    torch.tensor([[1, 0], [1, 1]]),
)


@pytest.mark.parametrize(
    "prompts",
    [{"boxes": BOXES}, {"points": POINTS}, {"boxes": BOXES, "mask_inputs": "prior"}, {}],
    ids=["box", "points", "box+mask", "none"],
)
def test_xy_layout_is_the_transpose_of_sams_layout(prompts):
    xy = _randomised(create("sam_adapter", 2, 3, 2, variant="tiny"))
    hw = create("sam_adapter", 2, 3, 2, variant="tiny", layout="hw").eval()
    hw.load_state_dict(xy.state_dict())
    prior = torch.randn(2, 1, WIDTH // 4, HEIGHT // 4, generator=torch.Generator().manual_seed(2))
    ours = {k: prior if v == "prior" else v for k, v in prompts.items()}
    theirs = {k: prior.transpose(-1, -2) if v == "prior" else v for k, v in prompts.items()}
    with torch.no_grad():
        got = xy(IMAGES, **ours)
        expected = hw(IMAGES.transpose(-1, -2), **theirs)
    assert got.shape == (2, 2, WIDTH, HEIGHT) and expected.shape == (2, 2, HEIGHT, WIDTH)
    torch.testing.assert_close(got, expected.transpose(-1, -2), rtol=0, atol=1e-5)
    if prompts:  # the prompts matter, so the comparison says something about where they land
        with torch.no_grad():
            assert not torch.allclose(got, xy(IMAGES), atol=1e-3)


def test_sam_defaults_to_xy_and_rejects_unknown_layouts():
    sam = _randomised(create("sam", 2, 3, 1, variant="tiny"))
    hw = copy.deepcopy(sam)
    hw.layout = "hw"
    square = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    box = torch.tensor([[5.0, 30.0, 25.0, 60.0]])
    with torch.no_grad():
        torch.testing.assert_close(sam(square, boxes=box), hw(square.transpose(-1, -2), boxes=box).mT)
    with pytest.raises(ConfigError, match="layout must be one of xy, hw"):
        create("sam", 2, 3, 1, variant="tiny", layout="yx")


@pytest.mark.parametrize("name", ["ccsam", "medsam_ca"])
def test_hybrids_inherit_the_layout_for_logits_and_attention_maps(name):
    """ccsam and medsam_ca subclass `sam`, so they take medattn's layout too (maps included)."""
    xy = _randomised(create(name, 2, 3, 2, **describe(name).tiny))
    assert xy.layout == "xy"
    hw = copy.deepcopy(xy)
    hw.layout = "hw"
    size = (WIDTH, HEIGHT)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = xy(images, boxes=BOXES)
        maps = xy.attention_maps()
        expected = hw(images.transpose(-1, -2), boxes=BOXES)
        expected_maps = hw.attention_maps()
    torch.testing.assert_close(got, expected.transpose(-1, -2), rtol=0, atol=1e-5)
    assert maps and sorted(maps) == sorted(expected_maps)
    for key, value in maps.items():
        assert value.shape == (2, 1, *size)
        torch.testing.assert_close(value, expected_maps[key].transpose(-1, -2), rtol=0, atol=1e-5)


def test_boxes_of_masks_and_components_in_x_y_order():
    mask = torch.zeros(WIDTH, HEIGHT, dtype=torch.uint8)  # (W, H): x first
    mask[5:11, 20:31] = 1
    mask[30:33, 2:4] = 2
    mask[40:42, 50:60] = 1
    assert mask_box(mask) == (5.0, 2.0, 41.0, 59.0)
    assert mask_box(torch.zeros(4, 4)) is None
    assert sorted(component_boxes(mask)) == [
        (5.0, 20.0, 10.0, 30.0),
        (30.0, 2.0, 32.0, 3.0),
        (40.0, 50.0, 41.0, 59.0),
    ]
    assert component_boxes(mask, min_pixels=7) == [(5.0, 20.0, 10.0, 30.0), (40.0, 50.0, 41.0, 59.0)]
    assert expand_box((2.0, 3.0, 45.0, 60.0), 5, (WIDTH, HEIGHT)) == (0.0, 0.0, 47.0, 63.0)


def test_training_boxes_are_medsams_jittered_ground_truth_boxes():
    """MedSAM (train_one_gpu.py): each side of the mask's box moves out by 0..bbox_shift px, clipped."""
    labels = torch.zeros(64, 1, WIDTH, HEIGHT)
    labels[:, 0, 10:21, 30:41] = 1  # x 10-20, y 30-40
    labels[-1] = 0  # no foreground: a random box
    model = create("sam_adapter", 2, 3, 2, variant="tiny")
    boxes = model.training_prompts(labels)["boxes"]
    shift_x, shift_y = 20 * WIDTH / 64, 20 * HEIGHT / 64  # 20 px of the 64 px frame, in input pixels
    assert boxes.shape == (64, 4)
    low = torch.tensor([10 - shift_x, 30 - shift_y, 20.0, 40.0])
    high = torch.tensor([10.0, 30.0, 20 + shift_x, 40 + shift_y])
    inner = boxes[:-1]
    assert (inner >= low - 1e-6).all() and (inner <= high + 1e-6).all()
    assert inner.std(dim=0).min() > 1.0  # every side really jitters
    x0, y0, x1, y1 = boxes[-1].tolist()
    assert 0 <= x0 <= x1 <= WIDTH - 1 and 0 <= y0 <= y1 <= HEIGHT - 1
    # SAM's own layout reads x from the last axis: the same boxes for the transposed labels.
    generator = torch.Generator().manual_seed(4)
    xy = jittered_boxes(labels[:4], 0.0, "xy", generator)
    hw = jittered_boxes(labels[:4].transpose(-1, -2), 0.0, "hw", generator)
    assert torch.equal(xy[:3], hw[:3]) and xy[0].tolist() == [10.0, 30.0, 20.0, 40.0]
