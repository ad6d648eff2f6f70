"""SAM's mask decoder: output tokens + prompts through the two-way transformer, hypernetwork masks at 4x.

Parameter names are those of segment-anything's `MaskDecoder`, so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medattn.models.sam.common import LayerNorm2d


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (SAM's hypernetwork and IoU heads)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers over the last axis."""
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MaskDecoder(nn.Module):
    """Predict masks and their quality (IoU) from an image embedding and prompt embeddings.

    Args:
        transformer_dim: channel width of the transformer (256 in SAM).
        transformer: the two-way transformer.
        num_multimask_outputs: masks predicted when disambiguating; one more token gives the single mask.
        activation: activation of the upscaling convolutions.
        iou_head_depth: layers of the IoU head.
        iou_head_hidden_dim: hidden width of the IoU head.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, 1 or num_multimask_outputs, 4h, 4w) as logits, and their predicted IoU.

        Args:
            image_embeddings: (1 or B, D, h, w); one image is shared by all B prompts, as in SAM, and B
                images pair with B prompts one to one, as in MedSAM's batched training.
            image_pe: positional encoding of the embedding grid, (1, D, h, w).
            sparse_prompt_embeddings: point and box tokens (B, N, D).
            dense_prompt_embeddings: mask-prompt embedding (B, D, h, w).
            multimask_output: return the three disambiguating masks instead of the single one.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        mask_token_count: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every mask token's mask (B, num_mask_tokens, 4h, 4w) and the IoU predictions (B, num_mask_tokens).

        Args:
            mask_token_count: compute masks for only the first this many tokens (all by default); the
                tokens still all take part in the transformer, so the kept masks are unchanged.
        """
        mask_token_count = mask_token_count or self.num_mask_tokens
        prompts = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(prompts, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        src = image_embeddings
        if src.shape[0] != prompts:
            src = torch.repeat_interleave(src, prompts, dim=0)
        src = src + dense_prompt_embeddings
        pos_src = image_pe.expand(prompts, -1, -1, -1)
        batch, channels, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, channels, h, w))
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(mask_token_count)],
            dim=1,
        )
        batch, channels, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(batch, channels, h * w)).reshape(batch, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
