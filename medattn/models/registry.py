"""The model registry: families register a builder under a name; `create` builds one with checked options."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from medattn.errors import ConfigError
from medattn.models.base import SegmentationModel

Builder = Callable[..., SegmentationModel]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model family.

    Attributes:
        name: registry name, e.g. ``"agunet"`` or ``"monai.unet"``.
        builder: class or function called as ``builder(spatial_dims=, in_channels=, out_channels=, **kw)``.
        description: one line for ``medattn models``.
        spatial_dims: the dimensionalities the family supports.
        deep_supervision: whether the family can return a list of deep-supervision outputs.
        tiny: keyword arguments of a very small configuration, for tests and smoke runs on CPU.
        tiny_size: edge length (voxels) of an input the tiny configuration accepts, in 2D and 3D.
        train_options: options ``medattn train`` uses on every device unless the user sets them: where a
            measured change from the paper's network trains better (the class defaults stay the paper's,
            so packages and scripts that name no option keep the network they had).
        cpu_options: options ``medattn train`` uses on a CPU unless the user sets them (lighter networks,
            so a CPU time budget buys enough steps); on top of `train_options`.
        loss: the loss ``medattn train`` uses unless ``--loss`` is given (the paper's, where it differs).
        head_weights: deep-supervision weights, finest output first; None = nnU-Net's halving per level
            (for a pyramid of coarser outputs; heads that all predict at full resolution weigh equally).
        multi_scale: ``medattn train`` trains every batch at 0.75, 1 and 1.25 of the patch size unless the
            user says otherwise (PraNet's training; `medattn.training.multiscale`).
    """

    name: str
    builder: Builder
    description: str
    spatial_dims: tuple[int, ...] = (2, 3)
    deep_supervision: bool = False
    tiny: Mapping[str, Any] = field(default_factory=dict)
    tiny_size: int = 16
    train_options: Mapping[str, Any] = field(default_factory=dict)
    cpu_options: Mapping[str, Any] = field(default_factory=dict)
    loss: str = "dice_ce"
    head_weights: tuple[float, ...] | None = None
    multi_scale: bool = False

    def accepted_options(self) -> list[str]:
        """Keyword options the builder takes besides spatial_dims/in_channels/out_channels."""
        fixed = {"self", "spatial_dims", "in_channels", "out_channels"}
        params = inspect.signature(self.builder).parameters.values()
        return [p.name for p in params if p.name not in fixed and p.kind is not p.VAR_KEYWORD]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    description: str,
    spatial_dims: tuple[int, ...] = (2, 3),
    deep_supervision: bool = False,
    tiny: Mapping[str, Any] | None = None,
    tiny_size: int = 16,
    train_options: Mapping[str, Any] | None = None,
    cpu_options: Mapping[str, Any] | None = None,
    loss: str = "dice_ce",
    head_weights: tuple[float, ...] | None = None,
    multi_scale: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator that adds a model class or builder function to the registry under `name`.

    Args:
        name: unique registry name.
        description: one line shown by ``medattn models``.
        spatial_dims: dimensionalities the family supports.
        deep_supervision: whether it accepts ``deep_supervision=True``.
        tiny: keyword arguments of a tiny configuration (tests build every model with it).
        tiny_size: edge length of an input the tiny configuration accepts.
        train_options, cpu_options, loss, head_weights, multi_scale: training defaults (see `ModelSpec`).

    Returns:
        The decorator; it returns the builder unchanged.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ConfigError(
                f"model name {name!r} is registered twice ({_REGISTRY[name].builder} and {builder})"
            )
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            description=description,
            spatial_dims=tuple(spatial_dims),
            deep_supervision=deep_supervision,
            tiny=MappingProxyType(dict(tiny or {})),
            tiny_size=tiny_size,
            train_options=MappingProxyType(dict(train_options or {})),
            cpu_options=MappingProxyType(dict(cpu_options or {})),
            loss=loss,
            head_weights=None if head_weights is None else tuple(head_weights),
            multi_scale=multi_scale,
        )
        return builder

    return decorator


def available() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> ModelSpec:
    """The registry entry for `name`; an unknown name raises ConfigError suggesting the closest names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}.{hint} Available: {', '.join(available())}.")
    return _REGISTRY[name]


def create(
    name: str, spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any
) -> SegmentationModel:
    """Build a registered model.

    Args:
        name: registry name (see `available()`).
        spatial_dims: 2 or 3.
        in_channels: image channels (e.g. 1 for a single MRI sequence, 4 for BraTS).
        out_channels: classes including background; the model returns this many logit channels.
        **kwargs: family options (see each class). ``deep_supervision=False`` is accepted by every model;
            ``True`` only by families that have deep-supervision heads.

    Returns:
        The model; its ``init_kwargs`` holds everything needed to build it again (for model packages).

    Raises:
        ConfigError: unknown name, unsupported dimensionality or deep supervision, or an unknown option.

    Example:
        >>> model = create("agunet", spatial_dims=3, in_channels=1, out_channels=2, base_channels=8)
    """
    spec = describe(name)
    if spatial_dims not in spec.spatial_dims:
        raise ConfigError(f"model {name!r} supports spatial_dims {spec.spatial_dims}, not {spatial_dims}")
    if not spec.deep_supervision and kwargs.pop("deep_supervision", False):
        raise ConfigError(f"model {name!r} has no deep-supervision heads; use deep_supervision=False")
    unknown = sorted(set(kwargs) - set(spec.accepted_options()))
    if unknown:
        raise ConfigError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(spec.accepted_options())}"
        )
    model = spec.builder(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs
    )
    model.registry_name = name
    model.init_kwargs = {
        "name": name,
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": out_channels,
        **kwargs,
    }
    return model


def default_parameter_count(
    name: str, spatial_dims: int, in_channels: int = 1, out_channels: int = 2, trainable_only: bool = False
) -> int:
    """Parameters of a model at its default configuration, counted without allocating weights where possible.

    ``trainable_only`` counts only those that train (SAM hybrids keep their pretrained encoder frozen).

    The model is built on PyTorch's "meta" device (shapes only); builders that need real values while
    building (MONAI's SwinUNETR reads a tensor during construction) are built on the CPU instead.
    """
    try:
        with torch.device("meta"):
            model = create(name, spatial_dims, in_channels, out_channels)
    except (RuntimeError, NotImplementedError):
        model = create(name, spatial_dims, in_channels, out_channels)
    return model.parameter_count(trainable_only)


def network_defaults(model: str, device_type: str, pretrained_backbone: bool = False) -> dict[str, Any]:
    """Options a network gets on `device_type` ("cpu" or "cuda") unless the user sets them: the registry's
    `train_options`, and on a CPU its `cpu_options` over them (lighter networks, so a time budget buys
    enough steps), except with a `pretrained_backbone` (``backbone_weights``), whose file fits only the
    full-size backbone."""
    spec = describe(model)
    lighter = device_type == "cpu" and not pretrained_backbone
    return {**spec.train_options, **(spec.cpu_options if lighter else {})}
