"""The SAM family: SAM's image encoder, prompt encoder and mask decoder with checkpoint-compatible names,
MedSAM preprocessing and checkpoint loading, and the registered `sam` and `sam_adapter` models.

Example:
    >>> from medattn.models import create
    >>> model = create("sam", spatial_dims=2, in_channels=3, out_channels=1, variant="vit_b")
"""

from medattn.models.sam.adapter import SAMAdapter
from medattn.models.sam.checkpoint import KeyReport, compare_keys, load_checkpoint
from medattn.models.sam.image_encoder import ImageEncoderViT
from medattn.models.sam.mask_decoder import MaskDecoder
from medattn.models.sam.model import SAM, Prompts
from medattn.models.sam.preprocess import medsam_preprocess, resize_coordinates, sam_normalise
from medattn.models.sam.prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from medattn.models.sam.transformer import TwoWayTransformer
from medattn.models.sam.variants import VARIANTS, SamVariant, get_variant

__all__ = [
    "SAM",
    "VARIANTS",
    "ImageEncoderViT",
    "KeyReport",
    "MaskDecoder",
    "PositionEmbeddingRandom",
    "PromptEncoder",
    "Prompts",
    "SAMAdapter",
    "SamVariant",
    "TwoWayTransformer",
    "compare_keys",
    "get_variant",
    "load_checkpoint",
    "medsam_preprocess",
    "resize_coordinates",
    "sam_normalise",
]
