"""Attention blocks against the papers' formulas written the direct way, and the cost of the gates."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medattn.errors import ConfigError
from medattn.models import create
from medattn.models.blocks import LEAKY_SLOPE, AttentionGate, ChannelAttention, PositionAttention, activation


def _naive_position_attention(module: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """DANet's PAM as its PyTorch code writes it: the full N x N softmax(Q^T K), then V A^T."""
    b, c = x.shape[:2]
    query = module.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
    key = module.key(x).flatten(2)  # (B, C/8, N)
    value = module.value(x).flatten(2)  # (B, C, N)
    attention = torch.softmax(torch.bmm(query, key), dim=-1)
    out = torch.bmm(value, attention.transpose(1, 2)).view(x.shape)
    return module.gamma * out + x


def _naive_channel_attention(module: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(2)
    energy = torch.bmm(flat, flat.transpose(1, 2))
    if module.inverted:
        energy = energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy
    return module.gamma * torch.bmm(torch.softmax(energy, dim=-1), flat).view(x.shape) + x


@pytest.mark.parametrize(("dims", "channels"), [(2, 16), (3, 16), (3, 12), (2, 40)])
def test_position_attention_equals_the_dense_formula(dims, channels):
    module = PositionAttention(dims, channels).double()
    with torch.no_grad():
        module.gamma.fill_(0.7)
    x = torch.randn(2, channels, *(6,) * dims, dtype=torch.float64)
    torch.testing.assert_close(module(x), _naive_position_attention(module, x))


def test_position_attention_never_stores_the_n_by_n_matrix():
    module = PositionAttention(3, 8)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    x = torch.randn(1, 8, 16, 16, 16, requires_grad=True)
    n = 16**3
    with torch.profiler.profile(profile_memory=True) as profile:
        module(x).sum().backward()
    largest = max(event.self_cpu_memory_usage for event in profile.key_averages())
    assert largest < n * n * 4 / 4, f"an allocation of {largest / 2**20:.0f} MB: the N x N path was taken"


@pytest.mark.parametrize("inverted", [False, True])
def test_channel_attention_equals_the_dense_formula(inverted):
    module = ChannelAttention(inverted=inverted)
    with torch.no_grad():
        module.gamma.fill_(0.3)
    x = torch.randn(2, 8, 5, 6, 7) * 0.1
    torch.testing.assert_close(module(x), _naive_channel_attention(module, x))


def test_attention_starts_as_identity():
    """Both DANet modules start with gamma = 0: they pass features through until they learn otherwise."""
    x = torch.randn(2, 16, 4, 4, 4)
    assert torch.equal(PositionAttention(3, 16)(x), x)
    assert torch.equal(ChannelAttention()(x), x)


@pytest.mark.parametrize("mode", ["concat", "additive"])
def test_gate_works_on_the_coarse_grid_and_only_scales_the_skip(mode):
    gate = AttentionGate(3, gating_channels=16, skip_channels=8, mode=mode).eval()
    g = torch.randn(2, 16, 4, 4, 4)
    skip = torch.randn(2, 8, 8, 8, 8)
    out = gate(g, skip, torch.nn.functional.max_pool3d(skip, 2))
    alpha = gate.last_attention_map
    assert alpha.shape == (2, 1, 4, 4, 4)  # computed where g lives, not at the skip's resolution
    ratio = out / skip
    assert ratio.min() >= 0 and ratio.max() <= 1
    # One coefficient per voxel, shared by all channels.
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_gate_can_open_and_close_fully_under_instance_and_group_norm(norm):
    """A one-channel instance norm on the gate's logit would standardise it per sample, pinning the mean
    coefficient near 0.5 whatever the weights say; without it the logit's bias can shut or open the gate."""
    gate = AttentionGate(3, gating_channels=16, skip_channels=8, norm=norm).eval()
    g, skip = torch.randn(2, 16, 4, 4, 4), torch.randn(2, 8, 8, 8, 8)
    logit = gate.psi[0]
    for bias, expected in ((-20.0, 0.0), (20.0, 1.0)):
        with torch.no_grad():
            logit.weight.zero_()
            logit.bias.fill_(bias)
        gate(g, skip, torch.nn.functional.max_pool3d(skip, 2))
        torch.testing.assert_close(gate.last_attention_map, torch.full((2, 1, 4, 4, 4), expected))


def test_agunet_gate_at_the_skips_resolution():
    """``gate_resolution="skip"`` computes each gate's map on its skip's grid, from the upsampled decoder
    feature (the paper's code), and the network still returns logits on the input's grid."""
    tiny = {"base_channels": 4, "depth": 2, "norm": "instance"}
    model = create("agunet", 3, 1, 2, gate_resolution="skip", **tiny).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 16, 16, 16))
    assert logits.shape == (1, 2, 16, 16, 16)
    shapes = [tuple(level.gate.last_attention_map.shape[2:]) for level in model.decoder]
    assert shapes == [(16, 16, 16), (8, 8, 8)]
    with pytest.raises(ConfigError, match="gate_resolution"):
        create("agunet", 3, 1, 2, gate_resolution="fine", **tiny)


def test_gates_add_almost_no_compute():
    """AGUNet's gates cost < 1 % of the network's FLOPs; MONAI's full-resolution gates cost far more."""

    def flops(name: str, **options) -> int:
        model = create(name, 3, 1, 2, **options).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 1, 16, 16, 16))
        return counter.get_total_flops()

    tiny = {"base_channels": 8, "depth": 2}
    ours = flops("agunet", gate="concat", **tiny) / flops("agunet", gate=None, **tiny) - 1
    assert 0 < ours < 0.01
    channels = {"channels": (8, 16, 32), "strides": (2, 2)}
    monai = flops("monai.attention_unet", **channels) / flops("monai.unet", num_res_units=0, **channels) - 1
    assert monai > 10 * ours


@pytest.mark.parametrize(
    ("act", "module", "slope"),
    [
        ("relu", torch.nn.ReLU, 0.0),
        ("leakyrelu", torch.nn.LeakyReLU, LEAKY_SLOPE),
        ("prelu", torch.nn.PReLU, 0.25),
    ],
)
def test_agunet_uses_one_activation_everywhere(act, module, slope):
    """`act` reaches the stem, every conv block, the input pyramid and the decoder's upsampling, and a
    negative input comes out scaled by the named slope."""
    model = create("agunet", 3, 1, 2, base_channels=4, depth=2, stem_stride=2, act=act)
    kinds = {
        type(m) for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.PReLU))
    }
    assert kinds == {module}
    torch.testing.assert_close(activation(act)(torch.tensor([-2.0, 3.0])), torch.tensor([-2.0 * slope, 3.0]))


def test_unknown_activation_names_the_choices():
    with pytest.raises(ConfigError, match="act must be one of relu, leakyrelu, prelu; got 'gelu'"):
        create("agunet", 3, 1, 2, base_channels=4, depth=2, act="gelu")
