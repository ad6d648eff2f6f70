"""`ccsam`: SAM with a CNN branch (a ResNet) fused by variational attention, feature and position adapters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medattn.errors import ConfigError, GeometryError, InputNotFoundError
from medattn.models.backbones import Backbone, load_backbone
from medattn.models.layouts import torchvision_resnet
from medattn.models.registry import register_model
from medattn.models.resnet import ResNetEncoder
from medattn.models.sam.adapter import BottleneckAdapter
from medattn.models.sam.checkpoint import load_checkpoint
from medattn.models.sam.model import SAM, Points, Prompts
from medattn.models.sam_fusion import VariationalFusion, added_prefixes

FUSIONS = ("variational", "attention", "none")


@register_model(
    "ccsam",
    description=(
        "CC-SAM (Gowda & Clifton 2024): frozen SAM ViT with 5 feature adapters and a position adapter, a "
        "ResNet CNN branch fused by variational attention, optional text-embedding prompts. 2D, any size."
    ),
    spatial_dims=(2,),
    tiny={"variant": "tiny", "cnn_channels": (8, 8, 16), "cnn_blocks": (1, 1, 1)},
    tiny_size=48,
)
class CCSAM(SAM):
    """CC-SAM (Gowda & Clifton, ECCV 2024) in medattn's reading; the paper has no public code.

    - **CNN branch**: the first three stages of a ResNet in torchvision's layout (stem, then stages at
      1/4, 1/8, 1/16; by default ResNet-18's), whose 1/16 feature meets SAM's embedding grid. The paper
      keeps a pretrained CNN frozen; its architecture and weights are not published. Here the branch is
      frozen when ``backbone_weights`` names a local file (nothing is downloaded): a torchvision ResNet
      state dict (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...; ``layer4`` and ``fc`` are
      unused) or a medattn ccsam model.pt; without one it starts random and trains, since a frozen random
      branch would fuse a random projection of the image into SAM's features. ``freeze_cnn=True``
      without weights is refused; ``freeze_cnn=False`` fine-tunes loaded weights. A frozen branch stays
      in eval mode, so its batch-norm statistics never move.
    - **Variational attention fusion**: the CNN feature at 1/16, projected to SAM's embedding width, and
      SAM's image embedding give the mean and log-variance of a per-position fusion logit; training
      samples it (reparameterisation), eval uses the mean; w = sigmoid(logit) gives
      w sam + (1 - w) cnn. The KL divergence to N(0, 1) is in ``auxiliary_terms["fusion_kl"]`` and
      ``auxiliary_loss()`` returns it times ``kl_weight``. ``fusion="attention"`` keeps the mean always
      (no sampling, no KL) and ``"none"`` drops the CNN branch.
    - **Adapters** (from SAMUS, which CC-SAM builds on): five feature adapters x + GELU(x Md) Mu with
      Mu zero at start -- one on the patch tokens and one in each global-attention block of the ViT
      (four in ViT-B/L/H; on the attention output, the block's adapter slot) -- and one position adapter
      that resizes SAM's position embedding to the input's grid, so any multiple of 16 pixels works.
    - **Text prompts**: a precomputed text embedding (e.g. a CLIP vector of a class description) is
      projected by a learned linear layer into one extra sparse prompt token. Give it per call
      (``forward(..., text_embedding=(B, D) tensor)``) or once in the configuration
      (``text_embedding="prompt.npy"``, a (D,) or (1, D) array, kept as a buffer in the weights).

    Trainable: adapters, fusion, the CNN branch unless frozen (see above), the text projection, and SAM's
    mask decoder (less the parts no output uses, as in `sam`). Frozen: the ViT and neck, the prompt
    encoder, a pretrained CNN branch. Outputs and prompts as in `sam`. `attention_maps()` holds the
    fusion weight w (``fusion``), in [0, 1].

    Args:
        spatial_dims: must be 2.
        in_channels: image channels (3 for the public checkpoints).
        out_channels: 1 (sigmoid logit) or classes with background (2 to 5), as in `sam`.
        variant: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or ``"tiny"`` (tests).
        checkpoint: local SAM/MedSAM ``.pth`` loaded into the SAM part.
        freeze_prompt_encoder: keep the prompt encoder fixed.
        layout: "xy" (medattn's (C, W, H) arrays, the default) or "hw" (SAM's own (C, H, W)); see `SAM`.
        cnn_channels: widths of the CNN branch's three ResNet stages (ResNet-18/34/50: 64, 128, 256).
        cnn_blocks: residual blocks per stage (ResNet-18: 2, 2, 2; ResNet-34 and -50: 3, 4, 6).
        cnn_block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50).
        freeze_cnn: keep the CNN branch fixed; None (default): frozen exactly when `backbone_weights` is
            given. True needs `backbone_weights`.
        backbone_weights: local file with the CNN branch's weights (see above); not kept in packages.
        fusion: ``"variational"``, ``"attention"`` (mean only) or ``"none"``.
        kl_weight: weight of the fusion's KL term in `auxiliary_loss`.
        feature_adapters: the five feature adapters.
        adapter_ratio: feature-adapter width over token width.
        text_embedding: ``.npy`` file with one text embedding used for every image (or its numbers).
        text_dim: width of text embeddings passed to `forward` (taken from the file when one is given).

    Example:
        >>> model = create("ccsam", 2, 3, 1, checkpoint="sam_vit_b_01ec64.pth", text_embedding="thyroid.npy")
        >>> logits = model(images_256, boxes=boxes)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        variant: str = "vit_b",
        checkpoint: str | None = None,
        freeze_prompt_encoder: bool = True,
        layout: str = "xy",
        cnn_channels: Sequence[int] = (64, 128, 256),
        cnn_blocks: Sequence[int] = (2, 2, 2),
        cnn_block: str = "basic",
        freeze_cnn: bool | None = None,
        backbone_weights: str | None = None,
        fusion: str = "variational",
        kl_weight: float = 0.01,
        feature_adapters: bool = True,
        adapter_ratio: float = 0.25,
        text_embedding: str | list[float] | None = None,
        text_dim: int | None = None,
    ):
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
        if len(cnn_channels) != 3:
            raise ConfigError(f"cnn_channels needs 3 widths (stages at 1/4, 1/8, 1/16), got {cnn_channels}")
        if freeze_cnn and backbone_weights is None:
            raise ConfigError(
                "freeze_cnn=True would keep the CNN branch at random weights, so the fusion would mix a "
                "random projection of the image into SAM's features: give backbone_weights (a local "
                "torchvision ResNet .pth, e.g. ResNet-18's) or leave freeze_cnn unset so the branch trains"
            )
        super().__init__(
            spatial_dims, in_channels, out_channels, variant, None, freeze_prompt_encoder, layout
        )
        encoder = self.image_encoder
        dim, width = self.variant.embed_dim, self.variant.prompt_embed_dim
        self.kl_weight = kl_weight
        self.freeze_cnn = backbone_weights is not None if freeze_cnn is None else freeze_cnn
        self.cnn = (
            ResNetEncoder(2, in_channels, cnn_channels, cnn_blocks, cnn_block, downsample_bias=False)
            if fusion != "none"
            else None
        )
        self.fusion = (
            VariationalFusion(width, self.cnn.channels[-1], stochastic=fusion == "variational")
            if self.cnn is not None
            else None
        )
        self.input_adapter = BottleneckAdapter(dim, adapter_ratio) if feature_adapters else None
        if feature_adapters:
            for block in encoder.blocks:
                if block.window_size == 0:
                    block.adapter = BottleneckAdapter(dim, adapter_ratio)
        self.accept_any_input_size()
        vector = _read_text_embedding(text_embedding) if text_embedding is not None else None
        self.register_buffer("text_embedding", vector)
        if vector is not None:
            text_dim = vector.shape[-1]
        self._text: torch.Tensor | None = None
        self.text_projection = nn.Linear(text_dim, width) if text_dim else None
        if checkpoint is not None:
            load_checkpoint(self, checkpoint, optional_prefixes=added_prefixes(self))
        self.pretrained_backbone = Backbone(
            "cnn.",
            torchvision_resnet("layers", count=3),
            "set cnn_channels, cnn_blocks and cnn_block to the file's ResNet (ResNet-18: (64, 128, 256), "
            "(2, 2, 2), basic)",
        )
        if backbone_weights is not None and self.cnn is not None:
            load_backbone(self, backbone_weights, self.pretrained_backbone)
        adapters = ("position_adapter.", *(f"blocks.{i}.adapter." for i in range(len(encoder.blocks))))
        for name, parameter in encoder.named_parameters():
            if not name.startswith(adapters):
                parameter.requires_grad_(False)
        if self.cnn is not None and self.freeze_cnn:
            self.freeze("cnn")
            self.cnn.eval()

    def train(self, mode: bool = True) -> CCSAM:
        """Switch train/eval mode; a frozen CNN branch stays in eval mode (fixed batch-norm statistics)."""
        super().train(mode)
        if self.cnn is not None and self.freeze_cnn:
            self.cnn.eval()
        return self

    def forward(
        self,
        x: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: Points | torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        text_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits (B, out_channels, H, W); prompts as in `SAM.forward`.

        Args:
            text_embedding: (B, text_dim) or (text_dim,) precomputed text embeddings; overrides the one
                from the configuration.
        """
        self._text = text_embedding
        try:
            return super().forward(x, boxes, points, mask_inputs)
        finally:
            self._text = None

    def auxiliary_loss(self) -> torch.Tensor | None:
        """``kl_weight`` x the variational fusion's KL term of the last forward, or None."""
        kl = self.auxiliary_terms.get("fusion_kl")
        return None if kl is None else self.kl_weight * kl

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """SAM's image embedding (B, D, H/16, W/16), with the input adapter on the patch tokens and the
        position embedding fitted to the input's grid, fused with the CNN branch's 1/16 feature."""
        encoder = self.image_encoder
        tokens = encoder.embed(x, self.input_adapter)
        for block in encoder.blocks:
            tokens = block(tokens)
        embedding = encoder.neck(tokens.permute(0, 3, 1, 2))
        if self.fusion is None:
            return embedding
        embedding, kl_divergence = self.fusion(embedding, self.cnn(x)[-1])
        if self.fusion.stochastic:
            self.auxiliary_terms["fusion_kl"] = kl_divergence
        return embedding

    def decode(self, embedding: torch.Tensor, input_size: tuple[int, int], prompts: Prompts) -> torch.Tensor:
        """`SAM.decode` with the text token, if any, after the box and point tokens."""
        batch, _, h, w = embedding.shape
        sparse, dense = self.encode_prompts(prompts, input_size, (h, w), batch)
        text = self._text_tokens(batch)
        if text is not None:
            sparse = torch.cat([sparse, text], dim=1)
        masks, _ = self.mask_decoder.predict_masks(
            embedding,
            self.prompt_encoder.get_dense_pe((h, w)),
            sparse,
            dense,
            mask_token_count=self.mask_token_count,
        )
        return masks

    def _text_tokens(self, batch: int) -> torch.Tensor | None:
        text = self._text if self._text is not None else self.text_embedding
        if text is None:
            return None
        if self.text_projection is None:
            raise ConfigError("ccsam got a text embedding but was built without text_dim or text_embedding")
        text = text.reshape(1, -1) if text.ndim == 1 else text
        expected = self.text_projection.in_features
        if text.ndim != 2 or text.shape[-1] != expected or text.shape[0] not in (1, batch):
            raise GeometryError(
                f"ccsam takes text embeddings of shape ({batch}, {expected}) or ({expected},), got "
                f"{tuple(text.shape)}"
            )
        tokens = self.text_projection(text.to(self.text_projection.weight.dtype))
        return tokens.expand(batch, -1).unsqueeze(1)


def _read_text_embedding(path: str | list[float]) -> torch.Tensor:
    """One text embedding (1, D) from a ``.npy`` file holding a (D,) or (1, D) array, or the D numbers
    themselves (how a model package stores it, so it does not depend on the file)."""
    if isinstance(path, (list, tuple)):
        return torch.as_tensor(path, dtype=torch.float32).reshape(1, -1)
    file = Path(path)
    if not file.is_file():
        raise InputNotFoundError("text embedding file not found; give a .npy file with one (D,) vector", file)
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ConfigError(f"cannot read it as a .npy array ({error})", file) from error
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"holds an array of shape {array.shape}; a text embedding is one (D,) vector", file)
    return torch.as_tensor(array, dtype=torch.float32).reshape(1, -1)
