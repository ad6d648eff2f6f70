"""ccsam: variational fusion (sampled in training, mean in eval), frozen ViT and CNN, adapters, text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from torch.distributions import Normal, kl_divergence

from medattn.errors import ConfigError, GeometryError, InputNotFoundError, PackageError
from medattn.models import create
from medattn.models.sam.adapter import BottleneckAdapter
from medattn.models.sam.image_encoder import PositionAdapter
from medattn.models.sam_fusion import VariationalFusion

TINY = {"variant": "tiny", "cnn_channels": (8, 8, 16), "cnn_blocks": (1, 1, 1)}


def square_example(size: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1, 3, size, size), label (1, 1, size, size), box (1, 4)): a noisy bright square and its box."""
    generator = torch.Generator().manual_seed(1)
    label = torch.zeros(1, 1, size, size)
    low, high = size // 4, size // 4 + size // 2
    label[..., low:high, low + 2 : high + 2] = 1
    image = label + 0.3 * torch.randn(1, 3, size, size, generator=generator)
    box = torch.tensor([[low - 1.0, low - 3.0, high + 3.0, high + 1.0]])
    return image, label, box


def test_fusion_samples_by_reparameterisation_and_its_kl_is_the_gaussian_one():
    fusion = VariationalFusion(channels=6, cnn_channels=4)
    vit, cnn = torch.randn(2, 6, 5, 5), torch.randn(2, 4, 5, 5)
    statistics = fusion.statistics(torch.cat([vit, fusion.project(cnn)], dim=1))
    mean, log_var = statistics[:, :1], statistics[:, 1:]
    projected = fusion.project(cnn)

    torch.manual_seed(3)
    fused, kl = fusion.train()(vit, cnn)
    torch.manual_seed(3)
    weights = torch.sigmoid(mean + torch.exp(0.5 * log_var) * torch.randn_like(mean))
    torch.testing.assert_close(fused, weights * vit + (1 - weights) * projected)
    reference = kl_divergence(Normal(mean, torch.exp(0.5 * log_var)), Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(kl, reference)

    fused, _ = fusion.eval()(vit, cnn)
    weights = torch.sigmoid(mean)
    torch.testing.assert_close(fused, weights * vit + (1 - weights) * projected)


def test_eval_is_deterministic_and_training_is_stochastic():
    model = create("ccsam", 2, 3, 1, **TINY)
    image, _, box = square_example()
    model.train()
    first, second = model(image, boxes=box), model(image, boxes=box)
    assert not torch.allclose(first, second)
    assert model.auxiliary_loss().item() == pytest.approx(0.01 * model.auxiliary_terms["fusion_kl"].item())
    model.eval()
    with torch.no_grad():
        first, second = model(image, boxes=box), model(image, boxes=box)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    weights = model.attention_maps()["fusion"]
    assert weights.shape == (1, 1, 48, 48) and weights.min() >= 0 and weights.max() <= 1

    plain = create("ccsam", 2, 3, 1, fusion="attention", **TINY).train()
    torch.testing.assert_close(plain(image, boxes=box), plain(image, boxes=box), rtol=0, atol=0)
    assert plain.auxiliary_loss() is None


def test_vit_and_pretrained_cnn_stay_frozen_while_adapters_fusion_and_decoder_learn(tmp_path):
    cnn = create("ccsam", 2, 3, 1, **TINY).cnn.state_dict()
    torch.save({f"cnn.{k}": v for k, v in cnn.items()}, tmp_path / "cnn.pth")
    model = create("ccsam", 2, 3, 1, backbone_weights=str(tmp_path / "cnn.pth"), **TINY).train()
    assert not model.cnn.training  # a frozen (pretrained) branch keeps its batch-norm statistics
    statistics = model.cnn.stem[1].running_mean.clone()
    image, _, box = square_example()
    (model(image, boxes=box).square().mean() + model.auxiliary_loss()).backward()
    assert torch.equal(model.cnn.stem[1].running_mean, statistics)
    for name, parameter in model.named_parameters():
        adapter = ".adapter." in name or "position_adapter." in name
        if name.startswith(("image_encoder.", "prompt_encoder.", "cnn.")) and not adapter:
            assert not parameter.requires_grad and parameter.grad is None, name
        if name.startswith(("input_adapter.", "fusion.", "mask_decoder.transformer.")) or adapter:
            assert parameter.requires_grad and parameter.grad is not None, name

    trained = create("ccsam", 2, 3, 1, freeze_cnn=False, **TINY).train()
    assert trained.cnn.training and all(p.requires_grad for p in trained.cnn.parameters())


def test_vit_b_has_five_feature_adapters_and_one_position_adapter():
    with torch.device("meta"):
        model = create("ccsam", 2, 3, 1)
    assert sum(isinstance(m, BottleneckAdapter) for m in model.modules()) == 5
    assert sum(isinstance(m, PositionAdapter) for m in model.modules()) == 1
    # Adapters, fusion and decoder; the CNN branch (ResNet-18's first stages) trains too until it is given
    # pretrained weights.
    cnn = sum(p.numel() for p in model.cnn.parameters())
    assert model.parameter_count(trainable_only=True) - cnn < 0.06 * model.parameter_count()


@pytest.mark.parametrize("size", [32, 80])
def test_inputs_of_any_multiple_of_16_pixels(size):
    model = create("ccsam", 2, 3, 3, **TINY).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3, size, size)


def test_text_prompts_from_a_file_or_per_call(tmp_path):
    image, _, box = square_example()
    path = tmp_path / "prompt.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1, 12)).astype(np.float32))
    model = create("ccsam", 2, 3, 1, text_embedding=str(path), **TINY).eval()
    assert "text_embedding" in model.state_dict()  # a model package carries the vector
    # ... and rebuilds from the numbers a package stores, without the file.
    inline = create("ccsam", 2, 3, 1, text_embedding=model.text_embedding.flatten().tolist(), **TINY)
    inline.load_state_dict(model.state_dict())
    path.unlink()
    blind = create("ccsam", 2, 3, 1, **TINY)
    blind.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("text_")})
    blind.eval()
    with torch.no_grad():
        from_file = model(image, boxes=box)
        per_call = model(image, boxes=box, text_embedding=torch.randn(1, 12))
        without = blind(image, boxes=box)
    assert not torch.allclose(from_file, without) and not torch.allclose(from_file, per_call)

    model.train()
    model(image, boxes=box).mean().backward()
    assert model.text_projection.weight.grad is not None
    with pytest.raises(GeometryError, match="text embeddings of shape"):
        model(image, boxes=box, text_embedding=torch.randn(1, 7))
    with pytest.raises(ConfigError, match="text_dim"):
        blind(image, text_embedding=torch.randn(1, 12))
    with pytest.raises(InputNotFoundError):
        create("ccsam", 2, 3, 1, text_embedding=str(tmp_path / "missing.npy"), **TINY)


def test_sam_and_cnn_weights_load_from_files(tmp_path):
    sam = create("sam", 2, 3, 1, variant="tiny")
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.normal_()
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    source = create("ccsam", 2, 3, 1, **TINY)
    torch.save(source.state_dict(), tmp_path / "ccsam.pth")
    model = create(
        "ccsam",
        2,
        3,
        1,
        checkpoint=str(tmp_path / "sam.pth"),
        backbone_weights=str(tmp_path / "ccsam.pth"),
        **TINY,
    )
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in sam.state_dict().items())
    assert all(torch.equal(ours[f"cnn.{k}"], v) for k, v in source.cnn.state_dict().items())
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(PackageError, match=r"other\.pth: does not fit .*ResNet backbone.*1 shape mismatch"):
        create("ccsam", 2, 3, 1, backbone_weights=str(tmp_path / "other.pth"), **TINY)


def test_tiny_ccsam_overfits_one_image():
    model = create("ccsam", 2, 3, 1, **TINY)
    image, label, box = square_example()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss_function = DiceCELoss(sigmoid=True)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        (loss_function(model(image, boxes=box), label) + model.auxiliary_loss()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = (model(image, boxes=box) > 0).float()
    dice = 2 * (prediction * label).sum() / (prediction.sum() + label.sum())
    assert dice > 0.9
