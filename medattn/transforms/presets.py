"""The transform chains a plan implies: preprocessing (shared by training and prediction) and augmentation.

Preprocessing is spatially invertible (Orientationd, Spacingd track their operations on the MetaTensor),
so prediction can send probabilities back to the input grid with MONAI's Invertd. Intensity presets:
- ct: clip to the foreground's 0.5-99.5 percentiles, then z-score with the foreground mean/std (nnU-Net);
- mr: z-score over non-zero voxels per channel, per image;
- rgb: z-score per channel, per image (robust to each endoscope's colour balance).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medattn.io.readers import MedattnReader
from medattn.plan import Plan
from medattn.transforms.masks import BinaryMaskLabelsd
from medattn.transforms.sampling import ComponentBalancedIndicesd

INDICES_KEY = "label_cls_indices"


def _intensity(plan: Plan) -> list[MapTransform]:
    if plan.preset == "ct":
        low, high = plan.clip_range
        mean, std = plan.normalize_mean, plan.normalize_std
        return [
            ScaleIntensityRanged(
                "image", a_min=low, a_max=high, b_min=(low - mean) / std, b_max=(high - mean) / std, clip=True
            )
        ]
    if plan.preset == "mr":
        return [NormalizeIntensityd("image", nonzero=True, channel_wise=True)]
    return [NormalizeIntensityd("image", channel_wise=True)]


def preprocessing(
    plan: Plan, keys: Sequence[str] = ("image", "label"), load: bool = True
) -> list[MapTransform]:
    """Load (optional), orient to RAS and resample to the plan's spacing (3D), normalise intensities.

    Args:
        plan: the run's plan.
        keys: 'image' and optionally 'label' (resampled with nearest neighbour).
        load: start with LoadImaged (paths in, training); False when the image is already a MetaTensor.
    """
    keys = list(keys)
    chain: list[MapTransform] = []
    if load:
        chain.append(LoadImaged(keys, reader=MedattnReader(), image_only=True, ensure_channel_first=True))
        if plan.binary_mask_labels and "label" in keys:
            chain.append(BinaryMaskLabelsd("label"))
    if plan.spatial_dims == 3:
        modes = ["bilinear" if key == "image" else "nearest" for key in keys]
        chain.append(Orientationd(keys, axcodes="RAS"))
        if plan.spacing is not None:
            chain.append(Spacingd(keys, pixdim=plan.spacing, mode=modes))
    chain += _intensity(plan)
    chain.append(EnsureTyped("image", dtype="float32", track_meta=True))
    return chain


def class_ratios(num_classes: int, lesion_values: Sequence[int] = (), lesion_share: float | None = None):
    """How often a patch is centred on each class (background first), as RandCropByLabelClassesd's ratios.

    Without `lesion_share` every class is a centre equally often. With it, the `lesion_values` classes
    together centre that share of the patches and the others the rest, each group split evenly: small
    lesions are the rarest voxels and the ones the network must see most.
    """
    if lesion_share is None or not lesion_values or len(lesion_values) >= num_classes:
        return [1.0] * num_classes
    lesions = set(lesion_values)
    others = num_classes - len(lesions)
    return [
        lesion_share / len(lesions) if value in lesions else (1.0 - lesion_share) / others
        for value in range(num_classes)
    ]


def augmentation(
    plan: Plan, seed: int = 0, lesion_values: Sequence[int] = (), lesion_share: float | None = None
) -> list[MapTransform]:
    """Patch sampling (class- and size-aware) and augmentation for training; elastic deformation is off.

    The deterministic head (padding, candidate centres) is cached by CacheDataset; randomness starts at
    the crop. `lesion_values` and `lesion_share`: see `class_ratios`.
    """
    dims = plan.spatial_dims
    keys = ["image", "label"]
    ratios = class_ratios(plan.num_classes, lesion_values, lesion_share)
    chain: list[MapTransform] = [
        SpatialPadd(keys, spatial_size=plan.patch_size),
        ComponentBalancedIndicesd("label", num_classes=plan.num_classes, indices_key=INDICES_KEY, seed=seed),
        RandCropByLabelClassesd(
            keys,
            label_key="label",
            spatial_size=plan.patch_size,
            ratios=ratios,
            num_classes=plan.num_classes,
            num_samples=1,
            indices_key=INDICES_KEY,
        ),
        DeleteItemsd(INDICES_KEY),
    ]
    chain += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(dims)]
    chain.append(
        RandAffined(
            keys,
            prob=0.2,
            rotate_range=[0.26] * (1 if dims == 2 else 3),
            scale_range=[0.15] * dims,
            mode=["bilinear", "nearest"],
            padding_mode="zeros",
        )
    )
    channel_wise = plan.preset == "rgb"  # colour balance differs between endoscopes: jitter per channel
    chain += [
        RandScaleIntensityd("image", factors=0.15, prob=0.2, channel_wise=channel_wise),
        RandShiftIntensityd("image", offsets=0.15, prob=0.2, channel_wise=channel_wise),
        RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
        RandGaussianNoised("image", prob=0.1, std=0.1),
        RandGaussianSmoothd(
            "image",
            prob=0.15 if plan.preset == "rgb" else 0.1,
            sigma_x=(0.5, 1.2),
            sigma_y=(0.5, 1.2),
            sigma_z=(0.5, 1.2),
        ),
        EnsureTyped(keys, dtype="float32", track_meta=False),
    ]
    return chain
