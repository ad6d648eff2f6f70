"""The registry builds models by name, rejects bad options with clear errors, rebuilds from init_kwargs."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import ConfigError
from medattn.models import AGUNet, available, create, default_parameter_count, describe, register_model


def test_every_family_of_the_issue_is_registered():
    assert set(available()) >= {
        "agunet",
        "daunet",
        "msga",
        "monai.unet",
        "monai.attention_unet",
        "monai.segresnet",
        "monai.swin_unetr",
        "monai.unetr",
    }
    for name in available():
        spec = describe(name)
        assert spec.description and set(spec.spatial_dims) <= {2, 3}


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean agunet"):
        create("agunte", 3, 1, 2)


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="base_channel.*it takes:.*base_channels"):
        create("agunet", 3, 1, 2, base_channel=8)


def test_bad_values_raise_config_errors():
    with pytest.raises(ConfigError, match="spatial_dims"):
        create("agunet", 4, 1, 2)
    with pytest.raises(ConfigError, match="norm must be one of"):
        create("agunet", 2, 1, 2, norm="layer", base_channels=4, depth=2)
    with pytest.raises(ConfigError, match="gate must be one of"):
        create("agunet", 2, 1, 2, gate="dot", base_channels=4, depth=2)


def test_a_name_registers_once():
    with pytest.raises(ConfigError, match="registered twice"):
        register_model("agunet", description="again")(AGUNet)


def test_init_kwargs_rebuild_the_same_model():
    """A model package stores init_kwargs; building from them must accept the saved weights exactly."""
    model = create("daunet", 2, 1, 3, base_channels=4, depth=2, gate="additive").eval()
    kwargs = dict(model.init_kwargs)
    rebuilt = create(kwargs.pop("name"), **kwargs).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_default_parameter_count_matches_the_built_model():
    assert default_parameter_count("agunet", 3) == create("agunet", 3, 1, 2).parameter_count()
    swin = create("monai.swin_unetr", 2, 1, 2)
    assert default_parameter_count("monai.swin_unetr", 2) == swin.parameter_count()


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_norms(norm):
    model = create("agunet", 2, 1, 2, base_channels=6, depth=2, norm=norm, deep_supervision=False)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)
    kinds = {"batch": torch.nn.BatchNorm2d, "instance": torch.nn.InstanceNorm2d, "group": torch.nn.GroupNorm}
    expected = kinds[norm]
    assert any(isinstance(m, expected) for m in model.modules())


def test_freezing():
    model = create("agunet", 2, 1, 2, base_channels=4, depth=2)
    total = model.parameter_count()
    frozen = model.freeze_encoder()
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert frozen == len(list(model.encoder.parameters()))
    assert model.parameter_count(trainable_only=True) == total - encoder
    with pytest.raises(ConfigError, match="no parameters under 'encodr'"):
        model.freeze("encodr")
    model.unfreeze()
    assert model.parameter_count(trainable_only=True) == total
    with pytest.raises(ConfigError, match="no separable encoder"):
        create("monai.unet", 2, 1, 2, **describe("monai.unet").tiny).freeze_encoder()


def test_training_defaults_name_real_options_and_losses():
    """CPU options, losses and head weights the registry hands to `medattn train` are ones that exist."""
    from medattn.losses import available_losses

    for name in available():
        spec = describe(name)
        assert set(spec.cpu_options) <= set(spec.accepted_options()), name
        assert set(spec.train_options) <= set(spec.accepted_options()), name
        assert spec.loss in available_losses(), name
        assert spec.head_weights is None or spec.deep_supervision, name
    assert describe("pranet").loss == "structure" and describe("pranet").head_weights == (1.0,) * 4
    assert describe("agunet").cpu_options == {"stem_stride": 2, "norm": "instance"}


def test_network_defaults_layer_cpu_options_over_train_options():
    """`medattn train` gives AGUNet a leaky activation on every device and the lighter network on CPU only;
    the class itself keeps the paper's ReLU, so packages that name no activation rebuild unchanged."""
    from medattn.models.registry import network_defaults

    assert network_defaults("agunet", "cuda") == {"act": "leakyrelu"}
    assert network_defaults("agunet", "cpu") == {"act": "leakyrelu", "stem_stride": 2, "norm": "instance"}
    assert network_defaults("monai.unet", "cpu") == {}
    # A pretrained backbone file fits the full-size backbone only: no lighter CPU network then.
    assert network_defaults("pranet", "cpu")["width"] == 16
    assert network_defaults("pranet", "cpu", pretrained_backbone=True) == {}
    paper = create("agunet", 3, 1, 2, **describe("agunet").tiny)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in paper.modules())
