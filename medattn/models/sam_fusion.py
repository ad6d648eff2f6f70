"""Blocks the SAM hybrids (medsam_ca, ccsam) share: CBAM, the CBR-Net CNN branch, fusion gates, decoding.

Everything here is 2D: SAM's encoder is a 2D ViT. Fusion modules record their weights with
`record_attention`, so `SegmentationModel.attention_maps()` shows where the network trusted SAM and where
the CNN branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medattn.errors import ConfigError
from medattn.models.base import record_attention
from medattn.models.blocks import resize
from medattn.models.sam.mask_decoder import MaskDecoder


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018) as MedSAM-CA's code has it.

    Channel attention from the average-pooled descriptor only (their code drops CBAM's max-pooled branch),
    then spatial attention from the channel mean and max through a 7x7 convolution.

    Args:
        channels: feature channels.
        reduction: bottleneck ratio of the channel MLP (at least one hidden channel).
        kernel_size: spatial attention kernel (voxels).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x)
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.spatial_attention(descriptor)


class ResidualCBAMBlock(nn.Module):
    """A basic residual block (3x3 conv-BN-ReLU, 3x3 conv-BN, projected shortcut), CBAM before the last ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and of the shortcut (2 halves the grid).
        cbam: apply CBAM to the residual sum (MedSAM-CA's CBR block); off gives a plain ResNet block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, cbam: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.cbam = CBAM(out_channels) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.cbam(self.body(x) + self.shortcut(x)))


class CBRNet(nn.Module):
    """MedSAM-CA's CNN branch: a chain of residual CBAM blocks, one feature map per block, finest first.

    With the paper's channels (64, 128, 256, 512) and strides (1, 2, 2, 2) the features lie at 1, 1/2, 1/4
    and 1/8 of the input grid.

    Args:
        in_channels: image channels.
        channels: output channels of each block.
        strides: stride of each block.
        cbam: CBAM in every block (off for the ablation).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 2, 2),
        cbam: bool = True,
    ):
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ConfigError(
                f"CBR-Net needs one stride per block: channels {tuple(channels)}, strides {tuple(strides)}"
            )
        self.channels = tuple(channels)
        widths = (in_channels, *channels)
        self.blocks = nn.ModuleList(
            ResidualCBAMBlock(widths[i], widths[i + 1], strides[i], cbam) for i in range(len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def mean_map(weights: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) channel mean of per-channel fusion weights, for `record_attention`."""
    return weights.mean(dim=1, keepdim=True)


class BiasedEncoderFusion(nn.Module):
    """MedSAM-CA's encoder fusion (AttentionFAM): a SAM-biased per-channel gate between SAM and CNN features.

    w = sigmoid(1x1 conv of [sam, cnn]) per channel and position; w' = w (1 - b) + b with a learnable bias b
    (0.8 at start), so w' lies in [b, 1] and the pretrained SAM embedding dominates; the output is
    w' sam + (1 - w') cnn. The CNN feature is resized to SAM's grid and, where its width differs from SAM's
    (not in the paper, whose fused CNN feature already has 256 channels), 1x1-projected to it.
    b is clamped to [0, 1] where it is used (their code leaves it free), so w' stays a convex weight.

    Args:
        channels: SAM embedding channels (256).
        cnn_channels: channels of the CNN feature fused in.
        initial_bias: starting value of b.
    """

    def __init__(self, channels: int, cnn_channels: int, initial_bias: float = 0.8):
        super().__init__()
        self.project: nn.Module = (
            nn.Identity() if cnn_channels == channels else nn.Conv2d(cnn_channels, channels, 1)
        )
        self.gate = nn.Conv2d(2 * channels, channels, 1)
        self.bias_factor = nn.Parameter(torch.tensor(float(initial_bias)))

    def weights(self, sam: torch.Tensor, cnn: torch.Tensor) -> torch.Tensor:
        """w' (B, channels, H, W) for SAM features and CNN features already on SAM's grid and width."""
        bias = self.bias_factor.clamp(0.0, 1.0)
        return torch.sigmoid(self.gate(torch.cat([sam, cnn], dim=1))) * (1 - bias) + bias

    def forward(self, sam: torch.Tensor, cnn: torch.Tensor) -> torch.Tensor:
        cnn = self.project(resize(cnn, sam.shape[2:]))
        weights = self.weights(sam, cnn)
        record_attention(self, mean_map(weights))
        return weights * sam + (1 - weights) * cnn


class MultiHeadGateFusion(nn.Module):
    """MedSAM-CA's Atte-FFB: CNN features gated into a decoder stage by averaged sigmoid heads.

    The CNN feature is resized to the decoder's grid and 1x1-projected to its width; each of `heads`
    1x1 convolutions on [cnn, decoder] gives a sigmoid map, their mean is w (B, 1, H, W) and the output is
    w decoder + (1 - w) cnn. One convolution with `heads` outputs computes the heads at once.

    Args:
        cnn_channels: channels of the CNN feature.
        decoder_channels: channels of the decoder stage.
        heads: number of gate heads (4 in the paper).
    """

    def __init__(self, cnn_channels: int, decoder_channels: int, heads: int = 4):
        super().__init__()
        self.project = nn.Conv2d(cnn_channels, decoder_channels, 1)
        self.heads = nn.Conv2d(2 * decoder_channels, heads, 1)

    def forward(self, decoder: torch.Tensor, cnn: torch.Tensor) -> torch.Tensor:
        cnn = self.project(resize(cnn, decoder.shape[2:]))
        weights = torch.sigmoid(self.heads(torch.cat([cnn, decoder], dim=1))).mean(dim=1, keepdim=True)
        record_attention(self, weights)
        return weights * decoder + (1 - weights) * cnn


class VariationalFusion(nn.Module):
    """CC-SAM's variational attention fusion, in medattn's design (the paper has no public code).

    A 1x1 convolution on [vit, cnn] predicts the mean and log-variance of a per-position fusion logit z.
    Training samples z = mean + exp(log_var / 2) * eps (reparameterisation, eps ~ N(0, 1)); eval uses the
    mean, so predictions are deterministic. w = sigmoid(z) weighs the ViT against the CNN feature:
    w vit + (1 - w) cnn. The KL divergence of N(mean, var) from N(0, 1), averaged over positions, is the
    term that keeps the fusion from collapsing onto one branch with false certainty.

    Args:
        channels: ViT feature channels.
        cnn_channels: channels of the CNN feature (resized and 1x1-projected to `channels`).
        stochastic: sample z in training; False keeps the mean always (a plain attention fusion, the
            ablation of the variational part).
    """

    def __init__(self, channels: int, cnn_channels: int, stochastic: bool = True):
        super().__init__()
        self.project = nn.Conv2d(cnn_channels, channels, 1)
        self.statistics = nn.Conv2d(2 * channels, 2, 1)
        self.stochastic = stochastic

    def forward(self, vit: torch.Tensor, cnn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused feature (like `vit`) and the KL term (a scalar)."""
        cnn = self.project(resize(cnn, vit.shape[2:]))
        mean, log_var = self.statistics(torch.cat([vit, cnn], dim=1)).chunk(2, dim=1)
        log_var = log_var.clamp(-10.0, 10.0)  # exp() stays finite in fp16 and in early training
        logits = mean
        if self.training and self.stochastic:
            logits = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        weights = torch.sigmoid(logits)
        record_attention(self, weights)
        kl_divergence = -0.5 * torch.mean(1 + log_var - mean.square() - log_var.exp())
        return weights * vit + (1 - weights) * cnn, kl_divergence


# --- SAM's decoding, split where the hybrids change it ---------------------------------------------------
# `SAM.decode` runs prompts -> two-way transformer -> upscaling -> hypernetwork masks in one call. CC-SAM
# adds a text token between the first two steps and MedSAM-CA replaces the upscaling, so the steps are
# here one by one, with SAM's semantics (prompts in input pixels, mapped to the encoder's frame).


def two_way_decode(
    decoder: MaskDecoder,
    embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's mask decoder up to its upscaling: mask-token outputs (B, tokens, D) and the attended image
    embedding (B, D, h, w), for one prompt set per image."""
    batch, channels, h, w = embedding.shape
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse], dim=1)
    hidden, image = decoder.transformer(embedding + dense, image_pe.expand(batch, -1, -1, -1), tokens)
    mask_tokens = hidden[:, 1 : 1 + decoder.num_mask_tokens]
    return mask_tokens, image.transpose(1, 2).reshape(batch, channels, h, w)


def hypernetwork_masks(
    decoder: MaskDecoder, mask_tokens: torch.Tensor, upscaled: torch.Tensor, count: int
) -> torch.Tensor:
    """Mask logits (B, count, H, W): each of the first `count` mask tokens' hypernetwork MLP output dotted
    with the upscaled features (B, D/8, H, W) at every pixel, as SAM's decoder does."""
    mlps = decoder.output_hypernetworks_mlps
    weights = torch.stack([mlps[i](mask_tokens[:, i]) for i in range(count)], dim=1)
    batch, channels, h, w = upscaled.shape
    return (weights @ upscaled.reshape(batch, channels, h * w)).reshape(batch, count, h, w)


def added_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of `model` that a SAM/MedSAM checkpoint cannot hold: every top-level part other
    than SAM's three, and the adapters set into the image encoder's slots."""
    sam_parts = {"image_encoder", "prompt_encoder", "mask_decoder"}
    prefixes = [f"{name}." for name, _ in model.named_children() if name not in sam_parts]
    prefixes += [name for name, _ in model.named_buffers() if "." not in name]
    encoder = model.image_encoder
    if encoder.position_adapter is not None:
        prefixes.append("image_encoder.position_adapter.")
    prefixes += [
        f"image_encoder.blocks.{i}.adapter."
        for i, block in enumerate(encoder.blocks)
        if not isinstance(block.adapter, nn.Identity)
    ]
    return prefixes
