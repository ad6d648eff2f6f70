"""Blocks shared by medattn's networks: conv-norm-act, attention gates, position and channel attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers import Act, Conv, get_norm_layer
from torch import nn

from medattn.errors import ConfigError
from medattn.models.base import normalised_summary, record_attention

NORMS = ("batch", "instance", "group")
GATES = ("concat", "additive")
GATE_RESOLUTIONS = ("coarse", "skip")
ACTIVATIONS = ("relu", "leakyrelu", "prelu")
# LeakyReLU's slope: PReLU's starting value (He et al. 2015), not nnU-Net's 0.01. With 0.01 AGUNet learned
# no lesion voxels in 200 steps on the brain sample patches, as with ReLU; 0.1 began at step 150, 0.25 at
# step 125, as PReLU (BENCHMARKS.md, "activation").
LEAKY_SLOPE = 0.25


def monai_norm(norm: str, channels: int) -> tuple[str, dict]:
    """MONAI's norm spec for medattn's `norm` name: instance norm with affine weights (as nnU-Net), at most
    8 groups for group norm (the largest count that divides `channels`)."""
    if norm == "batch":
        return ("batch", {})
    if norm == "instance":
        return ("instance", {"affine": True})
    if norm == "group":
        return ("group", {"num_groups": math.gcd(8, channels)})
    raise ConfigError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")


def monai_act(act: str) -> tuple[str, dict]:
    """MONAI's activation spec for medattn's `act` name ("relu", "leakyrelu" with slope `LEAKY_SLOPE`, or
    "prelu": one learned slope starting at 0.25, MONAI's default)."""
    if act == "relu":
        return ("relu", {})
    if act == "leakyrelu":
        return ("leakyrelu", {"negative_slope": LEAKY_SLOPE})
    if act == "prelu":
        return ("prelu", {})
    raise ConfigError(f"act must be one of {', '.join(ACTIVATIONS)}; got {act!r}")


def activation(act: str, inplace: bool = False) -> nn.Module:
    """The activation module for medattn's `act` name (see `monai_act`); `inplace` where the input is not
    needed again (PReLU has no in-place form)."""
    name, options = monai_act(act)
    if inplace and name != "prelu":
        options = {**options, "inplace": True}
    return Act[name](**options)


def norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by medattn name ("batch", "instance" or "group")."""
    return get_norm_layer(monai_norm(norm, channels), spatial_dims=spatial_dims, channels=channels)


def conv(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = True
) -> nn.Module:
    """A plain convolution with 'same' padding (odd kernel sizes)."""
    conv_type = Conv[Conv.CONV, spatial_dims]
    return conv_type(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def conv_norm_act(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str,
    *,
    kernel_size: int = 3,
    act: str = "relu",
    dropout: float = 0.0,
    stride: int = 1,
) -> Convolution:
    """Convolution, normalisation, spatial dropout (whole channels, as Keras' SpatialDropout), activation."""
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=stride,
        kernel_size=kernel_size,
        act=monai_act(act),
        norm=monai_norm(norm, out_channels),
        dropout=dropout or None,
        dropout_dim=spatial_dims,
        bias=False,
    )


def double_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str,
    dropout: float = 0.0,
    act: str = "relu",
) -> nn.Sequential:
    """The U-Net level block: 2 x (3^n conv, norm, activation)."""
    return nn.Sequential(
        conv_norm_act(spatial_dims, in_channels, out_channels, norm, dropout=dropout, act=act),
        conv_norm_act(spatial_dims, out_channels, out_channels, norm, dropout=dropout, act=act),
    )


def spatial_dropout(spatial_dims: int, p: float) -> nn.Module:
    """Dropout of whole channels (Dropout2d/3d)."""
    return (nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d)(p)


def resize(x: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Bilinear/trilinear resampling of a feature or logit map to `size` (no-op when already there)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class AttentionGate(nn.Module):
    """Attention gate on a skip connection: the skip weighted by coefficients alpha in [0, 1].

    alpha comes from a gating signal `g` and the skip: each is projected by a 1^n conv + norm to
    `inter_channels`, then combined, ReLU, 1^n conv to one channel, sigmoid. Where alpha is computed is the
    caller's choice (see `AGUNet`'s `gate_resolution`): on the coarse decoder grid, from the coarse feature
    and the skip max-pooled to it, with only the one-channel alpha upsampled (little work beyond a plain
    U-Net); or at the skip's resolution, from the decoder feature already upsampled to it (the papers' code).

    The one-channel logit gets batch norm under batch norm, as in both papers' code, where it is one affine
    map per feature at inference. Under instance or group norm it gets none by default: a one-channel
    instance norm standardises the logits of every sample, so the gate could never be fully open or closed
    and an empty volume would still get "salient" voxels (PraNet's map head avoids it the same way).

    Modes: ``"concat"`` concatenates the projections (Bouget et al. 2021, after LeeJunHyun's
    Image_Segmentation); ``"additive"`` adds them (Oktay et al. 2018).

    Args:
        spatial_dims: 2 or 3.
        gating_channels: channels of the gating signal g.
        skip_channels: channels of the skip x.
        norm: "batch", "instance" or "group".
        mode: "concat" or "additive".
        inter_channels: projection width; default half the skip channels, as in both papers' code.
        logit_norm: normalise the one-channel logit with `norm`; default (None): only under batch norm.
            True keeps the per-sample norm of packages trained with it (`medattn.package` sets it from
            their weights).
    """

    def __init__(
        self,
        spatial_dims: int,
        gating_channels: int,
        skip_channels: int,
        norm: str = "batch",
        mode: str = "concat",
        inter_channels: int | None = None,
        logit_norm: bool | None = None,
    ):
        super().__init__()
        if mode not in GATES:
            raise ConfigError(f"gate must be one of {', '.join(GATES)} or None; got {mode!r}")
        inter = inter_channels or max(skip_channels // 2, 1)
        self.mode = mode
        self.project_gate = nn.Sequential(
            conv(spatial_dims, gating_channels, inter), norm_layer(norm, spatial_dims, inter)
        )
        self.project_skip = nn.Sequential(
            conv(spatial_dims, skip_channels, inter), norm_layer(norm, spatial_dims, inter)
        )
        psi_in = 2 * inter if mode == "concat" else inter
        if logit_norm is None:
            logit_norm = norm == "batch"
        norm_or_none = norm_layer(norm, spatial_dims, 1) if logit_norm else nn.Identity()
        self.psi = nn.Sequential(conv(spatial_dims, psi_in, 1), norm_or_none, nn.Sigmoid())

    def forward(
        self, gate: torch.Tensor, skip: torch.Tensor, skip_on_gate_grid: torch.Tensor
    ) -> torch.Tensor:
        """`skip` weighted by alpha computed on the grid of `gate`; `skip_on_gate_grid` is `skip` there
        (`skip` itself when the gate is at the skip's resolution)."""
        g = self.project_gate(gate)
        x = self.project_skip(skip_on_gate_grid)
        joint = torch.cat([g, x], dim=1) if self.mode == "concat" else g + x
        alpha = self.psi(F.relu(joint))
        record_attention(self, alpha)
        return skip * resize(alpha, skip.shape[2:])


class PositionAttention(nn.Module):
    """Position attention (PAM, Fu et al. 2019 DANet): every voxel attends to every other voxel.

    out = x + gamma * softmax(Q K^T) V with Q, K 1^n projections to C/8 channels and V to C; gamma starts
    at 0 so the block begins as the identity. It runs through `scaled_dot_product_attention` (scale 1, as
    DANet does not scale the energies), so the N x N attention matrix is never stored: Q and K are
    zero-padded to V's width (rounded up to a multiple of 8) because PyTorch's fused (flash /
    memory-efficient) kernels need equal widths (and contiguous tokens) and otherwise fall back to the
    O(N^2)-memory path. Zero columns do not change Q K^T.

    With `record` on, the attention summary for `attention_maps()` is the per-voxel size of the update
    gamma * softmax(QK^T)V, scaled to [0, 1].

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        reduction: C / width of Q and K (8 in DANet).
        bias: bias on the projections (the PyTorch DANet code has it, the Keras port of Bouget et al. not).
        record: keep the attention summary of each forward.
    """

    def __init__(
        self, spatial_dims: int, channels: int, reduction: int = 8, bias: bool = True, record: bool = True
    ):
        super().__init__()
        self.record = record
        inner = max(channels // reduction, 1)
        self.query = conv(spatial_dims, channels, inner, bias=bias)
        self.key = conv(spatial_dims, channels, inner, bias=bias)
        self.value = conv(spatial_dims, channels, channels, bias=bias)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        width = -(-channels // 8) * 8

        def tokens(projected: torch.Tensor) -> torch.Tensor:  # (B, C', *grid) -> (B, 1, N, width), contiguous
            flat = projected.flatten(2).transpose(1, 2)
            return F.pad(flat, (0, width - flat.shape[-1])).unsqueeze(1).contiguous()

        attended = F.scaled_dot_product_attention(
            tokens(self.query(x)), tokens(self.key(x)), tokens(self.value(x)), scale=1.0
        )
        update = self.gamma * attended[:, 0, :, :channels].transpose(1, 2).reshape(x.shape)
        if self.record:
            record_attention(self, normalised_summary(update))
        return x + update


class ChannelAttention(nn.Module):
    """Channel attention (CAM, Fu et al. 2019 DANet): each channel becomes a softmax-weighted mix of channels.

    Energies are the C x C Gram matrix of the flattened features, computed in float32 (in bf16 the large
    sums lose the precision the softmax needs). ``inverted=True`` uses softmax(max(E) - E) as DANet's and
    Sinha & Dolz's PyTorch code do; ``False`` uses softmax(E) as the Keras code of Bouget et al.
    out = x + gamma * attention @ x, gamma starting at 0.
    """

    def __init__(self, inverted: bool = False):
        super().__init__()
        self.inverted = inverted
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2).float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            energy = flat @ flat.transpose(1, 2)
            if self.inverted:
                energy = energy.amax(dim=-1, keepdim=True) - energy
            mixed = torch.softmax(energy, dim=-1) @ flat
        return x + self.gamma * mixed.to(x.dtype).reshape(x.shape)
