"""HBFormer's decoder blocks: the LRD residual block, the Med-DSPP fusion block, ECA and a spatial gate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import ConfigError
from medattn.models.base import normalised_summary, record_attention
from medattn.models.blocks import conv, norm_layer


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling: (B, C, *grid) -> (B, C)."""
    return x.flatten(2).mean(dim=2)


def _per_channel(weights: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """(B, C) -> (B, C, 1, ..., 1), to scale a (B, C, *grid) map."""
    return weights.view(*weights.shape, *([1] * spatial_dims))


class LRDBlock(nn.Module):
    """HBFormer's long-range-dependency (LRD) block: a residual block of a 3^n and a 1^n convolution.

    3^n conv, norm, LeakyReLU, 1^n conv, norm, plus a 1^n projection of the input (no norm), LeakyReLU; all
    convolutions without bias, as `LRD_Block` in the official code.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            conv(spatial_dims, in_channels, out_channels, kernel_size=3, bias=False),
            norm_layer(norm, spatial_dims, out_channels),
            nn.LeakyReLU(inplace=True),
            conv(spatial_dims, out_channels, out_channels, bias=False),
            norm_layer(norm, spatial_dims, out_channels),
        )
        self.shortcut = conv(spatial_dims, in_channels, out_channels, bias=False)
        self.act = nn.LeakyReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al. 2020): channel weights = sigmoid(1D conv across the globally averaged channels).

    In eval mode it records, per voxel, the fraction of the feature magnitude the weights let through,
    sum_c w_c |x_c| / sum_c |x_c| (in [0, 1]): where the channel attention keeps or damps the features.

    Args:
        kernel_size: width of the 1D conv across channels (3 in HBFormer's code).
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.conv(spatial_mean(x).unsqueeze(1))).squeeze(1)
        out = x * _per_channel(weights, x.ndim - 2)
        if not self.training:
            # L1 norms over channels: no |x| temporary the size of the features.
            with torch.no_grad():
                kept = torch.linalg.vector_norm(out, 1, dim=1, keepdim=True).float()
                total = torch.linalg.vector_norm(x, 1, dim=1, keepdim=True).float()
                record_attention(self, (kept / total.clamp_min(1e-12)).clamp(0, 1))
        return out


class SpatialGate(nn.Module):
    """CBAM's spatial attention (Woo et al. 2018): x * sigmoid(k^n conv of [channel mean, channel max]).

    An option of HBFormer's fusion block, not in the paper's model; its coefficients are recorded.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7):
        super().__init__()
        self.conv = conv(spatial_dims, 2, 1, kernel_size=kernel_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        gate = torch.sigmoid(self.conv(pooled))
        record_attention(self, gate)
        return x * gate


class ExpertSeparableConv(nn.Module):
    """A dilated depthwise 3^n conv then a 1^n conv, each a per-sample mix of `experts` kernels (CondConv).

    The official code runs every expert convolution and sums the outputs weighted by the expert weights.
    Convolution is linear in its kernel, so mixing the kernels first and convolving once is the same map at
    1/experts of the cost: the batch is folded into the channels for one grouped depthwise conv, and the
    mixed pointwise kernels are applied as a batched matrix product. The kernels of all experts live in
    one parameter each (expert first), initialised per expert as PyTorch initialises a conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels in (the depthwise conv keeps them).
        out_channels: channels out of the pointwise conv.
        dilation: dilation of the depthwise conv, voxels.
        experts: number of kernels mixed.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, dilation: int, experts: int):
        super().__init__()
        self.dilation = dilation
        self.depthwise = nn.Parameter(torch.empty(experts, in_channels, 1, *(3,) * spatial_dims))
        self.pointwise = nn.Parameter(torch.empty(experts, out_channels, in_channels))
        for kernels in (self.depthwise, self.pointwise):
            for kernel in kernels:
                nn.init.kaiming_uniform_(kernel, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, expert_weights: torch.Tensor) -> torch.Tensor:
        """Apply the kernels mixed by `expert_weights` (B, experts) to `x` (B, C, *grid)."""
        batch, channels, *grid = x.shape
        depthwise = expert_weights @ self.depthwise.flatten(1)  # (B, C * 3^n)
        convolve = F.conv2d if len(grid) == 2 else F.conv3d
        h = convolve(
            x.reshape(1, batch * channels, *grid),
            depthwise.to(x.dtype).view(batch * channels, 1, *self.depthwise.shape[3:]),
            padding=self.dilation,
            dilation=self.dilation,
            groups=batch * channels,
        )
        pointwise = (expert_weights @ self.pointwise.flatten(1)).view(batch, *self.pointwise.shape[1:])
        return torch.bmm(pointwise.to(h.dtype), h.view(batch, channels, -1)).view(batch, -1, *grid)


def _router(channels: int, outputs: int) -> nn.Sequential:
    """Global-context router: pooled channels -> C/8 -> ReLU -> one logit per choice (1x1 convs on the pooled
    map in the official code, the same as linear layers)."""
    hidden = max(channels // 8, 1)
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs))


class MedDSPP(nn.Module):
    """HBFormer's fusion block (Med-DSPP): dilated depthwise branches of mixed experts, ECA, 1^n fusion.

    Each branch is an `ExpertSeparableConv` at one dilation (1, 4, 8), then norm and SiLU, scaled by its
    branch weight. Branch weights and expert weights (shared by the branches, as in the official code)
    are softmaxes of routers on the globally averaged input. The branches are concatenated, weighted by
    ECA channel attention, fused by a bias-free 1^n conv and normalised. The paper's "spatial attention" is
    this dilated depthwise mixing; ``spatial_gate=True`` adds a CBAM spatial gate on the output (an option,
    off in the paper).

    In eval mode the block records the channel-mean magnitude of its output, scaled to [0, 1] per sample,
    as its spatial attention summary (the ECA and the gate record their own maps).

    Args:
        spatial_dims: 2 or 3.
        channels: channels in and out.
        norm: "batch" (the official code), "instance" or "group".
        dilations: one branch per dilation.
        experts: kernels mixed per branch (1 = plain depthwise-separable convs).
        spatial_gate: add the CBAM spatial gate.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        norm: str = "batch",
        dilations: Sequence[int] = (1, 4, 8),
        experts: int = 4,
        spatial_gate: bool = False,
    ):
        super().__init__()
        if not dilations or experts < 1 or any(d < 1 for d in dilations):
            raise ConfigError(
                f"Med-DSPP needs dilations >= 1 and experts >= 1; got {dilations} and {experts}"
            )
        self.branch_router = _router(channels, len(dilations))
        self.expert_router = _router(channels, experts)
        self.branches = nn.ModuleList(
            ExpertSeparableConv(spatial_dims, channels, channels, d, experts) for d in dilations
        )
        self.branch_norms = nn.ModuleList(norm_layer(norm, spatial_dims, channels) for _ in dilations)
        self.act = nn.SiLU(inplace=True)
        self.channel_attention = EfficientChannelAttention()
        self.fuse = nn.Sequential(
            conv(spatial_dims, channels * len(dilations), channels, bias=False),
            norm_layer(norm, spatial_dims, channels),
        )
        self.spatial_gate = SpatialGate(spatial_dims) if spatial_gate else None

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Branch weights (B, branches) and expert weights (B, experts) for `x`; each row sums to 1."""
        pooled = spatial_mean(x)
        return torch.softmax(self.branch_router(pooled), dim=1), torch.softmax(
            self.expert_router(pooled), dim=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_dims = x.ndim - 2
        branch_weights, expert_weights = self.routing(x)
        branches = [
            self.act(branch_norm(branch(x, expert_weights)))
            * _per_channel(branch_weights[:, i : i + 1], spatial_dims)
            for i, (branch, branch_norm) in enumerate(zip(self.branches, self.branch_norms, strict=True))
        ]
        out = self.fuse(self.channel_attention(torch.cat(branches, dim=1)))
        if self.spatial_gate is not None:
            out = self.spatial_gate(out)
        if not self.training:
            record_attention(self, normalised_summary(out))
        return out
