"""Region attention equals dense masked attention; RATUNet uses the regions it is given or makes itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medattn.errors import GeometryError
from medattn.models import create
from medattn.models.region_attention import RegionAttention, RegionPartition, region_attention, window_ids
from medattn.transforms.regions import nearest_regions


def _qkv(batch=2, heads=3, tokens=40, width=4, dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(batch, heads, tokens, width, generator=generator, dtype=dtype) for _ in range(3)]


def _dense_masked(q, k, v, regions):
    """PyTorch's attention over all pairs, with -inf added where query and key lie in different regions."""
    same = regions[:, None, :, None] == regions[:, None, None, :]
    mask = torch.zeros(same.shape, dtype=q.dtype).masked_fill(~same, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _mixed_regions(tokens=40):
    """Per sample: regions of 1, 2, 3, 5, 9 ... tokens (several size buckets, padding), ids not contiguous."""
    generator = torch.Generator().manual_seed(2)
    first = torch.randint(0, 6, (tokens,), generator=generator) * 7 - 5
    second = torch.randint(0, 3, (tokens,), generator=generator)
    second[:3] = torch.tensor([40, 41, 1000])  # single-token regions, a large id
    return torch.stack([first, second])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_region_attention_equals_dense_attention_with_a_region_mask(dtype):
    q, k, v = _qkv(dtype=dtype)
    regions = _mixed_regions()
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(
        region_attention(q, k, v, regions), _dense_masked(q, k, v, regions), atol=tolerance, rtol=tolerance
    )


def test_region_attention_gradients_equal_the_dense_ones():
    inputs = [t.requires_grad_() for t in _qkv()]
    regions = _mixed_regions()
    ours = torch.autograd.grad(region_attention(*inputs, regions).square().sum(), inputs)
    dense = torch.autograd.grad(_dense_masked(*inputs, regions).square().sum(), inputs)
    for a, b in zip(ours, dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_regions_of_one_token_return_their_own_values():
    q, k, v = _qkv()
    regions = torch.arange(2 * 40).view(2, 40)
    torch.testing.assert_close(region_attention(q, k, v, regions), v, atol=1e-12, rtol=0)


def test_a_single_region_is_global_attention():
    q, k, v = _qkv(dtype=torch.float32)
    regions = torch.full((2, 40), 3)
    torch.testing.assert_close(
        region_attention(q, k, v, regions), F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5
    )


def test_same_id_in_two_samples_is_two_regions():
    q, k, v = _qkv(batch=2)
    regions = torch.zeros(2, 40, dtype=torch.long)
    together = region_attention(q, k, v, regions)
    alone = region_attention(q[1:], k[1:], v[1:], regions[1:])
    torch.testing.assert_close(together[1:], alone)


def test_no_tensor_quadratic_in_tokens_is_kept_for_the_backward():
    """Dense masked attention saves (heads, N, N) scores; region attention must save nothing that large."""
    tokens, largest = 1024, []
    q, k, v = [
        t.requires_grad_() for t in _qkv(batch=1, heads=2, tokens=tokens, width=8, dtype=torch.float32)
    ]
    regions = torch.arange(tokens).view(1, tokens) // 64  # 16 regions of 64 tokens

    def keep_size(t):
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep_size, lambda t: t):
        region_attention(q, k, v, regions).sum().backward()
    assert max(largest) < tokens * tokens / 4


def test_window_ids_cut_the_grid_into_windows_with_smaller_ones_at_the_edges():
    ids = window_ids((5, 6), 4).view(5, 6)
    expected = torch.tensor([[0] * 4 + [1] * 2] * 4 + [[2] * 4 + [3] * 2])
    assert torch.equal(ids, expected)


def test_region_attention_module_keeps_regions_apart():
    """Changing the tokens of one region leaves the outputs of the other regions as they were."""
    module = RegionAttention(channels=8, num_heads=2)
    tokens = torch.randn(1, 30, 8)
    regions = torch.arange(30).view(1, 30) % 3
    partition = RegionPartition.from_regions(regions)
    changed = tokens.clone()
    changed[0, regions[0] == 1] += 5.0
    before, after = module(tokens, partition), module(changed, partition)
    others = regions[0] != 1
    torch.testing.assert_close(before[0, others], after[0, others])
    assert not torch.allclose(before[0, ~others], after[0, ~others])


def test_nearest_regions_keeps_large_ids_exact():
    ids = (torch.arange(16).view(1, 1, 4, 4) + 2**40).long()
    down = nearest_regions(ids, (2, 2))
    assert torch.equal(down[0, 0], torch.tensor([[5, 7], [13, 15]]) + 2**40)


def _model(**options):
    model = create(
        "ratunet",
        2,
        1,
        2,
        base_channels=4,
        depth=2,
        blocks=1,
        layers_per_block=1,
        num_heads=2,
        window_size=2,
        deep_supervision=False,
        **options,
    )
    with torch.no_grad():  # open the attention branches (they start closed at 0) so regions matter
        for name, parameter in model.named_parameters():
            if name.endswith("_scale"):
                parameter.fill_(1.0)
    return model.eval()


def test_a_given_region_map_is_resampled_and_used():
    model = _model(regions="grid", region_size=4, transformer_stages=1)  # 2 x 2 token cells at the 4 x 4 grid
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        own = model(x)
        assert torch.equal(model.last_regions[0, 0], window_ids((4, 4), 2).view(4, 4))
        # The same cells at full resolution (8 x 8 pixels each) give the same result...
        full = window_ids((16, 16), 8).view(1, 1, 16, 16)
        torch.testing.assert_close(model(x, regions=full.float()), own)
        # ...one region over everything does not.
        assert not torch.allclose(model(x, regions=torch.zeros(1, 1, 16, 16, dtype=torch.long)), own)
    with pytest.raises(GeometryError, match="region map"):
        model(x, regions=torch.zeros(1, 1, 8, 8))


def test_slic_regions_are_made_inside_forward_on_the_attention_grid():
    model = _model(region_size=4, transformer_stages=2)  # finest transformer stage at 1/2: 8 x 8 tokens
    x = torch.zeros(2, 1, 16, 16)
    x[:, :, :, 8:] = 1.0  # two halves: superpixels must not straddle the edge
    with torch.no_grad():
        model(x)
    regions = model.last_regions
    assert regions.shape == (2, 1, 8, 8)
    for sample in regions[:, 0]:
        left, right = set(sample[:, :4].unique().tolist()), set(sample[:, 4:].unique().tolist())
        assert not left & right
        assert 8 <= len(left | right) <= 32  # about 64 tokens / 4


def test_coarse_regions_train_the_coarse_head_by_self_distillation():
    model = _model(regions="coarse", transformer_stages=1).train()
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    auxiliary = model.auxiliary_loss()
    assert auxiliary is not None and auxiliary.item() > 0
    (out.square().mean() + auxiliary).backward()
    assert model.coarse_head.weight.grad.abs().sum() > 0
    assert model.last_regions.shape == (2, 1, 4, 4) and int(model.last_regions.max()) < 2
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.auxiliary_loss() is None


def test_sliding_window_prediction_makes_regions_per_window():
    """Prediction cuts the image into windows and calls forward(window): SLIC runs inside, per window."""
    from medattn.inference import sliding_window_predict

    model = _model(region_size=4, transformer_stages=1)
    image = torch.randn(1, 40, 24)
    probabilities, attention, _ = sliding_window_predict(
        model, image, (16, 16), overlap=0.5, sw_batch_size=2, return_attention=True
    )
    assert probabilities.shape == (2, 40, 24) and attention.shape == (1, 40, 24)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(40, 24))
    assert attention.min() >= 0 and attention.max() <= 1 and attention.max() > 0
