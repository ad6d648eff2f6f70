"""`medsam_ca`: MedSAM with a CNN branch (CBR-Net) fused into its embedding and into every decoder stage."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.models.registry import register_model
from medattn.models.sam.adapter import BottleneckAdapter
from medattn.models.sam.checkpoint import load_checkpoint
from medattn.models.sam.common import LayerNorm2d
from medattn.models.sam.model import SAM
from medattn.models.sam_fusion import (
    BiasedEncoderFusion,
    CBRNet,
    MultiHeadGateFusion,
    added_prefixes,
    hypernetwork_masks,
    two_way_decode,
)

UPSCALING_STAGES = 4  # 2 ** 4 = 16 = SAM's patch size: masks come out at the input resolution
ENCODER_FUSION_FEATURE = 2  # CBR-Net block whose feature (256 channels, 1/4 grid) joins the embedding


def upscaling_widths(transformer_dim: int) -> list[int]:
    """Channels entering each upscaling stage and leaving the last: D, D/2, D/4, D/8, D/8."""
    return [transformer_dim // 2**i for i in range(UPSCALING_STAGES)] + [transformer_dim // 8]


@register_model(
    "medsam_ca",
    description=(
        "MedSAM-CA (Tian et al. 2025): frozen SAM/MedSAM ViT + CBR-Net CNN branch (residual CBAM blocks), "
        "SAM-biased encoder fusion and Atte-FFB gates in a 4-stage full-resolution decoder. 2D."
    ),
    spatial_dims=(2,),
    tiny={"variant": "tiny", "cnn_channels": (8, 16, 32, 64)},
    tiny_size=64,
)
class MedSAMCA(SAM):
    """MedSAM-CA: a CNN-augmented MedSAM [Tianpeiting/MedSAM-CA].

    - **CBR-Net**: four residual blocks with CBAM (64, 128, 256, 512 channels, strides 1, 2, 2, 2) beside
      the frozen SAM image encoder; its features lie at 1, 1/2, 1/4 and 1/8 of the input grid.
    - **Encoder fusion**: the 256-channel CBR feature (1/4 grid, resized to the embedding's 1/16 grid, as
      their AttentionFAM takes ``scale3``) joins SAM's embedding through a per-channel gate
      w = sigmoid(1x1 conv of [sam, cnn]), w' = w (1 - b) + b with a learnable b that starts at 0.8:
      embedding = w' sam + (1 - w') cnn, so SAM's features dominate at the start.
    - **Decoder with Atte-FFB**: SAM's two-way transformer, then four transposed-convolution stages
      (D -> D/2 -> D/4 -> D/8 -> D/8 channels, each x2, LayerNorm2d, GELU) instead of SAM's two; before
      each stage the CBR feature of the matching depth (deepest first) is resized, 1x1-projected and
      fused by four averaged sigmoid gate heads: w dec + (1 - w) cnn. SAM's hypernetwork MLPs then give
      mask logits at the input resolution (SAM's come out at 1/4 and are upsampled bilinearly).

    Where their code differs from the paper or from SAM, medattn follows the code:

    - their image encoder carries a bottleneck adapter (Linear D -> 0.1 D, GELU, Linear back, residual)
      on every block's attention output, as Medical SAM Adapter does (``encoder_adapters=True``; they
      start as identities here, so the pretrained encoder is unchanged at step 0);
    - CBAM's channel attention uses the average-pooled descriptor only;
    - their Atte-FFB class defines a bias factor it never uses; it is left out;
    - their encoder adds SAM's 64 x 64 position embedding as is, so it takes 1024 x 1024 images only; here
      it is resized to the input's token grid (`SAM.accept_any_input_size`, bicubic as Medical SAM Adapter
      does), so medsam_ca takes any multiple of 16 pixels, as sam_adapter and ccsam do. Unlike those two,
      it learns no correction of the resized embedding: at 1024 the model is exactly MedSAM-CA's, with
      MedSAM-CA's parameters, and its trained encoder adapters can absorb what the resize changes.

    Trainable: CBR-Net, both fusions, the four upscaling stages, the encoder adapters, and SAM's
    transformer, mask tokens and the hypernetwork MLPs the output uses. Frozen: the ViT and its neck, the
    prompt encoder (``freeze_prompt_encoder``), the IoU head, and SAM's own two-stage upscaler, which stays
    in ``mask_decoder.output_upscaling`` unused so that SAM/MedSAM ``.pth`` files load key for key.

    Inputs, prompts and outputs are those of `sam`, at any multiple of 16 pixels per side (1024, the size
    MedSAM was trained at, or e.g. 256 for ultrasound frames): (B, C, H, W) images,
    ``forward(x, boxes=None, points=None, mask_inputs=None)`` with prompts in input pixels,
    logits (B, out_channels, H, W); ``out_channels=1`` is one sigmoid logit. `attention_maps()` returns
    the fusion weights: ``encoder_fusion`` (the channel mean of w', in [b, 1]) and ``decoder_fusion.i``.

    Args:
        spatial_dims: must be 2.
        in_channels: image channels (3 for the public checkpoints; MedSAM repeats grey images).
        out_channels: 1 (sigmoid logit) or classes with background (2 to 5), as in `sam`.
        variant: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or ``"tiny"`` (tests).
        checkpoint: local SAM/MedSAM ``.pth`` loaded into the SAM part; the CNN branch, fusions, stages
            and adapters are the only keys it may lack.
        freeze_prompt_encoder: keep the prompt encoder fixed, as MedSAM does.
        layout: "xy" (medattn's (C, W, H) arrays, the default) or "hw" (SAM's own (C, H, W)); see `SAM`.
        cnn_channels: CBR-Net block widths.
        cbam: CBAM in the CBR blocks.
        encoder_fusion: fuse the CNN feature into SAM's embedding.
        initial_bias: starting value of the encoder fusion's bias b (0.8).
        decoder_fusion: Atte-FFB before every upscaling stage.
        fusion_heads: gate heads per Atte-FFB.
        encoder_adapters: bottleneck adapters in the ViT blocks, as in their code.
        adapter_ratio: adapter width over token width (0.1 in their code).

    Example:
        >>> model = create("medsam_ca", 2, 3, 1, checkpoint="medsam_vit_b.pth")
        >>> logits = model(image_1024, boxes=torch.tensor([[120.0, 200.0, 380.0, 460.0]]))
        >>> logits = model(frames_256, boxes=boxes_256)  # any multiple of 16 pixels
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        variant: str = "vit_b",
        checkpoint: str | None = None,
        freeze_prompt_encoder: bool = True,
        layout: str = "xy",
        cnn_channels: Sequence[int] = (64, 128, 256, 512),
        cbam: bool = True,
        encoder_fusion: bool = True,
        initial_bias: float = 0.8,
        decoder_fusion: bool = True,
        fusion_heads: int = 4,
        encoder_adapters: bool = True,
        adapter_ratio: float = 0.1,
    ):
        if len(cnn_channels) != UPSCALING_STAGES:
            raise ConfigError(
                f"cnn_channels needs {UPSCALING_STAGES} widths (one per CBR block), got {cnn_channels}"
            )
        if not 0.0 <= initial_bias <= 1.0:
            raise ConfigError(f"initial_bias is a weight in [0, 1], got {initial_bias}")
        super().__init__(
            spatial_dims, in_channels, out_channels, variant, None, freeze_prompt_encoder, layout
        )
        dim = self.variant.prompt_embed_dim
        # Only the blocks some fusion reads are built: an unused block would never receive a gradient.
        blocks = UPSCALING_STAGES if decoder_fusion else (ENCODER_FUSION_FEATURE + 1 if encoder_fusion else 0)
        self.cnn = CBRNet(in_channels, cnn_channels[:blocks], (1, 2, 2, 2)[:blocks], cbam) if blocks else None
        self.encoder_fusion = None
        if encoder_fusion:
            self.encoder_fusion = BiasedEncoderFusion(dim, cnn_channels[ENCODER_FUSION_FEATURE], initial_bias)
        widths = upscaling_widths(dim)
        self.decoder_fusion = (
            nn.ModuleList(
                MultiHeadGateFusion(cnn_channels[UPSCALING_STAGES - 1 - i], widths[i], fusion_heads)
                for i in range(UPSCALING_STAGES)
            )
            if decoder_fusion
            else None
        )
        self.upscaling = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(widths[i], widths[i + 1], kernel_size=2, stride=2),
                LayerNorm2d(widths[i + 1]),
                nn.GELU(),
            )
            for i in range(UPSCALING_STAGES)
        )
        if encoder_adapters:
            for block in self.image_encoder.blocks:
                block.adapter = BottleneckAdapter(self.variant.embed_dim, adapter_ratio)
        self.accept_any_input_size(correction=False)
        if checkpoint is not None:
            load_checkpoint(self, checkpoint, optional_prefixes=added_prefixes(self))
        adapters = tuple(f"blocks.{i}.adapter." for i in range(len(self.image_encoder.blocks)))
        for name, parameter in self.image_encoder.named_parameters():
            if not name.startswith(adapters):
                parameter.requires_grad_(False)
        self.freeze("mask_decoder.output_upscaling")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        features = self.cnn(x) if self.cnn is not None else []
        embedding = self.image_encoder(x)
        if self.encoder_fusion is not None:
            embedding = self.encoder_fusion(embedding, features[ENCODER_FUSION_FEATURE])
        batch, _, h, w = embedding.shape
        sparse, dense = self.encode_prompts(self._prompts, size, (h, w), batch)
        mask_tokens, image = two_way_decode(
            self.mask_decoder, embedding, self.prompt_encoder.get_dense_pe((h, w)), sparse, dense
        )
        for i, stage in enumerate(self.upscaling):
            if self.decoder_fusion is not None:
                image = self.decoder_fusion[i](image, features[UPSCALING_STAGES - 1 - i])
            image = stage(image)
        masks = hypernetwork_masks(self.mask_decoder, mask_tokens, image, self.mask_token_count)
        return self.to_output(masks, size)
