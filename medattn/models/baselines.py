"""MONAI's networks (UNet, AttentionUnet, SegResNet, SwinUNETR, UNETR) under medattn's model contract."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import UNETR, AttentionUnet, SegResNet, SwinUNETR, UNet
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

from medattn.models.base import SegmentationModel, record_attention
from medattn.models.blocks import monai_norm
from medattn.models.registry import register_model


def _record_gate(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    """Forward hook on MONAI's gate `psi`: keep its coefficients for `attention_maps()`."""
    record_attention(module, output)


class MonaiBaseline(SegmentationModel):
    """A MONAI network wrapped so that it checks inputs and answers `attention_maps()` like medattn's own.

    Its weights live under ``net.`` in the state dict. None of these networks has deep-supervision heads.

    Args:
        net: the MONAI network.
        spatial_dims, in_channels, out_channels: as built.
        size_divisor: inputs must be a multiple of this per axis.
        fixed_input_size: the only accepted input size (UNETR).
        encoder_prefixes: parameter-name prefixes of the encoder, for `freeze_encoder`.
    """

    def __init__(
        self,
        net: nn.Module,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        size_divisor: int = 1,
        fixed_input_size: tuple[int, ...] | None = None,
        encoder_prefixes: tuple[str, ...] = (),
    ):
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            size_divisor=size_divisor,
            fixed_input_size=fixed_input_size,
        )
        self.net = net
        self.encoder_prefixes = encoder_prefixes
        for module in net.modules():
            if isinstance(module, AttentionBlock):
                module.psi.register_forward_hook(_record_gate)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model(
    "monai.unet",
    description="MONAI UNet with residual units (Kerfoot et al. 2018): the plain baseline.",
    tiny={"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
)
def monai_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
) -> MonaiBaseline:
    """MONAI's `UNet`; defaults as MONAI's tutorials (channels 16-256, 2 residual units, instance norm)."""
    net = UNet(
        spatial_dims,
        in_channels,
        out_channels,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
        norm=monai_norm(norm, math.gcd(*channels)),
        dropout=dropout,
    )
    return MonaiBaseline(net, spatial_dims, in_channels, out_channels, size_divisor=math.prod(strides))


@register_model(
    "monai.attention_unet",
    description="MONAI AttentionUnet (Oktay et al. 2018): additive gates computed at full resolution.",
    tiny={"channels": (4, 8, 16), "strides": (2, 2)},
)
def monai_attention_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.0,
) -> MonaiBaseline:
    """MONAI's `AttentionUnet` (batch norm, fixed in MONAI); its gates show in `attention_maps()`."""
    net = AttentionUnet(
        spatial_dims, in_channels, out_channels, channels=channels, strides=strides, dropout=dropout
    )
    return MonaiBaseline(net, spatial_dims, in_channels, out_channels, size_divisor=math.prod(strides))


@register_model(
    "monai.segresnet",
    description="MONAI SegResNet (Myronenko 2018, without the VAE branch): residual encoder, light decoder.",
    tiny={"init_filters": 4, "blocks_down": (1, 1, 1), "blocks_up": (1, 1)},
)
def monai_segresnet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    init_filters: int = 16,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    blocks_up: Sequence[int] = (1, 1, 1),
    norm: str = "group",
    dropout: float | None = None,
) -> MonaiBaseline:
    """MONAI's `SegResNet`; 16 initial filters (MONAI's default is 8) to match the other baselines' width."""
    net = SegResNet(
        spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout,
        norm=monai_norm(norm, init_filters),
        blocks_down=tuple(blocks_down),
        blocks_up=tuple(blocks_up),
    )
    return MonaiBaseline(
        net,
        spatial_dims,
        in_channels,
        out_channels,
        size_divisor=2 ** (len(blocks_down) - 1),
        encoder_prefixes=("net.convInit", "net.down_layers"),
    )


@register_model(
    "monai.swin_unetr",
    description="MONAI SwinUNETR (Hatamizadeh et al. 2022): Swin transformer encoder, CNN decoder.",
    # Batch norm in the tiny config: at 32^n the deepest grid is 1 voxel, where instance norm cannot train.
    tiny={
        "feature_size": 12,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 1, 1, 1),
        "window_size": 4,
        "norm": "batch",
    },
    tiny_size=32,
)
def monai_swin_unetr(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    norm: str = "instance",
    use_checkpoint: bool = False,
) -> MonaiBaseline:
    """MONAI's `SwinUNETR` (feature size 24, MONAI's default; 48 in the paper). Inputs: multiples of 32."""
    net = SwinUNETR(
        in_channels,
        out_channels,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        feature_size=feature_size,
        norm_name=monai_norm(norm, feature_size),
        use_checkpoint=use_checkpoint,
        spatial_dims=spatial_dims,
    )
    return MonaiBaseline(
        net, spatial_dims, in_channels, out_channels, size_divisor=32, encoder_prefixes=("net.swinViT",)
    )


@register_model(
    "monai.unetr",
    description="MONAI UNETR (Hatamizadeh et al. 2022): ViT encoder on 16^n patches; fixed input size.",
    tiny={"img_size": 32, "feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2},
    tiny_size=32,
)
def monai_unetr(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    img_size: int | Sequence[int] | None = None,
    feature_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    norm: str = "instance",
    dropout: float = 0.0,
) -> MonaiBaseline:
    """MONAI's `UNETR` (its defaults: ViT-B, feature size 16). It only accepts inputs of exactly `img_size`;
    default 128^3 in 3D (the patch the paper used for BTCV was 96^3) and 256^2 in 2D."""
    if img_size is None:
        img_size = 128 if spatial_dims == 3 else 256
    size = (img_size,) * spatial_dims if isinstance(img_size, int) else tuple(img_size)
    net = UNETR(
        in_channels,
        out_channels,
        img_size=size,
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        norm_name=monai_norm(norm, feature_size),
        dropout_rate=dropout,
        spatial_dims=spatial_dims,
    )
    return MonaiBaseline(
        net,
        spatial_dims,
        in_channels,
        out_channels,
        size_divisor=16,
        fixed_input_size=size,
        encoder_prefixes=("net.vit",),
    )
