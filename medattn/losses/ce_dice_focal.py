"""HBFormer's training loss: weighted cross-entropy + soft Dice + focal loss on integer label maps.

As the authors' code [lzeeorno/HBFormer, utils.py CeDiceFocalLoss, configs/config_setting_synapse.py]:
loss = 0.33 CE + 0.33 Dice + 0.34 focal, where
- CE is the mean cross-entropy over voxels;
- Dice is their nDiceLoss: per class k (background included) 1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)
  with softmax probabilities p, one-hot labels g, sums over the whole batch and s = 1e-5, averaged over the
  K classes;
- focal is mean over voxels of (1 - p_t)^gamma * CE with gamma 2 and no class weights (their alpha of 1 is
  only applied on the ignore-index path, which medattn's labels never take).
Their LiTS and bladder configurations reweigh the three terms (0.3/0.4/0.3, 0.4/0.5/0.6); the Synapse and
ACDC ones use 0.33/0.33/0.34, medattn's default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from medattn.errors import ConfigError


class CEDiceFocalLoss(nn.Module):
    """weights[0] CE + weights[1] Dice + weights[2] focal (see the module docstring).

    Called as ``loss(logits, labels)`` with logits (B, K, *spatial) and class indices (B, 1, *spatial);
    `create_loss("ce_dice_focal", ...)` wraps it in `LabelLoss` (shape checks, float32).

    Args:
        weights: factors on cross-entropy, Dice and focal loss.
        gamma: the focal loss's focusing exponent.
    """

    def __init__(self, weights: Sequence[float] = (0.33, 0.33, 0.34), gamma: float = 2.0):
        super().__init__()
        if len(weights) != 3 or any(w < 0 for w in weights) or gamma < 0:
            raise ConfigError(
                f"ce_dice_focal takes three non-negative weights (CE, Dice, focal) and gamma >= 0; got "
                f"{tuple(weights)} and {gamma}"
            )
        self.weights = tuple(float(w) for w in weights)
        self.gamma = float(gamma)
        self.dice = DiceLoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
            batch=True,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar); `target` holds class indices as any number dtype."""
        voxel_ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
        focal = (1 - torch.exp(-voxel_ce)).pow(self.gamma) * voxel_ce
        ce_weight, dice_weight, focal_weight = self.weights
        return (
            ce_weight * voxel_ce.mean()
            + dice_weight * self.dice(logits, target)
            + focal_weight * focal.mean()
        )
