"""Every registered model, in 2D and 3D, with and without deep supervision, keeps medattn's model contract."""

from __future__ import annotations

import copy

import pytest
import torch

from medattn.errors import ConfigError, GeometryError
from medattn.models import available, create, describe

CASES = [
    (name, dims, ds) for name in available() for dims in describe(name).spatial_dims for ds in (False, True)
]


def _tiny(name: str, dims: int, deep_supervision: bool):
    spec = describe(name)
    model = create(name, dims, 2, 3, deep_supervision=deep_supervision, **spec.tiny)
    return model, (spec.tiny_size,) * dims


def _as_list(out) -> list[torch.Tensor]:
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize(
    ("name", "dims", "ds"), CASES, ids=[f"{n}-{d}d-{'ds' if s else 'plain'}" for n, d, s in CASES]
)
def test_model_contract(name, dims, ds):
    spec = describe(name)
    if ds and not spec.deep_supervision:
        with pytest.raises(ConfigError, match="deep-supervision"):
            create(name, dims, 2, 3, deep_supervision=True, **spec.tiny)
        return
    model, size = _tiny(name, dims, ds)
    x = torch.randn(2, 2, *size)

    # Train mode: a list of logits (finest first, each on a grid that divides the input's) or one tensor.
    model.train()
    out = model(x)
    if ds:
        assert isinstance(out, list) and len(out) > 1
    else:
        assert isinstance(out, torch.Tensor)
    outputs = _as_list(out)
    assert outputs[0].shape == (2, 3, *size)
    for o in outputs[1:]:
        assert o.shape[:2] == (2, 3) and all(s % t == 0 for s, t in zip(size, o.shape[2:], strict=True))

    # Backward: the layer that sees the input learns; in medattn's own networks every parameter gets a
    # gradient (MONAI's transformers build layers they do not use, e.g. cross-attention norms).
    loss = sum(o.square().mean() for o in outputs)
    auxiliary = model.auxiliary_loss()
    if auxiliary is not None:
        loss = loss + auxiliary
    loss.backward()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen parts learn nothing
    if not name.startswith("monai."):
        missing = [n for n, p in named if p.grad is None]
        assert not missing, f"parameters without gradient: {missing[:5]}"
    first_name, first = named[0]
    assert first.grad.abs().sum() > 0, f"no gradient reaches the first layer {first_name}"
    assert all(torch.isfinite(p.grad).all() for _, p in named if p.grad is not None)

    # A trained-mode model can be copied (EMA, checkpoints) even though it holds the last forward's losses.
    copy.deepcopy(model)

    # Eval mode: plain logits, deterministic.
    model.eval()
    with torch.no_grad():
        first_pass, second_pass = model(x), model(x)
    assert isinstance(first_pass, torch.Tensor) and first_pass.shape == (2, 3, *size)
    assert torch.equal(first_pass, second_pass)

    # Attention maps: on the input grid, one channel, values in [0, 1].
    for key, coefficients in model.attention_maps().items():
        assert coefficients.shape == (2, 1, *size), key
        assert torch.isfinite(coefficients).all() and coefficients.min() >= 0 and coefficients.max() <= 1, key


@pytest.mark.parametrize("name", available())
def test_bad_inputs_raise_a_clear_geometry_error(name):
    dims = max(describe(name).spatial_dims)
    model, size = _tiny(name, dims, False)
    model.eval()
    odd = tuple(s + 1 for s in size)
    with pytest.raises(GeometryError, match="multiple of|exactly"):
        model(torch.zeros(1, 2, *odd))
    with pytest.raises(GeometryError, match="input channel"):
        model(torch.zeros(1, 5, *size))
    with pytest.raises(GeometryError, match=f"{dims}D"):
        model(torch.zeros(1, 2, *size[:-1]))


def test_models_with_attention_report_maps():
    """The attention families and MONAI's AttentionUnet expose their maps; the plain U-Net has none."""
    x = torch.randn(2, 2, 32, 32)
    for name in ("agunet", "daunet", "msga", "monai.attention_unet", "monai.unet"):
        model, _ = _tiny(name, 2, False)
        model.eval()
        with torch.no_grad():
            model(x)
        assert bool(model.attention_maps()) == (name != "monai.unet"), name
