"""PraNet's 2D blocks: Res2Net and ResNet encoders, receptive-field block, decoders, reverse attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import ResNet
from torch import nn

from medattn.models.base import record_attention
from medattn.models.blocks import monai_norm, resize

# Res2Net-50 v1b 26w 4s, the backbone of PraNet's code: split width = planes * 26 / 64, 4 splits per block.
RES2NET_BASE_WIDTH = 26
RES2NET_SCALE = 4
EXPANSION = 4  # bottleneck output channels = 4 x planes, in Res2Net and ResNet-50 alike


def conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 1,
    *,
    norm: str = "batch",
    dilation: int = 1,
    stride: int = 1,
    act: str | None = None,
) -> Convolution:
    """PraNet's BasicConv2d: a bias-free conv with 'same' padding, then a norm, no activation unless `act`.

    The official BasicConv2d builds a ReLU but never calls it; medattn follows the code, so RFB branches and
    the partial decoder are linear between their explicit ReLUs.
    """
    return Convolution(
        2,
        in_channels,
        out_channels,
        strides=stride,
        kernel_size=kernel_size,
        dilation=dilation,
        act=act,
        norm=monai_norm(norm, out_channels),
        bias=False,
    )


def map_head(in_channels: int, maps: int, kernel_size: int, norm: str) -> nn.Module:
    """The last conv of a branch, to the map channels: conv + batch norm as the code (a BasicConv2d).

    Group or instance norm over a single map channel would standardise every sample's map and so erase
    whether the image holds any foreground at all; with those norms the head is a plain conv with bias.
    """
    if norm == "batch":
        return conv_norm(in_channels, maps, kernel_size, norm=norm)
    return nn.Conv2d(in_channels, maps, kernel_size, padding=kernel_size // 2)


class Res2NetBottleneck(nn.Module):
    """Res2Net bottleneck (Gao et al. 2019, v1b): multi-scale residual features inside one block.

    A 1x1 conv widens to `scale` groups of `width` channels; group i > 0 goes through a 3x3 conv after
    adding the previous group's output (in a stage's first block each group is convolved alone, the last
    one average-pooled), so later groups see ever larger receptive fields. A 1x1 conv restores
    4 x `planes` channels; the shortcut is average pooling + 1x1 conv where the shape changes (v1b).
    """

    def __init__(self, in_channels: int, planes: int, stride: int, first: bool, norm: str):
        super().__init__()
        width = max(planes * RES2NET_BASE_WIDTH // 64, 1)
        self.width, self.first = width, first
        self.reduce = conv_norm(in_channels, width * RES2NET_SCALE, norm=norm, act="relu")
        self.convs = nn.ModuleList(
            conv_norm(width, width, 3, stride=stride, norm=norm, act="relu") for _ in range(RES2NET_SCALE - 1)
        )
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if first else None
        self.expand = conv_norm(width * RES2NET_SCALE, planes * EXPANSION, norm=norm)
        self.shortcut = None
        if stride != 1 or in_channels != planes * EXPANSION:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
                conv_norm(in_channels, planes * EXPANSION, norm=norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.reduce(x), self.width, dim=1)
        outputs: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            h = groups[i] if i == 0 or self.first else outputs[-1] + groups[i]
            outputs.append(conv(h))
        outputs.append(groups[-1] if self.pool is None else self.pool(groups[-1]))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.expand(torch.cat(outputs, dim=1)) + residual)


class StagedEncoder(nn.Module):
    """A stem (to 1/4) and four stages (1/4 to 1/32) set by subclasses; returns the features of stages 2-4
    (1/8, 1/16, 1/32 of the input), the three PraNet uses."""

    stem: nn.Module
    stages: nn.ModuleList

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features[1:]


class Res2NetEncoder(StagedEncoder):
    """Res2Net-v1b-style encoder (PraNet's backbone, built here, never downloaded): features at 1/8-1/32.

    Deep stem (three 3x3 convs: width/2, width/2, width channels, the first with stride 2), max pooling,
    then four stages of `Res2NetBottleneck`s with planes width x (1, 2, 4, 8); stages 2-4 halve the grid.
    width=64 with blocks (3, 4, 6, 3) is Res2Net-50 v1b 26w 4s. Convs start with Kaiming-normal weights
    (fan out), as the Res2Net code.
    """

    def __init__(self, in_channels: int, width: int, blocks: tuple[int, ...], norm: str):
        super().__init__()
        half = max(width // 2, 1)
        self.stem = nn.Sequential(
            conv_norm(in_channels, half, 3, stride=2, norm=norm, act="relu"),
            conv_norm(half, half, 3, norm=norm, act="relu"),
            conv_norm(half, width, 3, norm=norm, act="relu"),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, channels = [], width
        for index, count in enumerate(blocks):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            stage = [Res2NetBottleneck(channels, planes, stride, True, norm)]
            stage += [Res2NetBottleneck(planes * EXPANSION, planes, 1, False, norm) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            channels = planes * EXPANSION
        self.stages = nn.ModuleList(stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ResNetEncoder(StagedEncoder):
    """MONAI's ResNet with bottleneck blocks (ResNet-50 at width 64, blocks (3, 4, 6, 3)), as PraNet's
    PraNet_ResNet variant: features at 1/8, 1/16, 1/32."""

    def __init__(self, in_channels: int, width: int, blocks: tuple[int, ...], norm: str):
        super().__init__()
        net = ResNet(
            "bottleneck",
            list(blocks),
            [width * 2**i for i in range(len(blocks))],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
            norm=monai_norm(norm, width),
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])


class ReceptiveFieldBlock(nn.Module):
    """PraNet's RFB_modified: four branches of growing receptive field, fused, plus a 1x1 residual, ReLU.

    Branch 0 is a 1x1 conv; branch k (k = 3, 5, 7) is 1x1 -> 1xk -> kx1 -> 3x3 with dilation k. The
    branches are concatenated and fused by a 3x3 conv; each conv is conv + norm (see `conv_norm`).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        c = out_channels
        branches: list[nn.Module] = [conv_norm(in_channels, c, norm=norm)]
        for k in (3, 5, 7):
            branches.append(
                nn.Sequential(
                    conv_norm(in_channels, c, norm=norm),
                    conv_norm(c, c, (1, k), norm=norm),
                    conv_norm(c, c, (k, 1), norm=norm),
                    conv_norm(c, c, 3, dilation=k, norm=norm),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.fuse = conv_norm(4 * c, c, 3, norm=norm)
        self.residual = conv_norm(in_channels, c, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
        return F.relu(fused + self.residual(x))


def upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling to the grid of `like` with align_corners=True, as the partial decoder's
    nn.Upsample in PraNet's code."""
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


class PartialDecoder(nn.Module):
    """PraNet's partial decoder ("aggregation"): the three deep features multiplied and concatenated
    top-down into global maps at 1/8.

    With f32, f16, f8 the features at 1/32, 1/16, 1/8 (and up() a bilinear upsampling to the next grid):
    a = c1(up f32) * f16; b = c2(up up f32) * c3(up f16) * f8; a' = cat2[a, c4(up f32)];
    b' = cat3[b, c5(up a')]; maps = 1x1 conv(c6(b')). Every c is a 3x3 conv + norm.
    """

    def __init__(self, channels: int, maps: int, norm: str):
        super().__init__()
        c = channels
        self.up_coarse = nn.ModuleList(conv_norm(c, c, 3, norm=norm) for _ in range(4))
        self.up_pair = conv_norm(2 * c, 2 * c, 3, norm=norm)
        self.concat_middle = conv_norm(2 * c, 2 * c, 3, norm=norm)
        self.concat_fine = conv_norm(3 * c, 3 * c, 3, norm=norm)
        self.out = nn.Sequential(conv_norm(3 * c, 3 * c, 3, norm=norm), nn.Conv2d(3 * c, maps, 1))

    def forward(self, f32: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4 = self.up_coarse
        f32_at_16 = upsample(f32, f16)
        middle = c1(f32_at_16) * f16
        fine = c2(upsample(f32_at_16, f8)) * c3(upsample(f16, f8)) * f8
        middle = self.concat_middle(torch.cat([middle, c4(f32_at_16)], dim=1))
        fine = self.concat_fine(torch.cat([fine, self.up_pair(upsample(middle, f8))], dim=1))
        return self.out(fine)


class ConcatDecoder(nn.Module):
    """The ablation of the partial decoder: the three features upsampled to 1/8, concatenated, one 3x3
    conv + norm and a 1x1 conv to the maps (no products, no cascade)."""

    def __init__(self, channels: int, maps: int, norm: str):
        super().__init__()
        self.out = nn.Sequential(
            conv_norm(3 * channels, 3 * channels, 3, norm=norm), nn.Conv2d(3 * channels, maps, 1)
        )

    def forward(self, f32: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([upsample(f32, f8), upsample(f16, f8), f8], dim=1))


class ReverseAttention(nn.Module):
    """Reverse attention: features weighted by 1 - sigmoid(map), so a stage looks where the map is not yet
    foreground. With several foreground maps the weight uses their maximum (one weight per pixel).
    The weights (B, 1, *grid) are recorded for `attention_maps()`."""

    def forward(self, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        weights = 1 - torch.sigmoid(maps.amax(dim=1, keepdim=True))
        record_attention(self, weights)
        return features * weights


class ReverseAttentionStage(nn.Module):
    """One refinement stage: resize the coarser map to the features' grid, weight the backbone features by
    reverse attention, convs down to the map channels, add the result to the resized map (a residual).

    Convs as the code: 1x1 to `hidden` (conv + norm), `middle` k x k convs (conv + norm + ReLU), then
    `map_head` with kernel `head_kernel`. With ``reverse=False`` the features go in unweighted (the
    ablation of the attention alone, same parameters).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        maps: int,
        *,
        kernel_size: int,
        middle: int,
        head_kernel: int,
        norm: str,
        reverse: bool,
    ):
        super().__init__()
        self.attention = ReverseAttention() if reverse else None
        self.convs = nn.Sequential(
            conv_norm(in_channels, hidden, norm=norm),
            *(conv_norm(hidden, hidden, kernel_size, norm=norm, act="relu") for _ in range(middle)),
            map_head(hidden, maps, head_kernel, norm),
        )

    def forward(self, features: torch.Tensor, coarse_maps: torch.Tensor) -> torch.Tensor:
        prior = resize(coarse_maps, features.shape[2:])
        weighted = features if self.attention is None else self.attention(features, prior)
        return prior + self.convs(weighted)
