"""`Preprocessor`: a model package's preprocessing of one image (orient, resample, normalise), fast.

The transforms are MONAI's (`medattn.transforms.presets.preprocessing`), and their chain is what inverts
a prediction back onto the input grid. Two steps take a faster route with the same result:

- resampling to the plan's spacing on an axis-aligned grid is separable (`resample_aligned`): MONAI's
  Spacingd is asked for the output grid only (lazily) and the values are interpolated axis by axis, equal
  to Spacingd's to float rounding; oblique grids run Spacingd;
- the z-score normalisation runs in place (`zscore_channels_`, equal to NormalizeIntensityd's).

See BENCHMARKS.md (end-to-end prediction: the prediction stages' fast paths) for what each saves.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Spacingd

from medattn.plan import Plan
from medattn.transforms.aligned_resample import resample_aligned
from medattn.transforms.normalize import zscore_channels_, zscore_parameters
from medattn.transforms.presets import preprocessing


class Preprocessor:
    """The preprocessing of `plan` for single images (key "image", no loading).

    MONAI's transforms keep call state on the object (an inverse turns tracing off while it runs): `lock`
    lets one thread at a time use them, so a pipelined batch can preprocess and invert on two threads.

    Attributes:
        transform: the MONAI chain, for `Invertd`.
        lock: held while `transform` runs forwards or backwards.
    """

    def __init__(self, plan: Plan):
        self.transform = Compose(preprocessing(plan, keys=("image",), load=False))
        self.lock = threading.Lock()
        # Lazy copies of the (bilinear, border-padded) Spacingd steps: they compute the output grid only.
        self._lazy_spacing = {
            id(t): _lazy_copy(t) for t in self.transform.transforms if _separable_spacing_applies(t)
        }

    def __call__(self, image: MetaTensor) -> MetaTensor:
        """The preprocessed copy of `image` (C, *spatial); the caller's image keeps its values."""
        with self.lock:
            # MONAI's intensity transforms write into their input when no resampling copied it first.
            data = {"image": image.clone()}
            for transform in self.transform.transforms:
                current = data["image"]
                lazy_twin = self._lazy_spacing.get(id(transform))
                resampled = None if lazy_twin is None else _separable_spacing(current, lazy_twin)
                nonzero = zscore_parameters(transform)
                if resampled is not None:
                    data = {"image": resampled}
                elif nonzero is not None and current.dtype == torch.float32:
                    # Our own copy (cloned or resampled above): normalised in place, metadata kept.
                    zscore_channels_(current.as_tensor(), nonzero)
                else:
                    data = transform(data)
            return data["image"]


def _separable_spacing_applies(transform) -> bool:
    """A Spacingd whose interpolation `resample_aligned` reproduces: bilinear, border padding."""
    if not isinstance(transform, Spacingd):
        return False
    return (
        [str(m) for m in transform.mode] == ["bilinear"]
        and [str(m) for m in transform.padding_mode] == ["border"]
        and not any(transform.align_corners)
    )


def _lazy_copy(transform):
    twin = copy.deepcopy(transform)
    twin.lazy = True
    return twin


def _separable_spacing(image: MetaTensor, lazy_spacing) -> MetaTensor | None:
    """`image` resampled onto the grid the lazy Spacingd plans; None when that grid is not axis-aligned."""
    if image.ndim != 4:
        return None
    planned = lazy_spacing({"image": image})["image"]  # metadata only: no values are resampled
    affine = np.asarray(planned.peek_pending_affine(), dtype=np.float64)
    resampled = resample_aligned(
        image.as_tensor().float(),
        np.asarray(image.affine, dtype=np.float64),
        affine,
        planned.peek_pending_shape(),
    )
    if resampled is None:
        return None
    meta = {k: v for k, v in image.meta.items() if k != "affine"}
    return MetaTensor(resampled, affine=torch.as_tensor(affine), meta=meta)
