"""HBFormer: Swin-T pyramid on MONAI's Swin, MFF decoder switches, Med-DSPP expert mixing, maps, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets.swin_unetr import SwinTransformer

from medattn.errors import ConfigError, GeometryError
from medattn.models import create, describe
from medattn.models.hbformer import MFFStage, MultiScaleBridge, PlainStage, SwinPyramid
from medattn.models.hbformer_blocks import ExpertSeparableConv, MedDSPP, SpatialGate

TINY = dict(describe("hbformer").tiny)


def _tiny(dims: int = 2, **options) -> torch.nn.Module:
    return create("hbformer", dims, 1, 2, **{**TINY, **options})


def _structure(model: torch.nn.Module) -> dict[str, object]:
    """Every module's type and every parameter's shape, by qualified name."""
    modules = {name: type(module).__name__ for name, module in model.named_modules()}
    return {**modules, **{name: tuple(p.shape) for name, p in model.named_parameters()}}


def test_default_encoder_is_swin_t_with_a_conv_stem():
    """Patch 4, embed 96: Swin-T's 96-192-384-768 pyramid at 1/4 ... 1/32, the stem at 1/1 and 1/2."""
    encoder = SwinPyramid(2, 1, 48, 4, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0.2, "batch", False).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 1, 64, 64))
    assert [f.shape[1] for f in features] == [48, 48, 96, 192, 384, 768]
    assert [f.shape[-1] for f in features] == [64, 32, 16, 8, 4, 2]
    assert [len(stage.blocks) for stage in encoder.stages] == [2, 2, 6, 2]
    assert len(encoder.merges) == 3  # Swin-T merges between stages only
    assert _tiny(patch_size=4).size_divisor == 32 and _tiny(patch_size=2).size_divisor == 16


def test_encoder_runs_monai_swin_transformer_unchanged():
    """Our stage outputs are MONAI's own computation: the merges see what MONAI's stages give them."""
    options = {"embed_dim": 12, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 2, 4), "window_size": 4}
    torch.manual_seed(1)
    encoder = SwinPyramid(3, 1, 4, 2, drop_path=0.0, norm="batch", use_checkpoint=False, **options).eval()
    reference = SwinTransformer(
        in_chans=1,
        embed_dim=12,
        window_size=(4,) * 3,
        patch_size=(2,) * 3,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 2, 4),
        patch_norm=True,
        spatial_dims=3,
    ).eval()
    renamed = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("stages."):
            index, rest = key.removeprefix("stages.").split(".", 1)
            renamed[f"layers{int(index) + 1}.0.{rest}"] = value
        elif key.startswith("merges."):
            index, rest = key.removeprefix("merges.").split(".", 1)
            renamed[f"layers{int(index) + 1}.0.downsample.{rest}"] = value
        elif key.startswith("patch_embed."):
            renamed[key] = value
    missing, unexpected = reference.load_state_dict(renamed, strict=False)
    assert not unexpected and all(k.startswith("layers4.0.downsample") for k in missing)

    last_stage_output = []
    reference.layers4[0].downsample.register_forward_hook(
        lambda m, args, out: last_stage_output.append(args[0])
    )
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        ours = encoder(x)
        reference(x)
    # MONAI's last stage output (before its merge, which Swin-T does not have) went through MONAI's whole
    # chain of stages and merges; ours must be the same tensor, layer-normalised.
    before_merge = last_stage_output[0]
    expected = F.layer_norm(before_merge, before_merge.shape[-1:]).movedim(-1, 1)
    assert [f.shape[-1] for f in ours] == [16, 8, 4, 2, 1]
    torch.testing.assert_close(ours[-1], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_plain_decoder_is_swin_unetr_like_and_smaller(dims):
    mff, plain = _tiny(dims), _tiny(dims, decoder="plain")
    assert all(isinstance(stage, MFFStage) for stage in mff.decoder)
    assert all(isinstance(stage, PlainStage) for stage in plain.decoder)
    assert not any(isinstance(m, (MedDSPP, MultiScaleBridge)) for m in plain.modules())
    assert plain.parameter_count() < mff.parameter_count()
    # Same encoder: the ablation changes only the decoder.
    assert plain.encoder.state_dict().keys() == mff.encoder.state_dict().keys()
    plain.eval()
    with torch.no_grad():
        assert plain(torch.randn(1, 1, *(16,) * dims)).shape == (1, 2, *(16,) * dims)
    assert plain.attention_maps() == {}


def test_each_switch_changes_the_module_tree():
    reference = _structure(_tiny())
    switches = {
        "decoder": "plain",
        "multi_scale_skips": False,
        "spatial_gate": True,
        "experts": 1,
        "dilations": (1, 2),
        "deep_supervision": True,
        "patch_size": 4,
    }
    for option, value in switches.items():
        assert _structure(_tiny(**{option: value})) != reference, option

    gated = _tiny(spatial_gate=True)
    assert sum(isinstance(m, SpatialGate) for m in gated.modules()) == len(gated.decoder)
    single = _tiny(multi_scale_skips=False)
    for stage in single.decoder:
        assert len(stage.bridge.coarser) == 0 and stage.bridge.global_context is None
    multi = _tiny()
    levels = len(multi.encoder.channels)
    assert [len(stage.bridge.coarser) for stage in multi.decoder] == [
        levels - 1 - k for k in range(levels - 1)
    ]
    one_expert = _tiny(experts=1)
    assert all(m.depthwise.shape[0] == 1 for m in one_expert.modules() if isinstance(m, ExpertSeparableConv))
    with pytest.raises(ConfigError, match="spatial_gate belongs to the MFF decoder"):
        _tiny(decoder="plain", spatial_gate=True)
    with pytest.raises(ConfigError, match="decoder must be one of"):
        _tiny(decoder="unet")
    with pytest.raises(ConfigError, match="not divisible by its 3 heads"):
        _tiny(num_heads=(3, 3, 3, 3))


@pytest.mark.parametrize("dims", [2, 3])
def test_expert_weights_sum_to_one_and_mixing_kernels_equals_mixing_outputs(dims):
    """The official Med-DSPP runs every expert and mixes outputs; we mix kernels. Both must agree."""
    block = MedDSPP(dims, channels=8, experts=4).eval()
    x = torch.randn(3, 8, *(9,) * dims)
    branch_weights, expert_weights = block.routing(x)
    for weights, count in ((branch_weights, 3), (expert_weights, 4)):
        assert weights.shape == (3, count) and (weights > 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    convolve = F.conv2d if dims == 2 else F.conv3d
    for branch in block.branches:
        outputs = []
        for sample, weights in zip(x, expert_weights, strict=True):
            sample = sample[None]
            depthwise = sum(
                w * convolve(sample, k, padding=branch.dilation, dilation=branch.dilation, groups=8)
                for w, k in zip(weights, branch.depthwise, strict=True)
            )
            pointwise = sum(
                w * convolve(depthwise, k.view(*k.shape, *(1,) * dims))
                for w, k in zip(weights, branch.pointwise, strict=True)
            )
            outputs.append(pointwise)
        torch.testing.assert_close(branch(x, expert_weights), torch.cat(outputs), rtol=1e-4, atol=1e-5)


def test_attention_maps_are_the_fusion_summaries():
    model = _tiny(spatial_gate=True).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        model(x)
    maps = model.attention_maps()
    for k in range(len(model.decoder)):
        assert {
            f"decoder.{k}.fusion",
            f"decoder.{k}.fusion.channel_attention",
            f"decoder.{k}.fusion.spatial_gate",
        } <= set(maps)
    for name, values in maps.items():
        assert values.shape == (2, 1, 16, 16) and values.min() >= 0 and values.max() <= 1, name

    # The channel map is the share of each voxel's feature magnitude that ECA lets through.
    eca = model.decoder[0].fusion.channel_attention
    seen = []
    handle = eca.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        model(x)
    handle.remove()
    features, weighted = seen[0]
    expected = weighted.abs().sum(dim=1, keepdim=True) / features.abs().sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.attention_maps()["decoder.0.fusion.channel_attention"], expected)

    model.train()
    model(x)
    assert set(model.attention_maps()) == {
        f"decoder.{k}.fusion.spatial_gate" for k in range(len(model.decoder))
    }


def test_overfits_one_example():
    """A tiny 2D HBFormer memorises one noisy disk: Dice + CE falls more than tenfold in 20 Adam steps."""
    generator = torch.Generator().manual_seed(0)
    axes = torch.arange(16, dtype=torch.float32)
    yy, xx = torch.meshgrid(axes, axes, indexing="ij")
    label = (((yy - 6.5) ** 2 + (xx - 9) ** 2) <= 3.5**2).float()[None, None]
    image = label + 0.3 * torch.randn(label.shape, generator=generator)
    model = _tiny()
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2, foreach=True)
    model.train()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_function(model(image), label)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


def test_input_size_not_a_multiple_of_the_divisor_says_how_to_fix_it():
    model = _tiny(patch_size=4).eval()
    with pytest.raises(GeometryError, match=r"multiple of 32.*pad to e.g. \(64, 64\)"):
        model(torch.zeros(1, 1, 48, 40))
