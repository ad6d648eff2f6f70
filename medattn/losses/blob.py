"""Blob loss: a Dice term for every lesion on its own, so a 0.3 mL lesion weighs as much as a 20 mL one.

F. Kofler et al., "blob loss: instance imbalance aware loss functions for semantic segmentation", IPMI
2023 (arXiv:2205.08209). A global Dice is decided by the large lesions of a batch: missing a lesion of 30
voxels beside one of 3000 costs one per cent of it. Blob loss adds, for each connected component (blob)
of a lesion label in each patch, a soft Dice computed with the other blobs of that label masked out of
prediction and reference alike, and averages over blobs. Every lesion then counts once, whatever its
size; false positives anywhere outside the other blobs still count against each blob's Dice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn


class BlobLoss(nn.Module):
    """`global_loss` + `weight` x the mean over lesion blobs of (1 - soft Dice of the blob).

    Args:
        global_loss: the loss over the whole patch (e.g. Dice + CE), called with the same arguments.
        lesion_values: the label values whose connected components are blobs.
        weight: weight of the blob term (the paper's best configurations weigh global 2 : blob 1; here
            the global loss keeps weight 1, so 0.5 is that ratio).
        smooth: added to numerator and denominator of every blob's Dice.

    Called as ``loss(logits, labels)`` with logits (B, K, *spatial) and integer labels (B, 1, *spatial).
    Components are 26-connected in 3D (8 in 2D), as `medattn.metrics.lesions` counts lesions.
    """

    def __init__(
        self,
        global_loss: nn.Module,
        lesion_values: Sequence[int],
        weight: float = 0.5,
        smooth: float = 1e-5,
    ):
        super().__init__()
        self.global_loss = global_loss
        self.lesion_values = [int(v) for v in lesion_values]
        self.weight = float(weight)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = self.global_loss(logits, target)
        if not self.lesion_values or self.weight == 0:
            return total
        blob = self.blob_term(logits, target)
        return total if blob is None else total + self.weight * blob

    def blob_term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Mean over all blobs of the batch of (1 - soft Dice); None when the batch holds no blob."""
        logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits
        target = target.as_tensor() if hasattr(target, "as_tensor") else target
        probabilities = torch.softmax(logits.float(), dim=1)
        labels = target[:, 0].detach().cpu().numpy()
        structure = ndimage.generate_binary_structure(labels.ndim - 1, labels.ndim - 1)
        losses = []
        for value in self.lesion_values:
            for sample in range(labels.shape[0]):
                components, count = ndimage.label(labels[sample] == value, structure=structure)
                if count == 0:
                    continue
                ids = torch.from_numpy(components.astype(np.int64)).to(logits.device).flatten()
                probability = probabilities[sample, value].flatten()
                # One pass per sample: the probability mass and the voxel count in each blob (index 0: the
                # voxels outside every blob of this label). Blob k's region is everything but the other
                # blobs, so its Dice is (2 p_k + s) / (p_0 + p_k + n_k + s).
                mass = probability.new_zeros(count + 1).index_add(0, ids, probability)
                sizes = torch.bincount(ids, minlength=count + 1).to(mass.dtype)
                dice = (2 * mass[1:] + self.smooth) / (mass[0] + mass[1:] + sizes[1:] + self.smooth)
                losses.append(1 - dice)
        return torch.cat(losses).mean() if losses else None
