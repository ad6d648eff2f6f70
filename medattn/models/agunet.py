"""AGUNet: the attention-gated U-Net with multi-scale input and deep supervision (Bouget et al. 2021)."""

from __future__ import annotations

import torch
from monai.networks.layers import Conv, Pool
from torch import nn

from medattn.errors import ConfigError
from medattn.models.base import SegmentationModel
from medattn.models.blocks import (
    GATE_RESOLUTIONS,
    AttentionGate,
    activation,
    conv,
    conv_norm_act,
    double_conv,
    norm_layer,
    resize,
)
from medattn.models.registry import register_model


def channel_plan(base_channels: int, depth: int, max_channels: int) -> list[int]:
    """Channels per level, finest first: base * 2**level capped at `max_channels`; depth + 1 levels."""
    if base_channels < 1 or depth < 1:
        raise ConfigError(f"base_channels and depth must be >= 1, got {base_channels} and {depth}")
    return [min(base_channels * 2**level, max_channels) for level in range(depth + 1)]


class MultiScaleEncoder(nn.Module):
    """U-Net encoder; with multi-scale input, level k >= 1 also sees the input average-pooled k times.

    As in the paper's code: at each level >= 1 a 3^n conv (+activation) of the pooled input is concatenated
    to the max-pooled features before that level's conv block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: list[int],
        norm: str,
        multi_scale_input: bool,
        dropout: float,
        act: str = "relu",
    ):
        super().__init__()
        self.max_pool = Pool[Pool.MAX, spatial_dims](2)
        self.avg_pool = Pool[Pool.AVG, spatial_dims](2)
        self.pyramid = nn.ModuleList()
        if multi_scale_input:
            self.pyramid.extend(
                nn.Sequential(
                    conv(spatial_dims, in_channels, f, kernel_size=3), activation(act, inplace=True)
                )
                for f in features[1:]
            )
        self.blocks = nn.ModuleList()
        for level, f in enumerate(features):
            block_in = in_channels if level == 0 else features[level - 1] + (f if multi_scale_input else 0)
            self.blocks.append(double_conv(spatial_dims, block_in, f, norm, dropout, act))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Return the skips (levels 0..depth-1), the same max-pooled, and the bottleneck."""
        skips, pooled = [], []
        scaled, h = x, x
        for level, block in enumerate(self.blocks):
            if level > 0:
                h = self.max_pool(skips[-1])
                pooled.append(h)
                if self.pyramid:
                    scaled = self.avg_pool(scaled)
                    h = torch.cat([self.pyramid[level - 1](scaled), h], dim=1)
            h = block(h)
            if level < len(self.blocks) - 1:
                skips.append(h)
        return skips, pooled, h


class DecoderLevel(nn.Module):
    """One decoder level: transposed-conv upsampling, optional gate on the skip, optional guide, conv block.

    The block's input is [upsampled, (gated) skip] plus, in DAUNet's guided decoder, the bottleneck output
    projected and resampled to this level ("guide").
    """

    def __init__(
        self,
        spatial_dims: int,
        coarse_channels: int,
        skip_channels: int,
        norm: str,
        gate: str | None,
        guided: bool,
        guide_channels: int,
        dropout: float,
        act: str = "relu",
        gate_resolution: str = "coarse",
        gate_logit_norm: bool | None = None,
    ):
        super().__init__()
        transposed = Conv[Conv.CONVTRANS, spatial_dims]
        self.up = nn.Sequential(
            transposed(coarse_channels, skip_channels, 3, stride=2, padding=1, output_padding=1),
            norm_layer(norm, spatial_dims, skip_channels),
            activation(act, inplace=True),
        )
        self.gate_at_skip = gate_resolution == "skip"
        gating_channels = skip_channels if self.gate_at_skip else coarse_channels
        self.gate = (
            None
            if gate is None
            else AttentionGate(
                spatial_dims, gating_channels, skip_channels, norm, gate, logit_norm=gate_logit_norm
            )
        )
        # 1^n projection at the bottleneck's grid then linear upsampling: the same map as projecting after
        # upsampling, without full-resolution work.
        self.guide = conv(spatial_dims, guide_channels, skip_channels) if guided else None
        block_in = skip_channels * (3 if guided else 2)
        self.block = double_conv(spatial_dims, block_in, skip_channels, norm, dropout, act)

    def forward(
        self, coarse: torch.Tensor, skip: torch.Tensor, pooled_skip: torch.Tensor, bottleneck: torch.Tensor
    ) -> torch.Tensor:
        up = self.up(coarse)
        if self.gate is None:
            gated = skip
        elif self.gate_at_skip:
            gated = self.gate(up, skip, skip)
        else:
            gated = self.gate(coarse, skip, pooled_skip)
        parts = [up, gated]
        if self.guide is not None:
            parts.append(resize(self.guide(bottleneck), skip.shape[2:]))
        return self.block(torch.cat(parts, dim=1))


@register_model(
    "agunet",
    description=(
        "Attention-gated U-Net (Bouget et al. 2021): gated skips, multi-scale input, deep supervision."
    ),
    deep_supervision=True,
    tiny={"base_channels": 4, "depth": 2},
    # The U-Net on the half-resolution grid: about 8x less compute per step; instance norm (nnU-Net's
    # choice) rather than the paper's batch norm, which with 2 patches per batch trained slower per step
    # and ended about 0.01 Dice lower on grey and white matter (BENCHMARKS.md, tried and ruled out).
    cpu_options={"stem_stride": 2, "norm": "instance"},
    # ReLU (the paper's) let no lesion voxel through in 240 s of training, on every setting tried; a leaky
    # slope keeps rare-class features learning (BENCHMARKS.md, "activation").
    train_options={"act": "leakyrelu"},
)
class AGUNet(SegmentationModel):
    """Attention-gated U-Net for lesion segmentation (Bouget et al. 2021, meningioma in T1 MRI).

    Paper: D. Bouget et al., "Meningioma segmentation in T1-weighted MRI leveraging global context and
    attention mechanisms", Front. Radiol. 2021 (arXiv:2101.07715). Official code (Keras):
    github.com/dbouget/mri_brain_tumor_segmentation. Each component is a switch for ablations.

    Architecture: levels of 2 x (3^n conv, norm, ReLU) with max-pooling; decoder levels upsample with a
    stride-2 transposed conv (+norm, ReLU) and concatenate the gated skip. Differences from the code:
    the gate is computed on the coarse grid by default (see `AttentionGate`), so attention costs little
    beyond a plain U-Net; their code gates at the skip's resolution, offered as
    ``gate_resolution="skip"``. Deep-supervision heads are 1^n convs on every decoder level, returned at
    that level's own resolution (input / 2**k for output k), finest first.

    Defaults (base 16, depth 4: channels 16-32-64-128-256; 1 input channel, 2 classes): 8.87 M
    parameters in 3D, 2.98 M in 2D; 553 GFLOP per forward at 128^3, batch 2. Memory for a training step
    at 128^3, batch 2, measured on CPU in float32 (peak resident memory, an upper bound): 5.2 GB; with
    bf16 autocast on a GPU the saved activations halve, so about 3 GB is expected, far under 24 GB
    (not measured on a GPU yet). The gates add 0.14 % FLOPs and no measurable step time (BENCHMARKS.md,
    networks).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes including background.
        base_channels: channels of the finest level; each level doubles it up to `max_channels`.
        depth: number of poolings; inputs must be a multiple of 2**depth per axis.
        max_channels: cap on channels per level.
        norm: "batch" (the paper), "instance" or "group".
        gate: "concat" (the paper's), "additive" (Oktay et al.) or None (plain skips).
        gate_resolution: "coarse" computes the gate on the decoder's coarse grid from the coarse feature and
            the pooled skip, and upsamples only the one-channel map; "skip" (the paper's code) computes it
            at the skip's resolution from the upsampled decoder feature, so a lesion a few voxels across at
            the skip's grid is gated by its own voxels rather than by a 2^n-times coarser cell.
        gate_logit_norm: normalise the gates' one-channel logits with `norm` (see `AttentionGate`);
            default: only under batch norm.
        multi_scale_input: feed the average-pooled input to every level (the paper's input pyramid).
        deep_supervision: in train mode return every decoder level's logits (finest first).
        guided_decoder: also feed the bottleneck output to every decoder level (DAUNet's guided decoder).
        dropout: spatial dropout after every conv (0 in the paper).
        act: activation after every norm: "relu" (the paper), "leakyrelu" (slope 0.25) or "prelu".
            ``medattn train`` picks "leakyrelu": with ReLU the network learned grey and white matter but
            no small lesion within 240 s on CPU (400+ steps), with a leaky slope it did (BENCHMARKS.md,
            activation).
        stem_stride: 1 (the paper) runs the first level at full resolution. 2 puts a stride-2 conv stem in
            front, so the whole U-Net works on the half-resolution grid, and a stride-2 transposed conv
            brings the logits back to full resolution, as MONAI's UNet does: about 8x less compute per
            step and no convolution at full resolution beyond the stem. ``medattn train`` picks 2 on CPU,
            where a time budget buys 3-6x more steps with it (BENCHMARKS.md, equal-time accuracy).

    Example:
        >>> model = AGUNet(spatial_dims=3, in_channels=1, out_channels=2).eval()
        >>> logits = model(torch.zeros(1, 1, 64, 64, 64))  # (1, 2, 64, 64, 64)
        >>> gates = model.attention_maps()  # {"decoder.0.gate": (1, 1, 64, 64, 64), ...}
    """

    encoder_prefixes = ("encoder",)

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        base_channels: int = 16,
        depth: int = 4,
        max_channels: int = 256,
        norm: str = "batch",
        gate: str | None = "concat",
        gate_resolution: str = "coarse",
        gate_logit_norm: bool | None = None,
        multi_scale_input: bool = True,
        deep_supervision: bool = True,
        guided_decoder: bool = False,
        dropout: float = 0.0,
        stem_stride: int = 1,
        act: str = "relu",
    ):
        if gate_resolution not in GATE_RESOLUTIONS:
            raise ConfigError(
                f"gate_resolution must be one of {', '.join(GATE_RESOLUTIONS)}; got {gate_resolution!r}"
            )
        if stem_stride not in (1, 2):
            raise ConfigError(f"stem_stride must be 1 (full resolution) or 2 (half), got {stem_stride}")
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            deep_supervision=deep_supervision,
            size_divisor=2**depth * stem_stride,
        )
        features = channel_plan(base_channels, depth, max_channels)
        self.features = features
        self.stem = None
        encoder_in = in_channels
        if stem_stride == 2:
            self.stem = conv_norm_act(spatial_dims, in_channels, features[0], norm, stride=2, act=act)
            encoder_in = features[0]
            self.encoder_prefixes = ("stem", "encoder")
        self.encoder = MultiScaleEncoder(
            spatial_dims, encoder_in, features, norm, multi_scale_input, dropout, act
        )
        # DAUNet replaces this with its dual-attention block; AGUNet passes the bottleneck features through.
        self.bottleneck: nn.Module = nn.Identity()
        self.decoder = nn.ModuleList(
            DecoderLevel(
                spatial_dims,
                features[k + 1],
                features[k],
                norm,
                gate,
                guided_decoder,
                features[-1],
                dropout,
                act,
                gate_resolution,
                gate_logit_norm,
            )
            for k in range(depth)
        )
        head_levels = depth if deep_supervision else 1
        self.heads = nn.ModuleList(conv(spatial_dims, features[k], out_channels) for k in range(head_levels))
        if self.stem is not None:
            # The finest head upsamples: each half-resolution voxel predicts its 2^n full-resolution children.
            transposed = Conv[Conv.CONVTRANS, spatial_dims]
            self.heads[0] = transposed(features[0], out_channels, kernel_size=2, stride=2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        skips, pooled, bottom = self.encoder(x)
        bottom = self.bottleneck(bottom)
        h = bottom
        decoded = []
        for k in reversed(range(len(self.decoder))):
            h = self.decoder[k](h, skips[k], pooled[k], bottom)
            decoded.append(h)
        decoded.reverse()
        if self.training and self.deep_supervision:
            return [head(level) for head, level in zip(self.heads, decoded, strict=True)]
        return self.heads[0](decoded[0])
