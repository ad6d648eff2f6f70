"""How sure a prediction is: voxel maps from class probabilities and a confidence per predicted component.

- `normalized_entropy`: the entropy of the (averaged) class probabilities divided by log(classes), in
  [0, 1]: 0 where one class has all the probability, 1 where every class is equally likely. It is the
  total predictive uncertainty, and the one map a single model can give.
- `mutual_information`: with two or more members (folds, packages), the entropy of their mean minus the
  mean of their entropies, also divided by log(classes): the part of the uncertainty that comes from the
  members disagreeing (Houlsby et al. 2011, "BALD"; Depeweg et al. 2018). 0 where every member says the
  same, however unsure each is.
- `component_rows`: one row per connected component of each foreground label of the mask (full
  connectivity, largest first, as `medattn.metrics.lesions` numbers them), with its volume, centroid,
  mean probability of its label, mean uncertainty and a `confidence`: the mean probability of the
  component's label over its voxels. An ensemble's averaged probability already carries the members'
  agreement (a component that only some members find has a low mean), and the mean over the component,
  not its peak, drops for a blob whose edges the model is unsure of.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from medattn.metrics.lesions import connected_components
from medattn.metrics.volume import voxel_volume_ml

#: `components.csv` columns, in order.
COMPONENT_COLUMNS = (
    "case",
    "label",
    "name",
    "component",
    "volume_ml",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "mean_probability",
    "mean_uncertainty",
    "confidence",
    "low_confidence",
)
_TINY = 1e-12


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the class axis 0 of (C, *spatial) probabilities."""
    p = probabilities.float().clamp_min(_TINY)
    return -(probabilities.float() * p.log()).sum(dim=0)


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy of (C, *spatial) probabilities divided by log(C): (*spatial) in [0, 1]."""
    classes = probabilities.shape[0]
    if classes < 2:
        return torch.zeros(probabilities.shape[1:])
    return (entropy(probabilities) / math.log(classes)).clamp_(0.0, 1.0)


def mutual_information(mean_probabilities: torch.Tensor, mean_member_entropy: torch.Tensor) -> torch.Tensor:
    """Members' disagreement (*spatial) in [0, 1]: (H(mean) - mean of members' H) / log(C).

    Args:
        mean_probabilities: (C, *spatial) the members' averaged probabilities.
        mean_member_entropy: (*spatial) the average of each member's `entropy` (nats).
    """
    classes = mean_probabilities.shape[0]
    if classes < 2:
        return torch.zeros(mean_probabilities.shape[1:])
    return ((entropy(mean_probabilities) - mean_member_entropy) / math.log(classes)).clamp_(0.0, 1.0)


def component_rows(
    case_id: str,
    labels: np.ndarray,
    probabilities: np.ndarray,
    uncertainty: np.ndarray,
    affine: np.ndarray,
    names: dict[int, str],
    low_confidence_below: float,
) -> list[dict]:
    """One `COMPONENT_COLUMNS` row per connected component of each foreground label.

    Args:
        case_id: the case.
        labels: (*spatial) the final mask.
        probabilities: (C, *spatial) class probabilities on the same grid.
        uncertainty: (*spatial) normalized entropy on the same grid.
        affine: voxel -> RAS mm (4x4, or 3x3 for 2D).
        names: label value -> name.
        low_confidence_below: a component whose confidence is below this is flagged `low_confidence`.
    """
    spatial_dims = labels.ndim
    voxel_ml = voxel_volume_ml(affine, spatial_dims)
    square = np.asarray(affine, dtype=np.float64)
    rows = []
    for value, name in sorted(names.items()):
        if value == 0 or value >= probabilities.shape[0]:
            continue
        components, sizes = connected_components(labels == value)
        if sizes.size == 0:
            continue
        index = np.arange(1, sizes.size + 1)
        centres = np.atleast_2d(np.array(ndimage.center_of_mass(components > 0, components, index)))
        mean_probabilities = ndimage.mean(probabilities[value], components, index)
        mean_uncertainties = ndimage.mean(uncertainty, components, index)
        world = centres @ square[:-1, :spatial_dims].T + square[:-1, -1]
        world = np.hstack([world, np.zeros((world.shape[0], 3 - world.shape[1]))])
        for number, size in enumerate(sizes, start=1):
            mean_probability = float(mean_probabilities[number - 1])
            x, y, z = (round(float(v), 3) for v in world[number - 1])
            rows.append(
                {
                    "case": case_id,
                    "label": value,
                    "name": name,
                    "component": number,
                    "volume_ml": round(float(size) * voxel_ml, 6),
                    "centroid_x": x,
                    "centroid_y": y,
                    "centroid_z": z,
                    "mean_probability": round(mean_probability, 4),
                    "mean_uncertainty": round(float(mean_uncertainties[number - 1]), 4),
                    "confidence": round(mean_probability, 4),
                    "low_confidence": mean_probability < low_confidence_below,
                }
            )
    return rows
