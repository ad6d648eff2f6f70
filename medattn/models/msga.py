"""MSGA: multi-scale self-guided attention (Sinha & Dolz 2020) on a MONAI ResNet encoder, 2D and 3D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv, Pool
from torch import nn

from medattn.models.backbones import Backbone, load_backbone
from medattn.models.base import SegmentationModel, normalised_summary, record_attention
from medattn.models.blocks import (
    ChannelAttention,
    PositionAttention,
    conv,
    conv_norm_act,
    double_conv,
    resize,
)
from medattn.models.layouts import torchvision_resnet
from medattn.models.registry import register_model
from medattn.models.resnet import ResNetEncoder

SCALES = 4  # backbone features at 1/4, 1/8, 1/16, 1/32 of the input


class SemanticModule(nn.Module):
    """The semantic encoder-decoder: two conv+pool stages down, two conv+transposed-conv stages back up.

    Returns the code (the deepest features) and the reconstruction of its input; the paper trains the
    reconstruction to match the input and the codes of the two steps to match each other.
    """

    def __init__(self, spatial_dims: int, channels: int, norm: str):
        super().__init__()
        pool = Pool[Pool.MAX, spatial_dims](2)
        transposed = Conv[Conv.CONVTRANS, spatial_dims]
        self.encode = nn.Sequential(
            double_conv(spatial_dims, channels, 2 * channels, norm),
            pool,
            double_conv(spatial_dims, 2 * channels, 4 * channels, norm),
            pool,
        )
        self.decode = nn.Sequential(
            double_conv(spatial_dims, 4 * channels, 2 * channels, norm),
            transposed(2 * channels, 2 * channels, 2, stride=2),
            double_conv(spatial_dims, 2 * channels, channels, norm),
            transposed(channels, channels, 2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return code, self.decode(code)


class GuidedAttention(nn.Module):
    """One attention step at one scale, on [feature_s, guide] (2C channels), C channels out.

    PAM and CAM branches (conv, attention, conv; CAM with softmax(max(E) - E) as in their code), summed,
    multiplied by a 3^n conv of the semantic module's reconstruction, then a 1^n conv. With both
    attentions off the branch is two plain convs (the ablation without self-attention).
    """

    def __init__(
        self, spatial_dims: int, channels: int, norm: str, position: bool, channel: bool, semantic: bool
    ):
        super().__init__()
        attentions = []
        if position:
            attentions.append(PositionAttention(spatial_dims, channels, record=False))
        if channel:
            attentions.append(ChannelAttention(inverted=True))

        def branch(attention: nn.Module) -> nn.Sequential:
            return nn.Sequential(
                conv_norm_act(spatial_dims, 2 * channels, channels, norm, act="prelu"),
                attention,
                conv_norm_act(spatial_dims, channels, channels, norm, act="prelu"),
            )

        self.branches = nn.ModuleList(branch(a) for a in attentions or [nn.Identity()])
        self.record = bool(attentions) or semantic
        self.semantic_conv = conv(spatial_dims, 2 * channels, channels, kernel_size=3) if semantic else None
        self.out = conv(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor, reconstruction: torch.Tensor | None) -> torch.Tensor:
        attended = sum(branch(x) for branch in self.branches)
        if self.semantic_conv is not None and reconstruction is not None:
            attended = attended * self.semantic_conv(reconstruction)
        out = self.out(attended)
        if self.record:  # with every attention component off there is no attention to show
            record_attention(self, normalised_summary(out))
        return out


@register_model(
    "msga",
    description="Multi-scale self-guided attention (Sinha & Dolz 2020): PAM/CAM + semantic guidance.",
    deep_supervision=True,
    tiny={"features": 8, "backbone_channels": (4, 8, 8, 16), "backbone_blocks": (1, 1, 1, 1)},
    tiny_size=32,
    head_weights=(1.0,) * 8,  # eight heads, all at full resolution: weighed equally
)
class MSGA(SegmentationModel):
    """Multi-scale self-guided attention network (Sinha & Dolz, IEEE JBHI 2020, arXiv:1906.02849).

    Official code (PyTorch, 2D): github.com/sinAshish/Multi-Scale-Attention. Backbone features at four
    scales are 1^n-projected to `features` channels and resampled to the finest (1/4); convs fuse them
    into F. For each scale s, step 1 attends on [feature_s, F] and step 2 on [feature_s, A1_s * F]
    (`GuidedAttention`); one semantic module per step, shared by the scales. All outputs are computed on
    the 1/4 grid and upsampled linearly to the input. `attention_maps()` holds, per step and scale, a
    summary of the attention output (``attention.{step}.{scale}``, scale 0 = 1/4).

    Outputs: in eval mode (and in train mode without deep supervision) the mean of the four last-step
    heads' logits, as their inference. In train mode with deep supervision a list of 8 logits, all at
    the input resolution: the 4 last-step heads (scale 1/4 first), then the 4 heads on the projected
    backbone features (their code puts its "step 1" heads there, not on the step-1 attention outputs).
    The paper's loss weights the 8 equally.

    Auxiliary loss contract: after every forward, `auxiliary_loss()` returns
    0.25 * sum_s MSE(code step 1, code step 2) + 0.1 * sum of the reconstruction MSEs (8 terms), as
    their training code; add it to the segmentation loss. It is None with ``semantic_guidance=False``;
    the code term needs ``refinement_step=True``. The unweighted terms are in `auxiliary_terms`.

    medattn changes: a MONAI ResNet (basic blocks by default; ResNeXt through ``backbone_groups``) instead
    of ResNeXt-101 32x8d, lighter and 3D too; PAM via `scaled_dot_product_attention` (no N x N matrix; N
    is the 1/4 grid, 32^3 = 32768 voxels for a 128^3 patch).

    Pretrained weights: the backbone starts from random weights unless ``backbone_weights`` names a local
    file (nothing is downloaded), as the official code, which builds torchvision's ResNeXt-101 without
    ImageNet weights (and a one-channel stem). The file is a torchvision ResNet state dict (``conv1.weight``,
    ``bn1.*``, ``layer1.0.conv1.weight``, ...; 2D only) or a medattn msga model.pt; the backbone options
    must match it: ResNet-18 is ``backbone_channels=(64, 128, 256, 512)``, ``backbone_blocks=(2, 2, 2, 2)``;
    ResNet-34 blocks (3, 4, 6, 3); ResNet-50 the same with ``backbone_block="bottleneck"``; the official
    ResNeXt-101 32x8d is channels (64, 128, 256, 512), blocks (3, 4, 23, 3), bottleneck, 32 groups of
    width 8. A one-channel network gets the RGB stem's filters summed.

    Defaults (features 32, ResNet channels 32-64-128-256 with 2 blocks each; 1 input channel, 2 classes):
    20.5 M parameters in 3D (semantic modules 10.3 M, ResNet 8.3 M, attention 1.8 M), 6.96 M in 2D.
    The two semantic modules (3^3 convs up to 256 channels) do about 85 % of the 176 GFLOP of a forward
    at 64^3, batch 2. Activations live on the 1/4 grid: 0.19 GB peak resident for a float32 training
    step at 64^3, batch 2 on CPU, so about 1.5 GB at 128^3 (memory is linear in voxels: PAM never stores
    N x N), less in bf16; not measured on a GPU yet. Compute is the cost: PAM at 128^3 attends over
    32^3 = 32768 positions per scale and step.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes including background.
        features: channel width of the attention modules (64 in the paper).
        backbone_channels: ResNet channels of its four stages.
        backbone_blocks: ResNet blocks per stage.
        backbone_block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50, ResNeXt; stages give 4 x
            channels).
        backbone_groups: groups of the bottleneck's 3^n conv (ResNeXt-101 32x8d: 32; 1: ResNet).
        backbone_group_width: channels per group at stage width 64 (ResNeXt-101 32x8d: 8).
        norm: "batch" (the paper), "instance" or "group".
        position_attention: PAM branches.
        channel_attention: CAM branches.
        semantic_guidance: the semantic encoder-decoders and their auxiliary losses.
        refinement_step: the second, guided step (off: one step, heads on its outputs).
        deep_supervision: return the 8 heads in train mode.
        backbone_weights: local file with pretrained backbone weights (see above); not kept in packages.
    """

    encoder_prefixes = ("backbone",)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        features: int = 32,
        backbone_channels: tuple[int, ...] = (32, 64, 128, 256),
        backbone_blocks: tuple[int, ...] = (2, 2, 2, 2),
        backbone_block: str = "basic",
        backbone_groups: int = 1,
        backbone_group_width: int = 64,
        norm: str = "batch",
        position_attention: bool = True,
        channel_attention: bool = True,
        semantic_guidance: bool = True,
        refinement_step: bool = True,
        deep_supervision: bool = True,
        backbone_weights: str | None = None,
    ):
        super().__init__(
            spatial_dims, in_channels, out_channels, deep_supervision=deep_supervision, size_divisor=2**5
        )
        c = features
        self.backbone = ResNetEncoder(
            spatial_dims,
            in_channels,
            tuple(backbone_channels),
            tuple(backbone_blocks),
            backbone_block,
            norm,
            groups=backbone_groups,
            group_width=backbone_group_width,
        )
        self.project = nn.ModuleList(
            conv_norm_act(spatial_dims, bc, c, norm, kernel_size=1, act="prelu")
            for bc in self.backbone.channels
        )
        self.fuse = nn.Sequential(
            conv_norm_act(spatial_dims, SCALES * c, c, norm, act="prelu"),
            conv_norm_act(spatial_dims, c, c, norm, act="prelu"),
            conv_norm_act(spatial_dims, c, c, norm, kernel_size=1, act="prelu"),
        )
        steps = 2 if refinement_step else 1
        self.semantic = (
            nn.ModuleList(SemanticModule(spatial_dims, 2 * c, norm) for _ in range(steps))
            if semantic_guidance
            else None
        )
        self.attention = nn.ModuleList(
            nn.ModuleList(
                GuidedAttention(
                    spatial_dims, c, norm, position_attention, channel_attention, semantic_guidance
                )
                for _ in range(SCALES)
            )
            for _ in range(steps)
        )
        self.heads = nn.ModuleList(conv(spatial_dims, c, out_channels) for _ in range(SCALES))
        self.feature_heads = (
            nn.ModuleList(conv(spatial_dims, c, out_channels) for _ in range(SCALES))
            if deep_supervision
            else None
        )
        self.pretrained_backbone = Backbone(
            "backbone.",
            torchvision_resnet("layers"),
            "set backbone_channels, backbone_blocks, backbone_block (and for ResNeXt backbone_groups, "
            "backbone_group_width) to the file's network (ResNet-18: (64, 128, 256, 512), (2, 2, 2, 2), "
            "basic), norm='batch', and spatial_dims=2 (ImageNet is 2D)",
        )
        if backbone_weights is not None:
            load_backbone(self, backbone_weights, self.pretrained_backbone)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """0.25 x semantic-code MSE + 0.1 x reconstruction MSE of the last forward (see the class doc)."""
        if not self.auxiliary_terms:
            return None
        terms = self.auxiliary_terms
        total = 0.1 * terms["reconstruction_mse"]
        if "code_mse" in terms:
            total = total + 0.25 * terms["code_mse"]
        return total

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self.backbone(x)
        grid = features[0].shape[2:]
        projected = [resize(project(f), grid) for project, f in zip(self.project, features, strict=True)]
        fused = self.fuse(torch.cat(projected, dim=1))
        guides = [fused] * SCALES
        codes: list[list[torch.Tensor]] = []
        reconstruction_mse = []
        for step, modules in enumerate(self.attention):
            outputs, step_codes = [], []
            for scale, module in enumerate(modules):
                joint = torch.cat([projected[scale], guides[scale]], dim=1)
                reconstruction = None
                if self.semantic is not None:
                    code, reconstruction = self.semantic[step](joint)
                    step_codes.append(code)
                    reconstruction_mse.append(F.mse_loss(reconstruction, joint))
                outputs.append(module(joint, reconstruction))
            codes.append(step_codes)
            guides = [attention * fused for attention in outputs]
        if self.semantic is not None:
            self.auxiliary_terms["reconstruction_mse"] = torch.stack(reconstruction_mse).sum()
            if len(codes) == 2:
                pairs = zip(codes[0], codes[1], strict=True)
                self.auxiliary_terms["code_mse"] = torch.stack([F.mse_loss(a, b) for a, b in pairs]).sum()
        size = x.shape[2:]
        final = [resize(head(out), size) for head, out in zip(self.heads, outputs, strict=True)]
        if self.training and self.deep_supervision:
            side = [resize(head(p), size) for head, p in zip(self.feature_heads, projected, strict=True)]
            return final + side
        return torch.stack(final).mean(dim=0)
