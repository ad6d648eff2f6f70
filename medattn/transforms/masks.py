"""`BinaryMaskLabelsd`: black/white mask images (0/255, JPEG noise) become 0/1 labels while loading."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.transforms import MapTransform

from medattn.io.mask_images import is_binary_mask_file


class BinaryMaskLabelsd(MapTransform):
    """Read a label that is a black/white mask image as 0/1, as the dataset fingerprint did
    (`medattn.io.mask_images`); labels from other files, and masks holding class values, pass unchanged.
    Expects the loaded MetaTensor (its `filename_or_obj` tells the file format)."""

    def __init__(self, keys: Sequence[Hashable] = ("label",)):
        super().__init__(keys)

    def __call__(self, data: Mapping) -> dict:
        out = dict(data)
        for key in self.key_iterator(out):
            label = out[key]
            source = getattr(label, "meta", {}).get("filename_or_obj", "")
            if source and is_binary_mask_file(source, np.asarray(label)):
                out[key] = (label >= 128).to(label.dtype)  # a MetaTensor stays one, meta kept
        return out
