"""HBFormer: Swin encoder bridged to a multi-scale feature fusion decoder (Zheng et al. 2025)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetResBlock, UnetrUpBlock
from monai.networks.layers import Conv
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from medattn.errors import ConfigError
from medattn.models.backbones import Backbone, load_backbone
from medattn.models.base import SegmentationModel
from medattn.models.blocks import conv, monai_norm, norm_layer, resize
from medattn.models.hbformer_blocks import LRDBlock, MedDSPP, spatial_mean
from medattn.models.layouts import SWIN
from medattn.models.registry import register_model

DECODERS = ("mff", "plain")


def _channels_last(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a channels-last module (MONAI's patch merging) to a channels-first tensor."""
    return module(x.movedim(1, -1)).movedim(-1, 1)


class SwinPyramid(nn.Module):
    """The encoder: a conv stem for the fine levels and MONAI's Swin Transformer for the coarse ones.

    Level k of the output lies on the input grid / 2**k. The stem gives levels 0 .. log2(patch_size) - 1
    (`feature_size` channels each; a MONAI residual block at full resolution, then one with stride 2 per
    further level, as SwinUNETR's conv encoder on its fine skips). The Swin stages give the next four
    levels with embed_dim * (1, 2, 4, 8) channels: with patch 4 and embed 96 exactly Swin-T's pyramid at
    1/4 ... 1/32.

    MONAI's `SwinTransformer` merges patches at the end of every stage and only returns merged features;
    Swin-T's pyramid is each stage's output before merging. So the merges are taken out of MONAI's stages
    and run between them here, and the merge after the last stage (Swin-T has none) is dropped. Stage
    outputs are layer-normalised without weights, as MONAI's `proj_out(normalize=True)`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        feature_size: int,
        patch_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        drop_path: float,
        norm: str,
        use_checkpoint: bool,
    ):
        super().__init__()
        stem_levels = int(math.log2(patch_size))
        self.stem = nn.ModuleList(
            UnetResBlock(
                spatial_dims,
                in_channels if level == 0 else feature_size,
                feature_size,
                kernel_size=3,
                stride=1 if level == 0 else 2,
                norm_name=monai_norm(norm, feature_size),
            )
            for level in range(stem_levels)
        )
        swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=embed_dim,
            window_size=(window_size,) * spatial_dims,
            patch_size=(patch_size,) * spatial_dims,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            drop_path_rate=drop_path,
            patch_norm=True,
            use_checkpoint=use_checkpoint,
            spatial_dims=spatial_dims,
        )
        stages = [swin.layers1[0], swin.layers2[0], swin.layers3[0], swin.layers4[0]]
        self.merges = nn.ModuleList(stage.downsample for stage in stages[:-1])
        for stage in stages:
            stage.downsample = None
        self.patch_embed = swin.patch_embed
        self.stages = nn.ModuleList(stages)
        self.channels = [feature_size] * stem_levels + [embed_dim * 2**i for i in range(len(stages))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level, finest first (see the class docstring)."""
        features = []
        h = x
        for block in self.stem:
            h = block(h)
            features.append(h)
        tokens = self.patch_embed(x)
        for index, stage in enumerate(self.stages):
            if index > 0:
                tokens = _channels_last(self.merges[index - 1], tokens)
            tokens = stage(tokens.contiguous())
            features.append(F.layer_norm(tokens.movedim(1, -1), tokens.shape[1:2]).movedim(-1, 1))
        return features


class MultiScaleBridge(nn.Module):
    """The skip of one MFF decoder stage: every encoder level resampled to its grid, plus global context.

    - Finer levels are average-pooled to the stage's grid and concatenated with the stage's own level; one
      1^n conv projects them.
    - Coarser levels are 1^n-projected on their own grids and summed coarse to fine with linear upsampling
      (projecting before upsampling is the same linear map as after, at a fraction of the cost).
    - Global context: the deepest level's global average, projected and broadcast over the grid.

    With ``multi_scale=False`` the skip is the stage's own level only, projected (a U-Net skip).

    Args:
        spatial_dims: 2 or 3.
        level: the stage's level (grid = input / 2**level).
        channels: channels of every encoder level, finest first.
        out_channels: the stage's width.
        multi_scale: fuse every level and the global context.
    """

    def __init__(
        self, spatial_dims: int, level: int, channels: Sequence[int], out_channels: int, multi_scale: bool
    ):
        super().__init__()
        self.level = level
        self.multi_scale = multi_scale
        local = channels[: level + 1] if multi_scale else channels[level : level + 1]
        self.local = conv(spatial_dims, sum(local), out_channels)
        coarser = channels[level + 1 :] if multi_scale else []
        self.coarser = nn.ModuleList(conv(spatial_dims, c, out_channels, bias=False) for c in coarser)
        self.global_context = nn.Linear(channels[-1], out_channels, bias=False) if multi_scale else None

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        own = features[self.level]
        if not self.multi_scale:
            return self.local(own)
        pool = F.avg_pool2d if own.ndim == 4 else F.avg_pool3d
        finer = [pool(f, 2 ** (self.level - k)) for k, f in enumerate(features[: self.level])]
        skip = self.local(torch.cat([*finer, own], dim=1))
        context = None
        for projection, feature in zip(
            reversed(self.coarser), reversed(features[self.level + 1 :]), strict=True
        ):
            projected = projection(feature)
            context = projected if context is None else resize(context, projected.shape[2:]) + projected
        skip = skip + resize(context, own.shape[2:])
        pooled = self.global_context(spatial_mean(features[-1]))
        return skip + pooled.view(*pooled.shape, *([1] * (own.ndim - 2)))


class MFFStage(nn.Module):
    """One stage of HBFormer's multi-scale feature fusion (MFF) decoder.

    As `MFF_Decoder` in the official code: transposed-conv upsampling (kernel 2, stride 2) of the coarser
    decoder feature, concatenated with the skip (here the `MultiScaleBridge`), LRD block, Med-DSPP fusion,
    then ReLU and norm (in that order, as the code).
    """

    def __init__(
        self,
        spatial_dims: int,
        level: int,
        channels: Sequence[int],
        coarse_channels: int,
        norm: str,
        multi_scale: bool,
        dilations: Sequence[int],
        experts: int,
        spatial_gate: bool,
    ):
        super().__init__()
        width = channels[level]
        self.up = Conv[Conv.CONVTRANS, spatial_dims](coarse_channels, width, kernel_size=2, stride=2)
        self.bridge = MultiScaleBridge(spatial_dims, level, channels, width, multi_scale)
        self.lrd = LRDBlock(spatial_dims, 2 * width, width, norm)
        self.fusion = MedDSPP(spatial_dims, width, norm, dilations, experts, spatial_gate)
        self.out = nn.Sequential(nn.ReLU(inplace=True), norm_layer(norm, spatial_dims, width))

    def forward(self, coarse: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        h = torch.cat([self.up(coarse), self.bridge(features)], dim=1)
        return self.out(self.fusion(self.lrd(h)))


class PlainStage(nn.Module):
    """A SwinUNETR decoder stage (MONAI's `UnetrUpBlock`): transposed conv, concatenated same-level skip,
    residual block of two 3^n convs. The ablation baseline for `MFFStage`; unlike SwinUNETR, the skips go
    in as the encoder gives them, without its extra residual blocks on the skips."""

    def __init__(
        self, spatial_dims: int, level: int, channels: Sequence[int], coarse_channels: int, norm: str
    ):
        super().__init__()
        self.level = level
        width = channels[level]
        self.block = UnetrUpBlock(
            spatial_dims,
            coarse_channels,
            width,
            kernel_size=3,
            upsample_kernel_size=2,
            norm_name=monai_norm(norm, width),
            res_block=True,
        )

    def forward(self, coarse: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.block(coarse, features[self.level])


def _check_options(
    patch_size: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], decoder: str, gate: bool
) -> None:
    if decoder not in DECODERS:
        raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
    if gate and decoder != "mff":
        raise ConfigError("spatial_gate belongs to the MFF decoder's fusion block; use decoder='mff'")
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ConfigError(f"patch_size must be a power of two >= 2 (4 in Swin-T); got {patch_size}")
    if len(depths) != 4 or len(num_heads) != 4:
        raise ConfigError(
            f"MONAI's Swin Transformer has 4 stages; got depths {depths}, num_heads {num_heads}"
        )
    for stage, heads in enumerate(num_heads):
        if (embed_dim * 2**stage) % heads:
            raise ConfigError(
                f"stage {stage} has {embed_dim * 2**stage} channels, not divisible by its {heads} heads; "
                f"choose embed_dim or num_heads so that embed_dim * 2**stage is a multiple of the heads"
            )


@register_model(
    "hbformer",
    description=(
        "HBFormer (Zheng et al. 2025): Swin encoder, multi-scale fusion decoder with dilated expert mixing."
    ),
    deep_supervision=True,
    loss="ce_dice_focal",  # 0.33 CE + 0.33 Dice + 0.34 focal, as their Synapse/ACDC configurations
    tiny={
        "feature_size": 4,
        "embed_dim": 4,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 1, 1, 1),
        "window_size": 4,
        "patch_size": 2,
        "drop_path": 0.0,
    },
    # Patch 2 puts the deepest level at 1/16, so the tiny model runs on 16^n inputs (8x less work in 3D).
    tiny_size=16,
)
class HBFormer(SegmentationModel):
    """HBFormer, the hybrid-bridge transformer for microtumour and small-organ segmentation.

    Paper: F. Zheng et al., "HBFormer: A Hybrid-Bridge Transformer for Microtumor and Miniature Organ
    Segmentation", BIBM 2025 (arXiv:2512.03597). Official code (2D, timm's Swin-T):
    github.com/lzeeorno/HBFormer.

    Encoder: `SwinPyramid` (conv stem for the full- and half-resolution levels, MONAI's Swin Transformer
    for 1/4 ... 1/32; defaults are Swin-T: patch 4, embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7,
    stochastic depth 0.2). Decoder: one stage per level from 1/16 up to full resolution, each upsampling
    the previous one; logits from a 1^n conv at full resolution (per level with deep supervision, finest
    first, each at its own resolution).

    Differences from the official code, and why:
    - Skips: the paper's decoder fuses the multi-scale encoder features with global context; the code
      feeds each stage one skip, the next-coarser level's features upsampled (its 1/4 features never
      reach the 1/4 stage). Here `MultiScaleBridge` gives each stage every level plus global context
      (``multi_scale_skips=False``: the stage's own level only).
    - The code stops at 1/2 and upsamples the logits by a transposed conv; here a conv stem gives
      full- and half-resolution skips, as in SwinUNETR, and the last stage works at full resolution.
    - The code's 1x1 conv to 3 channels before the encoder (for ImageNet weights) is left out: the patch
      embedding takes `in_channels`. MONAI's Swin pads each stage to a multiple of the window and shrinks
      the window on grids smaller than it, so no input-dependent window choice is needed.
    - Med-DSPP mixes expert kernels before convolving instead of mixing the experts' outputs: the same
      map, one convolution instead of `experts` (see `ExpertSeparableConv`).
    - Pretrained weights: the official code loads ImageNet Swin-T (swin_tiny_patch4_window7_224.pth) into
      its encoder; here the Swin starts from random weights unless ``backbone_weights`` names a local file
      (nothing is downloaded): Microsoft's or timm's Swin-T state dict (``patch_embed.proj.weight``,
      ``layers.0.blocks.0.attn.qkv.weight``, ...; 2D only, with the default embed_dim, depths and heads)
      or a medattn hbformer model.pt. Bias tables are resized bicubically to another window, as the
      official code does; a one-channel network gets the RGB patch embedding summed. The conv stem and
      the decoder start random in both.
    The paper's loss is 0.33 CE + 0.33 Dice + 0.34 focal (medattn's trainer chooses the loss).

    Defaults (1 input channel, 2 classes; FLOPs of one eval forward, batch 1, counted by PyTorch's
    FlopCounterMode): 49.0 M parameters and 1218 GFLOP at 128^3 in 3D (MONAI SwinUNETR: 15.7 M / 399 GFLOP
    at feature size 24, 62.2 M / 1526 GFLOP at 48); 38.2 M and 143 GFLOP at 512^2 in 2D (the official
    code's comment: 30 M, 80 GMac = 161 GFLOP). In 3D the plain decoder has about as many parameters
    (49.1 M) and more FLOPs (1420 GFLOP), its second 3^3 conv costing more than Med-DSPP's separable ones.

    Attention maps (eval mode): per MFF stage k, ``decoder.k.fusion`` (Med-DSPP output magnitude, scaled to
    [0, 1]), ``decoder.k.fusion.channel_attention`` (fraction of the feature magnitude ECA lets through)
    and, with ``spatial_gate=True``, ``decoder.k.fusion.spatial_gate`` (gate coefficients). They are not
    recorded in training, where nobody reads them, to save the full-resolution reductions.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes including background.
        feature_size: channels of the conv stem and of the full- and half-resolution decoder stages (48, the
            width of the official code's finest stage).
        embed_dim: Swin embedding width; stage k has embed_dim * 2**k channels (96 in Swin-T).
        patch_size: Swin patch size, a power of two; the stem covers the levels finer than it. Inputs must
            be a multiple of patch_size * 8 per axis.
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: Swin window edge, tokens.
        drop_path: Swin stochastic-depth rate (the last block's; 0.2 in the official code).
        norm: "batch" (the official decoder), "instance" or "group", for stem and decoder.
        decoder: "mff" (the paper's) or "plain" (SwinUNETR's `UnetrUpBlock` stages on same-level skips,
            for ablations; the options below apply to "mff" only).
        multi_scale_skips: each MFF stage fuses every encoder level and global context (else its own level).
        spatial_gate: add a CBAM spatial gate to every Med-DSPP block (off in the paper).
        dilations: dilations of the Med-DSPP branches.
        experts: expert kernels mixed per Med-DSPP branch (1 = no mixing).
        deep_supervision: in train mode return logits of every decoder stage.
        use_checkpoint: gradient checkpointing in the Swin blocks (less memory, slower).
        backbone_weights: local file with pretrained Swin weights (see above); not kept in packages.

    Example:
        >>> model = HBFormer(spatial_dims=3, in_channels=1, out_channels=2).eval()
        >>> logits = model(torch.zeros(1, 1, 96, 96, 96))  # (1, 2, 96, 96, 96)
        >>> maps = model.attention_maps()  # {"decoder.0.fusion": (1, 1, 96, 96, 96), ...}
    """

    encoder_prefixes = ("encoder",)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        feature_size: int = 48,
        embed_dim: int = 96,
        patch_size: int = 4,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_path: float = 0.2,
        norm: str = "batch",
        decoder: str = "mff",
        multi_scale_skips: bool = True,
        spatial_gate: bool = False,
        dilations: Sequence[int] = (1, 4, 8),
        experts: int = 4,
        deep_supervision: bool = False,
        use_checkpoint: bool = False,
        backbone_weights: str | None = None,
    ):
        _check_options(patch_size, embed_dim, depths, num_heads, decoder, spatial_gate)
        levels = int(math.log2(patch_size)) + len(depths) - 1  # poolings from the input to the deepest level
        super().__init__(
            spatial_dims, in_channels, out_channels, deep_supervision=deep_supervision, size_divisor=2**levels
        )
        self.encoder = SwinPyramid(
            spatial_dims,
            in_channels,
            feature_size,
            patch_size,
            embed_dim,
            depths,
            num_heads,
            window_size,
            drop_path,
            norm,
            use_checkpoint,
        )
        channels = self.encoder.channels
        stages = []
        for level in range(levels):  # decoder[k] produces level k; they run from the coarsest down
            if decoder == "mff":
                stage = MFFStage(
                    spatial_dims,
                    level,
                    channels,
                    channels[level + 1],
                    norm,
                    multi_scale_skips,
                    dilations,
                    experts,
                    spatial_gate,
                )
            else:
                stage = PlainStage(spatial_dims, level, channels, channels[level + 1], norm)
            stages.append(stage)
        self.decoder = nn.ModuleList(stages)
        head_levels = levels if deep_supervision else 1
        self.heads = nn.ModuleList(conv(spatial_dims, channels[k], out_channels) for k in range(head_levels))
        self.pretrained_backbone = Backbone(
            "encoder.",
            SWIN,
            "Swin-T needs embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), patch_size=4 and "
            "spatial_dims=2 (ImageNet is 2D)",
        )
        if backbone_weights is not None:
            load_backbone(self, backbone_weights, self.pretrained_backbone)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self.encoder(x)
        h = features[-1]
        decoded = []
        for stage in reversed(self.decoder):
            h = stage(h, features)
            decoded.append(h)
        decoded.reverse()
        if self.training and self.deep_supervision:
            return [head(level) for head, level in zip(self.heads, decoded, strict=True)]
        return self.heads[0](decoded[0])
