"""The base class every medattn network shares: input checks, output contract, attention maps, freezing."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import ConfigError, GeometryError

# Name of the attribute where attention modules leave the last forward's map (detached, shape (B, 1, *grid)).
ATTENTION_ATTRIBUTE = "last_attention_map"


def compiled(network: nn.Module, compile: bool | str | Callable) -> nn.Module:
    """`network` through ``torch.compile`` when `compile` asks for it (True: the inductor backend; or a
    backend, by name or as a callable), else `network` itself. One input shape only (``dynamic=False``):
    callers keep their batches the same shape, so it compiles once."""
    if not compile:
        return network
    return torch.compile(network, backend="inductor" if compile is True else compile, dynamic=False)


def record_attention(module: nn.Module, coefficients: torch.Tensor) -> None:
    """Keep `coefficients` (B, 1, *grid) on `module` so `SegmentationModel.attention_maps()` can return it."""
    # A plain instance attribute, not a buffer: it never enters the state dict, and `forward` can clear it
    # by dictionary look-ups instead of nn.Module's attribute fallback.
    module.__dict__[ATTENTION_ATTRIBUTE] = coefficients.detach()


def normalised_summary(values: torch.Tensor) -> torch.Tensor:
    """Channel-mean of |values| scaled per sample to [0, 1]: a (B, 1, *grid) summary to display."""
    summary = values.detach().abs().mean(dim=1, keepdim=True).float()
    peak = summary.flatten(1).amax(dim=1).clamp_min(1e-12)
    return summary / peak.view(-1, *([1] * (summary.ndim - 1)))


class SegmentationModel(nn.Module, ABC):
    """A segmentation network with medattn's contract.

    - ``forward(x)`` checks `x` (channels, dimensionality, size divisibility) and raises GeometryError with
      the fix, instead of a shape error deep inside the network.
    - Eval mode (or ``deep_supervision=False``) returns logits (B, out_channels, *spatial). Train mode with
      ``deep_supervision=True`` returns a list of logits, finest first; coarser outputs keep their own
      resolution unless the family documents otherwise (the loss resizes targets, not the outputs).
    - ``attention_maps()`` returns the last forward's attention coefficients or summaries, (B, 1, *spatial)
      each, resampled to the input grid; an empty dict for networks without attention.
    - ``auxiliary_loss()`` returns extra loss terms the family trains with (MSGA), else None.

    Subclasses implement `_forward` and set `size_divisor` (inputs must be a multiple of it per axis) and,
    where the input size is fixed (UNETR), `fixed_input_size`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes including background.
        deep_supervision: return every decoder level's logits in train mode.
        size_divisor: each spatial size of the input must be a multiple of this (2 ** number of poolings).
        fixed_input_size: the only input size accepted, for networks with fixed position embeddings.
    """

    #: Parameter-name prefixes of the encoder, used by `freeze_encoder`; empty where there is no clean split.
    encoder_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        deep_supervision: bool = False,
        size_divisor: int = 1,
        fixed_input_size: tuple[int, ...] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.size_divisor = size_divisor
        self.fixed_input_size = fixed_input_size
        self.registry_name = type(self).__name__
        self.init_kwargs: dict[str, Any] = {}
        #: Unweighted extra loss terms of the last forward (families with auxiliary losses fill it).
        self.auxiliary_terms: dict[str, torch.Tensor] = {}
        self._input_size: tuple[int, ...] = ()

    def __getstate__(self) -> dict:
        """Copies and pickles leave out the last forward's loss terms: they hold the autograd graph, which
        `copy.deepcopy` refuses to copy."""
        state = super().__getstate__()
        state["auxiliary_terms"] = {}
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Check `x`, forget the previous attention maps, and run the network (see the class docstring)."""
        self.check_input(x)
        self._input_size = tuple(x.shape[2:])
        self.auxiliary_terms = {}
        for module in self.modules():
            module.__dict__.pop(ATTENTION_ATTRIBUTE, None)
        return self._forward(x)

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The network itself, on an input that passed `check_input`."""

    def check_input(self, x: torch.Tensor) -> None:
        """Raise GeometryError naming the problem and the fix if `x` cannot go through this network."""
        name = self.registry_name
        if x.ndim != self.spatial_dims + 2:
            raise GeometryError(
                f"{name} is built for {self.spatial_dims}D and expects a (batch, channel, "
                f"{self.spatial_dims} spatial axes) tensor; got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise GeometryError(
                f"{name} is built for {self.in_channels} input channel(s) but got {x.shape[1]}; "
                f"build it with in_channels={x.shape[1]} or pass the matching image channels"
            )
        size = tuple(x.shape[2:])
        if self.fixed_input_size is not None and size != tuple(self.fixed_input_size):
            raise GeometryError(
                f"{name} only accepts inputs of exactly {tuple(self.fixed_input_size)} voxels (img_size), "
                f"not {size}: crop or pad, or use sliding-window inference with that patch size"
            )
        if any(s % self.size_divisor for s in size):
            valid = tuple(math.ceil(s / self.size_divisor) * self.size_divisor for s in size)
            raise GeometryError(
                f"{name} needs every spatial size to be a multiple of {self.size_divisor} (it downsamples "
                f"the grid by that factor); got {size}: pad to e.g. {valid} voxels or use a patch size "
                f"that is a multiple of {self.size_divisor}"
            )

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The last forward's attention maps, name -> (B, 1, *input spatial), resampled to the input grid.

        Names are the qualified names of the modules that made them (e.g. ``decoder.0.gate`` for the gate on
        the finest skip). Gate coefficients lie in [0, 1]; attention summaries are scaled to [0, 1] per
        sample.
        Empty before the first forward and for networks without attention.
        """
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        maps = {}
        for name, module in self.named_modules():
            coefficients = module.__dict__.get(ATTENTION_ATTRIBUTE)
            if coefficients is None:
                continue
            if tuple(coefficients.shape[2:]) != self._input_size:
                coefficients = F.interpolate(
                    coefficients, size=self._input_size, mode=mode, align_corners=False
                )
            maps[name] = coefficients
        return maps

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The last forward's extra training loss (add it to the segmentation loss), or None."""
        return None

    def parameter_count(self, trainable_only: bool = False) -> int:
        """Number of parameters (elements), all or only those that require gradients."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def freeze(self, *prefixes: str) -> int:
        """Stop gradients for parameters under the named submodules (all parameters when none are named).

        Args:
            *prefixes: qualified submodule names, e.g. ``"encoder"`` or ``"decoder.0"``.

        Returns:
            How many parameter tensors were frozen.

        Raises:
            ConfigError: a prefix matches no parameter (a typo would otherwise freeze nothing silently).
        """
        names = [name for name, _ in self.named_parameters()]
        for prefix in prefixes:
            if not any(n == prefix or n.startswith(prefix + ".") for n in names):
                children = ", ".join(name for name, _ in self.named_children())
                raise ConfigError(
                    f"{self.registry_name} has no parameters under {prefix!r}; top level: {children}"
                )
        frozen = 0
        for name, parameter in self.named_parameters():
            if not prefixes or any(name == p or name.startswith(p + ".") for p in prefixes):
                parameter.requires_grad_(False)
                frozen += 1
        return frozen

    def freeze_encoder(self) -> int:
        """Freeze the encoder to fine-tune a pretrained network on little data; returns the tensors frozen."""
        if not self.encoder_prefixes:
            raise ConfigError(
                f"{self.registry_name} has no separable encoder; use freeze(prefix) with module names"
            )
        return self.freeze(*self.encoder_prefixes)

    def unfreeze(self) -> None:
        """Let every parameter train again."""
        for parameter in self.parameters():
            parameter.requires_grad_(True)
