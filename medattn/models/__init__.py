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
from medattn.models.ccsam import CCSAM
from medattn.models.daunet import DAUNet
from medattn.models.hbformer import HBFormer
from medattn.models.medsam_ca import MedSAMCA
from medattn.models.msga import MSGA
from medattn.models.pranet import PraNet
from medattn.models.ratunet import RATUNet
from medattn.models.registry import (
    ModelSpec,
    available,
    create,
    default_parameter_count,
    describe,
    register_model,
)
from medattn.models.sam import SAM, SAMAdapter

__all__ = [
    "AGUNet",
    "CCSAM",
    "DAUNet",
    "HBFormer",
    "MSGA",
    "MedSAMCA",
    "ModelSpec",
    "MonaiBaseline",
    "PraNet",
    "RATUNet",
    "SAM",
    "SAMAdapter",
    "SegmentationModel",
    "available",
    "create",
    "default_parameter_count",
    "describe",
    "register_model",
]
