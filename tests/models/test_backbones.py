"""Pretrained backbones from local files: official key names mapped onto medattn's modules, checked against
networks in the official layouts (tests/official_layouts.py) built here, never downloaded."""

from __future__ import annotations

import pytest
import torch
from official_layouts import (
    BasicBlock,
    Bottleneck,
    GroupedBottleneck,
    OfficialPraNet,
    Res2NetV1b,
    TorchvisionResNet,
    randomised,
    swin_state,
)

from medattn.errors import ConfigError, InputNotFoundError, PackageError
from medattn.models import create
from medattn.models.backbones import check_file, match_weights, package_options
from medattn.models.layouts import PRANET_OFFICIAL
from medattn.package import PackageConfig, build_network
from medattn.plan import Plan

WIDTHS = (4, 8, 8, 16)


def _saved(state: dict[str, torch.Tensor], path) -> str:
    torch.save(state, path)
    return str(path)


def _features_equal(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    assert len(ours) == len(reference)
    for got, expected in zip(ours, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("block", "shape"),
    [
        (BasicBlock, {}),
        (Bottleneck, {"backbone_block": "bottleneck"}),
        (
            GroupedBottleneck,
            {"backbone_block": "bottleneck", "backbone_groups": 2, "backbone_group_width": 16},
        ),
    ],
    ids=["resnet-basic", "resnet-bottleneck", "resnext"],
)
def test_msga_loads_a_torchvision_resnet_and_computes_its_features(tmp_path, block, shape):
    reference = randomised(TorchvisionResNet(block, WIDTHS, (1, 2, 1, 1)))
    path = _saved(reference.state_dict(), tmp_path / "resnet.pth")
    options = {"features": 8, "backbone_channels": WIDTHS, "backbone_blocks": (1, 2, 1, 1), **shape}
    model = create("msga", 2, 3, 2, backbone_weights=path, **options).eval()
    ours = model.state_dict()
    assert torch.equal(ours["backbone.stem.0.weight"], reference.conv1.weight)
    assert torch.equal(ours["backbone.stem.1.running_var"], reference.bn1.running_var)
    assert torch.equal(ours["backbone.layers.1.1.conv2.weight"], reference.layer2[1].conv2.weight)
    assert torch.equal(
        ours["backbone.layers.3.0.downsample.0.weight"], reference.layer4[0].downsample[0].weight
    )
    assert not ours["backbone.layers.3.0.downsample.0.bias"].any()  # torchvision's shortcut has no bias
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _features_equal(model.backbone(image), reference.features(image))


def test_a_one_channel_network_gets_the_rgb_stem_summed(tmp_path):
    """A grey image through summed RGB filters equals the grey image repeated in R, G and B."""
    reference = randomised(TorchvisionResNet(BasicBlock, WIDTHS, (1, 1, 1, 1)))
    path = _saved(reference.state_dict(), tmp_path / "resnet.pth")
    options = {"features": 8, "backbone_channels": WIDTHS, "backbone_blocks": (1, 1, 1, 1)}
    model = create("msga", 2, 1, 2, backbone_weights=path, **options).eval()
    grey = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        _features_equal(model.backbone(grey), reference.features(grey.repeat(1, 3, 1, 1)))


def test_a_file_that_does_not_fit_is_refused_naming_the_file_and_the_options(tmp_path):
    resnet34_like = TorchvisionResNet(BasicBlock, WIDTHS, (2, 2, 2, 2)).state_dict()
    path = _saved(resnet34_like, tmp_path / "deeper.pth")
    options = {"features": 8, "backbone_channels": WIDTHS, "backbone_blocks": (1, 1, 1, 1)}
    with pytest.raises(
        PackageError, match=r"deeper\.pth: .*unexpected key.*layer1\.1\.conv1\.weight.*blocks"
    ):
        create("msga", 2, 3, 2, backbone_weights=path, **options)
    with pytest.raises(PackageError, match="shape mismatch.*backbone.stem.0.weight"):
        create("msga", 2, 3, 2, backbone_weights=path, features=8, backbone_blocks=(2, 2, 2, 2))
    unrelated = _saved({"decoder.weight": torch.zeros(2)}, tmp_path / "unrelated.pth")
    with pytest.raises(PackageError, match=r"unrelated\.pth: holds no tensor of a torchvision ResNet"):
        create("msga", 2, 3, 2, backbone_weights=unrelated, **options)
    with pytest.raises(InputNotFoundError):
        create("msga", 2, 3, 2, backbone_weights=str(tmp_path / "absent.pth"), **options)


def test_pranet_loads_a_res2net_v1b_and_computes_its_features(tmp_path):
    reference = randomised(Res2NetV1b(8, (1, 2, 1, 1)))
    path = _saved({"state_dict": reference.state_dict()}, tmp_path / "res2net.pth")  # a wrapped file too
    model = create("pranet", 2, 3, 2, width=8, blocks=(1, 2, 1, 1), channels=8, backbone_weights=path)
    ours = model.state_dict()
    assert torch.equal(ours["backbone.stem.2.conv.weight"], reference.conv1[6].weight)
    assert torch.equal(ours["backbone.stem.2.adn.N.weight"], reference.bn1.weight)
    assert torch.equal(
        ours["backbone.stages.1.1.convs.2.adn.N.running_mean"], reference.layer2[1].bns[2].running_mean
    )
    assert torch.equal(
        ours["backbone.stages.2.0.shortcut.1.conv.weight"], reference.layer3[0].downsample[1].weight
    )
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _features_equal(model.eval().backbone(image), reference.features(image)[1:])


def test_the_official_pranet_checkpoint_maps_key_for_key_and_gives_the_same_map(tmp_path):
    """Every tensor of a checkpoint in PraNet-19.pth's layout lands on a medattn parameter of the same
    shape with the same values, and the network then computes the official code's lateral_map_2."""
    official = randomised(OfficialPraNet(width=8, blocks=(1, 1, 1, 1), channel=8))
    state = official.state_dict()
    path = _saved(state, tmp_path / "PraNet-19.pth")
    match = check_file(path, "pranet", width=8, blocks=(1, 1, 1, 1), channels=8)
    report = match.report
    assert match.layout.startswith("PraNet (official checkpoint")
    assert report.ok and report.unused == ["resnet.fc.weight", "resnet.fc.bias"]
    assert report.matched == len(state) - 2
    model = create("pranet", 2, 3, 1, width=8, blocks=(1, 1, 1, 1), channels=8).eval()
    mapped = match_weights(model.state_dict(), state, PRANET_OFFICIAL).tensors
    model.load_state_dict(mapped, strict=True)
    renamed = PRANET_OFFICIAL.rename(list(state))
    for key, value in state.items():
        if renamed[key] is not None:
            assert torch.equal(model.state_dict()[renamed[key]], value), key
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), official(image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("timm", [False, True], ids=["microsoft", "timm"])
def test_hbformer_loads_swin_weights_in_both_official_layouts(tmp_path, timm):
    options = {"feature_size": 4, "embed_dim": 6, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)}
    state = swin_state(6, (2, 2, 2, 2), (1, 1, 2, 2), window=4, timm=timm)
    path = _saved(state, tmp_path / "swin.pth")
    model = create("hbformer", 2, 3, 2, window_size=4, backbone_weights=path, **options)
    ours = model.state_dict()
    assert torch.equal(ours["encoder.patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    block = "layers.2.blocks.1."
    assert torch.equal(ours["encoder.stages.2.blocks.1.mlp.linear1.weight"], state[block + "mlp.fc1.weight"])
    assert torch.equal(ours["encoder.stages.2.blocks.1.attn.qkv.bias"], state[block + "attn.qkv.bias"])
    table = "attn.relative_position_bias_table"
    assert torch.equal(ours[f"encoder.stages.2.blocks.1.{table}"], state[block + table])
    merge = "layers.2.downsample" if timm else "layers.1.downsample"  # the merge after stage 1
    assert torch.equal(ours["encoder.merges.1.reduction.weight"], state[f"{merge}.reduction.weight"])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_swin_bias_tables_are_resized_to_another_window_as_the_official_code(tmp_path):
    options = {"feature_size": 4, "embed_dim": 6, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)}
    path = _saved(swin_state(6, (2, 2, 2, 2), (1, 1, 2, 2), window=7), tmp_path / "swin_w7.pth")
    match = check_file(path, "hbformer", window_size=4, **options)
    assert match.report.ok and any("resized bicubically" in note for note in match.report.adapted)
    three_d = check_file(path, "hbformer", spatial_dims=3, window_size=4, **options).report
    assert (
        not three_d.ok
        and ("encoder.patch_embed.proj.weight", (6, 3, 4, 4), (6, 3, 4, 4, 4)) in three_d.mismatched
    )


def test_ccsam_refuses_a_frozen_random_cnn_and_trains_it_by_default():
    tiny = {"variant": "tiny", "cnn_channels": (8, 8, 16), "cnn_blocks": (1, 1, 1)}
    with pytest.raises(ConfigError, match="freeze_cnn=True.*backbone_weights"):
        create("ccsam", 2, 3, 1, freeze_cnn=True, **tiny)
    model = create("ccsam", 2, 3, 1, **tiny).train()
    assert model.cnn.training and all(p.requires_grad for p in model.cnn.parameters())


def test_ccsam_loads_a_torchvision_resnet_into_its_cnn_branch_and_freezes_it(tmp_path):
    reference = randomised(TorchvisionResNet(BasicBlock, (8, 8, 16, 16), (1, 1, 1, 1)))
    path = _saved(reference.state_dict(), tmp_path / "resnet18.pth")
    tiny = {"variant": "tiny", "cnn_channels": (8, 8, 16), "cnn_blocks": (1, 1, 1)}
    model = create("ccsam", 2, 3, 1, backbone_weights=path, **tiny).train()
    assert not model.cnn.training and not any(p.requires_grad for p in model.cnn.parameters())
    image = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        _features_equal(model.cnn(image), reference.features(image)[:3])
    report = check_file(path, "ccsam", out_channels=1, **tiny).report
    assert report.ok and "layer4.0.conv1.weight" in report.unused and "fc.weight" in report.unused
    tuned = create("ccsam", 2, 3, 1, backbone_weights=path, freeze_cnn=False, **tiny)
    assert all(p.requires_grad for p in tuned.cnn.parameters())


def test_a_medattn_model_pt_also_serves_as_backbone_weights(tmp_path):
    tiny = {"variant": "tiny", "cnn_channels": (8, 8, 16), "cnn_blocks": (1, 1, 1)}
    source = randomised(create("ccsam", 2, 3, 1, **tiny))
    path = _saved(source.state_dict(), tmp_path / "model.pt")
    model = create("ccsam", 2, 3, 1, backbone_weights=path, **tiny)
    assert all(torch.equal(model.state_dict()[f"cnn.{k}"], v) for k, v in source.cnn.state_dict().items())


def test_a_package_is_rebuilt_without_the_backbone_file(tmp_path):
    """model.pt holds the backbone's weights: predict must not look for the file the run started from."""
    kwargs = {
        "width": 8,
        "blocks": [1, 1, 1, 1],
        "channels": 8,
        "backbone_weights": str(tmp_path / "gone.pth"),
    }
    assert package_options({**kwargs, "checkpoint": "sam.pth", "freeze_cnn": True}) == {
        "width": 8,
        "blocks": [1, 1, 1, 1],
        "channels": 8,
    }
    plan = Plan(2, 3, 2, spacing=None, patch_size=[64, 64], batch_size=1, preset="rgb")
    network = build_network(PackageConfig(model="pranet", model_kwargs=kwargs, plan=plan))
    assert network.backbone.stem[0].conv.weight.shape == (4, 3, 3, 3)


def test_swin_weights_from_a_safetensors_file_as_timm_publishes_them(tmp_path):
    from safetensors.torch import save_file

    options = {"feature_size": 4, "embed_dim": 6, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)}
    state = swin_state(6, (2, 2, 2, 2), (1, 1, 2, 2), window=4, timm=True)
    path = tmp_path / "model.safetensors"
    save_file(state, path)
    model = create("hbformer", 2, 3, 2, window_size=4, backbone_weights=str(path), **options)
    assert torch.equal(
        model.state_dict()["encoder.merges.2.norm.bias"], state["layers.3.downsample.norm.bias"]
    )
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PackageError, match=r"model\.safetensors: not a readable \.safetensors file"):
        create("hbformer", 2, 3, 2, window_size=4, backbone_weights=str(path), **options)
