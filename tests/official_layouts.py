"""Small networks in the official codes' parameter layouts (torchvision's ResNet, Res2Net-v1b and PraNet as
in github.com/DengPingFan/PraNet, Swin-T as Microsoft's and timm's), written for the tests: their state
dicts carry the official key names and shapes, so medattn's key mappings are checked without a download,
and their forwards are the reference outputs medattn's networks must reproduce once the weights are mapped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """`module` in eval mode with every parameter and batch-norm statistic random (nothing is at its
    initial value, so a key mapped to the wrong place shows)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked") or not tensor.is_floating_point():
                continue
            values = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(0.5 + values if name.endswith("running_var") else 0.2 * (values - 0.5))
    return module.eval()


# --- torchvision ResNet -----------------------------------------------------------------------------------


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's bottleneck; with `groups` > 1 ResNeXt's (width planes x base_width / 64 per group)."""

    expansion = 4
    groups, base_width = 1, 64

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        width = int(planes * (self.base_width / 64.0)) * self.groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=self.groups, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class GroupedBottleneck(Bottleneck):
    """ResNeXt's block with 2 groups of width 16 (ResNeXt-101 32x8d: 32 groups of width 8)."""

    groups, base_width = 2, 16


class _FourStages(nn.Module):
    """A ResNet-style trunk (conv1, bn1, maxpool, layer1-4) whose `features` are the four stages' outputs."""

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = []
        for index in range(1, 5):
            h = getattr(self, f"layer{index}")(h)
            out.append(h)
        return out


class TorchvisionResNet(_FourStages):
    """torchvision's ResNet layout (v1.5: stride on the 3x3 conv), with chosen widths; `features` returns
    the four stages' outputs."""

    def __init__(self, block: type, widths: tuple[int, ...], blocks: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = _bn(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = widths[0]
        for index, (planes, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                    _bn(planes * block.expansion),
                )
            layer = [block(inplanes, planes, stride, downsample)]
            inplanes = planes * block.expansion
            layer += [block(inplanes, planes, 1, None) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(inplanes, 10)


# --- Res2Net-50 v1b and PraNet -------------------------------------------------------------------------


class Bottle2neck(nn.Module):
    """Res2Net v1b bottleneck: 4 splits of floor(planes * 26 / 64) channels."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, stage: bool):
        super().__init__()
        width, scale = int(math.floor(planes * 26 / 64.0)), 4
        self.width, self.stage, self.nums = width, stage, scale - 1
        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = _bn(width * scale)
        if stage:
            self.pool = nn.AvgPool2d(3, stride, 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride, 1, bias=False) for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(_bn(width) for _ in range(self.nums))
        self.conv3 = nn.Conv2d(width * scale, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        splits = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        for i in range(self.nums):
            sp = splits[i] if i == 0 or self.stage else sp + splits[i]  # noqa: F821 - set in the loop
            sp = F.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        outs.append(self.pool(splits[self.nums]) if self.stage else splits[self.nums])
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Res2NetV1b(_FourStages):
    """Res2Net v1b (deep stem, average-pool shortcuts) at base width `width` (64 in Res2Net-50)."""

    def __init__(self, width: int, blocks: tuple[int, ...]):
        super().__init__()
        half = width // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, half, 3, 2, 1, bias=False),
            _bn(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, 1, 1, bias=False),
            _bn(half),
            nn.ReLU(),
            nn.Conv2d(half, width, 3, 1, 1, bias=False),
        )
        self.bn1 = _bn(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for index, count in enumerate(blocks):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(inplanes, planes * 4, 1, 1, bias=False),
                    _bn(planes * 4),
                )
            layer = [Bottle2neck(inplanes, planes, stride, downsample, stage=True)]
            inplanes = planes * 4
            layer += [Bottle2neck(inplanes, planes, 1, None, stage=False) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(inplanes, 10)


class BasicConv2d(nn.Module):
    """PraNet's conv + batch norm (its ReLU is built and never applied)."""

    def __init__(self, cin: int, cout: int, kernel, padding=0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = _bn(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class RFBModified(nn.Module):
    def __init__(self, cin: int, c: int):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(cin, c, 1))
        for index, k in ((1, 3), (2, 5), (3, 7)):
            branch = nn.Sequential(
                BasicConv2d(cin, c, 1),
                BasicConv2d(c, c, (1, k), padding=(0, k // 2)),
                BasicConv2d(c, c, (k, 1), padding=(k // 2, 0)),
                BasicConv2d(c, c, 3, padding=k, dilation=k),
            )
            setattr(self, f"branch{index}", branch)
        self.conv_cat = BasicConv2d(4 * c, c, 3, padding=1)
        self.conv_res = BasicConv2d(cin, c, 1)

    def forward(self, x):
        branches = [getattr(self, f"branch{i}")(x) for i in range(4)]
        return F.relu(self.conv_cat(torch.cat(branches, 1)) + self.conv_res(x))


class Aggregation(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        for i in range(1, 5):
            setattr(self, f"conv_upsample{i}", BasicConv2d(c, c, 3, padding=1))
        self.conv_upsample5 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * c, 2 * c, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv4 = BasicConv2d(3 * c, 3 * c, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x1, x2, x3):
        up = self.upsample
        x2_1 = self.conv_upsample1(up(x1)) * x2
        x3_1 = self.conv_upsample2(up(up(x1))) * self.conv_upsample3(up(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(up(x1))), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(up(x2_2))), 1))
        return self.conv5(self.conv4(x3_2))


class OfficialPraNet(nn.Module):
    """PraNet_Res2Net at base width `width` (64 in the paper: 2048/1024/512 features, 256/64 hidden)."""

    def __init__(self, width: int, blocks: tuple[int, ...], channel: int):
        super().__init__()
        w = width
        self.resnet = Res2NetV1b(width, blocks)
        self.rfb2_1, self.rfb3_1, self.rfb4_1 = (RFBModified(f, channel) for f in (8 * w, 16 * w, 32 * w))
        self.agg1 = Aggregation(channel)
        self.ra4_conv1 = BasicConv2d(32 * w, 4 * w, 1)
        for i in (2, 3, 4):
            setattr(self, f"ra4_conv{i}", BasicConv2d(4 * w, 4 * w, 5, padding=2))
        self.ra4_conv5 = BasicConv2d(4 * w, 1, 1)
        for level, features in ((3, 16 * w), (2, 8 * w)):
            setattr(self, f"ra{level}_conv1", BasicConv2d(features, w, 1))
            setattr(self, f"ra{level}_conv2", BasicConv2d(w, w, 3, padding=1))
            setattr(self, f"ra{level}_conv3", BasicConv2d(w, w, 3, padding=1))
            setattr(self, f"ra{level}_conv4", BasicConv2d(w, 1, 3, padding=1))

    def _reverse(self, level: int, features, prior, convs: int):
        x = (1 - torch.sigmoid(prior)).expand(-1, features.shape[1], -1, -1) * features
        x = getattr(self, f"ra{level}_conv1")(x)
        for i in range(2, convs):
            x = F.relu(getattr(self, f"ra{level}_conv{i}")(x))
        return getattr(self, f"ra{level}_conv{convs}")(x) + prior

    def forward(self, x):
        _, x2, x3, x4 = self.resnet.features(x)
        ra5 = self.agg1(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))
        map4 = self._reverse(4, x4, F.interpolate(ra5, scale_factor=0.25, mode="bilinear"), 5)
        map3 = self._reverse(3, x3, F.interpolate(map4, scale_factor=2, mode="bilinear"), 4)
        map2 = self._reverse(2, x2, F.interpolate(map3, scale_factor=2, mode="bilinear"), 4)
        return F.interpolate(map2, scale_factor=8, mode="bilinear")  # lateral_map_2, the test output


# --- Swin Transformer ---------------------------------------------------------------------------------


def swin_state(
    embed: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int,
    patch: int = 4,
    timm: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random tensors under Swin's official key names and shapes: Microsoft's layout (patch merging at the
    end of stages 0-2, ``layers.i.downsample``), or timm >= 0.9's (at the start of stages 1-3)."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state = {
        "patch_embed.proj.weight": random(embed, 3, patch, patch),
        "patch_embed.proj.bias": random(embed),
        "patch_embed.norm.weight": random(embed),
        "patch_embed.norm.bias": random(embed),
    }
    tokens = window * window
    for i, (depth, head_count) in enumerate(zip(depths, heads, strict=True)):
        dim = embed * 2**i
        if timm and i > 0:
            state[f"layers.{i}.downsample.norm.weight"] = random(2 * dim)
            state[f"layers.{i}.downsample.norm.bias"] = random(2 * dim)
            state[f"layers.{i}.downsample.reduction.weight"] = random(dim, 2 * dim)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            state.update(
                {
                    p + "norm1.weight": random(dim),
                    p + "norm1.bias": random(dim),
                    p + "attn.relative_position_bias_table": random((2 * window - 1) ** 2, head_count),
                    p + "attn.relative_position_index": torch.zeros(tokens, tokens, dtype=torch.long),
                    p + "attn.qkv.weight": random(3 * dim, dim),
                    p + "attn.qkv.bias": random(3 * dim),
                    p + "attn.proj.weight": random(dim, dim),
                    p + "attn.proj.bias": random(dim),
                    p + "norm2.weight": random(dim),
                    p + "norm2.bias": random(dim),
                    p + "mlp.fc1.weight": random(4 * dim, dim),
                    p + "mlp.fc1.bias": random(4 * dim),
                    p + "mlp.fc2.weight": random(dim, 4 * dim),
                    p + "mlp.fc2.bias": random(dim),
                }
            )
            if j % 2 and not timm:
                state[p + "attn_mask"] = torch.zeros(4, tokens, tokens)
        if not timm and i < len(depths) - 1:
            state[f"layers.{i}.downsample.norm.weight"] = random(4 * dim)
            state[f"layers.{i}.downsample.norm.bias"] = random(4 * dim)
            state[f"layers.{i}.downsample.reduction.weight"] = random(2 * dim, 4 * dim)
    final = embed * 2 ** (len(depths) - 1)
    state["norm.weight"], state["norm.bias"] = random(final), random(final)
    state["head.fc.weight" if timm else "head.weight"] = random(10, final)
    return state
