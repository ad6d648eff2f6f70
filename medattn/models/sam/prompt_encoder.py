"""SAM's prompt encoder: points and boxes to sparse tokens, a prior mask (or "no mask") to a dense map.

Parameter and buffer names are those of segment-anything's `PromptEncoder`, so checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medattn.models.sam.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) positions with random Gaussian frequencies (a buffer, not learned)."""

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None):
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coordinates normalised to [0, 1], (..., 2) -> (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding (C, h, w) of every cell centre of an (h, w) grid, which spans [0, 1] whatever its size."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)
        return self._pe_encoding(coords).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode (B, N, 2) pixel coordinates (x, y) of an image of `image_size` (H, W), (B, N, C)."""
        scale = coords_input.new_tensor([1.0 / image_size[1], 1.0 / image_size[0]])
        return self._pe_encoding((coords_input * scale).float())


class PromptEncoder(nn.Module):
    """Encode prompts for SAM's mask decoder.

    Args:
        embed_dim: prompt token width (256 for SAM).
        image_embedding_size: the image embedding grid (H, W) at the encoder's img_size (64x64 for 1024).
        input_image_size: the encoder's input size (H, W) in pixels; point and box coordinates are in it.
        mask_in_chans: hidden channels of the mask-downscaling convolutions.
        activation: activation of the mask-downscaling convolutions.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, embed_dim, h, w); `size` defaults to SAM's."""
        return self.pe_layer(size or self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Point tokens; label 1 foreground, 0 background, -1 padding (no point)."""
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0) * self.point_embeddings[0].weight
        return embedding + (labels == 1) * self.point_embeddings[1].weight

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Two corner tokens per (x0, y0, x1, y1) box."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_codes = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + corner_codes

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        embedding_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings.

        Args:
            points: coordinates (B, N, 2) as (x, y) pixels of `input_image_size`, and labels (B, N).
            boxes: (B, 4) as (x0, y0, x1, y1) pixels of `input_image_size`.
            masks: prior mask logits (B, 1, 4h, 4w) for an embedding grid (h, w).
            embedding_size: the image embedding grid (h, w) the dense output must match; SAM's by default.

        Returns:
            Sparse tokens (B, N_tokens, embed_dim) and dense embeddings (B, embed_dim, h, w).
        """
        batch = next((p.shape[0] for p in (points and points[0], boxes, masks) if p is not None), 1)
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty((batch, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = embedding_size or self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        return torch.cat(sparse, dim=1), dense
