"""Size-aware foreground sampling: every lesion is a patch centre as often as every other, whatever its size.

MONAI's RandCropByLabelClassesd picks a class, then a random voxel of it, so a 20 mL lesion is the centre
of a patch 40 times as often as a 0.5 mL one. The meningioma paper's misses were tumours under 3 mL;
here each connected component of a label contributes the same number of candidate centres, so small
lesions are seen as often as large ones. The indices feed RandCropByLabelClassesd's `indices_key`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform
from scipy import ndimage

CENTRES_PER_COMPONENT = 64


class ComponentBalancedIndicesd(MapTransform):
    """Write `<label_key>_cls_indices`: per class, flat voxel indices with equal weight per component.

    Args:
        keys: the label key.
        num_classes: classes including background (index 0 holds background voxels).
        indices_key: where the list of per-class index arrays goes.
        centres_per_component: candidate centres drawn from each connected component.
        max_background: background candidates kept (a random subset keeps the cache small).
        seed: fixes which voxels are kept, so the cached result does not depend on run order.
    """

    def __init__(
        self,
        keys: str,
        num_classes: int,
        indices_key: str = "label_cls_indices",
        centres_per_component: int = CENTRES_PER_COMPONENT,
        max_background: int = 4096,
        seed: int = 0,
    ):
        super().__init__(keys)
        self.num_classes = num_classes
        self.indices_key = indices_key
        self.centres_per_component = centres_per_component
        self.max_background = max_background
        self.seed = seed

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        result = dict(data)
        label = np.asarray(result[self.keys[0]])[0]
        rng = np.random.default_rng(self.seed)
        flat = label.ravel()
        indices = []
        background = np.flatnonzero(flat == 0)
        if background.size > self.max_background:
            background = rng.choice(background, self.max_background, replace=False)
        indices.append(background)
        structure = ndimage.generate_binary_structure(label.ndim, label.ndim)
        for value in range(1, self.num_classes):
            components, count = ndimage.label(label == value, structure=structure)
            picked = []
            for slices, number in zip(ndimage.find_objects(components), range(1, count + 1), strict=True):
                local = np.flatnonzero(components[slices] == number)
                coords = np.unravel_index(local, components[slices].shape)
                global_coords = tuple(c + s.start for c, s in zip(coords, slices, strict=True))
                members = np.ravel_multi_index(global_coords, label.shape)
                picked.append(
                    rng.choice(
                        members, self.centres_per_component, replace=members.size < self.centres_per_component
                    )
                )
            indices.append(np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64))
        result[self.indices_key] = indices
        return result
