"""Pretrained backbones from local files: official checkpoints' key names mapped onto medattn's modules.

The papers fine-tune ImageNet backbones (PraNet a Res2Net-50 v1b, HBFormer a Swin-T, MSGA a ResNeXt, CC-SAM a
frozen CNN). medattn never downloads weights: ``backbone_weights="file.pth"`` names a local file in the
backbone's official layout (torchvision's ResNet, the Res2Net/PraNet code's, Microsoft's or timm's Swin),
or a medattn model.pt of the same network. A `Layout` (`medattn.models.layouts`) renames the file's keys
onto the module; `match_weights` compares names and shapes, fits what differs by construction (an RGB
stem for a one-channel image, a position-bias table for another window, a bias-free shortcut conv) and
reports every missing, unexpected and mis-shaped key. Files are read with ``weights_only=True``
(`medattn.weights`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import PackageError
from medattn.models.layouts import Layout, own_layout
from medattn.weights import KeyReport, read_state_dict

# Model options naming weight files a run starts from: a model package's model.pt holds those weights
# afterwards, and ccsam's `freeze_cnn=True` asks for such a file, so a package is rebuilt without them.
PRETRAINED_OPTIONS = ("checkpoint", "backbone_weights")
_STARTING_OPTIONS = (*PRETRAINED_OPTIONS, "freeze_cnn")

# Buffers a network computes itself (a file may lack them): batch-norm step counters, Swin's position index.
_DERIVED = ("num_batches_tracked", "relative_position_index")


def package_options(model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The options a trained network is rebuilt with from its package: without the weight files it started
    from (model.pt holds every weight) and the choices that only concern training from them."""
    return {key: value for key, value in model_kwargs.items() if key not in _STARTING_OPTIONS}


@dataclass(frozen=True)
class Backbone:
    """Where a model's pretrained backbone lives and in which official layout its weights come.

    Attributes:
        prefix: the backbone's key prefix in the model's state dict ("backbone.", "encoder.", "cnn.").
        layout: the official layout of ImageNet files for it.
        hint: what to change when a file does not fit (the options that set the backbone's shape).
    """

    prefix: str
    layout: Layout
    hint: str = ""


@dataclass
class Matched:
    """A file matched against a module: the report, and the file's tensors under the model's key names."""

    report: KeyReport
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    layout: str = ""


def match_weights(
    model_state: Mapping[str, torch.Tensor],
    file_state: Mapping[str, torch.Tensor],
    layout: Layout,
    prefix: str = "",
) -> Matched:
    """Map `file_state` onto the part of `model_state` under `prefix`, comparing names and shapes.

    Args:
        model_state: the model's state dict (tensors may live on the meta device).
        file_state: the checkpoint's tensors, keys in `layout`'s official names.
        layout: how the file's keys map onto the module's.
        prefix: the module's prefix in `model_state`.

    Returns:
        The report (missing and mis-shaped keys named as in the model, unexpected and unused ones as in the
        file) and the fitted tensors under the model's key names, ready for ``load_state_dict(strict=False)``.
    """
    module = {key[len(prefix) :]: value for key, value in model_state.items() if key.startswith(prefix)}
    if layout.covers:
        module = {key: value for key, value in module.items() if key.startswith(layout.covers)}
    names = layout.rename(list(file_state))
    report = KeyReport(unused=[key for key, name in names.items() if name is None])
    sources = {name: key for key, name in names.items() if name is not None}
    report.unexpected = [key for name, key in sources.items() if name not in module]
    matched = Matched(report, layout=layout.name)
    tables, zeros = [], []
    for name, target in module.items():
        if name not in sources:
            if name.endswith(_DERIVED) or (layout.optional and name.startswith(layout.optional)):
                continue
            weight = name[: -len("bias")] + "weight"
            if layout.zero_biases and name.endswith(layout.zero_biases) and weight in sources:
                matched.tensors[prefix + name] = torch.zeros(target.shape, dtype=target.dtype)
                zeros.append(prefix + name)
                continue
            report.missing.append(prefix + name)
            continue
        value = file_state[sources[name]]
        if name == layout.stem and _fits_stem(value, target):
            channels = target.shape[1]
            how = "summed into 1" if channels == 1 else f"repeated to {channels} and rescaled"
            report.adapted.append(
                f"{prefix + name}: the file's {value.shape[1]} input channels {how} (timm's adapt_input_conv)"
            )
            value = _fit_stem(value, channels)
        elif name.endswith("relative_position_bias_table") and _fits_table(value, target):
            value = _resize_table(value, target.shape[0])
            tables.append(prefix + name)
        if tuple(value.shape) != tuple(target.shape):
            report.mismatched.append((prefix + name, tuple(value.shape), tuple(target.shape)))
            continue
        matched.tensors[prefix + name] = value
        report.matched += 1
    if tables:
        report.adapted.append(
            f"{len(tables)} relative position bias table(s) resized bicubically to the network's window "
            "(as the official HBFormer code)"
        )
    if zeros:
        report.adapted.append(
            f"{len(zeros)} shortcut conv bias(es) set to zero (the official convs have none)"
        )
    return matched


def load_backbone(model: nn.Module, path: str | Path, backbone: Backbone) -> KeyReport:
    """Load a pretrained backbone from a local file into `model`, strictly, and say what was fitted.

    The file may be in the backbone's official layout or a medattn state dict of the same network (its
    backbone keys are taken); whichever matches more tensors is used.

    Raises:
        InputNotFoundError: no file at `path`.
        PackageError: naming the file: it is not a weights file, holds nothing of this backbone, or some
            keys are missing, unexpected or mis-shaped (listed, with the options that set the shape).
    """
    state, _ = read_state_dict(path)
    candidates = [backbone.layout, own_layout(backbone.prefix)]
    best = max(
        (match_weights(model.state_dict(), state, layout, backbone.prefix) for layout in candidates),
        key=lambda m: m.report.matched,
    )
    report = best.report
    if report.matched == 0 and not report.mismatched:
        first = ", ".join(list(state)[:3])
        raise PackageError(
            f"holds no tensor of a {backbone.layout.name} (its keys begin {first}); give a "
            f"{backbone.layout.name} state dict or a medattn model.pt of this network "
            "(`medattn models load-check FILE --model NAME` lists the differences)",
            path,
        )
    if not report.ok:
        hint = f"; {backbone.hint}" if backbone.hint else ""
        raise PackageError(
            f"does not fit the network's {best.layout} backbone: {report.summary(limit=4)}{hint}", path
        )
    model.load_state_dict(best.tensors, strict=False)
    return report


# --- fitting what differs by construction --------------------------------------------------------------


def _fits_stem(value: torch.Tensor, target: torch.Tensor) -> bool:
    same_filters = value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]
    return value.ndim == target.ndim and same_filters and value.shape[1] != target.shape[1]


def _fit_stem(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first conv's weight for `channels` input channels: summed over the file's for one channel (a grey
    image through RGB filters), else repeated and rescaled so the response to a constant image is kept."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(channels / weight.shape[1])
    return weight.repeat(1, repeats, *([1] * (weight.ndim - 2)))[:, :channels] * (weight.shape[1] / channels)


def _fits_table(value: torch.Tensor, target: torch.Tensor) -> bool:
    """Both are 2D Swin bias tables ((2w - 1)^2 rows, one column per head) for different windows."""
    square = all(math.isqrt(t.shape[0]) ** 2 == t.shape[0] for t in (value, target))
    return value.ndim == target.ndim == 2 and value.shape[1] == target.shape[1] and square


def _resize_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """A (L, heads) relative position bias table resized bicubically to `rows` = (2w - 1)^2 entries."""
    side, new = math.isqrt(table.shape[0]), math.isqrt(rows)
    grid = table.float().T.reshape(1, -1, side, side)
    resized = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return resized.reshape(-1, rows).T.to(table.dtype)


def layouts_for(model: nn.Module) -> Iterable[tuple[str, Layout]]:
    """The ways a file can fit `model`, as (prefix, layout): a medattn state dict of the whole network, a
    SAM/MedSAM checkpoint for the SAM family, the official full checkpoint and the pretrained backbone."""
    from medattn.models.sam import SAM
    from medattn.models.sam_fusion import added_prefixes

    whole = own_layout("")
    yield "", whole
    if isinstance(model, SAM) and type(model) is not SAM:  # a hybrid: SAM's parts plus its own
        yield "", replace(whole, name="SAM/MedSAM checkpoint", optional=tuple(added_prefixes(model)))
    official = getattr(model, "official_checkpoint", None)
    if official is not None:
        yield "", official
    backbone = getattr(model, "pretrained_backbone", None)
    if backbone is not None:
        yield backbone.prefix, backbone.layout


def best_match(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Matched:
    """`state` compared with `model` in every way it can fit (`layouts_for`): the match with the most tensors
    matched, then the fewest differences."""
    model_state = model.state_dict()
    matches = [match_weights(model_state, state, layout, prefix) for prefix, layout in layouts_for(model)]

    def rank(match: Matched) -> tuple[int, int]:
        report = match.report
        return report.matched, -(len(report.missing) + len(report.unexpected) + len(report.mismatched))

    return max(matches, key=rank)


def check_file(
    path: str | Path,
    model: str,
    spatial_dims: int = 2,
    in_channels: int = 3,
    out_channels: int = 2,
    **model_kwargs: Any,
) -> Matched:
    """Compare a weights file with a registered network without loading it (`medattn models load-check`).

    The network is built on the meta device (shapes only) where its builder allows and the file
    memory-mapped, so checking a 2.5 GB SAM ViT-H file costs neither its size nor the model's. The file
    may be a medattn model.pt, a SAM/MedSAM checkpoint (SAM family), an official full checkpoint
    (PraNet-19.pth) or a pretrained backbone in its official layout; the best fit is reported.

    Args:
        path: local weights file.
        model: registry name.
        spatial_dims, in_channels, out_channels: the network's (ImageNet and SAM files are 2D, 3 channels).
        **model_kwargs: the network's options; weight files among them are not loaded.

    Returns:
        The best match: its layout's name and the report (``stripped_prefix``: a ``module.`` prefix was
        removed; ``looks_like``: the SAM variant a SAM-family file has).

    Raises:
        InputNotFoundError, PackageError: no such file, or not a PyTorch state dict.
        ConfigError: unknown model or options.
    """
    from medattn.models.registry import create
    from medattn.models.sam import SAM
    from medattn.models.sam.variants import guess_variant

    state, stripped = read_state_dict(path)
    options = package_options(model_kwargs)
    try:
        with torch.device("meta"):
            network = create(model, spatial_dims, in_channels, out_channels, **options)
    except (RuntimeError, NotImplementedError):  # builders that read a tensor while building (MONAI's Swin)
        network = create(model, spatial_dims, in_channels, out_channels, **options)
    match = best_match(network, state)
    match.report.stripped_prefix = stripped
    if isinstance(network, SAM):
        match.report.looks_like = guess_variant(state)
    return match
