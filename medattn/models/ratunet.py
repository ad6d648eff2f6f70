"""RATUNet: a U-Net whose lowest stages hold region-attention transformer blocks (Yang et al. 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.layers import Pool
from torch import nn

from medattn.errors import ConfigError, GeometryError
from medattn.models.agunet import DecoderLevel, channel_plan
from medattn.models.base import SegmentationModel, normalised_summary, record_attention
from medattn.models.blocks import conv, double_conv
from medattn.models.region_attention import RegionAttention, RegionPartition, window_ids
from medattn.models.registry import register_model
from medattn.transforms.regions import DEFAULT_COMPACTNESS, nearest_regions, superpixels

REGION_SOURCES = ("slic", "grid", "coarse")
#: Weight of the coarse head's self-distillation term in `auxiliary_loss()` (``regions="coarse"``).
COARSE_DISTILLATION_WEIGHT = 1.0


def _mlp(channels: int, ratio: float) -> nn.Sequential:
    hidden = max(int(channels * ratio), 1)
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))


class RegionTransformerLayer(nn.Module):
    """Their BasicLayer on tokens (B, N, C): region attention, MLP, window attention, MLP, each pre-norm.

    The two attention updates are scaled per channel by parameters that start at 0 (the block starts as
    MLPs only); the MLP residuals have no scale, as in the authors' code.
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float, scale: float | None):
        super().__init__()
        self.region_norm = nn.LayerNorm(channels, eps=1e-6)
        self.region_attention = RegionAttention(channels, num_heads, scale)
        self.region_scale = nn.Parameter(torch.zeros(channels))
        self.region_mlp = nn.Sequential(nn.LayerNorm(channels, eps=1e-6), _mlp(channels, mlp_ratio))
        self.window_norm = nn.LayerNorm(channels, eps=1e-6)
        self.window_attention = RegionAttention(channels, num_heads, scale)
        self.window_scale = nn.Parameter(torch.zeros(channels))
        self.window_mlp = nn.Sequential(nn.LayerNorm(channels, eps=1e-6), _mlp(channels, mlp_ratio))

    def forward(
        self, tokens: torch.Tensor, regions: RegionPartition, windows: RegionPartition
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the new tokens and the region-attention update (for the attention summary)."""
        update = self.region_scale * self.region_attention(self.region_norm(tokens), regions)
        tokens = tokens + update
        tokens = tokens + self.region_mlp(tokens)
        tokens = tokens + self.window_scale * self.window_attention(self.window_norm(tokens), windows)
        return tokens + self.window_mlp(tokens), update


class RegionTransformerStage(nn.Module):
    """Their middle blocks on a feature map (B, C, *grid): blocks of layers + 3^n conv, each block residual,
    and a residual around the whole stage.

    The attention summary recorded for `attention_maps()` is the per-voxel size of the sum of the
    region-attention updates of all layers, scaled to [0, 1] per sample: where attention within regions
    changed the features. It is 0 at initialisation (the attention scales start at 0).

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        blocks: blocks in the stage (their 12 layers come as 4 blocks of 3).
        layers_per_block: transformer layers per block.
        num_heads: attention heads (C must be divisible by it).
        window_size: window side in tokens for the window attention.
        mlp_ratio: MLP hidden width / C.
        scale: attention score factor; None = 1 / sqrt(C / num_heads).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        blocks: int,
        layers_per_block: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        scale: float | None,
    ):
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                RegionTransformerLayer(channels, num_heads, mlp_ratio, scale) for _ in range(layers_per_block)
            )
            for _ in range(blocks)
        )
        self.convs = nn.ModuleList(
            conv(spatial_dims, channels, channels, kernel_size=3) for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """`regions`: ids (B, 1, *grid) on x's grid."""
        batch, channels, *grid = x.shape
        region_partition = RegionPartition.from_regions(regions.flatten(1))
        windows = window_ids(grid, self.window_size, x.device).expand(batch, -1)
        window_partition = RegionPartition.from_regions(windows)
        shortcut, updates = x, 0
        for layers, block_conv in zip(self.blocks, self.convs, strict=True):
            tokens = x.flatten(2).transpose(1, 2)
            for layer in layers:
                tokens, update = layer(tokens, region_partition, window_partition)
                updates = updates + update
            x = x + block_conv(tokens.transpose(1, 2).reshape(x.shape))
        record_attention(self, normalised_summary(updates.transpose(1, 2).reshape(x.shape)))
        return x + shortcut


@register_model(
    "ratunet",
    description="U-Net with region-attention transformer blocks in its lowest stages (RAT, MICCAI 2024).",
    deep_supervision=True,
    loss="focal_region",  # cross-entropy weighted by region, over the regions the model attends within
    tiny={
        "base_channels": 4,
        "depth": 2,
        "transformer_stages": 2,
        "blocks": 1,
        "layers_per_block": 1,
        "num_heads": 2,
        "window_size": 2,
        "region_size": 8,
    },
)
class RATUNet(SegmentationModel):
    """U-Net with region-attention transformer stages at its lowest levels.

    Paper: Z. Yang et al., "Region Attention Transformer for Medical Image Restoration", MICCAI 2024
    (arXiv:2407.09268); code: github.com/Yaziwel/Region-Attention-Transformer-for-Medical-Image-Restoration.
    The paper restores images; medattn keeps its transformer and puts it into a segmentation U-Net.

    Architecture: AGUNet's conv levels (2 x (3^n conv, norm, ReLU), max-pooling, transposed-conv decoder
    with plain skips, deep-supervision heads finest first). After the conv block of each of the lowest
    `transformer_stages` levels (the bottleneck first) sits a `RegionTransformerStage`: `blocks` blocks of
    `layers_per_block` layers, each layer LayerNorm -> region attention (x per-channel scale from 0) ->
    MLP -> LayerNorm -> window attention (x scale from 0) -> MLP; a 3^n conv closes each block. As in
    their code: the attention scores are scaled by num_heads^-1/2 (not width^-1/2), the MLP residuals
    have no scale, window attention has no shift and no position bias. Their region attention is dense
    with a -1000 mask; here it is `region_attention` (exact, memory linear in tokens).

    Regions (ids per token; the transformer of each stage attends only within a region):
    - a map given to ``forward(x, regions=...)`` (B, 1, *spatial) of integer ids (e.g. SAM masks painted
      largest first, or `SuperpixelRegionsd`), resampled by nearest neighbour to each stage's grid;
    - otherwise `regions`: ``"slic"``: SLIC superpixels of the input average-pooled to the finest
      transformer stage's grid, computed on the CPU in every forward (BENCHMARKS.md, region attention),
      so sliding-window prediction and training see regions made the same way; ``"grid"``: cubes of
      about `region_size` tokens (with window_size the same side this is plain window attention);
      ``"coarse"``: classes of the argmax of a 1^n coarse head on the features entering the finest
      transformer stage. No labels reach the coarse head: in training `auxiliary_loss()` adds the cross-
      entropy between it and the network's own output (detached, area-downsampled), a self-distillation.
    Coarser stages take the finest stage's regions by nearest neighbour.

    Defaults (base 16, depth 3: channels 16-32-64-128, one transformer stage of 4 x 3 layers at 128
    channels, 8 heads; 1 input channel, 2 classes): 6.56 M parameters in 3D (5.0 M in the transformer),
    4.31 M in 2D. A 128^3 patch gives 16^3 = 4096 tokens and 64 SLIC seeds per sample (fewer regions
    on flat or noisy images, where SLIC merges fragments). 548 GFLOP per forward at 128^3, batch 2
    (convolutions and projections; the products within regions, which the counter misses on CPU, add
    about 6 GFLOP). Training step at 128^3, batch 2, float32 on CPU: 6.7 GB peak resident (an upper
    bound; the full-resolution conv activations dominate). The authors' dense region attention would
    keep 2 x 8 x 4096^2 float32 attention weights, 1.07 GB, per layer for the backward: 12.9 GB over the
    12 layers (bench/region_attention.py compares one layer).

    Attention maps: one per transformer stage, the size of its region-attention updates (see
    `RegionTransformerStage`). The last forward's regions are in ``last_regions`` (B, 1, *grid).

    Training loss: ``medattn train`` uses the focal region loss (`medattn.losses.focal_region`) over the
    model's own regions, `loss_regions()`, as their training passes the same region map to the network
    and to FocalRegionLoss. Their per-pixel loss is L1 (they restore images); here it is cross-entropy.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes including background.
        base_channels: channels of the finest level; each level doubles it up to `max_channels`.
        depth: number of poolings; inputs must be a multiple of 2**depth per axis.
        max_channels: cap on channels per level.
        norm: "instance" (default; batches of 2 in 3D), "batch" or "group".
        transformer_stages: how many of the lowest levels hold a transformer stage (1 = the bottleneck
            only, as the paper's middle blocks; 2 adds the level above).
        blocks: blocks per stage (4 in the paper).
        layers_per_block: layers per block (3 in the paper).
        num_heads: attention heads (8 in the paper); every stage's channels must be divisible by it.
        window_size: window side in tokens (4 in the paper).
        mlp_ratio: MLP hidden width / channels (2 in the paper).
        regions: "slic", "grid" or "coarse" (used when forward gets no region map).
        region_size: mean region size in tokens at the finest transformer stage (SLIC seeds = tokens /
            region_size; the grid cube side is region_size^(1/spatial_dims), rounded).
        compactness: SLIC compactness on intensities scaled to [0, 1].
        deep_supervision: in train mode return every decoder level's logits (finest first).
        dropout: spatial dropout after every conv.

    Example:
        >>> model = RATUNet(spatial_dims=3, in_channels=1, out_channels=2).eval()
        >>> logits = model(torch.zeros(1, 1, 64, 64, 64))  # SLIC regions computed inside
        >>> logits = model(image, regions=region_map)  # or a given map (1, 1, 64, 64, 64)
    """

    encoder_prefixes = ("encoder", "transformers")

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        base_channels: int = 16,
        depth: int = 3,
        max_channels: int = 256,
        norm: str = "instance",
        transformer_stages: int = 1,
        blocks: int = 4,
        layers_per_block: int = 3,
        num_heads: int = 8,
        window_size: int = 4,
        mlp_ratio: float = 2.0,
        regions: str = "slic",
        region_size: int = 64,
        compactness: float = DEFAULT_COMPACTNESS,
        deep_supervision: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__(
            spatial_dims, in_channels, out_channels, deep_supervision=deep_supervision, size_divisor=2**depth
        )
        features = channel_plan(base_channels, depth, max_channels)
        if regions not in REGION_SOURCES:
            raise ConfigError(f"regions must be one of {', '.join(REGION_SOURCES)}; got {regions!r}")
        if not 1 <= transformer_stages <= depth + 1:
            raise ConfigError(
                f"transformer_stages must be 1 ... depth + 1 = {depth + 1}, got {transformer_stages}"
            )
        if min(blocks, layers_per_block, num_heads, window_size, region_size) < 1 or compactness <= 0:
            raise ConfigError(
                "blocks, layers_per_block, num_heads, window_size, region_size and compactness must be "
                f"positive; got {blocks}, {layers_per_block}, {num_heads}, {window_size}, {region_size}, "
                f"{compactness}"
            )
        self.first_transformer_level = depth + 1 - transformer_stages
        uneven = [f for f in features[self.first_transformer_level :] if f % num_heads]
        if uneven:
            raise ConfigError(
                f"num_heads={num_heads} must divide the channels of every transformer stage "
                f"({features[self.first_transformer_level :]}); change num_heads or base_channels"
            )
        self.regions = regions
        self.region_size = region_size
        self.compactness = compactness
        self.pool = Pool[Pool.MAX, spatial_dims](2)
        self.encoder = nn.ModuleList(
            double_conv(spatial_dims, in_channels if level == 0 else features[level - 1], f, norm, dropout)
            for level, f in enumerate(features)
        )
        self.transformers = nn.ModuleList(
            RegionTransformerStage(
                spatial_dims,
                features[level],
                blocks,
                layers_per_block,
                num_heads,
                window_size,
                mlp_ratio,
                num_heads**-0.5,
            )
            for level in range(self.first_transformer_level, depth + 1)
        )
        level_channels = features[self.first_transformer_level]
        self.coarse_head = conv(spatial_dims, level_channels, out_channels) if regions == "coarse" else None
        self.decoder = nn.ModuleList(
            DecoderLevel(spatial_dims, features[k + 1], features[k], norm, None, False, features[-1], dropout)
            for k in range(depth)
        )
        head_levels = depth if deep_supervision else 1
        self.heads = nn.ModuleList(conv(spatial_dims, features[k], out_channels) for k in range(head_levels))

    def forward(
        self, x: torch.Tensor, regions: torch.Tensor | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """Logits for `x`; `regions` (B, 1, *spatial of x) integer ids replace the model's own regions."""
        self.__dict__["_given_regions"] = regions
        self.__dict__["last_given_regions"] = None
        try:
            return super().forward(x)
        finally:
            self.__dict__["_given_regions"] = None

    def loss_regions(self) -> torch.Tensor | None:
        """The regions of the last forward for the focal region loss, (B, 1, *grid) integer ids; None before
        the first forward.

        A map given to `forward` is returned at the input's resolution, as given (their loss takes the
        full-resolution SAM masks); otherwise the model's own regions on the finest transformer stage's
        grid (``last_regions``), which the loss resamples by nearest neighbour to each output.
        """
        given = self.__dict__.get("last_given_regions")
        return given if given is not None else self.__dict__.get("last_regions")

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The coarse head's self-distillation loss of the last forward (``regions="coarse"``), else None."""
        term = self.auxiliary_terms.get("coarse_distillation")
        return None if term is None else COARSE_DISTILLATION_WEIGHT * term

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips, h, region_ids, coarse_logits = [], x, None, None
        for level, block in enumerate(self.encoder):
            h = block(self.pool(h) if level else h)
            if level >= self.first_transformer_level:
                if region_ids is None:
                    region_ids, coarse_logits = self._region_ids(x, h)
                    self.__dict__["last_regions"] = region_ids
                stage = self.transformers[level - self.first_transformer_level]
                h = stage(h, nearest_regions(region_ids, tuple(h.shape[2:])))
            if level < len(self.encoder) - 1:
                skips.append(h)
        decoded = []
        for k in reversed(range(len(self.decoder))):
            h = self.decoder[k](h, skips[k], None, None)
            decoded.append(h)
        decoded.reverse()
        logits = self.heads[0](decoded[0])
        if coarse_logits is not None and self.training:
            target = F.interpolate(
                logits.detach().float().softmax(dim=1), size=coarse_logits.shape[2:], mode="area"
            )
            self.auxiliary_terms["coarse_distillation"] = F.cross_entropy(coarse_logits.float(), target)
        if self.training and self.deep_supervision:
            return [logits] + [head(level) for head, level in zip(self.heads[1:], decoded[1:], strict=True)]
        return logits

    def _region_ids(
        self, x: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Region ids (B, 1, *grid) on the finest transformer stage's grid, and the coarse logits if any."""
        grid = tuple(features.shape[2:])
        given = self.__dict__.get("_given_regions")
        if given is not None:
            if isinstance(given, MetaTensor):
                given = given.as_tensor()
            if given.shape[:2] != (x.shape[0], 1) or given.shape[2:] != x.shape[2:]:
                raise GeometryError(
                    f"the region map must be (batch, 1, *spatial) like the input {tuple(x.shape)} with one "
                    f"channel; got {tuple(given.shape)}"
                )
            ids = (given.round().long() if given.is_floating_point() else given.long()).to(x.device)
            self.__dict__["last_given_regions"] = ids
            return nearest_regions(ids, grid), None
        if self.regions == "coarse":
            coarse_logits = self.coarse_head(features)
            return coarse_logits.argmax(dim=1, keepdim=True), coarse_logits
        if self.regions == "grid":
            side = max(1, round(self.region_size ** (1 / self.spatial_dims)))
            ids = window_ids(grid, side, x.device).view(1, 1, *grid)
            return ids.expand(x.shape[0], 1, *grid), None
        pooled = F.interpolate(x.detach().float(), size=grid, mode="area").cpu()
        maps = [
            torch.from_numpy(superpixels(sample, self.region_size, self.compactness)) for sample in pooled
        ]
        return torch.stack(maps).unsqueeze(1).long().to(x.device), None
