"""Segmentation losses: Dice + cross-entropy, the papers' own losses, and the deep-supervision wrapper.

Example:
    >>> from medattn.losses import DeepSupervisionLoss, create_loss
    >>> loss = DeepSupervisionLoss(create_loss("dice_ce", num_classes=2))
"""

from medattn.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights, resize_labels
from medattn.losses.dice_ce import LabelLoss, available_losses, create_loss
from medattn.losses.structure import StructureLoss

__all__ = [
    "DeepSupervisionLoss",
    "LabelLoss",
    "StructureLoss",
    "available_losses",
    "create_loss",
    "deep_supervision_weights",
    "resize_labels",
]
