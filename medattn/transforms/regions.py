"""Region maps: SLIC superpixels of an image and their nearest-neighbour resampling, for region attention
(RATUNet) and the focal region loss.

`superpixels` is the one place medattn runs SLIC (scikit-image): RATUNet calls it inside its forward at
the attention resolution, `SuperpixelRegionsd` once per case in a data pipeline, where CacheDataset keeps
the result. Intensities are scaled per channel to [0, 1] between their 1st and 99th percentiles (clipped)
before SLIC, so one compactness fits CT, MR and RGB inputs alike; RGB is not converted to Lab.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from skimage.segmentation import slic

from medattn.errors import ConfigError, GeometryError

#: SLIC compactness for intensities scaled to [0, 1]: 0.1 follows a sphere's edge in a noisy 16^3 volume
#: (every superpixel > 90 % inside or outside it); 1 and 10 give near-cubic cells that cut across it.
DEFAULT_COMPACTNESS = 0.1


def superpixels(
    image: np.ndarray | torch.Tensor,
    region_size: float,
    compactness: float = DEFAULT_COMPACTNESS,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """SLIC superpixels of a channel-first image: connected regions of similar intensity.

    Args:
        image: (C, *spatial), 2D or 3D.
        region_size: mean superpixel size in voxels (pixels in 2D); SLIC gets voxels / region_size seeds.
        compactness: weight of spatial distance against intensity distance (intensities in [0, 1]).
        spacing: voxel size per spatial axis (mm), so superpixels are compact in millimetres; None =
            isotropic.

    Returns:
        int32 region ids (*spatial), numbered from 0.
    """
    array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    if array.ndim not in (3, 4):
        raise GeometryError(f"superpixels need a (channel, *spatial) 2D or 3D image, got shape {array.shape}")
    if region_size <= 0 or compactness <= 0:
        raise ConfigError(f"region_size and compactness must be > 0, got {region_size} and {compactness}")
    low, high = np.percentile(array.reshape(array.shape[0], -1), [1, 99], axis=1)
    width = np.maximum(high - low, 1e-8)
    expand = (slice(None),) + (None,) * (array.ndim - 1)
    scaled = np.clip((array - low[expand]) / width[expand], 0.0, 1.0)
    segments = max(1, round(math.prod(array.shape[1:]) / region_size))
    labels = slic(
        scaled,
        n_segments=segments,
        compactness=compactness,
        spacing=None if spacing is None else np.asarray(spacing, dtype=np.float64),
        channel_axis=0,
        convert2lab=False,
        start_label=0,
    )
    return labels.astype(np.int32)


def nearest_regions(regions: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Region ids (B, 1, *spatial) resampled to `size` by nearest neighbour at voxel centres, ids exact.

    Indexing instead of `F.interpolate`, so ids beyond 2^24 survive (float32 would round them).
    """
    for axis, (old, new) in enumerate(zip(regions.shape[2:], size, strict=True)):
        if old != new:
            index = ((torch.arange(new, device=regions.device) + 0.5) * (old / new)).long().clamp_max(old - 1)
            regions = regions.index_select(axis + 2, index)
    return regions


class SuperpixelRegionsd(MapTransform):
    """Add a SLIC region map of the image under `regions_key`: (1, *spatial) int32 ids, the image's grid.

    Deterministic, so put it before the first random transform and CacheDataset computes it once per
    case. The result is a MetaTensor with the image's affine (when the image has one), so MONAI's spatial
    transforms can crop, flip and resample it beside the image (use nearest-neighbour modes for it).
    SLIC on a whole CT (tens of millions of voxels) takes tens of seconds and a few GB; run it after
    resampling and cropping to the foreground where possible.

    Args:
        keys: the image key.
        regions_key: where the region map goes.
        region_size: mean superpixel size in voxels; 4096 = 16^3 voxels, which a transformer stage at 1/4
            resolution (RATUNet) sees as regions of about 4^3 = 64 tokens.
        compactness: SLIC compactness on intensities scaled to [0, 1] (see `superpixels`).
        use_spacing: make superpixels compact in millimetres using the image's voxel size.
    """

    def __init__(
        self,
        keys: str = "image",
        regions_key: str = "regions",
        region_size: float = 4096,
        compactness: float = DEFAULT_COMPACTNESS,
        use_spacing: bool = True,
    ):
        super().__init__(keys)
        self.regions_key = regions_key
        self.region_size = region_size
        self.compactness = compactness
        self.use_spacing = use_spacing

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        result = dict(data)
        image = result[self.keys[0]]
        spacing = None
        if self.use_spacing and isinstance(image, MetaTensor):
            spacing = [float(s) for s in image.pixdim[: image.ndim - 1]]
        regions = superpixels(image, self.region_size, self.compactness, spacing)[None]
        if isinstance(image, MetaTensor):
            meta = {key: value for key, value in image.meta.items() if key != "affine"}
            result[self.regions_key] = MetaTensor(
                torch.from_numpy(regions), affine=image.affine.clone(), meta=meta
            )
        else:
            result[self.regions_key] = torch.from_numpy(regions)
        return result
