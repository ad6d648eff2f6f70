"""Prompted prediction for the SAM family: each 2D image whole at the model's input size, 3D volumes slice by
slice along the last axis with the box carried from the neighbouring slice.

Prompted models see the whole image, resized to their input size (the package's patch size, or SAM's fixed
img_size), as MedSAM does; the logits are resized back to the image's own grid. Nothing is reoriented or
resampled: boxes and points are pixels of the input image, x along its first spatial axis and y along its
second (medattn's 2D layout), and a 3D volume's slices are its last axis, as stored (axial for the usual
CT/MR series).

3D: the slice the user's box is drawn on (or every slice a prior mask covers) is segmented with it; then
each object's box moves slice by slice up and down the volume, as the bounding box of its mask on the slice
before, pushed out by `CARRY_MARGIN` pixels, until its mask vanishes. Without any prompt every image or
slice is segmented in SAM's no-prompt mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.transforms import Compose, Orientationd, Spacingd

from medattn.device import autocast
from medattn.errors import ConfigError, GeometryError
from medattn.inference.network_outputs import class_probabilities, mean_attention_map
from medattn.models.sam.preprocess import medsam_preprocess, scale_intensities
from medattn.models.sam.prompts import Box, ImagePrompts, Point, expand_box, mask_box
from medattn.plan import MEDSAM_PRESET, Plan

#: Pixels each carried box is pushed out by on every side, so an object that grows between slices fits.
CARRY_MARGIN = 5.0

# segment(slice index or None for 2D, boxes) -> per-object class probabilities (N, K, W, H).
SegmentFn = Callable[[int, list[Box]], torch.Tensor]


@dataclass
class PromptedInput:
    """A SAM-family model's input for one image (`Predictor.preprocess`): the intensity-normalised image on
    its own grid, the prompts, and a factory for the `SliceSegmenter` that runs the network on its slices
    (called with whether to keep attention maps)."""

    image: torch.Tensor
    prompts: ImagePrompts | None
    segmenter: Callable[[bool], SliceSegmenter]


def no_prompts_error(model: str) -> ConfigError:
    """The error for prompts given to a model that takes none."""
    return ConfigError(
        f"model '{model}' takes no prompts (--box, --point, --prior-mask, --box-model are for the SAM "
        "family: sam, sam_adapter, ccsam, medsam_ca, run with --engine torch)"
    )


def prompted_input_size(network: torch.nn.Module, plan: Plan) -> tuple[int, int]:
    """The size (W, H) prompted images are resized to: SAM's fixed img_size, else the training patch."""
    fixed = getattr(network, "fixed_input_size", None)
    size = tuple(int(s) for s in (fixed or plan.patch_size))
    if len(size) != 2:
        raise ConfigError(f"a prompted model takes 2D inputs, but the package's patch size is {list(size)}")
    return size


def _modality(image: torch.Tensor) -> str:
    meta = getattr(image, "meta", {}) or {}
    if str(meta.get("modality", "")).upper() == "CT":
        return "ct"
    return "rgb" if image.shape[0] == 3 else "other"


def prepare_image(
    plan: Plan, image: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Normalise intensities and return the image with the function that resizes one (C, W, H) slice of it.

    The package's own intensity steps run on the input grid (its orientation and resampling steps are
    skipped: prompts are input pixels), then bilinear resizing. A package whose plan has the ``"medsam"``
    preset (written by hand, e.g. around a MedSAM checkpoint) uses MedSAM's conventions instead (see
    `medattn.models.sam.preprocess`): CT window or percentile clip and [0, 1] scaling over the whole image or
    volume, then per slice 3 channels, bicubic resize to the square input size, min-max.
    """
    if plan.preset == MEDSAM_PRESET:
        if size[0] != size[1]:
            raise ConfigError(
                f"MedSAM's preprocessing resizes to a square; the package's size is {list(size)}"
            )
        plain = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        scaled = scale_intensities(plain, _modality(image))
        # MedSAM repeats grey to 3 channels; a 1-channel network takes one of the identical copies.
        return scaled, lambda slice_: medsam_preprocess(slice_, "rgb", img_size=size[0])[: plan.in_channels]
    from medattn.transforms import preprocessing

    steps = [
        t
        for t in preprocessing(plan, keys=("image",), load=False)
        if not isinstance(t, Orientationd | Spacingd)
    ]
    normalised = Compose(steps)({"image": image.clone()})["image"]
    normalised = normalised.as_tensor() if hasattr(normalised, "as_tensor") else torch.as_tensor(normalised)
    return normalised, resizer(size)


def resizer(size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function resizing a (C, W, H) slice to `size` (bilinear, antialiased when shrinking)."""

    def resize(slice_: torch.Tensor) -> torch.Tensor:
        if tuple(slice_.shape[1:]) == tuple(size):
            return slice_.float()
        smaller = any(t < s for t, s in zip(size, slice_.shape[1:], strict=True))
        return F.interpolate(slice_[None].float(), size=size, mode="bilinear", antialias=smaller)[0]

    return resize


class SliceSegmenter:
    """Runs a prompted network on single 2D images (C, W, H): resize in, one forward per object (batched),
    logits resized back and turned into class probabilities.

    Args:
        network: a SAM-family model in eval mode, taking medattn's (B, C, W, H) layout.
        prepare: resizes a (C, W, H) slice to the network's input size (from `prepare_image`).
        device: where the network runs.
        amp_dtype: autocast dtype on CUDA, None for float32.
        batch_size: objects per forward pass.
        with_attention: keep the mean of the network's attention maps per call in `last_attention`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        batch_size: int = 4,
        with_attention: bool = False,
    ):
        self.network = network
        self.prepare = prepare
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.batch_size = max(1, int(batch_size))
        self.with_attention = with_attention
        self.last_attention: torch.Tensor | None = None

    def __call__(
        self, image: torch.Tensor, boxes: Sequence[Box], points: Sequence[Point] = ()
    ) -> torch.Tensor:
        """Class probabilities (N, K, W, H) on the image's grid, one per box (one object without boxes)."""
        grid = tuple(image.shape[1:])
        resized = self.prepare(image).to(self.device)
        scale = torch.tensor([resized.shape[1] / grid[0], resized.shape[2] / grid[1]])
        all_boxes = torch.tensor([list(b) for b in boxes], dtype=torch.float32).reshape(-1, 4) * scale.repeat(
            2
        )
        count = max(len(boxes), 1)
        probabilities, attention = [], []
        for start in range(0, count, self.batch_size):
            n = min(self.batch_size, count - start)
            prompts = {}
            if len(boxes):
                prompts["boxes"] = all_boxes[start : start + n].to(self.device)
            if points:
                coords = torch.tensor([[p[0], p[1]] for p in points], dtype=torch.float32) * scale
                labels = torch.tensor([p[2] for p in points], dtype=torch.long)
                prompts["points"] = (
                    coords.expand(n, -1, -1).to(self.device),
                    labels.expand(n, -1).to(self.device),
                )
            logits = self._forward(resized[None].expand(n, -1, -1, -1), prompts)
            logits = F.interpolate(logits.float().cpu(), size=grid, mode="bilinear", align_corners=False)
            probabilities.append(class_probabilities(logits))
            if self.with_attention:
                attention.append(self._attention(grid))
        self.last_attention = torch.cat(attention) if attention else None
        return torch.cat(probabilities)

    def _forward(self, batch: torch.Tensor, prompts: dict) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            output = self.network(batch, **prompts)
        return output[0] if isinstance(output, (list, tuple)) else output

    def _attention(self, grid: tuple[int, ...]) -> torch.Tensor:
        return mean_attention_map(self.network, grid, mode="bilinear").cpu()


def combine_objects(probabilities: torch.Tensor) -> torch.Tensor:
    """One (K, ...) map from per-object probabilities (N, K, ...): each class where any object has it most,
    background where all agree, renormalised to sum to 1."""
    if probabilities.shape[0] == 1:
        return probabilities[0]
    combined = probabilities.amax(dim=0)
    combined[0] = probabilities[:, 0].amin(dim=0)
    return combined / combined.sum(dim=0, keepdim=True).clamp_min(1e-12)


def carried_boxes(probabilities: torch.Tensor, margin: float) -> list[Box]:
    """The next slice's boxes: each object's mask box (any foreground class) pushed out by `margin` pixels;
    objects whose mask vanished drop out."""
    boxes = []
    for object_probabilities in probabilities:
        box = mask_box(object_probabilities.argmax(dim=0) > 0)
        if box is not None:
            boxes.append(expand_box(box, margin, object_probabilities.shape[1:]))
    return boxes


def propagate(
    segment: SegmentFn, depth: int, seeds: dict[int, list[Box]], margin: float = CARRY_MARGIN
) -> dict[int, torch.Tensor]:
    """Segment seeded slices with their boxes, then carry each object's box up and down the volume.

    From every seeded slice, each direction goes on while some object's mask remains and stops at the
    volume's end or at the next seeded slice (which has its own boxes).

    Args:
        segment: ``segment(k, boxes)`` -> per-object probabilities (N, K, W, H) of slice k; an empty box list
            means one object without a box (points only, or no prompt).
        depth: number of slices.
        seeds: slice index -> its boxes.
        margin: pixels each carried box is pushed out by.

    Returns:
        slice index -> per-object probabilities of every visit, concatenated (a slice between two seeds may
        be reached from both).
    """
    visits: dict[int, list[torch.Tensor]] = {}
    for start in sorted(seeds):
        if not 0 <= start < depth:
            raise GeometryError(f"slice {start} is outside the volume's {depth} slices (0 to {depth - 1})")
        first = segment(start, list(seeds[start]))
        visits.setdefault(start, []).append(first)
        for step in (1, -1):
            boxes, index = carried_boxes(first, margin), start + step
            while boxes and 0 <= index < depth and index not in seeds:
                probabilities = segment(index, boxes)
                visits.setdefault(index, []).append(probabilities)
                boxes, index = carried_boxes(probabilities, margin), index + step
    return {index: torch.cat(found) for index, found in visits.items()}


def _check_inside(prompts: ImagePrompts, grid: Sequence[int], depth: int | None) -> None:
    width, height = grid[0], grid[1]
    boxes = list(prompts.boxes) + [b for bs in prompts.slice_boxes.values() for b in bs]
    for x0, y0, x1, y1 in boxes:
        if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
            raise GeometryError(
                f"box {(x0, y0, x1, y1)} lies outside the {width} x {height} image (x, y pixels)"
            )
    for x, y, _ in prompts.points:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise GeometryError(f"point {(x, y)} lies outside the {width} x {height} image (x, y pixels)")
    if depth is None and prompts.slice_index is not None:
        raise ConfigError("a slice index (--slice) is for 3D volumes; this image is 2D")
    if depth is not None and (prompts.boxes or prompts.points) and prompts.slice_index is None:
        raise ConfigError(
            f"a box or point on a 3D volume needs the slice it is drawn on: --slice K (0 to {depth - 1}, "
            "along the last axis)"
        )


def predict_prompted(
    image: torch.Tensor, prompts: ImagePrompts | None, segmenter: SliceSegmenter, margin: float = CARRY_MARGIN
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (K, *spatial) of a normalised 2D (C, W, H) or 3D (C, W, H, D) image on its grid.

    Args:
        image: the image after `prepare_image`'s intensity step.
        prompts: boxes/points (3D: on ``prompts.slice_index``) or per-slice boxes; None or empty for SAM's
            no-prompt mode on every image or slice.
        segmenter: runs the network on one slice.
        margin: pixels each carried box is pushed out by (3D).

    Returns:
        Probabilities, float32 on the CPU (slices no object reached are background), and the mean attention
        map (1, *spatial) when the segmenter keeps it.
    """
    prompts = prompts or ImagePrompts()
    depth = image.shape[3] if image.ndim == 4 else None
    _check_inside(prompts, image.shape[1:3], depth)
    if depth is None:
        if prompts.from_mask and not prompts.boxes:
            return _background(segmenter, image.shape[1:]), _no_attention(segmenter, image.shape[1:])
        probabilities = segmenter(image, prompts.boxes, prompts.points)
        attention = segmenter.last_attention
        return combine_objects(probabilities), None if attention is None else attention.amax(dim=0)
    if prompts.from_mask:
        seeds = dict(prompts.slice_boxes)
    elif prompts.boxes or prompts.points:
        seeds = {prompts.slice_index: list(prompts.boxes)}
    else:  # no prompt at all: SAM's no-prompt mode on every slice
        seeds = {k: [] for k in range(depth)}
    attention_by_slice: dict[int, torch.Tensor] = {}

    def segment(index: int, boxes: list[Box]) -> torch.Tensor:
        points = prompts.points if index == prompts.slice_index else ()
        result = segmenter(image[..., index], boxes, points)
        if segmenter.last_attention is not None:
            previous = attention_by_slice.get(index)
            current = segmenter.last_attention.amax(dim=0)
            attention_by_slice[index] = current if previous is None else torch.maximum(previous, current)
        return result

    visited = propagate(segment, depth, seeds, margin)
    volume = _background(segmenter, image.shape[1:])  # background where no object reached
    for index, probabilities in visited.items():
        volume[..., index] = combine_objects(probabilities)
    attention = _no_attention(segmenter, image.shape[1:])
    for index, values in attention_by_slice.items():
        attention[..., index] = values
    return volume, attention


def _background(segmenter: SliceSegmenter, spatial: Sequence[int]) -> torch.Tensor:
    """All-background probabilities (K, *spatial); K = the network's classes (2 for one sigmoid logit)."""
    classes = max(int(getattr(segmenter.network, "out_channels", 2)), 2)
    volume = torch.zeros(classes, *spatial)
    volume[0] = 1.0
    return volume


def _no_attention(segmenter: SliceSegmenter, spatial: Sequence[int]) -> torch.Tensor | None:
    return torch.zeros(1, *spatial) if segmenter.with_attention else None
