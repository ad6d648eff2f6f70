"""PraNet's structure loss: boundary-weighted binary cross-entropy + weighted IoU, one-vs-rest per class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The code's constants: a 31-pixel box average, and boundary pixels weigh up to 1 + 5 = 6 times more.
WINDOW = 31
BOUNDARY_FACTOR = 5.0


def boundary_weights(
    mask: torch.Tensor, window: int = WINDOW, factor: float = BOUNDARY_FACTOR
) -> torch.Tensor:
    """1 + factor |box average of the mask - mask|: pixels near the mask's boundary weigh more.

    The box average pads with zeros and counts them (PyTorch's default, as the code), so foreground that
    touches the image border also weighs more there.

    Args:
        mask: binary masks (B, C, *spatial), 2D or 3D, float.
        window: edge of the averaging box in pixels (odd).
        factor: extra weight of a pixel whose window is half foreground, half background (x 2).
    """
    return 1 + factor * (box_mean(mask, window) - mask).abs()


def box_mean(values: torch.Tensor, window: int) -> torch.Tensor:
    """avg_pool(window, stride 1, zero padding counted) as one 1D average per spatial axis.

    Because the zero padding is counted, every window divides by window^n and the box average separates
    into 1D averages: 2 x 31 instead of 31^2 reads per pixel in 2D, the same values up to float rounding.
    """
    dims = values.ndim - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    with torch.no_grad():
        for axis in range(dims):
            kernel = [1] * dims
            kernel[axis] = window
            padding = [0] * dims
            padding[axis] = window // 2
            values = pool(values, tuple(kernel), stride=1, padding=tuple(padding))
    return values


def binary_structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted BCE + weighted IoU of sigmoid logits against binary masks, per sample and channel (B, C).

    wbce = sum(w * bce) / sum(w) with the binary cross-entropy of every pixel; wiou = 1 - (sum(w p m) + 1) /
    (sum(w (p + m)) - sum(w p m) + 1) with p = sigmoid(logits), sums over the spatial axes. The official
    code (MyTrain.py) passes ``reduce='none'`` to binary_cross_entropy_with_logits; that deprecated flag
    takes a boolean, so the string means "reduce" and its BCE is the plain mean over every pixel of the
    batch, with the weights cancelling out. medattn applies the weights per pixel, as the paper describes.
    """
    axes = tuple(range(2, logits.ndim))
    weights = boundary_weights(mask)
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    weighted_bce = (weights * bce).sum(axes) / weights.sum(axes)
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * mask * weights).sum(axes)
    union = ((probabilities + mask) * weights).sum(axes)
    weighted_iou = 1 - (intersection + 1) / (union - intersection + 1)
    return weighted_bce + weighted_iou


def one_vs_rest_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary logits of each foreground class against all others, (B, max(K - 1, 1), *spatial).

    K = 1: the logits are already one sigmoid logit. K >= 2: for class c, logit_c - logsumexp of the other
    classes' logits, whose sigmoid is exactly softmax(logits)[c]; for K = 2 that is logits[1] - logits[0].
    """
    classes = logits.shape[1]
    if classes == 1:
        return logits
    binary = []
    for c in range(1, classes):
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
        binary.append(logits[:, c] - torch.logsumexp(others, dim=1))
    return torch.stack(binary, dim=1)


class StructureLoss(nn.Module):
    """PraNet's structure loss (Fan et al. 2020) for medattn's logits and integer label maps.

    Called with logits (B, K, *spatial) and labels (B, 1, *spatial) holding 0..K-1 (0/1 for K = 1). Each
    foreground class c becomes a binary problem: mask = (label == c) against `one_vs_rest_logits`, so the
    loss sees the probabilities the pipelines compute by softmax (or sigmoid for K = 1).
    `binary_structure_loss` is averaged over samples and foreground classes; for K <= 2 it is the code's
    loss with per-pixel weights. Computed in float32.

    Args:
        num_classes: K, the logit channels (background included; 1 = one sigmoid logit).
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(1, max(self.num_classes, 2), device=target.device)
        shape = (1, -1) + (1,) * (target.ndim - 2)
        masks = (target == classes.view(shape)).float()
        return binary_structure_loss(one_vs_rest_logits(logits.float()), masks).mean()
