"""Networks and the registry that builds them by name (see shared/MODELS.md).

Example:
    >>> from medattn.models import available, create
    >>> available()[:3]
    ['agunet', 'daunet', 'monai.attention_unet']
    >>> model = create("agunet", spatial_dims=3, in_channels=1, out_channels=2)
"""

# Importing each family module registers it.
from medattn.models.agunet import AGUNet
from medattn.models.base import SegmentationModel
from medattn.models.baselines import MonaiBaseline
from medattn.models.daunet import DAUNet
from medattn.models.msga import MSGA
from medattn.models.registry import (
    ModelSpec,
    available,
    create,
    default_parameter_count,
    describe,
    register_model,
)

__all__ = [
    "AGUNet",
    "DAUNet",
    "MSGA",
    "ModelSpec",
    "MonaiBaseline",
    "SegmentationModel",
    "available",
    "create",
    "default_parameter_count",
    "describe",
    "register_model",
]
