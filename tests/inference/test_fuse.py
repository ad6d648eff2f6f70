"""Inference rewrites (batch norm folding, block transposed convolutions) keep every model's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medattn.inference.fuse import BlockTransposedConv, ChannelsLastInstanceNorm, fuse_for_inference
from medattn.models import available, create, describe

CONV_NETS = ["agunet", "daunet", "pranet", "monai.attention_unet"]


def _trained_statistics(network: nn.Module, x: torch.Tensor) -> nn.Module:
    """A few train-mode passes so the batch norms hold running statistics far from (0, 1)."""
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(x * 3 + 1)
    return network.eval()


@pytest.mark.parametrize("name", CONV_NETS)
def test_folded_network_gives_the_same_logits(name):
    spec = describe(name)
    dims = max(spec.spatial_dims)
    channels = 3 if name == "pranet" else 1
    torch.manual_seed(0)
    network = create(name, dims, channels, 3, deep_supervision=False, **spec.tiny)
    x = torch.randn(2, channels, *([spec.tiny_size] * dims))
    network = _trained_statistics(network, x)
    fused = fuse_for_inference(network)
    with torch.no_grad():
        expected, result = network(x), fused(x)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)
    assert sum(isinstance(m, _BatchNorm) for m in network.modules()) > 0  # the original is untouched
    assert not any(isinstance(m, _BatchNorm) for m in fused.modules())
    assert torch.equal(result.argmax(1), expected.argmax(1))


def test_half_resolution_head_runs_as_a_matrix_product_with_the_same_output():
    torch.manual_seed(0)
    network = create("agunet", 3, 1, 4, deep_supervision=False, base_channels=4, depth=2, stem_stride=2)
    x = torch.randn(1, 1, 16, 16, 16)
    network = _trained_statistics(network, x)
    fused = fuse_for_inference(network)
    assert isinstance(fused.heads[0], BlockTransposedConv)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), network(x), atol=1e-5, rtol=1e-4)
    # Channels-last input (the sliding window's format) gives the same values too.
    with torch.no_grad():
        cl = fused(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(cl, network(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_block_transposed_conv_equals_torch(dims):
    torch.manual_seed(0)
    layer = (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d)(5, 3, kernel_size=2, stride=2)
    x = torch.randn(2, 5, *([6, 7, 5][:dims]))
    with torch.no_grad():
        torch.testing.assert_close(BlockTransposedConv(layer)(x), layer(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d])
@pytest.mark.parametrize(("bias", "affine"), [(True, True), (False, False)])
def test_batch_norm_folds_into_convolutions_and_transposed_ones(conv, bias, affine):
    """A transposed convolution's output channels are dim 1 of its weight (4 in, 6 out here, so scaling
    dim 0 cannot pass); kernel 3, stride 1, so it is not rewritten as a matrix product."""
    dims = 2 if conv.__name__.endswith("2d") else 3
    torch.manual_seed(0)
    norm = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(6, affine=affine)
    network = nn.Sequential(conv(4, 6, kernel_size=3, bias=bias), norm, nn.ReLU())
    norm.running_mean.uniform_(-2, 2)
    norm.running_var.uniform_(0.1, 4)
    if affine:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    network.eval()
    fused = fuse_for_inference(network)
    assert isinstance(fused[1], nn.Identity) and fused[2].inplace
    x = torch.randn(2, 4, *([7] * dims))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), network(x), atol=1e-5, rtol=1e-5)


def test_transposed_convs_that_overlap_are_left_alone():
    layer = nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    fused = fuse_for_inference(nn.Sequential(layer))
    assert isinstance(fused[0], nn.ConvTranspose3d)


def test_every_registered_model_survives_fusion():
    """Models with other norms or custom blocks may keep them; none may change its output."""
    for name in available():
        spec = describe(name)
        dims = min(spec.spatial_dims)
        channels = 1
        torch.manual_seed(0)
        network = create(name, dims, channels, 2, deep_supervision=False, **spec.tiny).eval()
        x = torch.randn(1, channels, *([spec.tiny_size] * dims))
        with torch.no_grad():
            torch.testing.assert_close(fuse_for_inference(network)(x), network(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_instance_norm_on_channels_last_windows_gives_the_same_output(dims):
    """The CPU-default AGUNet (instance norm, leaky ReLU) on channels-last windows, as the sliding window
    runs it."""
    torch.manual_seed(0)
    network = create(
        "agunet",
        dims,
        1,
        3,
        deep_supervision=False,
        base_channels=4,
        depth=2,
        norm="instance",
        act="leakyrelu",
    )
    for module in network.modules():  # affine parameters away from (1, 0)
        if isinstance(module, nn.InstanceNorm3d | nn.InstanceNorm2d) and module.weight is not None:
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    network.eval()
    fused = fuse_for_inference(network)
    assert any(isinstance(m, ChannelsLastInstanceNorm) for m in fused.modules())
    # Each norm's output is fresh, so the leaky ReLU after it writes in place.
    assert all(m.inplace for m in fused.modules() if isinstance(m, nn.LeakyReLU))
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    x = torch.randn(2, 1, *([16] * dims))
    with torch.no_grad():
        expected = network(x)
        result = fused.to(memory_format=layout)(x.contiguous(memory_format=layout))
        plain_layout = fused(x)  # contiguous input goes through torch's kernel
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain_layout, expected, atol=1e-5, rtol=1e-4)


def test_channels_last_instance_norm_keeps_precision_under_a_large_mean():
    """Features whose mean is 1000x their spread (a bright region through a conv with a large bias):
    the variance comes out as torch's Welford kernel gives it, not cancelled by E[x^2] - E[x]^2."""
    torch.manual_seed(0)
    norm = nn.InstanceNorm3d(8, affine=True)
    x = (1000 + torch.randn(2, 8, 12, 12, 12)).contiguous(memory_format=torch.channels_last_3d)
    expected = norm(x)
    torch.testing.assert_close(ChannelsLastInstanceNorm(norm)(x), expected, atol=1e-4, rtol=1e-4)
