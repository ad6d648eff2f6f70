"""Random anisotropic test shapes for the metric tests: smoothed noise, thresholded, tiny for speed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SPACINGS_3D = [(0.7, 0.9, 3.0), (1.0, 1.0, 1.0), (0.5, 1.3, 2.5), (3.0, 0.8, 0.8), (1.2, 0.6, 5.0)]
SPACINGS_2D = [(0.7, 3.0), (1.0, 1.0), (0.5, 1.3), (2.5, 0.9)]


def blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0) -> np.ndarray:
    """A random blobby mask filling roughly 30-50 % of its grid, never empty."""
    while True:
        mask = ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > rng.uniform(0.0, 0.1)
        if mask.any() and not mask.all():
            return mask


def blob_pair(seed: int, spatial_dims: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(pred, ref, spacing): two overlapping random blobs and a random anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(10, 26 if spatial_dims == 3 else 48, spatial_dims))
    ref = blob(rng, shape)
    # The prediction is the reference, perturbed: part of it kept, plus a second random blob.
    pred = (ref & (ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > -0.2)) | blob(rng, shape, 2.5)
    spacings = SPACINGS_3D if spatial_dims == 3 else SPACINGS_2D
    return pred, ref, spacings[seed % len(spacings)]
