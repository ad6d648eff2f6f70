"""How much memory `sliding_window_predict` stitches in, and so where it should stitch: GPU or host."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from medattn.device import gpu_available_bytes
from medattn.errors import ConfigError

#: Floats per softmax slab (16 MB): the stitched logits are normalised slab by slab, never copied whole.
SOFTMAX_SLAB_VALUES = 1 << 22
#: Share of a GPU's available memory the stitched volumes may take before `choose_stitch_device` moves the
#: stitching to the host: the rest is for the network's activations on a window batch.
STITCH_MEMORY_SHARE = 0.5


def choose_stitch_device(
    device: torch.device | str,
    spatial_shape: Sequence[int],
    out_channels: int,
    in_channels: int = 1,
    extra_maps: int = 0,
    available_bytes: int | None = None,
) -> torch.device:
    """Where to stitch an image: on the GPU the windows run on while the stitched volumes fit, else the CPU.

    The stitched logits grow with the image and the classes (`stitched_bytes`: 1.9 GB for a 512 x 512 x 300
    CT with 4 classes, 40 GB with 105), the window batch does not. They stay on the GPU (no copy of every
    window's logits back to the host) when they take at most `STITCH_MEMORY_SHARE` of its available memory,
    leaving the rest to the network's activations; otherwise the GPU holds only the network and one window
    batch, and the logits are stitched in host memory (nnU-Net v2 makes the same choice, by catching the
    out-of-memory error instead of predicting it). Any other device stitches where it computes.

    Args:
        device: where the windows run.
        spatial_shape, out_channels, in_channels, extra_maps: as for `stitched_bytes`.
        available_bytes: the GPU memory free for the stitch; default: `gpu_available_bytes(device)`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return device
    if available_bytes is None:
        available_bytes = gpu_available_bytes(device)
    needed = stitched_bytes(spatial_shape, out_channels, in_channels, extra_maps)
    return device if needed <= STITCH_MEMORY_SHARE * available_bytes else torch.device("cpu")


def stitched_bytes(
    spatial_shape: Sequence[int], out_channels: int, in_channels: int = 1, extra_maps: int = 0
) -> int:
    """Peak bytes `sliding_window_predict` keeps on the stitch device for one image (float32 throughout).

    Logits (out_channels) + count map (1) + the image (in_channels), each extra map stitched beside them
    (the attention map, the mirrored passes' entropy) with its count map (2 each), plus the softmax's slabs
    (at most 32 MB). Padding of images smaller than the patch is not counted.
    """
    voxels = math.prod(spatial_shape)
    channels = out_channels + 1 + in_channels + 2 * extra_maps
    slabs = min(2 * SOFTMAX_SLAB_VALUES, 2 * out_channels * voxels)
    return (channels * voxels + slabs) * 4


def resolve_stitch_device(stitch_device: str | torch.device | None) -> torch.device | None:
    """A fixed stitch device, or None for 'auto' (chosen per image by `choose_stitch_device`)."""
    if stitch_device is None or str(stitch_device) == "auto":
        return None
    try:
        return torch.device(stitch_device)
    except RuntimeError as error:
        raise ConfigError(f"unknown stitch device {stitch_device!r}; use auto, cpu or cuda[:N]") from error
