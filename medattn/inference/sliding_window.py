"""Gaussian sliding-window prediction: windows run on the compute device, logits are stitched where they fit.

Built on MONAI's `sliding_window_inference`; what medattn adds is the nnU-Net recipe around it:

- Logits, not probabilities, are blended with the gaussian weights (as nnU-Net v2 does), and softmax runs
  once on the stitched volume, in place, so no second (classes x voxels) buffer is ever allocated.
- Mirror test-time augmentation happens per window (as nnU-Net v2 does): each window batch is also run
  flipped along every combination of `mirror_axes` and the flipped-back logits are averaged before
  stitching. The device then never holds more than one window batch's logits, and the stitched volume is
  not flipped as a whole (which would cost another full copy).
- The gaussian importance map is cached per (patch size, device): MONAI rebuilds it on every call.
- Window forwards run under AMP (`torch.autocast`) when asked and in channels-last memory format: on CUDA
  for tensor cores, on CPU because oneDNN's convolutions are faster on it (BENCHMARKS.md, export formats).
  With AMP they run under `torch.inference_mode()`: the bf16/fp16 logits are cast to float32 anyway, and
  that copy, made outside inference mode, is an ordinary tensor MONAI can weight in place. Without AMP they
  run under `torch.no_grad()`: inference mode would force a copy of every window's logits (an inference
  tensor cannot be edited outside inference mode) and is itself no faster than no_grad for convolutional
  networks (BENCHMARKS.md, end-to-end prediction). Either way the returned tensor is an ordinary one that
  callers may edit in place.

Memory (V = voxels of the image, C = output channels, 4 bytes per float32 value):

- stitch device: the stitched logits C x V x 4 plus MONAI's count map V x 4, the image itself
  (in_channels x V x 4, kept there so windows are cut where the volume already lives), at most 32 MB of
  softmax slabs, and for each extra map (``return_attention``, ``return_pass_entropy``) another
  2 x V x 4 (the map + its count map). A 512 x 512 x 300 CT with 4 classes: about 1.6 GB + 0.3 GB + 0.3 GB.
  `medattn.inference.stitch_memory.stitched_bytes` computes it.
- compute device: the network's weights and activations for `sw_batch_size` windows, the window batch, its
  float32 logits (twice with mirror TTA: running sum + current pass) and the patch-sized weight map. It
  does not grow with the image, so ``stitch_device="cpu"`` lets any volume run on a small GPU.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import nn

from medattn.device import autocast, channels_last_format, in_channels_last
from medattn.errors import ConfigError, GeometryError
from medattn.inference.network_outputs import class_probabilities, mean_attention_map
from medattn.inference.stitch_memory import SOFTMAX_SLAB_VALUES
from medattn.inference.uncertainty import entropy

#: Gaussian sigma as a fraction of the patch size per axis (nnU-Net's and MONAI's 1/8).
SIGMA_SCALE = 0.125
BLEND_MODES = ("gaussian", "constant")

ProgressCallback = Callable[[int, int], None]


@functools.lru_cache(maxsize=16)
def importance_map(
    patch_size: tuple[int, ...], blend: str = "gaussian", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The per-window blending weights (*patch_size) float32, built once per patch size, mode and device.

    MONAI's `compute_importance_map` (gaussian with sigma = patch / 8, zeros raised to the smallest weight);
    cached because MONAI's `sliding_window_inference` rebuilds it on every call unless given one.
    The returned tensor is shared: do not modify it.
    """
    if blend not in BLEND_MODES:
        raise ConfigError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    with torch.inference_mode(False), torch.no_grad():
        return compute_importance_map(
            tuple(patch_size), mode=blend, sigma_scale=SIGMA_SCALE, device=device, dtype=torch.float32
        )


def count_windows(image_size: Sequence[int], patch_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for one image (padded up to the patch where smaller).

    Follows MONAI's scan interval: patch x (1 - overlap) voxels per step (at least 1), and a last window
    flush with the far edge.
    """
    total = 1
    for image, patch in zip(image_size, patch_size, strict=True):
        image = max(image, patch)
        step = patch if image == patch else max(int(patch * (1 - overlap)), 1)
        total *= math.ceil((image - patch) / step) + 1 if image > patch else 1
    return total


class StitchedMaps(NamedTuple):
    """`sliding_window_predict`'s volumes when a map beyond the probabilities is asked for."""

    probabilities: torch.Tensor  # (C, *spatial)
    attention: torch.Tensor | None  # (1, *spatial) mean attention map
    pass_entropy: torch.Tensor | None  # (1, *spatial) mean entropy (nats) of the mirrored passes' softmax


class _WindowPredictor:
    """Runs the network on one window batch: eval forward, AMP, channels-last, mirror TTA, attention summary.

    Returns float32 logits (B, C, *window), then when asked the mean of the network's attention maps
    (B, 1, *window) and the mean entropy of each mirrored pass's own softmax (B, 1, *window): with mirror
    TTA every pass is an ensemble member, and that mean is what the members' mutual information needs
    (`medattn.inference.uncertainty`). All are ordinary tensors (never inference tensors) that MONAI may
    scale in place.
    """

    def __init__(
        self,
        network: nn.Module,
        mirror_axes: tuple[int, ...],
        amp_dtype: torch.dtype | None,
        device: torch.device,
        channels_last: bool,
        with_attention: bool,
        progress: ProgressCallback | None,
        total_windows: int,
        fixed_batch: int | None = None,
        with_pass_entropy: bool = False,
    ):
        self.network = network
        self.with_pass_entropy = with_pass_entropy
        self.fixed_batch = fixed_batch
        spatial_flips = itertools.chain.from_iterable(
            itertools.combinations(mirror_axes, r) for r in range(1, len(mirror_axes) + 1)
        )
        self.flips = [tuple(axis + 2 for axis in axes) for axes in spatial_flips]  # tensor dims (B, C first)
        self.amp_dtype = amp_dtype
        self.device = device
        self.channels_last = channels_last
        self.with_attention = with_attention
        self.progress = progress
        self.total_windows = total_windows
        self.done_windows = 0

    def __call__(self, window: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        windows = window.shape[0]
        if self.fixed_batch is not None and windows < self.fixed_batch:
            # A compiled network sees one batch shape only: the last, short batch is padded with empty
            # windows instead of compiling the network a second time (a minute on CPU).
            window = torch.cat([window, window.new_zeros((self.fixed_batch - windows, *window.shape[1:]))])
        if self.channels_last:
            window = window.contiguous(memory_format=channels_last_format(window.ndim - 2))
        logits, attention = self._forward(window)
        if window.shape[0] != windows:
            logits = logits[:windows]
            attention = None if attention is None else attention[:windows]
        # An inference tensor (AMP) is copied to float32 outside inference mode (the cast the bf16/fp16 logits
        # need anyway; also when autocast already gave float32); a no_grad output is used as it is.
        logits = logits.to(torch.float32, copy=True) if logits.is_inference() else logits.float()
        pass_entropy = _softmax_entropy(logits) if self.with_pass_entropy else None
        for dims in self.flips:
            flipped_logits, flipped_attention = self._forward(torch.flip(window, dims))
            flipped_logits = torch.flip(flipped_logits[:windows], dims)
            if pass_entropy is not None:
                pass_entropy += _softmax_entropy(flipped_logits.float())
            logits += flipped_logits
            if attention is not None:
                attention = attention + torch.flip(flipped_attention[:windows], dims)
        if self.flips:
            logits /= len(self.flips) + 1
            if attention is not None:
                attention = attention / (len(self.flips) + 1)
            if pass_entropy is not None:
                pass_entropy /= len(self.flips) + 1
        if self.progress is not None:
            self.done_windows += windows
            self.progress(min(self.done_windows, self.total_windows), self.total_windows)
        extras = [m for m in (attention, pass_entropy) if m is not None]  # each is there when asked
        return (logits, *extras) if extras else logits

    def _forward(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Inference mode only where its output is copied anyway (the float32 cast after AMP).
        grad_off = torch.inference_mode() if self.amp_dtype is not None else torch.no_grad()
        with grad_off, autocast(self.device, self.amp_dtype):
            output = self.network(window)
            # Deep-supervision networks return a list, finest first; the finest is the prediction.
            logits = output[0] if isinstance(output, (list, tuple)) else output
        # A new tensor, made outside inference mode: MONAI may scale it in place.
        return logits, mean_attention_map(self.network, window.shape[2:]) if self.with_attention else None


def sliding_window_predict(
    network: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    blend: str = "gaussian",
    mirror_axes: Sequence[int] | None = None,
    amp_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    stitch_device: torch.device | str | None = None,
    channels_last: bool | None = None,
    return_attention: bool = False,
    return_pass_entropy: bool = False,
    progress: bool | ProgressCallback = False,
    pad_last_batch: bool = False,
) -> torch.Tensor | StitchedMaps:
    """Softmax probabilities of `network` over a whole image, from gaussian-blended overlapping windows.

    The image is cut into `patch_size` windows overlapping by `overlap`; each window batch runs on
    `device`, its logits are weighted by a gaussian (centre voxels count more than edges) and summed into a
    volume on `stitch_device`, normalised by the summed weights; softmax runs once on the blended logits
    (nnU-Net's order). Images smaller than the patch are zero-padded for the windows and cropped back.
    See the module docstring for the memory each device needs.

    Args:
        network: returns logits (B, out_channels, *spatial) in eval mode; put in eval mode for the call and
            back in its previous mode after. Moved to `device` if its weights live elsewhere. With
            channels-last on, a network not yet in that memory format is converted for the call and given
            back in the contiguous format (a Predictor converts its network once, so nothing is copied).
        image: preprocessed image (C, *spatial) or (1, C, *spatial); a MetaTensor is read as a plain tensor.
        patch_size: window size in voxels per spatial axis (2 or 3 axes), as the network was trained on.
        overlap: fraction of a window shared with its neighbour per axis, in [0, 1). 0.5 is nnU-Net's
            default; 0.25 halves the windows per axis at a small accuracy cost.
        sw_batch_size: windows per network call.
        blend: "gaussian" (nnU-Net, MONAI) or "constant" (plain average of overlapping windows).
        mirror_axes: spatial axes (0-based, e.g. (0, 1, 2)) to mirror for test-time augmentation; logits
            are averaged over all 2^n flip combinations, so it costs 2^n forward passes per window.
        amp_dtype: torch.bfloat16 or torch.float16 to run windows under autocast; None runs float32
            (use None on CPU unless it has bf16 units).
        device: where windows run; default: where the network's weights are.
        stitch_device: where the stitched logits (and the image) live; default: `device`. "cpu" keeps
            GPU memory independent of the image size.
        channels_last: run windows in channels-last(-3d) memory format (default: yes, on CPU and CUDA).
        return_attention: also stitch the mean of the network's `attention_maps()` per window into a
            (1, *spatial) volume; raises ConfigError when the network has none.
        return_pass_entropy: also stitch the mean, over the mirrored passes (the plain pass alone without
            `mirror_axes`), of the entropy in nats of each pass's own softmax: (1, *spatial).
        progress: True for MONAI's tqdm bar over window batches, or a callable(done_windows, total_windows)
            called after each batch (for a rich progress bar).
        pad_last_batch: run every batch at `sw_batch_size` windows, the last one padded with empty
            windows: a `torch.compile`d network then sees one input shape and compiles once.

    Returns:
        probabilities (out_channels, *spatial) float32 on `stitch_device`, summing to 1 over channels
        (a network with one output channel is read as a sigmoid foreground logit and gives 2 channels,
        background and foreground); with `return_attention` or `return_pass_entropy`, a `StitchedMaps`
        holding the asked maps (float32) beside the probabilities.

    Raises:
        GeometryError: the image does not have the patch's number of spatial axes.
        ConfigError: bad overlap, blend, mirror axis or batch size; no attention maps when asked for.

    Example:
        >>> probs = sliding_window_predict(net, image, (128, 128, 128), mirror_axes=(0, 1, 2))
        >>> labels = probs.argmax(0)
    """
    patch_size = tuple(int(p) for p in patch_size)
    spatial_dims = len(patch_size)
    batch = image.as_tensor() if hasattr(image, "as_tensor") else image
    if batch.ndim == spatial_dims + 1:
        batch = batch[None]
    if batch.ndim != spatial_dims + 2 or batch.shape[0] != 1:
        raise GeometryError(
            f"sliding_window_predict expects an image (C, *spatial) or (1, C, *spatial) with {spatial_dims} "
            f"spatial axes to match patch_size {patch_size}; got shape {tuple(image.shape)}"
        )
    _check_options(patch_size, overlap, sw_batch_size, blend, mirror_axes)
    device = torch.device(device) if device is not None else _weights_device(network, batch.device)
    stitch_device = torch.device(stitch_device) if stitch_device is not None else device
    if channels_last is None:
        channels_last = True
    if return_attention and not callable(getattr(network, "attention_maps", None)):
        raise ConfigError(
            f"{type(network).__name__} exposes no attention maps (it has no attention_maps() method): "
            "predict without attention output (--save-attention) or use a model with attention gates"
        )
    if any(p.device != device for p in network.parameters()):
        network.to(device)
    converted = channels_last and not in_channels_last(network, spatial_dims)
    if converted:
        network.to(memory_format=channels_last_format(spatial_dims))

    callback = progress if callable(progress) else None
    predictor = _WindowPredictor(
        network,
        tuple(mirror_axes or ()),
        amp_dtype,
        device,
        channels_last,
        return_attention,
        callback,
        count_windows(batch.shape[2:], patch_size, overlap),
        fixed_batch=sw_batch_size if pad_last_batch else None,
        with_pass_entropy=return_pass_entropy,
    )
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            stitched = sliding_window_inference(
                batch.to(device=stitch_device, dtype=torch.float32),
                roi_size=patch_size,
                sw_batch_size=sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode=blend,
                sigma_scale=SIGMA_SCALE,
                padding_mode="constant",
                cval=0.0,
                sw_device=device,
                device=stitch_device,
                progress=progress is True,
                roi_weight_map=importance_map(patch_size, blend, device),
            )
            stitched = list(stitched) if isinstance(stitched, (tuple, list)) else [stitched]
            logits = _unbatch(stitched.pop(0))
            attention = _unbatch(stitched.pop(0)) if return_attention else None
            pass_entropy = _unbatch(stitched.pop(0)) if return_pass_entropy else None
            probabilities = _softmax_(logits) if logits.shape[0] > 1 else class_probabilities(logits[None])[0]
    finally:
        network.train(was_training)
        if converted:  # give a training network back as it came: its next steps must not change numerics
            network.to(memory_format=torch.contiguous_format)
    if not (return_attention or return_pass_entropy):
        return probabilities
    return StitchedMaps(probabilities, attention, pass_entropy)


def _softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats (B, 1, *window) of the class probabilities of logits (B, C, *window)."""
    return entropy(class_probabilities(logits).movedim(1, 0)).unsqueeze(1)


def _softmax_(logits: torch.Tensor, slab_values: int = SOFTMAX_SLAB_VALUES) -> torch.Tensor:
    """Softmax over axis 0, written back in slabs along axis 1: no second C x V volume is allocated.

    Slabs of about `slab_values` floats (16 MB) keep torch's fused softmax kernel, about twice as fast as a
    fully in-place max/exp/sum/divide (BENCHMARKS.md, end-to-end prediction).
    """
    rows = max(1, slab_values // max(1, logits[:, :1].numel()))
    for start in range(0, logits.shape[1], rows):
        logits[:, start : start + rows] = torch.softmax(logits[:, start : start + rows], dim=0)
    return logits


def _unbatch(volume: torch.Tensor) -> torch.Tensor:
    """(1, C, *spatial) -> (C, *spatial); contiguous (MONAI returns a cropped view for padded images)."""
    return volume[0].contiguous()


def _weights_device(network: nn.Module, fallback: torch.device) -> torch.device:
    parameter = next(iter(network.parameters()), None)
    return parameter.device if parameter is not None else fallback


def _check_options(
    patch_size: tuple[int, ...],
    overlap: float,
    sw_batch_size: int,
    blend: str,
    mirror_axes: Sequence[int] | None,
) -> None:
    spatial_dims = len(patch_size)
    if spatial_dims not in (2, 3) or any(p < 1 for p in patch_size):
        raise ConfigError(f"patch_size must be 2 or 3 positive sizes in voxels, got {patch_size}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise ConfigError(f"sw_batch_size must be at least 1, got {sw_batch_size}")
    if blend not in BLEND_MODES:
        raise ConfigError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    axes = tuple(mirror_axes or ())
    if len(set(axes)) != len(axes) or any(not 0 <= a < spatial_dims for a in axes):
        raise ConfigError(
            f"mirror_axes must be distinct spatial axes in 0..{spatial_dims - 1}, got {tuple(axes)}"
        )
