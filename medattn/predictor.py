"""`Predictor`: a loaded model package that turns one image into a mask on that image's own grid.

The steps are the package's preprocessing (orient, resample, normalise), gaussian sliding-window
inference of a copy of the network with batch norms folded (`medattn.inference.fuse`), softmax, then the
probabilities go back through resampling and reorientation onto the input grid, where the argmax is taken
(interpolating probabilities, not labels, keeps thin structures). On axis-aligned grids both resamplings
are separable (`medattn.inference.resample`) and equal MONAI's Spacingd/Invertd to float rounding; oblique
grids use MONAI's. The returned mask has the input's affine and shape exactly.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Spacingd

from medattn.errors import ConfigError
from medattn.inference.postprocess import argmax_labels
from medattn.inference.resample import resample_aligned, resample_labels_aligned
from medattn.inference.sliding_window import channels_last_format, choose_stitch_device, to_host
from medattn.models.base import compiled
from medattn.package import PackageConfig, load_package
from medattn.transforms.normalize import zscore_channels_, zscore_parameters
from medattn.transforms.presets import preprocessing


def checked_lesion_threshold(threshold: float | None) -> float | None:
    """`threshold` if it is None or a probability in (0, 1]; else ConfigError naming --lesion-threshold."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--lesion-threshold is a probability in (0, 1], got {threshold}")
    return threshold


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error, not a CUDA traceback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from error


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: this kind of CPU runs bf16 80-140x slower than fp32."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"unknown --amp {amp!r}; use auto, bf16, fp16 or off")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass
class PredictionOutput:
    """A case's mask on its input grid, with the optional probability and attention volumes."""

    mask: MetaTensor  # (1, *spatial) integer labels
    probabilities: MetaTensor | None = None  # (num_classes, *spatial) float32
    attention: MetaTensor | None = None  # (1, *spatial) float32


class Predictor:
    """A model package ready to segment images.

    Args:
        network: the trained network (eval mode).
        config: the package's configuration (plan, labels, model name).
        device: 'auto', 'cpu' or 'cuda[:N]'.
        amp: 'auto' (bf16 on CUDA where supported), 'bf16', 'fp16' or 'off'.
        overlap: sliding-window overlap (0-1).
        sw_batch_size: windows per forward pass.
        tta: mirror test-time augmentation over every spatial axis (2^dims passes).
        stitch_device: where the stitched logits live: 'auto' (default) keeps them on the GPU while they
            fit in half its available memory and stitches on the CPU otherwise (`choose_stitch_device`,
            decided per image); 'cpu' always lets a large CT fit a small GPU.
        compile: run the windows through ``torch.compile`` (True: its default inductor backend; or a
            backend, by name or as a callable). The first windows wait for the compilation (about a
            minute for AGUNet on CPU); every batch is then padded to `sw_batch_size` windows so it
            compiles only once.
        lesion_threshold: a voxel is lesion wherever a lesion label's probability reaches this, whatever
            the other classes score (None: the argmax alone). Lesion labels are those
            `medattn.plan.lesion_labels` names (lesion, tumour, nodule...). Below 0.5 it trades false
            positives for sensitivity: on domain-shifted scans a small lesion's probability often peaks
            at 0.2-0.4, under the argmax's bar (BENCHMARKS.md, accuracy at equal time).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        config: PackageConfig,
        *,
        device: str = "auto",
        amp: str = "auto",
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        tta: bool = False,
        stitch_device: str | None = None,
        compile: bool | str | Callable = False,
        lesion_threshold: float | None = None,
    ):
        self.lesion_threshold = checked_lesion_threshold(lesion_threshold)
        self.device = resolve_device(device)
        self.compile = compile
        self.amp_dtype = resolve_amp(amp, self.device)
        self._network = network.to(self.device).eval()
        # Channels-last once here: the sliding window runs in it (faster convolutions on CPU and CUDA) and
        # then converts nothing per call.
        if isinstance(self._network, torch.nn.Module):
            self._network.to(memory_format=channels_last_format(config.plan.spatial_dims))
        self._fused: torch.nn.Module | None = None
        if compile and self.accepts_prompts:
            raise ConfigError(
                f"--compile compiles sliding-window networks; {config.model} (SAM family) segments whole "
                "images and runs uncompiled: leave --compile out"
            )
        self.config = config
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.tta = tta
        self.stitch_device = _resolve_stitch_device(stitch_device)
        self._preprocess = Compose(preprocessing(config.plan, keys=("image",), load=False))
        # MONAI's transforms keep call state on the object (an inverse turns tracing off while it runs):
        # one thread at a time uses them, so a pipelined batch can preprocess and invert on two threads.
        self._transforms_lock = threading.Lock()
        # Lazy copies of the (bilinear, border-padded) Spacingd steps: they compute the output grid only.
        self._lazy_spacing = {
            id(t): _lazy_copy(t) for t in self._preprocess.transforms if _separable_spacing_applies(t)
        }

    @property
    def network(self) -> torch.nn.Module:
        """The trained network (eval mode), as trained: batch norms and all, ready to fine-tune or inspect."""
        # The caller may change its weights: the inference copy is rebuilt from it before the next window.
        self._fused = None
        return self._network

    @network.setter
    def network(self, network: torch.nn.Module) -> None:
        self._network, self._fused = network, None

    def _inference_network(self) -> torch.nn.Module:
        """The network the sliding window runs: a copy with batch norms folded (`fuse_for_inference`)."""
        if not any(True for _ in self._network.parameters()):
            return self._network  # an exported engine (onnxruntime's OnnxEngine) optimises its own graph
        if self._fused is None:
            from medattn.inference.fuse import fuse_for_inference

            self._fused = fuse_for_inference(self._network)
            self._fused = compiled(self._fused, self.compile)
        return self._fused

    @property
    def plan(self):
        return self.config.plan

    def load(self, path: str | Path) -> MetaTensor:
        """Read an input the way this model needs it (spatial dims and channel count checked)."""
        from medattn.io import load_image

        return load_image(path, spatial_dims=self.input_spatial_dims, channels=self.plan.in_channels)

    @property
    def accepts_prompts(self) -> bool:
        """Whether the network takes box/point prompts (the SAM family): such models segment each 2D image
        whole at their input size, and 3D volumes slice by slice, instead of by sliding windows."""
        return bool(getattr(self._network, "accepts_prompts", False))

    @property
    def input_spatial_dims(self) -> int | None:
        """Spatial dims an input must have: the plan's, or None (2D or 3D) for prompted 2D models."""
        return None if self.accepts_prompts else self.plan.spatial_dims

    def predict(
        self,
        image: MetaTensor | str | Path,
        box=None,
        points=None,
        slice_index: int | None = None,
    ) -> MetaTensor:
        """Segment one image; returns labels (1, *spatial) on the image's own grid (same affine, shape).

        Args:
            image: a MetaTensor (C, *spatial) or a path.
            box: SAM family: one box ``(x0, y0, x1, y1)`` / ``"x0,y0,x1,y1"`` or a list of them, in pixels
                of the image (x along its first spatial axis, y along its second).
            points: SAM family: ``(x, y)`` or ``(x, y, label)`` (1 foreground, 0 background), or a list.
            slice_index: 3D volumes: the slice (last axis) the box and points are drawn on; the box is
                carried to the slices above and below while the mask lasts.
        """
        prompts = None
        if box is not None or points is not None or slice_index is not None:
            from medattn.inference.prompted import ImagePrompts

            prompts = ImagePrompts.build(box=box, points=points, slice_index=slice_index)
        return self.predict_case(image, prompts=prompts).mask

    def predict_case(
        self,
        image: MetaTensor | str | Path,
        probabilities: bool = False,
        attention: bool = False,
        prompts=None,
    ) -> PredictionOutput:
        """Segment one image, optionally keeping probabilities and the stitched attention map.

        `prompts` (a `medattn.inference.prompted.ImagePrompts`) are for the SAM family, which is run by
        `medattn.inference.prompted` (with or without prompts) instead of sliding windows.
        """
        if not isinstance(image, MetaTensor):
            image = self.load(image)
        if prompts is not None or self.accepts_prompts:
            self._check(image)
            return self._predict_prompted(image, prompts, probabilities, attention)
        preprocessed = self.preprocess(image)  # checks the image
        stitched = self.sliding_window(preprocessed, attention=attention)
        return self.finish(stitched, preprocessed, image, probabilities=probabilities)

    # The stages of `predict_case` (preprocess, sliding_window, finish), public so that benchmarks time
    # exactly what prediction runs and a batch can run them on different threads (pipelines/predict.py).

    def preprocess(self, image: MetaTensor) -> MetaTensor:
        """The package's preprocessing (orientation, spacing, intensity) on a copy of `image`.

        Resampling to the plan's spacing is separable on axis-aligned grids (`resample_aligned`): MONAI's
        Spacingd is asked for the output grid only (lazily), and the values are interpolated axis by axis,
        equal to Spacingd's to float rounding at about a third of its time. Oblique grids run Spacingd.
        The z-score normalisation runs in place (`zscore_channels_`, equal to NormalizeIntensityd's, at a
        tenth of its time).

        Raises:
            ConfigError: the image's spatial dims or channel count do not fit the model.
        """
        self._check(image)
        with self._transforms_lock:
            return self._run_preprocessing(image)

    def _run_preprocessing(self, image: MetaTensor) -> MetaTensor:
        # MONAI's intensity transforms write into their input when no resampling copied it first: work on a
        # copy so the caller's image (and the overlay drawn on it) keeps its values.
        data = {"image": image.clone()}
        for transform in self._preprocess.transforms:
            current = data["image"]
            lazy_twin = self._lazy_spacing.get(id(transform))
            resampled = None if lazy_twin is None else _separable_spacing(current, lazy_twin)
            nonzero = zscore_parameters(transform)
            if resampled is not None:
                data = {"image": resampled}
            elif nonzero is not None and current.dtype == torch.float32:
                # Our own copy (cloned or resampled above): normalised in place, metadata kept.
                zscore_channels_(current.as_tensor(), nonzero)
            else:
                data = transform(data)
        return data["image"]

    def stitch_device_for(self, preprocessed: MetaTensor, attention: bool = False) -> torch.device:
        """Where `sliding_window` stitches this image: the chosen stitch device, or with 'auto' the GPU
        while the stitched volumes fit in half its available memory, else the CPU."""
        if self.stitch_device is not None:
            return self.stitch_device
        return choose_stitch_device(
            self.device, preprocessed.shape[1:], self.plan.num_classes, self.plan.in_channels, attention
        )

    def sliding_window(self, preprocessed: MetaTensor, attention: bool = False):
        """Class probabilities (C, *model grid) of a preprocessed image; with `attention`, also the map."""
        from medattn.inference import sliding_window_predict

        return sliding_window_predict(
            self._inference_network(),
            preprocessed.as_tensor(),
            self.plan.patch_size,
            overlap=self.overlap,
            sw_batch_size=self.sw_batch_size,
            mirror_axes=tuple(range(self.plan.spatial_dims)) if self.tta else None,
            amp_dtype=self.amp_dtype,
            device=self.device,
            stitch_device=self.stitch_device_for(preprocessed, attention),
            return_attention=attention,
            pad_last_batch=bool(self.compile),
        )

    def finish(
        self,
        stitched: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        preprocessed: MetaTensor,
        image: MetaTensor,
        probabilities: bool = False,
    ) -> PredictionOutput:
        """The sliding window's output (probabilities, or with attention the pair) back on `image`'s grid:
        the mask, and the probabilities if asked for and the attention map if given, on that grid."""
        probs, attention_map = stitched if isinstance(stitched, tuple) else (stitched, None)
        labels, on_input = self.to_input_labels(probs, preprocessed, image, keep_probabilities=probabilities)
        return PredictionOutput(
            mask=MetaTensor(labels[None], affine=image.affine, meta=_plain_meta(image)),
            probabilities=on_input,
            attention=None
            if attention_map is None
            else self._to_input_grid(attention_map, preprocessed, image),
        )

    def to_input_labels(
        self,
        probs: torch.Tensor,
        preprocessed: MetaTensor,
        image: MetaTensor,
        keep_probabilities: bool = False,
    ) -> tuple[torch.Tensor, MetaTensor | None]:
        """Labels (*input grid) from model-grid probabilities, and the input-grid probabilities if asked.

        Without probabilities to keep, aligned 3D grids go straight to labels (`resample_labels_aligned`:
        probabilities are interpolated only along label boundaries); `lesion_threshold` is then applied on
        the model's grid, where the labels are decided.
        """
        lesions = self._thresholded_lesions()
        if not keep_probabilities and self.plan.spatial_dims == 3:
            scores = to_host(probs)
            if lesions:
                # lesion wherever its probability reaches the threshold: lift it above every other class
                scores = scores.clone()
                for value in lesions:
                    scores[value] += (scores[value] >= self.lesion_threshold).to(scores.dtype)
            labels = resample_labels_aligned(
                scores,
                np.asarray(preprocessed.affine),
                np.asarray(image.affine),
                image.shape[1:],
            )
            if labels is not None:
                return labels, None
        on_input = self._to_input_grid(probs, preprocessed, image)
        labels = argmax_labels(on_input.as_tensor())
        for value in lesions:
            labels[on_input.as_tensor()[value] >= self.lesion_threshold] = value
        return labels, on_input if keep_probabilities else None

    def _thresholded_lesions(self) -> list[int]:
        """The lesion labels `lesion_threshold` applies to (none without a threshold)."""
        if self.lesion_threshold is None:
            return []
        from medattn.plan import lesion_labels

        volumes = (self.config.fingerprint or {}).get("label_volumes_ml")
        return [v for v in lesion_labels(self.plan, volumes) if 0 < v < self.plan.num_classes]

    def _predict_prompted(
        self, image: MetaTensor, prompts, probabilities: bool, attention: bool
    ) -> PredictionOutput:
        """The SAM family's path: the whole image (3D: slice by slice) at the model's input size."""
        from medattn.inference.prompted import (
            SliceSegmenter,
            no_prompts_error,
            predict_prompted,
            prepare_image,
            prompted_input_size,
        )

        if not self.accepts_prompts:
            raise no_prompts_error(self.config.model)
        if self.tta:
            raise ConfigError("--tta flips sliding windows; prompted (SAM family) models run without it")
        size = prompted_input_size(self._network, self.plan)
        normalised, resize = prepare_image(self.plan, image, size)
        segmenter = SliceSegmenter(
            self._network, resize, self.device, self.amp_dtype, self.sw_batch_size, with_attention=attention
        )
        probs, attention_map = predict_prompted(normalised, prompts, segmenter)
        labels = probs.argmax(dim=0, keepdim=True).to(torch.uint8 if probs.shape[0] < 256 else torch.int32)
        return PredictionOutput(
            mask=MetaTensor(labels, affine=image.affine, meta=_plain_meta(image)),
            probabilities=MetaTensor(probs, affine=image.affine) if probabilities else None,
            attention=None if attention_map is None else MetaTensor(attention_map, affine=image.affine),
        )

    def _check(self, image: MetaTensor) -> None:
        source = image.meta.get("filename_or_obj", "image")
        # A 2D prompted model also segments a volume, slice by slice.
        sliced = self.accepts_prompts and image.ndim == 4
        if image.ndim - 1 != self.plan.spatial_dims and not sliced:
            raise ConfigError(
                f"{source}: the model is {self.plan.spatial_dims}D, the image has shape {tuple(image.shape)}"
            )
        if image.shape[0] != self.plan.in_channels:
            raise ConfigError(
                f"{source}: the model takes {self.plan.in_channels} channel(s), the image {image.shape[0]}"
            )

    def _to_input_grid(
        self, volume: torch.Tensor, preprocessed: MetaTensor, original: MetaTensor
    ) -> MetaTensor:
        """Undo orientation and resampling (MONAI Invertd, bilinear on probabilities) onto the input grid."""
        volume = to_host(volume)
        if self.plan.spatial_dims == 2:
            return MetaTensor(volume, affine=original.affine)
        # Reorientation and new spacing keep the grids axis-aligned: separable trilinear resampling gives
        # Invertd's values several times faster; oblique inputs fall through to Invertd.
        fast = resample_aligned(
            volume, np.asarray(preprocessed.affine), np.asarray(original.affine), original.shape[1:]
        )
        if fast is not None:
            return MetaTensor(fast, affine=original.affine)
        meta = {k: v for k, v in preprocessed.meta.items() if k != "affine"}
        tracked = MetaTensor(volume, affine=preprocessed.affine, meta=meta)
        tracked.applied_operations = list(preprocessed.applied_operations)
        inverter = Invertd("pred", transform=self._preprocess, orig_keys="image", nearest_interp=False)
        with self._transforms_lock:
            inverted = inverter({"pred": tracked, "image": preprocessed})["pred"]
        if tuple(inverted.shape[1:]) != tuple(original.shape[1:]):
            raise ConfigError(
                f"internal: inverted shape {tuple(inverted.shape[1:])} != input {tuple(original.shape[1:])}"
            )
        return MetaTensor(inverted.as_tensor(), affine=original.affine)


def _resolve_stitch_device(stitch_device: str | torch.device | None) -> torch.device | None:
    """A fixed stitch device, or None for 'auto' (chosen per image by `choose_stitch_device`)."""
    if stitch_device is None or str(stitch_device) == "auto":
        return None
    try:
        return torch.device(stitch_device)
    except RuntimeError as error:
        raise ConfigError(f"unknown stitch device {stitch_device!r}; use auto, cpu or cuda[:N]") from error


def _separable_spacing_applies(transform) -> bool:
    """A Spacingd whose interpolation `resample_aligned` reproduces: bilinear, border padding."""
    if not isinstance(transform, Spacingd):
        return False
    return (
        [str(m) for m in transform.mode] == ["bilinear"]
        and [str(m) for m in transform.padding_mode] == ["border"]
        and not any(transform.align_corners)
    )


def _lazy_copy(transform):
    twin = copy.deepcopy(transform)
    twin.lazy = True
    return twin


def _separable_spacing(image: MetaTensor, lazy_spacing) -> MetaTensor | None:
    """`image` resampled onto the grid the lazy Spacingd plans; None when that grid is not axis-aligned."""
    if image.ndim != 4:
        return None
    planned = lazy_spacing({"image": image})["image"]  # metadata only: no values are resampled
    affine = np.asarray(planned.peek_pending_affine(), dtype=np.float64)
    resampled = resample_aligned(
        image.as_tensor().float(),
        np.asarray(image.affine, dtype=np.float64),
        affine,
        planned.peek_pending_shape(),
    )
    if resampled is None:
        return None
    meta = {k: v for k, v in image.meta.items() if k != "affine"}
    return MetaTensor(resampled, affine=torch.as_tensor(affine), meta=meta)


def _plain_meta(image: MetaTensor) -> dict:
    keep = ("filename_or_obj", "modality", "spacing", "series_uid", "first_slice_file", "space")
    return {k: image.meta[k] for k in keep if k in image.meta}


def load_model(path: str | Path, engine: str = "torch", **options) -> Predictor:
    """Load a model package folder as a Predictor (options as `Predictor`'s: device, amp, overlap...).

    `engine` "onnx" runs the windows through onnxruntime (`medattn.inference.engines`), in float32: AMP
    is switched off, as autocast does not reach onnxruntime.
    """
    network, config = load_package(path)
    if engine != "torch" and options.get("compile"):
        raise ConfigError(f"--compile is for the torch engine; {engine} optimises its own graph")
    if engine != "torch":
        from medattn.inference.engines import package_engine

        device = resolve_device(options.get("device", "auto"))
        network = package_engine(engine, network, config, path, device)
        options = {**options, "amp": "off"}
    return Predictor(network, config, **options)
