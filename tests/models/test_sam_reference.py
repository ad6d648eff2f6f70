"""medattn's SAM against Meta's segment-anything code (vendored in tests/reference): same keys, same masks."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from reference.segment_anything.build_sam import sam_model_registry
from reference.segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from reference.segment_anything.modeling.image_encoder import Block as ReferenceBlock

from medattn.models import create
from medattn.models.sam.image_encoder import Block
from medattn.models.sam.variants import VARIANTS, SamVariant

# The tiny variant takes every path: 4x4 tokens in 3x3 windows (so windows are padded), one global block,
# two heads in the encoder and the decoder.
TINY = VARIANTS["tiny"]


def reference_sam(v: SamVariant) -> Sam:
    """segment-anything's Sam built with build_sam's arguments, at the sizes of `v`, without pixel scaling."""
    grid = v.img_size // v.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=v.depth,
            embed_dim=v.embed_dim,
            img_size=v.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=v.num_heads,
            patch_size=v.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=v.global_attn_indexes,
            window_size=v.window_size,
            out_chans=v.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=v.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(v.img_size, v.img_size),
            mask_in_chans=v.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=v.decoder_depth,
                embedding_dim=v.prompt_embed_dim,
                mlp_dim=v.decoder_mlp_dim,
                num_heads=v.decoder_heads,
            ),
            transformer_dim=v.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=v.iou_head_hidden_dim,
        ),
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    ).eval()


def reference_logits(ref: Sam, images: torch.Tensor, prompts: list[dict]) -> torch.Tensor:
    """Mask logits at the input size, the way Sam.forward predicts them (one image and prompt at a time)."""
    size = tuple(images.shape[2:])
    records = [{"image": image, "original_size": size, **p} for image, p in zip(images, prompts, strict=True)]
    with torch.no_grad():
        outputs = ref(records, multimask_output=False)
    return torch.cat([ref.postprocess_masks(o["low_res_logits"], size, size) for o in outputs])


@pytest.fixture(scope="module")
def pair() -> tuple[Sam, torch.nn.Module]:
    """The reference Sam and medattn's `sam`, loaded with ONE random state dict (strictly, both)."""
    torch.manual_seed(0)
    ref = reference_sam(TINY)
    ours = create("sam", 2, 3, 1, variant="tiny", layout="hw").eval()  # SAM's (B, C, H, W), as the reference
    assert list(ours.state_dict()) == list(ref.state_dict())
    # Random values everywhere (zero-initialised tables included) at a scale that keeps logits O(1).
    state = {key: torch.randn_like(t) * 0.5 for key, t in ref.state_dict().items()}
    ref.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    return ref, ours


IMAGES = torch.rand(2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(1))
BOXES = torch.tensor([[8.0, 12.0, 40.0, 50.0], [3.5, 20.0, 60.0, 33.0]])
POINTS = torch.tensor([[[20.0, 30.0], [44.0, 10.0], [5.0, 60.0]], [[32.0, 32.0], [1.0, 2.0], [63.0, 63.0]]])
LABELS = torch.tensor([[1, 0, 1], [1, 1, -1]])


def _per_image(**prompts: torch.Tensor) -> list[dict]:
    """Split batched prompts into segment-anything's per-image records (a batch of one prompt each)."""
    return [{key: value[i : i + 1] for key, value in prompts.items()} for i in range(len(IMAGES))]


CASES = {
    "box": ({"boxes": BOXES}, {"boxes": BOXES}),
    "points": ({"points": (POINTS, LABELS)}, {"point_coords": POINTS, "point_labels": LABELS}),
    "box+points": (
        {"boxes": BOXES, "points": (POINTS, LABELS)},
        {"boxes": BOXES, "point_coords": POINTS, "point_labels": LABELS},
    ),
    "no prompt": ({}, {}),
}


def assert_equal_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding through ~30 layers: 2e-6 of the largest logit (which is ~16 here)."""
    peak = expected.abs().max()
    assert peak > 4  # logits of a realistic size, so the tolerance means something
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6 * float(peak))


@pytest.mark.parametrize("case", list(CASES))
def test_mask_logits_equal_the_reference(pair, case):
    ref, ours = pair
    our_prompts, reference_prompts = CASES[case]
    expected = reference_logits(ref, IMAGES, _per_image(**reference_prompts))
    with torch.no_grad():
        got = ours(IMAGES, **our_prompts)
    assert got.shape == expected.shape == (2, 1, TINY.img_size, TINY.img_size)
    assert_equal_logits(got, expected)


def test_mask_prompt_equals_the_reference(pair):
    """A prior mask (SAM's low-res logits, 4x the embedding grid) goes through the same convolutions."""
    ref, ours = pair
    grid = TINY.img_size // TINY.patch_size
    prior = torch.randn(2, 1, 4 * grid, 4 * grid, generator=torch.Generator().manual_seed(2))
    expected = reference_logits(ref, IMAGES, _per_image(boxes=BOXES, mask_inputs=prior))
    with torch.no_grad():
        got = ours(IMAGES, boxes=BOXES, mask_inputs=prior)
    assert_equal_logits(got, expected)


def test_image_embedding_and_block_features_equal_the_reference(pair):
    ref, ours = pair
    with torch.no_grad():
        expected = ref.image_encoder(IMAGES)
        embedding, features = ours.image_encoder.forward_features(IMAGES)
        tokens = ref.image_encoder.patch_embed(IMAGES) + ref.image_encoder.pos_embed
        for block, feature in zip(ref.image_encoder.blocks, features, strict=True):
            tokens = block(tokens)
            torch.testing.assert_close(feature, tokens, rtol=0, atol=1e-5)
    assert embedding.shape == (2, TINY.prompt_embed_dim, 4, 4)
    torch.testing.assert_close(embedding, expected, rtol=0, atol=1e-5)


def test_global_block_on_a_smaller_grid_resizes_relative_positions_like_the_reference():
    """sam_adapter runs the global blocks on grids other than the trained one; SAM resizes its tables."""
    torch.manual_seed(3)
    ref = ReferenceBlock(
        32, 2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, input_size=(8, 8)
    )
    state = {key: torch.randn_like(t) * 0.5 for key, t in ref.state_dict().items()}
    ref.load_state_dict(state)
    ours = Block(32, 2, use_rel_pos=True, input_size=(8, 8))
    ours.load_state_dict(state, strict=True)
    tokens = torch.randn(2, 5, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), ref(tokens), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_public_variants_have_the_reference_keys_and_shapes(variant):
    """The public checkpoints' layout, from upstream's own build_sam, built on the meta device (no memory)."""
    with torch.device("meta"):
        reference = sam_model_registry[variant]()
        ours = create("sam", 2, 3, 1, variant=variant)
    expected = {key: tuple(t.shape) for key, t in reference.state_dict().items()}
    got = {key: tuple(t.shape) for key, t in ours.state_dict().items()}
    assert got == expected
    assert ours.parameter_count() == sum(p.numel() for p in reference.parameters())
