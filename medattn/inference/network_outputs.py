"""A segmentation network's forward output as prediction uses it: class probabilities from logits, and
the mean of its attention maps (the overlay `--save-attention` writes). Sliding windows and the SAM family's
whole-image path share them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medattn.errors import ConfigError


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, ...) probabilities: softmax over K >= 2 classes, [1 - p, p] for one sigmoid logit.

    Networks with a single output channel (SAM's mask decoder, PraNet with out_channels=1) predict one
    foreground logit; two channels let the rest of the pipeline treat them as any 2-class network.
    """
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
        return torch.cat([1 - foreground, foreground], dim=1)
    return torch.softmax(logits, dim=1)


def mean_attention_map(network: nn.Module, size: Sequence[int], mode: str = "nearest-exact") -> torch.Tensor:
    """The mean of `network.attention_maps()` after a forward pass, each map resized to `size` (B, 1, *size).

    Raises:
        ConfigError: the network returned no attention maps.
    """
    maps = network.attention_maps()
    if not maps:
        raise ConfigError(
            f"{type(network).__name__} exposes no attention maps (attention_maps() returned none): "
            "predict without attention output (--save-attention) or use a model with attention gates"
        )
    size = tuple(size)
    resized = [
        m.float()
        if tuple(m.shape[2:]) == size
        else nn.functional.interpolate(m.float(), size=size, mode=mode)
        for m in maps.values()
    ]
    return torch.stack(resized).mean(dim=0)
