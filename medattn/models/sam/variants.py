"""SAM's model sizes (ViT-B/L/H as in segment-anything's build_sam, plus a tiny one for tests) and builders.

Example:
    >>> encoder = build_image_encoder(VARIANTS["vit_b"])
    >>> encoder.img_size
    1024
"""

from __future__ import annotations

from dataclasses import dataclass

from medattn.errors import ConfigError
from medattn.models.sam.image_encoder import ImageEncoderViT
from medattn.models.sam.mask_decoder import MaskDecoder
from medattn.models.sam.prompt_encoder import PromptEncoder
from medattn.models.sam.transformer import TwoWayTransformer


@dataclass(frozen=True)
class SamVariant:
    """The sizes that define one SAM model; everything else is fixed by SAM's design.

    Attributes:
        embed_dim: ViT token width.
        depth: ViT blocks.
        num_heads: ViT attention heads.
        global_attn_indexes: blocks with global attention; the others attend within windows.
        img_size: input edge in pixels (the absolute position embedding is sized for it).
        patch_size: patch edge in pixels.
        window_size: window edge in tokens.
        prompt_embed_dim: width of the image embedding, prompt tokens and mask decoder.
        mask_in_chans: hidden channels of the prompt encoder's mask downscaling.
        decoder_depth: two-way transformer blocks.
        decoder_heads: two-way transformer attention heads.
        decoder_mlp_dim: hidden width of the two-way transformer's MLPs.
        iou_head_hidden_dim: hidden width of the IoU head.
        num_multimask_outputs: disambiguating masks; the decoder has this many + 1 mask tokens.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3

    @property
    def embedding_size(self) -> int:
        """Edge of the image embedding grid at img_size (64 for SAM)."""
        return self.img_size // self.patch_size


VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamVariant(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamVariant(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    # For tests and smoke runs on CPU: a 4x4 token grid in 3x3 windows (so windows get padded) and one
    # global block; no checkpoint exists for it.
    "tiny": SamVariant(
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        img_size=64,
        window_size=3,
        prompt_embed_dim=32,
        mask_in_chans=8,
        decoder_heads=2,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
    ),
}


def get_variant(name: str) -> SamVariant:
    """The variant called `name`; ConfigError listing the valid names otherwise."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown SAM variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def build_image_encoder(variant: SamVariant, in_chans: int = 3) -> ImageEncoderViT:
    """The ViT image encoder of `variant` (windowed + global attention, relative positions, neck)."""
    return ImageEncoderViT(
        img_size=variant.img_size,
        patch_size=variant.patch_size,
        in_chans=in_chans,
        embed_dim=variant.embed_dim,
        depth=variant.depth,
        num_heads=variant.num_heads,
        mlp_ratio=4.0,
        out_chans=variant.prompt_embed_dim,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=variant.window_size,
        global_attn_indexes=variant.global_attn_indexes,
    )


def build_prompt_encoder(variant: SamVariant) -> PromptEncoder:
    """The prompt encoder of `variant`."""
    grid = variant.embedding_size
    return PromptEncoder(
        embed_dim=variant.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(variant.img_size, variant.img_size),
        mask_in_chans=variant.mask_in_chans,
    )


def build_mask_decoder(variant: SamVariant) -> MaskDecoder:
    """The two-way-transformer mask decoder of `variant`."""
    return MaskDecoder(
        transformer_dim=variant.prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=variant.decoder_depth,
            embedding_dim=variant.prompt_embed_dim,
            num_heads=variant.decoder_heads,
            mlp_dim=variant.decoder_mlp_dim,
        ),
        num_multimask_outputs=variant.num_multimask_outputs,
        iou_head_depth=3,
        iou_head_hidden_dim=variant.iou_head_hidden_dim,
    )


def guess_variant(state_dict: dict) -> str | None:
    """Name the variant whose ViT width and depth match a checkpoint's, or None (for error messages)."""
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    depth = len({key.split(".")[2] for key in state_dict if key.startswith("image_encoder.blocks.")})
    for name, variant in VARIANTS.items():
        if variant.embed_dim == patch.shape[0] and variant.depth == depth:
            return name
    return None
