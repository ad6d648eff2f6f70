"""Region self-attention: multi-head attention among tokens of the same region, never an N x N matrix.

The Region Attention Transformer (Yang et al., MICCAI 2024) computes full self-attention over all N tokens
and adds -1000 where query and key lie in different regions: O(N^2) memory (a 128^3 patch has 16^3 =
4096 tokens at 1/8 resolution; 8 heads x 4096^2 float32 scores = 0.5 GB per sample, and as much again
saved for the backward). Here the tokens are sorted by region and attention runs per region:

1. `RegionPartition` numbers the regions of every sample (ids are made unique across the batch, so no
   region spans two samples), sorts the tokens by region and puts the regions in size buckets: a region
   of n tokens goes to bucket ceil(log2 n), padded to the largest region of its bucket (less than twice
   its size). A partition of equal regions (windows) is one bucket without padding.
2. `attend_rows` (behind `region_attention` and `RegionAttention`) gathers each bucket's query, key and
   value rows into (regions, heads, length, width), runs `scaled_dot_product_attention` once per bucket
   (block-diagonal attention) with a key-padding mask only where the bucket has padding, and gathers the
   outputs back into token order.

Memory is linear in N for any partition: PyTorch's fused kernels (flash / memory-efficient on CUDA,
flash on CPU) accept a key-padding mask and never store scores. A single region is plain global
attention; a region of one token returns its own value. The padded gathers cost at most twice the
tokens.

Against the authors' dense attention and a boolean-masked `scaled_dot_product_attention`, peak memory and
time at a 128^3 patch's attention grid are in BENCHMARKS.md, region attention (`bench/region_attention.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import ConfigError, GeometryError


@dataclass(frozen=True)
class _Bucket:
    """Regions padded to one length: where their tokens come from and which slots are real."""

    regions: int
    length: int
    gather: torch.Tensor  # (regions * length,) flat token index per slot; padding repeats a real token
    key_mask: torch.Tensor | None  # (regions, 1, 1, length) True for real tokens; None when nothing is padded


@dataclass(frozen=True)
class RegionPartition:
    """Tokens of a batch grouped by region, ready for `region_attention`; build it once, use it per layer.

    Attributes:
        batch: samples B.
        tokens: tokens per sample N.
        buckets: the size buckets (see the module docstring).
        scatter: (B * N,) for every token, its row among the concatenated padded bucket outputs.
        region_count: regions in the whole batch.
    """

    batch: int
    tokens: int
    buckets: tuple[_Bucket, ...]
    scatter: torch.Tensor
    region_count: int

    @classmethod
    def from_regions(cls, regions: torch.Tensor) -> RegionPartition:
        """Group the tokens of `regions` (B, N) (any integer ids, per sample) by region.

        Tokens with the same id in different samples are different regions. Runs on the ids' device; the
        bucket sizes are read back to the host (a few synchronisations per partition, none per layer).
        """
        if regions.ndim != 2:
            raise GeometryError(f"region ids must be (batch, tokens), got shape {tuple(regions.shape)}")
        batch, tokens = regions.shape
        device = regions.device
        ids = regions.long()
        low = ids.amin()
        span = ids.amax() - low + 1
        keys = (ids - low) + span * torch.arange(batch, device=device).unsqueeze(1)
        _, group, counts = torch.unique(keys.flatten(), return_inverse=True, return_counts=True)
        order = torch.argsort(group, stable=True)  # flat token indices, grouped by region
        sorted_group = group[order]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel(), device=device) - starts[sorted_group]  # position in its region
        bucket_of_group = torch.ceil(torch.log2(counts.double())).long()
        buckets, rows, tokens_in_order = [], [], []
        offset = 0
        for bucket in torch.unique(bucket_of_group).tolist():
            members = torch.nonzero(bucket_of_group == bucket).flatten()  # region numbers in this bucket
            member_counts = counts[members]
            length = int(member_counts.max())
            local = torch.full_like(counts, -1)
            local[members] = torch.arange(members.numel(), device=device)
            chosen = bucket_of_group[sorted_group] == bucket
            token = order[chosen]
            slot = local[sorted_group[chosen]] * length + rank[chosen]
            # Padding slots read the first token of their region; the key mask hides them and their
            # query outputs are never read.
            gather = order[starts[members]].repeat_interleave(length)
            gather[slot] = token
            padded = bool((member_counts < length).any())
            key_mask = None
            if padded:
                valid = torch.zeros(members.numel() * length, dtype=torch.bool, device=device)
                valid[slot] = True
                key_mask = valid.view(members.numel(), 1, 1, length)
            buckets.append(_Bucket(members.numel(), length, gather, key_mask))
            rows.append(slot + offset)
            tokens_in_order.append(token)
            offset += members.numel() * length
        scatter = torch.empty(batch * tokens, dtype=torch.long, device=device)
        scatter[torch.cat(tokens_in_order)] = torch.cat(rows)
        return cls(batch, tokens, tuple(buckets), scatter, int(counts.numel()))


def attend_rows(rows: torch.Tensor, partition: RegionPartition, scale: float | None = None) -> torch.Tensor:
    """Region attention on packed rows: (B * N, 3, heads, width) query/key/value -> (B * N, heads, width).

    The layout a fused qkv projection gives without a copy; each bucket gathers its rows once.
    """
    if rows.shape[0] != partition.batch * partition.tokens:
        raise GeometryError(
            f"the region partition is for {partition.batch} x {partition.tokens} tokens but the attention "
            f"input has {rows.shape[0]} rows; build the partition from this input's region map"
        )
    heads, width = rows.shape[2:]
    outputs = []
    for bucket in partition.buckets:
        grouped = (
            rows[bucket.gather].view(bucket.regions, bucket.length, 3, heads, width).permute(0, 2, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            grouped[:, 0], grouped[:, 1], grouped[:, 2], attn_mask=bucket.key_mask, scale=scale
        )  # (regions, heads, length, width)
        outputs.append(attended.transpose(1, 2).reshape(bucket.regions * bucket.length, heads, width))
    return (torch.cat(outputs) if len(outputs) > 1 else outputs[0])[partition.scatter]


def region_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    partition: RegionPartition | torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention where each token attends only to tokens of its own region.

    Equal (up to rounding) to dense attention with a mask forbidding cross-region pairs, without
    building the N x N score matrix (see the module docstring).

    Args:
        query, key, value: (B, heads, N, width).
        partition: a `RegionPartition`, or region ids (B, N) to build one from.
        scale: factor on the scores; None = 1 / sqrt(width) as `scaled_dot_product_attention`.

    Returns:
        (B, heads, N, width), in the input's token order.
    """
    if not isinstance(partition, RegionPartition):
        partition = RegionPartition.from_regions(partition)
    batch, heads, tokens, width = query.shape
    rows = (
        torch.stack((query, key, value), dim=2)
        .permute(0, 3, 2, 1, 4)
        .reshape(batch * tokens, 3, heads, width)
    )
    return attend_rows(rows, partition, scale).view(batch, tokens, heads, width).transpose(1, 2)


def window_ids(grid: Sequence[int], window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Region ids (N,) of non-overlapping windows of `window` tokens per side over `grid` (row-major).

    Windows at the far edges are smaller where the grid is not a multiple of `window`, so window attention
    needs no padding of the feature map.
    """
    ids = torch.zeros((), dtype=torch.long, device=device)
    for size in grid:
        cells = math.ceil(size / window)
        ids = ids.unsqueeze(-1) * cells + torch.arange(size, device=device) // window
    return ids.flatten()


class RegionAttention(nn.Module):
    """Multi-head self-attention within regions on tokens (B, N, C): qkv projection, `region_attention`,
    output projection.

    Args:
        channels: C; must be divisible by `num_heads`.
        num_heads: attention heads.
        scale: factor on the scores; None = 1 / sqrt(C / num_heads).
        bias: bias on the projections.
    """

    def __init__(self, channels: int, num_heads: int, scale: float | None = None, bias: bool = True):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"attention channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = scale
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.project = nn.Linear(channels, channels, bias=bias)

    def forward(self, tokens: torch.Tensor, partition: RegionPartition) -> torch.Tensor:
        batch, count, channels = tokens.shape
        rows = self.qkv(tokens).view(batch * count, 3, self.num_heads, channels // self.num_heads)
        return self.project(attend_rows(rows, partition, self.scale).view(batch, count, channels))
