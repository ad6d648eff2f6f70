"""Segmentation losses on integer label maps: Dice + cross-entropy, and the AGUNet paper's soft Dice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from medattn.errors import ConfigError
from medattn.losses.blob import BlobLoss
from medattn.losses.ce_dice_focal import CEDiceFocalLoss
from medattn.losses.focal_region import FocalRegionLoss, RegionSource
from medattn.losses.structure import StructureLoss

LOSSES = ("dice_ce", "dice_ce_blob", "dice_paper", "structure", "focal_region", "ce_dice_focal")


def available_losses() -> list[str]:
    """Names `create_loss` accepts."""
    return list(LOSSES)


class LabelLoss(nn.Module):
    """A MONAI loss fed with logits (B, K, *spatial) and an integer label map (B, 1, *spatial).

    It checks the shapes against `num_classes` (so a network built for the wrong number of labels fails with
    a message rather than a one-hot error), unwraps MetaTensors (their per-op metadata bookkeeping costs
    time in every training step) and computes in float32, so sums over a whole 3D batch cannot overflow
    under fp16 autocast.

    Args:
        criterion: the MONAI loss, built with ``to_onehot_y=True`` and ``softmax=True``.
        num_classes: channels the logits must have (background included).
        name: registry name, for messages.
    """

    def __init__(self, criterion: nn.Module, num_classes: int, name: str):
        super().__init__()
        self.criterion = criterion
        self.num_classes = num_classes
        self.name = name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one output; `target` holds class indices 0..K-1 as any number dtype."""
        if isinstance(logits, MetaTensor):
            logits = logits.as_tensor()
        if isinstance(target, MetaTensor):
            target = target.as_tensor()
        if logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"the {self.name} loss is set up for {self.num_classes} classes but the network returns "
                f"{logits.shape[1]} channels; build both with the same number of labels (background included)"
            )
        if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:]:
            raise ConfigError(
                f"the {self.name} loss needs a label map of shape (B, 1, *spatial) matching the logits "
                f"{tuple(logits.shape)}; got {tuple(target.shape)}"
            )
        return self.criterion(logits.float(), target)


def create_loss(
    name: str = "dice_ce",
    *,
    num_classes: int,
    include_background: bool = False,
    batch_dice: bool = True,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    lesion_values: Sequence[int] = (),
    regions: RegionSource | None = None,
) -> nn.Module:
    """Build a segmentation loss by name.

    - ``"dice_ce"``: MONAI `DiceCELoss` = soft Dice (softmax, smoothing 1e-5 as nnU-Net) + cross-entropy,
      weighted 1:1 as nnU-Net's DC_and_CE. Cross-entropy always covers every class, background included;
      `include_background` applies to the Dice term only, which by default averages the foreground classes
      (nnU-Net's ``do_bg=False``).
    - ``"dice_ce_blob"``: ``dice_ce`` plus blob loss over the `lesion_values` labels (Kofler et al. 2023,
      `medattn.losses.blob.BlobLoss`): every lesion's own soft Dice, averaged over lesions, so small
      lesions weigh as much as large ones. Without lesion values it is ``dice_ce``.
    - ``"dice_paper"``: the AGUNet paper's loss (Bouget et al. 2021, read from shared/MODELS.md): 1 - mean
      over foreground classes of (2 sum(p g) + 1) / (sum(p^2) + sum(g^2) + 1), i.e. MONAI `DiceLoss` with
      ``squared_pred=True`` and smoothing 1; `lambda_*` do not apply.
    - ``"structure"``: PraNet's boundary-weighted BCE + weighted IoU, one-vs-rest per foreground class
      (`medattn.losses.structure.StructureLoss`); num_classes=1 means one sigmoid logit. No options apply.
    - ``"focal_region"``: cross-entropy weighted up in regions of high mean loss (RAT's focal region loss,
      `medattn.losses.focal_region.FocalRegionLoss`, beta 1) over the network's own regions (`regions`),
      else over 8-voxel grid cubes. Only `regions` applies.
    - ``"ce_dice_focal"``: HBFormer's 0.33 cross-entropy + 0.33 soft Dice (all classes, squared
      denominators, batch sums) + 0.34 focal loss (gamma 2), `medattn.losses.ce_dice_focal.CEDiceFocalLoss`.
      No options apply.

    Batch Dice (``batch_dice=True``, the default for both) sums intersections and volumes over the whole
    batch before dividing, as a Keras loss that flattens the batch does and as nnU-Net's ``batch_dice``
    option. With small lesions many patches hold no foreground; per-sample Dice is then decided by a handful
    of false-positive voxels (or by the smoothing alone), which makes the gradient noisy, while batch Dice
    stays defined as long as one patch of the batch has the class. Under DDP the sums are per process.

    Args:
        name: one of `available_losses()`.
        num_classes: classes including background (the network's out_channels), at least 2.
        include_background: also average the Dice over the background channel.
        batch_dice: compute Dice over the whole batch (True) or per sample, then average (False).
        lambda_dice: weight of the Dice term of ``dice_ce``.
        lambda_ce: weight of the cross-entropy term of ``dice_ce``.
        lesion_values: the labels ``dice_ce_blob`` scores lesion by lesion.
        regions: for ``focal_region``, the network's region map of its last forward
            (`medattn.models.ratunet.RATUNet.loss_regions`).

    Returns:
        A module called as ``loss(logits, labels)`` with logits (B, K, *spatial) and labels (B, 1, *spatial).

    Raises:
        ConfigError: unknown name, or fewer than 2 classes (medattn's networks end in a softmax).
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}")
    if name == "structure":  # binary per class; one sigmoid logit (num_classes=1) is allowed
        return LabelLoss(StructureLoss(num_classes), num_classes=num_classes, name=name)
    if num_classes < 2:
        raise ConfigError(
            f"the {name} loss needs num_classes >= 2 (background + at least one label), got {num_classes}"
        )
    if name == "ce_dice_focal":
        return LabelLoss(CEDiceFocalLoss(), num_classes=num_classes, name=name)
    if name == "focal_region":
        return LabelLoss(FocalRegionLoss(regions=regions), num_classes=num_classes, name=name)
    criterion: nn.Module
    common: dict[str, Any] = dict(
        include_background=include_background, to_onehot_y=True, softmax=True, batch=batch_dice
    )
    if name in ("dice_ce", "dice_ce_blob"):
        criterion = DiceCELoss(**common, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
    else:
        criterion = DiceLoss(**common, squared_pred=True, smooth_nr=1.0, smooth_dr=1.0)
    loss = LabelLoss(criterion, num_classes=num_classes, name=name)
    return BlobLoss(loss, lesion_values) if name == "dice_ce_blob" else loss
