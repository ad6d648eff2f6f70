"""DAUNet: AGUNet + position/channel attention at the bottleneck + guided decoder (Bouget et al. 2021)."""

from __future__ import annotations

import torch
from torch import nn

from medattn.models.agunet import AGUNet
from medattn.models.blocks import (
    ChannelAttention,
    PositionAttention,
    conv,
    conv_norm_act,
    norm_layer,
    spatial_dropout,
)
from medattn.models.registry import register_model


class DualAttentionBottleneck(nn.Module):
    """PAM and CAM in parallel on the bottleneck features, as in the paper's code.

    Each branch: attention, 3^n conv, norm, ReLU, spatial dropout, 3^n conv. Output: sum of the branches,
    spatial dropout, 1^n conv, norm.

    Args:
        spatial_dims: 2 or 3.
        channels: bottleneck channels.
        norm: "batch", "instance" or "group".
        position_attention: include the PAM branch.
        channel_attention: include the CAM branch.
        dropout: the spatial dropout rate of the branches and the output (0.5 in the paper's code).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        norm: str,
        position_attention: bool = True,
        channel_attention: bool = True,
        dropout: float = 0.5,
    ):
        super().__init__()
        attentions = {}
        if position_attention:
            # The Keras code has no bias on the PAM projections.
            attentions["position"] = PositionAttention(spatial_dims, channels, bias=False)
        if channel_attention:
            attentions["channel"] = ChannelAttention(inverted=False)
        self.branches = nn.ModuleDict(
            {
                name: nn.Sequential(
                    attention,
                    conv_norm_act(spatial_dims, channels, channels, norm, dropout=dropout),
                    conv(spatial_dims, channels, channels, kernel_size=3),
                )
                for name, attention in attentions.items()
            }
        )
        self.output = nn.Sequential(
            spatial_dropout(spatial_dims, dropout),
            conv(spatial_dims, channels, channels),
            norm_layer(norm, spatial_dims, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(sum(branch(x) for branch in self.branches.values()))


@register_model(
    "daunet",
    description="Dual-attention U-Net (Bouget et al. 2021): AGUNet + PAM/CAM bottleneck + guided decoder.",
    deep_supervision=True,
    tiny={"base_channels": 4, "depth": 2},
    cpu_options={"stem_stride": 2},  # as AGUNet's
    train_options={"act": "leakyrelu"},  # as AGUNet's: with ReLU no lesion voxel in 200 steps (fit_probe)
)
class DAUNet(AGUNet):
    """Dual-attention guided U-Net (the paper's DAGUNet): AGUNet with global context at the bottleneck.

    Paper and code as `AGUNet`. Position attention (PAM) and channel attention (CAM) run in parallel on
    the bottleneck (`DualAttentionBottleneck`); PAM uses `scaled_dot_product_attention`, so no N x N
    matrix is stored; both gammas start at 0. The guided decoder feeds the bottleneck output to every
    decoder level next to the skip and the upsampled features.

    Differences from the code, each for a reason:
    - Their guided decoder upsamples the bottleneck to level k with a transposed conv of kernel 3 and
      stride 2**k; for k >= 2 the kernel is smaller than the stride, so most output voxels get only the
      bias. medattn projects with a 1^n conv at the bottleneck grid and upsamples linearly.
    - Their CAM (a Keras port) normalises the softmax over the transposed axis; medattn uses DANet's row
      softmax(E) (not DANet's max(E) - E variant, which the Keras code also does not use).
    - Normalisation of the upsampled features comes before the concatenation, as in AGUNet.
    - Their DAU variant has no attention gates; ``gate=None`` is the default, gates are a switch.

    Defaults (base 16, depth 4; 1 input channel, 2 classes): 16.7 M parameters in 3D (7 M of them in
    the bottleneck's 3^3 convs at 256 channels), 5.72 M in 2D; 676 GFLOP per forward at 128^3, batch 2.
    Training memory at 128^3, batch 2, measured on CPU in float32: 5.4 GB peak resident (an upper bound);
    about 3 GB expected with bf16 autocast on a GPU (not measured on a GPU yet).

    Args:
        spatial_dims, in_channels, out_channels, base_channels, depth, max_channels, norm,
        multi_scale_input, deep_supervision, dropout, stem_stride, act: as `AGUNet` (the bottleneck's
            attention branches keep ReLU, as the paper's).
        gate: attention gates on the skips, None (the paper's DAU variant), "concat" or "additive".
        gate_logit_norm: as `AGUNet`'s.
        guided_decoder: feed the bottleneck output to every decoder level.
        position_attention: PAM branch at the bottleneck.
        channel_attention: CAM branch at the bottleneck; with both off the bottleneck is a plain U-Net's.
        attention_dropout: spatial dropout inside the bottleneck block (0.5 in the paper's code).
    """

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
        gate: str | None = None,
        gate_logit_norm: bool | None = None,
        multi_scale_input: bool = True,
        deep_supervision: bool = True,
        guided_decoder: bool = True,
        position_attention: bool = True,
        channel_attention: bool = True,
        attention_dropout: float = 0.5,
        dropout: float = 0.0,
        stem_stride: int = 1,
        act: str = "relu",
    ):
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            base_channels=base_channels,
            depth=depth,
            max_channels=max_channels,
            norm=norm,
            gate=gate,
            gate_logit_norm=gate_logit_norm,
            multi_scale_input=multi_scale_input,
            deep_supervision=deep_supervision,
            guided_decoder=guided_decoder,
            dropout=dropout,
            stem_stride=stem_stride,
            act=act,
        )
        if position_attention or channel_attention:
            self.bottleneck = DualAttentionBottleneck(
                spatial_dims,
                self.features[-1],
                norm,
                position_attention,
                channel_attention,
                attention_dropout,
            )
