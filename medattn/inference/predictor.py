"""`Predictor`: a loaded model package that turns one image into a mask on that image's own grid.

A case runs three stages, public so that a batch can run them on different threads
(`medattn.inference.stages`) and benchmarks time exactly what prediction runs:

- `preprocess`: the package's preprocessing (orient, resample, normalise; `Preprocessor`), or for the SAM
  family the intensity step and the prompts;
- `infer`: gaussian sliding-window inference of a copy of the network with batch norms folded
  (`medattn.inference.fuse`) and softmax, or for the SAM family each image whole at the model's input
  size, volumes slice by slice (`medattn.inference.prompted`); the result (`Inferred`) is on the host;
- `finish`: the probabilities back onto the input grid (`medattn.inference.resample`), where the argmax is
  taken (interpolating probabilities, not labels, keeps thin structures).

The returned mask has the input's affine and shape exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import MetaTensor

from medattn.device import channels_last_format, resolve_amp, resolve_device, to_host
from medattn.errors import ConfigError
from medattn.inference.resample import labels_on_input_grid, to_input_grid
from medattn.inference.stitch_memory import choose_stitch_device, resolve_stitch_device
from medattn.inference.uncertainty import mutual_information, normalized_entropy
from medattn.models.base import compiled
from medattn.package import PackageConfig, load_package
from medattn.transforms.preprocess import Preprocessor


def checked_lesion_threshold(threshold: float | None) -> float | None:
    """`threshold` if it is None or a probability in (0, 1]; else ConfigError naming --lesion-threshold."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--lesion-threshold is a probability in (0, 1], got {threshold}")
    return threshold


@dataclass
class Inferred:
    """What `infer` hands `finish`, on the host, on the model's grid (the SAM family: the input's)."""

    probabilities: torch.Tensor  # (C, *grid)
    attention: torch.Tensor | None = None  # (1, *grid) mean attention map, when asked
    pass_entropy: torch.Tensor | None = None  # (1, *grid) nats: the mirrored TTA passes' mean entropy


@dataclass
class PredictionOutput:
    """A case's mask on its input grid, with the optional probability, attention and uncertainty volumes."""

    mask: MetaTensor  # (1, *spatial) integer labels
    probabilities: MetaTensor | None = None  # (num_classes, *spatial) float32
    attention: MetaTensor | None = None  # (1, *spatial) float32
    uncertainty: MetaTensor | None = None  # (1, *spatial) normalized entropy in [0, 1]
    disagreement: MetaTensor | None = None  # (1, *spatial) members' (folds, TTA passes) mutual information


class Predictor:
    """A model package ready to segment images.

    Args:
        network: the trained network (eval mode).
        config: the package's configuration (plan, labels, model name).
        device: 'auto', 'cpu' or 'cuda[:N]'.
        amp: 'auto' (bf16 on CUDA where supported), 'bf16', 'fp16' or 'off'.
        overlap: sliding-window overlap (0-1).
        sw_batch_size: windows per forward pass.
        tta: mirror test-time augmentation over every spatial axis (2^dims passes). With uncertainty
            asked, each pass is an ensemble member: `finish` adds their disagreement map.
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
        self.stitch_device = resolve_stitch_device(stitch_device)
        self.preprocessor = Preprocessor(config.plan)

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
            from medattn.models.sam.prompts import ImagePrompts

            prompts = ImagePrompts.build(box=box, points=points, slice_index=slice_index)
        return self.predict_case(image, prompts=prompts).mask

    def predict_case(
        self,
        image: MetaTensor | str | Path,
        probabilities: bool = False,
        attention: bool = False,
        prompts=None,
    ) -> PredictionOutput:
        """Segment one image through the three stages, optionally keeping probabilities and attention.

        `prompts` (a `medattn.inference.prompted.ImagePrompts`) are for the SAM family.
        """
        if not isinstance(image, MetaTensor):
            image = self.load(image)
        prepared = self.preprocess(image, prompts)
        return self.finish(self.infer(prepared, attention=attention), prepared, image, probabilities)

    def preprocess(self, image: MetaTensor, prompts=None):
        """The model's input made from `image`: the package's preprocessing on a copy (sliding-window
        models: a MetaTensor on the model's grid), or for the SAM family a `PromptedInput`.

        Raises:
            ConfigError: the image's spatial dims or channel count do not fit the model, or prompts are
                given to a model that takes none.
        """
        self.check(image)
        if prompts is not None or self.accepts_prompts:
            return self._prompted_input(image, prompts)
        return self.preprocessor(image)

    def infer(self, prepared, attention: bool = False, uncertainty: bool = False) -> Inferred:
        """Class probabilities on the host, with the mean attention map when asked, and with `uncertainty`
        under TTA the mirrored passes' mean entropy; the device work of a case."""
        from medattn.inference.prompted import PromptedInput, predict_prompted

        if isinstance(prepared, PromptedInput):
            probs, attention_map = predict_prompted(
                prepared.image, prepared.prompts, prepared.segmenter(attention)
            )
            return Inferred(probs, attention_map)
        stitched = self.sliding_window(prepared, attention=attention, pass_entropy=uncertainty and self.tta)
        if isinstance(stitched, torch.Tensor):
            return Inferred(to_host(stitched))
        attention_map, pass_entropy = (
            None if v is None else to_host(v) for v in (stitched.attention, stitched.pass_entropy)
        )
        return Inferred(to_host(stitched.probabilities), attention_map, pass_entropy)

    def stitch_device_for(self, preprocessed: MetaTensor, extra_maps: int = 0) -> torch.device:
        """Where `sliding_window` stitches this image (with `extra_maps` maps beside the logits): the chosen
        stitch device, or with 'auto' the GPU while the stitched volumes fit in half its available memory,
        else the CPU."""
        if self.stitch_device is not None:
            return self.stitch_device
        return choose_stitch_device(
            self.device, preprocessed.shape[1:], self.plan.num_classes, self.plan.in_channels, extra_maps
        )

    def sliding_window(self, preprocessed: MetaTensor, attention: bool = False, pass_entropy: bool = False):
        """Class probabilities (C, *model grid) of a preprocessed image; with `attention` or `pass_entropy`
        a `StitchedMaps` holding those maps too."""
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
            stitch_device=self.stitch_device_for(preprocessed, int(attention) + int(pass_entropy)),
            return_attention=attention,
            return_pass_entropy=pass_entropy,
            pad_last_batch=bool(self.compile),
        )

    def finish(
        self,
        inferred: Inferred,
        prepared,
        image: MetaTensor,
        probabilities: bool = False,
        uncertainty: bool = False,
    ) -> PredictionOutput:
        """What `infer` returned, on `image`'s grid: the mask, the attention map if there is one, and with
        `probabilities` or `uncertainty` the class probabilities on that grid; with `uncertainty` also
        their normalized entropy and, under TTA, the passes' disagreement (mutual information)."""
        probs = inferred.probabilities
        keep = probabilities or uncertainty
        if not isinstance(prepared, MetaTensor):  # the SAM family predicts on the input grid
            labels = probs.argmax(dim=0).to(torch.uint8 if probs.shape[0] < 256 else torch.int32)
            on_input = MetaTensor(probs, affine=image.affine) if keep else None
            attention = inferred.attention
            attention = None if attention is None else MetaTensor(attention, affine=image.affine)
        else:
            labels, on_input = self.to_input_labels(probs, prepared, image, keep_probabilities=keep)
            attention = None
            if inferred.attention is not None:
                attention = to_input_grid(inferred.attention, prepared, image, self.preprocessor)
        output = PredictionOutput(
            mask=MetaTensor(labels[None], affine=image.affine, meta=mask_meta(image)),
            probabilities=on_input,
            attention=attention,
        )
        if uncertainty:
            passes = self.pass_entropy_on_input(inferred, prepared, image)
            output.uncertainty, output.disagreement = uncertainty_maps(on_input.as_tensor(), passes, image)
        return output

    def pass_entropy_on_input(self, inferred: Inferred, prepared, image: MetaTensor) -> torch.Tensor | None:
        """The mirrored TTA passes' mean entropy (*input grid, nats), or None when `infer` made none."""
        if inferred.pass_entropy is None:
            return None
        return to_input_grid(inferred.pass_entropy, prepared, image, self.preprocessor).as_tensor()[0]

    def to_input_labels(
        self,
        probs: torch.Tensor,
        preprocessed: MetaTensor,
        image: MetaTensor,
        keep_probabilities: bool = False,
    ) -> tuple[torch.Tensor, MetaTensor | None]:
        """Labels (*input grid) from model-grid probabilities, with `lesion_threshold` applied to the
        package's lesion labels, and the input-grid probabilities if asked (`labels_on_input_grid`)."""
        return labels_on_input_grid(
            probs,
            preprocessed,
            image,
            self.preprocessor,
            self.thresholded_lesions(),
            self.lesion_threshold,
            keep_probabilities,
        )

    def thresholded_lesions(self) -> list[int]:
        """The lesion labels `lesion_threshold` applies to (none without a threshold); an `Ensemble` applies
        its first member's."""
        if self.lesion_threshold is None:
            return []
        from medattn.plan import lesion_labels

        volumes = (self.config.fingerprint or {}).get("label_volumes_ml")
        return [v for v in lesion_labels(self.plan, volumes) if 0 < v < self.plan.num_classes]

    def _prompted_input(self, image: MetaTensor, prompts):
        """The SAM family's input: the whole image (3D: slice by slice) at the model's input size."""
        from medattn.inference.prompted import (
            PromptedInput,
            SliceSegmenter,
            no_prompts_error,
            prepare_image,
            prompted_input_size,
        )

        if not self.accepts_prompts:
            raise no_prompts_error(self.config.model)
        if self.tta:
            raise ConfigError("--tta flips sliding windows; prompted (SAM family) models run without it")
        normalised, resize = prepare_image(self.plan, image, prompted_input_size(self._network, self.plan))

        def segmenter(attention: bool) -> SliceSegmenter:
            return SliceSegmenter(
                self._network, resize, self.device, self.amp_dtype, self.sw_batch_size, attention
            )

        return PromptedInput(normalised, prompts, segmenter)

    def check(self, image: MetaTensor) -> None:
        """ConfigError when `image` does not fit the model: its spatial dims or channel count."""
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


def uncertainty_maps(
    mean_probabilities: torch.Tensor, mean_member_entropy: torch.Tensor | None, image: MetaTensor
) -> tuple[MetaTensor, MetaTensor | None]:
    """The uncertainty map (normalized entropy of the members' mean probabilities) and, given the members'
    mean entropy in nats, the disagreement map (their mutual information; None without it): each
    (1, *spatial) float32 on `image`'s grid."""
    total = MetaTensor(normalized_entropy(mean_probabilities)[None].float(), affine=image.affine)
    if mean_member_entropy is None:
        return total, None
    disagreement = mutual_information(mean_probabilities, mean_member_entropy)
    return total, MetaTensor(disagreement[None].float(), affine=image.affine)


def mask_meta(image: MetaTensor) -> dict:
    """The image's meta that a mask made for it keeps (source, modality, spacing, series)."""
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
