"""`sam`: Segment Anything as a medattn segmentation model, loading SAM and MedSAM checkpoints key for key."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medattn.errors import ConfigError, GeometryError
from medattn.models.base import SegmentationModel
from medattn.models.registry import register_model
from medattn.models.sam.checkpoint import load_checkpoint
from medattn.models.sam.image_encoder import PositionAdapter
from medattn.models.sam.preprocess import resize_coordinates
from medattn.models.sam.prompts import jittered_boxes
from medattn.models.sam.variants import (
    build_image_encoder,
    build_mask_decoder,
    build_prompt_encoder,
    get_variant,
)

Points = tuple[torch.Tensor, torch.Tensor]
LAYOUTS = ("xy", "hw")


@dataclass
class Prompts:
    """The prompts of one forward call, in input pixels (x along the last axis, SAM's layout)."""

    boxes: torch.Tensor | None = None
    points: Points | None = None
    mask_inputs: torch.Tensor | None = None


@register_model(
    "sam",
    description=(
        "Segment Anything (Kirillov et al. 2023) / MedSAM: ViT encoder, prompt encoder, two-way mask "
        "decoder; loads SAM/MedSAM .pth files; box/point prompts. 2D, fixed input size."
    ),
    spatial_dims=(2,),
    tiny={"variant": "tiny"},
    tiny_size=64,
)
class SAM(SegmentationModel):
    """Segment Anything (Kirillov et al., ICCV 2023) with MedSAM's fine-tuning conventions (Ma et al. 2024).

    The submodules `image_encoder`, `prompt_encoder` and `mask_decoder` have segment-anything's parameter
    names and shapes, so the public SAM ViT-B/L/H and MedSAM ``.pth`` files load strictly
    (``checkpoint=``). Inputs are (B, C, img_size, img_size) images, prepared by
    `medattn.models.sam.preprocess.medsam_preprocess` for MedSAM weights (plus `sam_normalise` for the
    original SAM weights).

    Output: mask logits at the input size, from SAM's single-mask output (``multimask_output=False``),
    upsampled bilinearly from the decoder's 4x-embedding grid as SAM's postprocessing does.

    - ``out_channels=1``: one sigmoid logit per pixel (foreground), as SAM and MedSAM train it.
    - ``out_channels=K >= 2`` (classes with background, medattn's softmax convention): channel 0 is a
      constant 0 logit and channel k >= 1 comes from mask token k - 1 (SAM has 4), so for K=2 the softmax
      foreground probability equals sigmoid of SAM's mask logit.

    Prompts: ``forward(x, boxes=None, points=None, mask_inputs=None)``; without any, SAM's no-prompt
    embeddings are used (SAM's no-prompt mode). Boxes and points are always (x, y) pixels of the input image.

    Layout: medattn's 2D tensors are (B, C, W, H), x along the first spatial axis (MONAI's PILReader), while
    SAM's modules take (B, C, H, W) with x along the last. With ``layout="xy"`` (default) the model takes
    medattn's layout and transposes the image (and a prior mask) in, the logits and attention maps out;
    ``layout="hw"`` takes SAM's own layout unchanged (the reference comparisons use it). Boxes and points
    need no change: (x, y) of the image is (x, y) in either layout.

    Training: `training_prompts` gives the box prompts MedSAM trains with (the label's bounding box, each
    side pushed out by up to ``box_jitter`` pixels of the img_size frame); the trainer calls it when a
    model has it.

    The forward pass is `encode_image` -> `decode` (prompts, two-way decoder) -> `to_output`; families built
    on SAM override the step they change.

    Freezing: the prompt encoder is frozen by default (``freeze_prompt_encoder=True``), as in MedSAM, whose
    boxes come from ground truth; the IoU head and the mask tokens' hypernetwork MLPs that no output
    channel uses are frozen too, since no segmentation loss reaches them. `freeze_encoder()` also freezes
    the ViT; `unfreeze()` lets everything train.

    Args:
        spatial_dims: must be 2.
        in_channels: image channels; 3 for the public checkpoints.
        out_channels: 1 (sigmoid logit) or classes with background (2 to 5).
        variant: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` (SAM's sizes, 1024 px input) or ``"tiny"`` (tests).
        checkpoint: local SAM/MedSAM ``.pth`` file to load (a ``module.`` prefix is removed).
        freeze_prompt_encoder: keep the prompt encoder's weights fixed when fine-tuning.
        layout: ``"xy"`` for medattn's (B, C, W, H) tensors, ``"hw"`` for SAM's (B, C, H, W).

    Example:
        >>> model = create("sam", 2, in_channels=3, out_channels=1, checkpoint="medsam_vit_b.pth")
        >>> image = medsam_preprocess(ct_slice, "ct")[None]  # (1, 3, 1024, 1024)
        >>> logits = model(image, boxes=torch.tensor([[100.0, 200.0, 400.0, 500.0]]))
    """

    encoder_prefixes = ("image_encoder",)
    #: Prediction runs the whole image at the model's input size with box/point prompts, not sliding windows.
    accepts_prompts = True
    #: MedSAM's training box jitter (bbox_shift): up to this many pixels of the img_size frame per side.
    box_jitter = 20.0

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        variant: str = "vit_b",
        checkpoint: str | None = None,
        freeze_prompt_encoder: bool = True,
        layout: str = "xy",
    ):
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        config = get_variant(variant)
        # The absolute position embedding fixes the input size; `accept_any_input_size` lifts that.
        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            size_divisor=config.patch_size,
            fixed_input_size=(config.img_size, config.img_size),
        )
        if spatial_dims != 2:
            raise ConfigError(f"{type(self).__name__} is a 2D model; build it with spatial_dims=2")
        self.variant = config
        self.layout = layout
        self.image_encoder = build_image_encoder(config, in_chans=in_channels)
        self.prompt_encoder = build_prompt_encoder(config)
        self.mask_decoder = build_mask_decoder(config)
        self.mask_token_count = max(out_channels - 1, 1)
        if self.mask_token_count > self.mask_decoder.num_mask_tokens:
            tokens = self.mask_decoder.num_mask_tokens
            raise ConfigError(
                f"SAM's decoder has {tokens} mask tokens, so out_channels can be at most {tokens + 1} "
                f"(classes with background); got {out_channels}"
            )
        if checkpoint is not None:
            load_checkpoint(self, checkpoint)
        if freeze_prompt_encoder:
            self.freeze("prompt_encoder")
        unused = range(self.mask_token_count, self.mask_decoder.num_mask_tokens)
        hypernetworks = [f"mask_decoder.output_hypernetworks_mlps.{i}" for i in unused]
        self.freeze("mask_decoder.iou_prediction_head", *hypernetworks)
        self._prompts = Prompts()

    def accept_any_input_size(self, correction: bool = True) -> None:
        """Take inputs of any multiple of 16 pixels per side (256 x 256 ultrasound frames, say), not only
        img_size: the SAM-family adapters' shared input contract (sam_adapter, ccsam, medsam_ca).

        A `PositionAdapter` resizes the position embedding to the input's token grid in every forward (the
        relative-position tables already are); boxes and points are still mapped to the img_size frame
        the prompt encoder was trained in (`encode_prompts`). At img_size the model is unchanged.

        Args:
            correction: also learn the adapter's depthwise correction of the resized embedding (it starts
                at zero; `image_encoder.position_adapter.correction.*` in the state dict).
        """
        self.image_encoder.position_adapter = PositionAdapter(self.variant.embed_dim, correction)
        self.fixed_input_size = None

    def forward(
        self,
        x: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: Points | torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits for images and optional prompts, in the input's layout and size.

        Args:
            x: images, (B, C, W, H) with ``layout="xy"``, (B, C, H, W) with ``"hw"``.
            boxes: (B, 4) boxes (x0, y0, x1, y1) in input pixels, one per image.
            points: ``(coords, labels)``: coords (B, N, 2) as (x, y) input pixels, labels (B, N) with 1 for
                foreground, 0 for background, -1 for padding; a bare coords tensor means all foreground.
            mask_inputs: prior mask logits (B, 1, h, w) in the input's layout, e.g. a previous prediction;
                resized to 4x the embedding grid (256 x 256 at 1024) as SAM's prompt encoder expects.
        """
        if isinstance(points, torch.Tensor):
            points = (points, torch.ones(points.shape[:-1], dtype=torch.long, device=points.device))
        self._check_prompts(x, boxes, points, mask_inputs)
        transpose = self.layout == "xy"
        if transpose:
            x = x.transpose(-1, -2)
            mask_inputs = None if mask_inputs is None else mask_inputs.transpose(-1, -2)
        self._prompts = Prompts(boxes, points, mask_inputs)
        try:
            logits = super().forward(x)
        finally:
            self._prompts = Prompts()
        return logits.transpose(-1, -2) if transpose else logits

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The last forward's attention maps (B, 1, *input spatial), in the input's layout."""
        maps = super().attention_maps()
        return {name: m.transpose(-1, -2) for name, m in maps.items()} if self.layout == "xy" else maps

    def training_prompts(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Prompts for a training batch: MedSAM's jittered ground-truth boxes, one per label patch.

        Args:
            labels: (B, 1, *spatial) label patch in the input's layout (values > 0 are foreground).

        Returns:
            ``{"boxes": (B, 4)}`` in (x, y) pixels of the input, for ``forward(x, **prompts)``.
        """
        width, height = labels.shape[-2:] if self.layout == "xy" else labels.shape[-2:][::-1]
        # The jitter is in pixels of the img_size frame the boxes are mapped to; here in input pixels.
        frame = self.variant.img_size
        shift = (self.box_jitter * width / frame, self.box_jitter * height / frame)
        return {"boxes": jittered_boxes(labels, shift, layout=self.layout).to(labels.device)}

    def _check_prompts(
        self, x: torch.Tensor, boxes: torch.Tensor | None, points: Points | None, masks: torch.Tensor | None
    ) -> None:
        batch = x.shape[0]
        expected = {"boxes": (batch, 4), "point coordinates": (batch, None, 2), "point labels": (batch, None)}
        given = {
            "boxes": boxes,
            "point coordinates": None if points is None else points[0],
            "point labels": None if points is None else points[1],
        }
        for name, tensor in given.items():
            shape = expected[name]
            if tensor is None:
                continue
            if tensor.ndim != len(shape) or any(
                e is not None and e != s for e, s in zip(shape, tensor.shape, strict=True)
            ):
                raise GeometryError(
                    f"{type(self).__name__}: {name} must have shape {shape} (None: any) for a batch of "
                    f"{batch} image(s), got {tuple(tensor.shape)}"
                )
        if points is not None and points[0].shape[1] != points[1].shape[1]:
            raise GeometryError(f"{points[0].shape[1]} point coordinates but {points[1].shape[1]} labels")
        if masks is not None and (masks.ndim != 4 or masks.shape[:2] != (batch, 1)):
            raise GeometryError(f"mask_inputs must be ({batch}, 1, h, w), got {tuple(masks.shape)}")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.encode_image(x)
        low_res = self.decode(embedding, tuple(x.shape[2:]), self._prompts)
        return self.to_output(low_res, tuple(x.shape[2:]))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """The image embedding (B, D, H/16, W/16) the decoder attends to; families that fuse other
        features into it (ccsam, medsam_ca) override this."""
        return self.image_encoder(x)

    def encode_prompts(
        self, prompts: Prompts, input_size: tuple[int, int], grid: tuple[int, int], batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, N, D) and dense (B, D, h, w) prompt embeddings for an embedding grid (h, w).

        Boxes and points in input pixels are mapped to the encoder's img_size frame, as MedSAM maps its
        boxes to 1024 x 1024 (the identity for the fixed-size `sam`); a prior mask is resized to 4x the grid.
        Without prompts, SAM's no-prompt embeddings are broadcast to the batch.
        """
        h, w = grid
        frame = (self.variant.img_size, self.variant.img_size)
        boxes = prompts.boxes
        if boxes is not None:
            boxes = resize_coordinates(boxes.float(), input_size, frame)
        points = None
        if prompts.points is not None:
            points = (resize_coordinates(prompts.points[0].float(), input_size, frame), prompts.points[1])
        masks = prompts.mask_inputs
        if masks is not None and tuple(masks.shape[2:]) != (4 * h, 4 * w):
            masks = F.interpolate(masks.float(), size=(4 * h, 4 * w), mode="bilinear", align_corners=False)
        sparse, dense = self.prompt_encoder(points, boxes, masks, embedding_size=grid)
        return sparse.expand(batch, -1, -1), dense.expand(batch, -1, -1, -1)

    def decode(self, embedding: torch.Tensor, input_size: tuple[int, int], prompts: Prompts) -> torch.Tensor:
        """Low-resolution mask logits (B, mask tokens used, 4h, 4w) from an image embedding (B, D, h, w)."""
        batch, _, h, w = embedding.shape
        sparse, dense = self.encode_prompts(prompts, input_size, (h, w), batch)
        masks, _ = self.mask_decoder.predict_masks(
            embedding,
            self.prompt_encoder.get_dense_pe((h, w)),
            sparse,
            dense,
            mask_token_count=self.mask_token_count,
        )
        return masks

    def to_output(self, low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Upsample to the input size (SAM's postprocessing); add the background channel for K >= 2."""
        logits = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
        if self.out_channels == 1:
            return logits
        return torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
