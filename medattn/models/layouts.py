"""The official layouts of pretrained weights: how each checkpoint's key names map onto medattn's modules.

One `Layout` per official layout: torchvision's ResNet/ResNeXt (msga, ccsam's CNN, pranet's ResNet
backbone), Res2Net-50 v1b as in the PraNet code (pranet's backbone), the full PraNet checkpoint
(PraNet-19.pth onto the whole pranet), Microsoft's and timm's Swin (hbformer's encoder), and medattn's own
state dicts. `medattn.models.backbones` matches and loads files through them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

Rename = Callable[[Collection[str]], dict[str, str | None]]


@dataclass(frozen=True)
class Layout:
    """How a checkpoint's keys map onto a module.

    Attributes:
        name: shown in reports, e.g. "torchvision ResNet".
        rename: every key of the file -> the module's key, or None for a part the network lacks on purpose
            (an ImageNet classifier, a stage it does not use, a buffer it computes).
        covers: module key prefixes the file provides; other parts keep their initial weights and are not
            reported missing (HBFormer's conv stem beside the Swin). Empty: the whole module.
        optional: module key prefixes the file may lack (SAM hybrids' adapters beside a SAM checkpoint).
        stem: the module key of the first convolution's weight, whose input channels are fitted to the
            network's (ImageNet weights take 3).
        zero_biases: module key endings of conv biases the official layout lacks (a bias-free conv equals
            one with zero bias); set to zero when the file has the matching weight.
    """

    name: str
    rename: Rename
    covers: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    stem: str | None = None
    zero_biases: tuple[str, ...] = ()


def own_layout(prefix: str) -> Layout:
    """A medattn state dict of the same network: keys under `prefix` taken as they are, the rest unused."""

    def rename(keys: Collection[str]) -> dict[str, str | None]:
        return {key: key[len(prefix) :] if key.startswith(prefix) else None for key in keys}

    return Layout("medattn", rename)


# --- torchvision ResNet -----------------------------------------------------------------------------------


def torchvision_resnet(stages: str = "layers", count: int = 4) -> Layout:
    """torchvision's ResNet/ResNeXt (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``) onto an encoder
    with a ``stem`` Sequential (conv, norm, ...) and its stages in a ModuleList named `stages`.

    Args:
        stages: the name of the encoder's stage list ("layers" in `ResNetEncoder`, "stages" in PraNet's).
        count: stages the encoder has; the file's deeper stages are unused (ccsam stops at 1/16).
    """

    def rename(keys: Collection[str]) -> dict[str, str | None]:
        names: dict[str, str | None] = {}
        for key in keys:
            head, _, rest = key.partition(".")
            layer = re.fullmatch(r"layer(\d)", head)
            if head in ("conv1", "bn1"):
                names[key] = f"stem.{0 if head == 'conv1' else 1}.{rest}"
            elif layer and int(layer.group(1)) <= count:
                names[key] = f"{stages}.{int(layer.group(1)) - 1}.{rest}"
            else:
                names[key] = None  # the ImageNet classifier (fc) and stages the encoder does not have
        return names

    return Layout("torchvision ResNet", rename, stem="stem.0.weight", zero_biases=("downsample.0.bias",))


# --- Res2Net-50 v1b (PraNet's backbone) and the official PraNet checkpoint ---------------------------------

_RES2NET_STEM = {
    "conv1.0": "stem.0.conv",
    "conv1.1": "stem.0.adn.N",
    "conv1.3": "stem.1.conv",
    "conv1.4": "stem.1.adn.N",
    "conv1.6": "stem.2.conv",
    "bn1": "stem.2.adn.N",
}
_RES2NET_BLOCK = {
    "conv1": "reduce.conv",
    "bn1": "reduce.adn.N",
    "conv3": "expand.conv",
    "bn3": "expand.adn.N",
    "downsample.1": "shortcut.1.conv",
    "downsample.2": "shortcut.1.adn.N",
}


def _split(key: str) -> tuple[str, str]:
    """(module path, tensor name) of a state-dict key."""
    module, _, tensor = key.rpartition(".")
    return module, tensor


def _res2net_name(key: str) -> str | None:
    module, tensor = _split(key)
    if module in _RES2NET_STEM:
        return f"{_RES2NET_STEM[module]}.{tensor}"
    block = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", module)
    if block is None:
        return None  # fc: the ImageNet classifier
    stage, index, part = int(block.group(1)) - 1, block.group(2), block.group(3)
    split = re.fullmatch(r"(convs|bns)\.(\d+)", part)
    if split:
        ours = f"convs.{split.group(2)}.{'conv' if split.group(1) == 'convs' else 'adn.N'}"
    else:
        ours = _RES2NET_BLOCK.get(part, part)
    return f"stages.{stage}.{index}.{ours}.{tensor}"


RES2NET_V1B = Layout(
    "Res2Net-50 v1b (PraNet code)",
    lambda keys: {key: _res2net_name(key) for key in keys},
    stem="stem.0.conv.weight",
)


def _basic_conv(module: str) -> str:
    """PraNet's BasicConv2d (``conv``, ``bn``) as medattn's `conv_norm` (``conv``, ``adn.N``)."""
    return re.sub(r"(^|\.)bn$", r"\1adn.N", module)


_AGGREGATION = {
    "conv_upsample1": "up_coarse.0",
    "conv_upsample2": "up_coarse.1",
    "conv_upsample3": "up_coarse.2",
    "conv_upsample4": "up_coarse.3",
    "conv_upsample5": "up_pair",
    "conv_concat2": "concat_middle",
    "conv_concat3": "concat_fine",
    "conv4": "out.0",
    "conv5": "out.1",
}
_RFB_LEVELS = {"rfb2_1": 0, "rfb3_1": 1, "rfb4_1": 2}  # features at 1/8, 1/16, 1/32
_RA_STAGES = {"4": 0, "3": 1, "2": 2}  # reverse attention at 1/32, 1/16, 1/8


def _pranet_name(key: str) -> str | None:
    if key.startswith("resnet."):
        name = _res2net_name(key[len("resnet.") :])
        return None if name is None else f"backbone.{name}"
    module, tensor = _split(key)
    head, _, rest = module.partition(".")
    if head in _RFB_LEVELS:
        branch = re.fullmatch(r"branch(\d)\.(\d+)\.(conv|bn)", rest)
        if branch:
            index, step, part = branch.groups()
            inner = "" if index == "0" else f".{step}"
            rest = f"branches.{index}{inner}.{part}"
        rest = rest.replace("conv_cat.", "fuse.").replace("conv_res.", "residual.")
        return f"rfb.{_RFB_LEVELS[head]}.{_basic_conv(rest)}.{tensor}"
    if head == "agg1":
        part, _, inner = rest.partition(".")
        ours = _AGGREGATION.get(part)
        return (
            None if ours is None else f"decoder.{_basic_conv('.'.join(filter(None, [ours, inner])))}.{tensor}"
        )
    stage = re.fullmatch(r"ra(\d)_conv(\d)", head)
    if stage:
        index, step = _RA_STAGES[stage.group(1)], int(stage.group(2)) - 1
        return f"stages.{index}.convs.{step}.{_basic_conv(rest)}.{tensor}"
    return None


PRANET_OFFICIAL = Layout(
    "PraNet (official checkpoint, e.g. PraNet-19.pth)",
    lambda keys: {key: _pranet_name(key) for key in keys},
    stem="backbone.stem.0.conv.weight",
)


# --- Swin-T (Microsoft's code and timm) --------------------------------------------------------------------


def _swin_rename(keys: Collection[str]) -> dict[str, str | None]:
    # Microsoft's Swin merges patches at the end of stages 0-2 (layers.0-2.downsample); timm >= 0.9 at the
    # start of stages 1-3 (layers.1-3.downsample): the same three merges, numbered from the other end.
    timm = any(key.startswith("layers.3.downsample.") for key in keys)
    names: dict[str, str | None] = {}
    for key in keys:
        stage = re.fullmatch(r"layers\.(\d)\.(.+)", key)
        if key.startswith("patch_embed."):
            names[key] = key
        elif stage and stage.group(2).startswith("downsample."):
            merge = int(stage.group(1)) - (1 if timm else 0)
            names[key] = f"merges.{merge}.{stage.group(2)[len('downsample.') :]}"
        elif stage and not stage.group(2).endswith(("attn_mask", "relative_position_index")):
            rest = stage.group(2).replace("mlp.fc1.", "mlp.linear1.").replace("mlp.fc2.", "mlp.linear2.")
            names[key] = f"stages.{stage.group(1)}.{rest}"
        else:
            names[key] = None  # the final norm and classifier, masks and indices the network computes
    return names


SWIN = Layout(
    "Swin Transformer (Microsoft or timm)",
    _swin_rename,
    covers=("patch_embed.", "stages.", "merges."),
    stem="patch_embed.proj.weight",
)
