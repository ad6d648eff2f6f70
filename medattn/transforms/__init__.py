"""MONAI transform chains per intensity preset: preprocessing (invertible for prediction) and augmentation.

`presets` builds the chains; `preprocess.Preprocessor` runs a package's preprocessing on one image with
its fast paths; `aligned_resample` resamples between axis-aligned grids (both ways); `normalize` is the
in-place z-score; `sampling` lesion-aware patch sampling; `regions` superpixels; `masks` binary labels.
"""

from medattn.transforms.presets import augmentation, preprocessing
from medattn.transforms.sampling import ComponentBalancedIndicesd

__all__ = ["ComponentBalancedIndicesd", "augmentation", "preprocessing"]
