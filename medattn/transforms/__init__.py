"""MONAI transform chains per intensity preset: preprocessing (invertible for prediction) and augmentation."""

from medattn.transforms.presets import augmentation, preprocessing
from medattn.transforms.sampling import ComponentBalancedIndicesd

__all__ = ["ComponentBalancedIndicesd", "augmentation", "preprocessing"]
