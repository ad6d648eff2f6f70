"""Each paper component of AGUNet, DAUNet and MSGA switches on and off cleanly as its paper says."""

from __future__ import annotations

import pytest
import torch

from medattn.models import create
from medattn.models.blocks import AttentionGate, ChannelAttention, PositionAttention
from medattn.models.msga import SemanticModule

TINY_UNET = {"base_channels": 4, "depth": 2}
TINY_MSGA = {"features": 8, "backbone_channels": (4, 8, 8, 16), "backbone_blocks": (1, 1, 1, 1)}

# The configuration of each family with every attention component off.
NO_ATTENTION = {
    "agunet": {"gate": None, **TINY_UNET},
    "daunet": {"gate": None, "position_attention": False, "channel_attention": False, **TINY_UNET},
    "msga": {
        "position_attention": False,
        "channel_attention": False,
        "semantic_guidance": False,
        **TINY_MSGA,
    },
}
ATTENTION_TYPES = (AttentionGate, PositionAttention, ChannelAttention, SemanticModule)


@pytest.mark.parametrize("name", sorted(NO_ATTENTION))
def test_attention_switches_off_cleanly(name):
    size = 32 if name == "msga" else 16
    model = create(name, 3, 1, 2, **NO_ATTENTION[name])
    assert not any(isinstance(m, ATTENTION_TYPES) for m in model.modules())
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size, size))
    assert out.shape == (2, 2, size, size, size)
    assert model.attention_maps() == {}
    assert model.auxiliary_loss() is None


def test_agunet_components():
    full = create("agunet", 3, 1, 2, **TINY_UNET)
    assert sum(isinstance(m, AttentionGate) for m in full.modules()) == 2  # one per skip
    plain_input = create("agunet", 3, 1, 2, multi_scale_input=False, **TINY_UNET)
    assert len(plain_input.encoder.pyramid) == 0 and len(full.encoder.pyramid) == 2
    additive = create("agunet", 3, 1, 2, gate="additive", **TINY_UNET)
    assert additive.parameter_count() < full.parameter_count()  # the additive psi sees C/2, not C channels

    full.train()
    outputs = full(torch.randn(2, 1, 16, 16, 16))
    # Deep supervision: one head per decoder level, each at its own resolution, finest first.
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 16, 16), (8, 8, 8)]


def test_daunet_components():
    model = create("daunet", 3, 1, 2, **TINY_UNET)
    assert not any(isinstance(m, AttentionGate) for m in model.modules())  # the paper's DAU variant
    attention = [m for m in model.modules() if isinstance(m, (PositionAttention, ChannelAttention))]
    assert len(attention) == 2 and all(m.gamma.item() == 0 for m in attention)
    assert all(level.guide is not None for level in model.decoder)
    unguided = create("daunet", 3, 1, 2, guided_decoder=False, **TINY_UNET)
    assert all(level.guide is None for level in unguided.decoder)
    gated = create("daunet", 3, 1, 2, gate="concat", **TINY_UNET).eval()
    with torch.no_grad():
        gated(torch.randn(1, 1, 16, 16, 16))
    maps = set(gated.attention_maps())
    assert maps == {"decoder.0.gate", "decoder.1.gate", "bottleneck.branches.position.0"}


def test_msga_outputs_and_inference_average():
    model = create("msga", 2, 1, 3, **TINY_MSGA).train()
    x = torch.randn(2, 1, 64, 64)
    heads = model(x)
    assert len(heads) == 8 and all(h.shape == (2, 3, 64, 64) for h in heads)
    # Without deep supervision (and in eval mode) the output is the mean of the four last-step heads.
    # Compared in train mode, where both forwards use the same batch statistics.
    model.deep_supervision = False
    torch.testing.assert_close(model(x), torch.stack(heads[:4]).mean(dim=0))


def test_msga_auxiliary_loss_contract():
    model = create("msga", 2, 1, 2, **TINY_MSGA).train()
    model(torch.randn(2, 1, 32, 32))
    terms = model.auxiliary_terms
    assert set(terms) == {"code_mse", "reconstruction_mse"}
    assert all(t.ndim == 0 and t > 0 for t in terms.values())
    torch.testing.assert_close(
        model.auxiliary_loss(), 0.25 * terms["code_mse"] + 0.1 * terms["reconstruction_mse"]
    )
    model.auxiliary_loss().backward()
    assert model.semantic[0].encode[0][0].conv.weight.grad.abs().sum() > 0

    one_step = create("msga", 2, 1, 2, refinement_step=False, **TINY_MSGA).train()
    one_step(torch.randn(2, 1, 32, 32))
    assert set(one_step.auxiliary_terms) == {"reconstruction_mse"}
    assert len(one_step.attention) == 1


def test_agunet_half_resolution_stem_cuts_compute_and_keeps_the_output_grid():
    from medattn.errors import ConfigError

    full = create("agunet", 3, 1, 3, base_channels=4, depth=2)
    half = create("agunet", 3, 1, 3, base_channels=4, depth=2, stem_stride=2)
    assert half.size_divisor == 2 * full.size_divisor == 8
    x = torch.randn(1, 1, 16, 16, 16)
    half.eval()
    with torch.no_grad():
        assert half(x).shape == (1, 3, 16, 16, 16)

    # Every convolution after the stem sees 1/8 of the voxels: count multiply-adds with forward hooks.
    def macs(model):
        total = 0

        def hook(module, inputs, output):
            nonlocal total
            total += output.numel() * module.weight[0].numel()

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
        with torch.no_grad():
            model.eval()(x)
        for handle in handles:
            handle.remove()
        return total

    assert macs(half) < 0.2 * macs(full)
    assert half.encoder_prefixes == ("stem", "encoder") and half.freeze_encoder() > 0
    with pytest.raises(ConfigError, match="stem_stride"):
        create("agunet", 3, 1, 3, stem_stride=4)
