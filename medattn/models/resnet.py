"""A ResNet/ResNeXt feature extractor in torchvision's parameter layout (MONAI's ResNet), 2D and 3D.

MONAI's ResNet names its parts as torchvision does (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``downsample.0``/``downsample.1``), so an ImageNet ResNet's state dict maps onto it key for key
(`medattn.models.backbones`); a grouped bottleneck with the same names adds ResNeXt. MSGA and ccsam's CNN
branch use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from monai.networks.layers import Conv, get_act_layer
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBottleneck
from torch import nn

from medattn.errors import ConfigError
from medattn.models.blocks import monai_norm

BLOCKS = {"basic": 1, "bottleneck": 4}  # block type -> output channels per stage channel (expansion)


def resnext_bottleneck(groups: int, group_width: int) -> type[ResNetBottleneck]:
    """MONAI's bottleneck block made torchvision's ResNeXt block: the 3^n conv has `groups` groups of
    planes x `group_width` / 64 channels each (ResNeXt-101 32x8d: 32 groups, width 8); the names and the
    forward are MONAI's (``conv1``-``conv3``, ``bn1``-``bn3``, ``downsample``), so ResNeXt files map too."""

    class ResNeXtBottleneck(ResNetBottleneck):
        def __init__(
            self,
            in_planes: int,
            planes: int,
            spatial_dims: int = 3,
            stride: int = 1,
            downsample: nn.Module | partial | None = None,
            act: str | tuple = ("relu", {"inplace": True}),
            norm: str | tuple = "batch",
        ) -> None:
            nn.Module.__init__(self)
            width = planes * group_width // 64 * groups
            conv = Conv[Conv.CONV, spatial_dims]
            norm_layer = partial(get_norm_layer, name=norm, spatial_dims=spatial_dims)
            self.conv1 = conv(in_planes, width, kernel_size=1, bias=False)
            self.bn1 = norm_layer(channels=width)
            self.conv2 = conv(
                width, width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
            )
            self.bn2 = norm_layer(channels=width)
            self.conv3 = conv(width, planes * self.expansion, kernel_size=1, bias=False)
            self.bn3 = norm_layer(channels=planes * self.expansion)
            self.act = get_act_layer(name=act)
            self.downsample = downsample
            self.stride = stride

    return ResNeXtBottleneck


class ResNetEncoder(nn.Module):
    """A ResNet's stem (7^n conv stride 2, norm, ReLU, max pooling) and its first ``len(channels)`` stages,
    returning every stage's feature: stage k lies at 1/2**(k + 2) of the input (1/4, 1/8, 1/16, 1/32).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: each stage's width (torchvision's ResNet-18/34/50: 64, 128, 256, 512); a stage returns
            width x expansion channels (4 for bottleneck blocks).
        blocks: residual blocks per stage (ResNet-18: 2, 2, 2, 2; ResNet-34 and -50: 3, 4, 6, 3).
        block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101, ResNeXt).
        norm: "batch" (torchvision), "instance" or "group".
        groups: grouped 3^n convolutions in bottleneck blocks (ResNeXt-101 32x8d: 32; 1: ResNet).
        group_width: channels per group for a stage width of 64 (ResNeXt-101 32x8d: 8; ResNet: 64).
        downsample_bias: a bias on the 1^n shortcut convolutions (MONAI's default; torchvision has none, and
            loading its weights gives them zero, the same function before a batch norm).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        blocks: Sequence[int],
        block: str = "basic",
        norm: str = "batch",
        downsample_bias: bool = True,
        groups: int = 1,
        group_width: int = 64,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ConfigError(f"ResNet block must be one of {', '.join(BLOCKS)}; got {block!r}")
        grouped = (groups, group_width) != (1, 64)
        if grouped and (block != "bottleneck" or min(channels) * group_width // 64 < 1 or groups < 1):
            raise ConfigError(
                f"grouped convolutions (ResNeXt) need bottleneck blocks and channels x group_width >= 64; "
                f"got block {block!r}, groups {groups}, group_width {group_width}, channels {tuple(channels)}"
            )
        if len(channels) != len(blocks) or not 1 <= len(channels) <= 4 or min(blocks) < 1:
            raise ConfigError(
                f"a ResNet needs 1 to 4 stages, one width and >= 1 block each; got channels "
                f"{tuple(channels)}, blocks {tuple(blocks)}"
            )
        missing = 4 - len(channels)  # MONAI builds four stages; the unused ones are dropped below
        net = ResNet(
            resnext_bottleneck(groups, group_width) if grouped else block,
            [*blocks, *[1] * missing],
            [*channels, *[channels[-1]] * missing],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=downsample_bias,
            norm=monai_norm(norm, math.gcd(*channels)),
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][: len(channels)])
        self.channels = [c * BLOCKS[block] for c in channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, h = [], self.stem(x)
        for layer in self.layers:
            h = layer(h)
            features.append(h)
        return features
