"""sliding_window_predict against MONAI's own sliding window: blending, TTA, padding, attention, devices."""

from __future__ import annotations

import itertools

import monai.inferers.utils
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from medattn.device import to_host
from medattn.errors import ConfigError, GeometryError
from medattn.inference import (
    choose_stitch_device,
    count_windows,
    importance_map,
    sliding_window_predict,
    stitched_bytes,
)
from medattn.inference.sliding_window import _softmax_


@pytest.fixture(autouse=True)
def _small_cpu_runs():
    """Seed every test; one thread and native CPU convolutions for tiny tensors.

    On a shared 2-core machine two OpenMP threads make each tiny forward wait on a busy core, many times
    slower than one thread, and oneDNN compiles a kernel per new input shape.
    """
    torch.manual_seed(0)
    enabled, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)
    yield
    torch.backends.mkldnn.enabled = enabled
    torch.set_num_threads(threads)


def _unet(dims: int, out_channels: int = 3) -> nn.Module:
    return UNet(
        spatial_dims=dims, in_channels=1, out_channels=out_channels, channels=(4, 8), strides=(2,)
    ).eval()


def _monai_probabilities(network, image, patch, overlap, predictor=None):
    """The plain MONAI way: gaussian sliding_window_inference on logits, then softmax."""
    with torch.no_grad():
        logits = sliding_window_inference(
            image[None], patch, 2, predictor or network, overlap=overlap, mode="gaussian"
        )
    return torch.softmax(logits, dim=1)[0]


class _SymmetricConvNet(nn.Module):
    """Two convolutions with kernels symmetric under every flip: the network commutes with mirroring."""

    def __init__(self, dims: int):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.layers = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 3, 3, padding=1))
        kernel_dims = tuple(range(2, 2 + dims))
        with torch.no_grad():
            for layer in (self.layers[0], self.layers[2]):
                flips = [
                    torch.flip(layer.weight, d)
                    for r in range(dims + 1)
                    for d in itertools.combinations(kernel_dims, r)
                ]
                layer.weight.copy_(torch.stack(flips).mean(0))

    def forward(self, x):
        return self.layers(x)


class _GatedNet(nn.Module):
    """A conv net whose two 'attention maps' are voxel-wise functions of the input, at the input grid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self._maps: dict[str, torch.Tensor] = {}

    def forward(self, x):
        gate = torch.sigmoid(x)
        self._maps = {"gate": gate, "complement": 1 - gate / 2}
        return self.conv(x * gate)

    def attention_maps(self):
        return self._maps


@pytest.mark.parametrize("overlap", [0.25, 0.5])
@pytest.mark.parametrize(("dims", "shape", "patch"), [(2, (37, 29), (16, 12)), (3, (20, 18, 13), (8, 8, 6))])
def test_equals_monai_sliding_window_then_softmax(dims, shape, patch, overlap):
    network = _unet(dims)
    image = torch.randn(1, *shape)
    expected = _monai_probabilities(network, image, patch, overlap)
    result = sliding_window_predict(network, image, patch, overlap=overlap, sw_batch_size=3)
    assert result.shape == (3, *shape)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.sum(0), torch.ones(shape))


def test_batched_or_meta_input_window_batch_and_constant_blend():
    network = _unet(3)
    image = torch.randn(1, 14, 12, 10)
    single = sliding_window_predict(network, image, (8, 8, 8), sw_batch_size=1)
    torch.testing.assert_close(
        sliding_window_predict(network, image[None], (8, 8, 8), sw_batch_size=5), single
    )
    with torch.no_grad():
        logits = sliding_window_inference(image[None], (8, 8, 8), 1, network, overlap=0.5, mode="constant")
    constant = sliding_window_predict(network, image, (8, 8, 8), blend="constant")
    torch.testing.assert_close(constant, torch.softmax(logits, 1)[0], atol=1e-5, rtol=1e-5)
    from_meta = sliding_window_predict(network, MetaTensor(image), (8, 8, 8))
    assert type(from_meta) is torch.Tensor
    torch.testing.assert_close(from_meta, single)


@pytest.mark.parametrize(("shape", "patch"), [((5, 6, 7), (8, 8, 8)), ((20, 6, 13), (8, 8, 8))])
def test_image_smaller_than_patch(shape, patch):
    network = _unet(3)
    image = torch.randn(1, *shape)
    result = sliding_window_predict(network, image, patch)
    assert result.shape == (3, *shape) and result.is_contiguous()
    torch.testing.assert_close(result, _monai_probabilities(network, image, patch, 0.5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_mirror_tta_of_a_flip_equivariant_network_changes_nothing(dims):
    network = _SymmetricConvNet(dims).eval()
    shape, patch = ((30, 26), (16, 16)) if dims == 2 else ((14, 13, 11), (8, 8, 8))
    image = torch.randn(1, *shape)
    plain = sliding_window_predict(network, image, patch)
    mirrored = sliding_window_predict(network, image, patch, mirror_axes=tuple(range(dims)))
    torch.testing.assert_close(mirrored, plain, atol=1e-5, rtol=1e-5)


def test_mirror_tta_averages_logits_over_every_flip_combination():
    network = _unet(3)
    image = torch.randn(1, 14, 13, 11)
    axes = (0, 2)

    def flip_average(window):
        flips = [(), (2,), (4,), (2, 4)]  # tensor dims of spatial axes 0 and 2
        return sum(torch.flip(network(torch.flip(window, d)), d) if d else network(window) for d in flips) / 4

    expected = _monai_probabilities(network, image, (8, 8, 8), 0.5, predictor=flip_average)
    result = sliding_window_predict(network, image, (8, 8, 8), mirror_axes=axes)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(result, sliding_window_predict(network, image, (8, 8, 8)), atol=1e-4)


def test_attention_is_stitched_on_the_image_grid():
    network = _GatedNet().eval()
    image = torch.randn(1, 15, 12, 9)
    probabilities, attention, pass_entropy = sliding_window_predict(
        network, image, (8, 8, 8), return_attention=True, mirror_axes=(1,)
    )
    assert pass_entropy is None
    # Every window sees the same voxel-wise maps, so the blended mean is that map, whatever the weights.
    torch.testing.assert_close(attention, 0.5 + torch.sigmoid(image) / 4)
    assert attention.shape == (1, 15, 12, 9)
    torch.testing.assert_close(
        probabilities, sliding_window_predict(network, image, (8, 8, 8), mirror_axes=(1,))
    )


@pytest.mark.parametrize("out_channels", [1, 3])
def test_pass_entropy_is_the_mirrored_passes_mean_entropy(out_channels):
    """With mirror TTA each pass is a member: the stitched map is the mean over passes of each pass's own
    softmax (or sigmoid) entropy, computed here whole-image with one window covering the image."""
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, out_channels, 3, padding=1).eval()
    image = torch.randn(1, 8, 8, 8)
    axes = (0, 2)
    maps = sliding_window_predict(network, image, (8, 8, 8), mirror_axes=axes, return_pass_entropy=True)
    passes = []
    with torch.no_grad():
        for flip in [(), (2,), (4,), (2, 4)]:
            logits = network(torch.flip(image[None], flip) if flip else image[None])
            logits = torch.flip(logits, flip) if flip else logits
            if out_channels == 1:
                p = torch.sigmoid(logits)
                p = torch.cat([1 - p, p], dim=1)
            else:
                p = torch.softmax(logits, dim=1)
            passes.append(-(p * p.clamp_min(1e-12).log()).sum(dim=1))
    expected = torch.stack(passes).mean(dim=0)
    torch.testing.assert_close(maps.pass_entropy, expected, atol=1e-5, rtol=1e-4)
    assert maps.attention is None
    torch.testing.assert_close(
        maps.probabilities, sliding_window_predict(network, image, (8, 8, 8), mirror_axes=axes)
    )


def test_attention_requested_from_a_network_without_maps_is_a_config_error():
    image = torch.randn(1, 10, 10, 10)
    with pytest.raises(ConfigError, match="exposes no attention maps"):
        sliding_window_predict(_unet(3), image, (8, 8, 8), return_attention=True)
    empty = _unet(3)
    empty.attention_maps = dict  # the contract's answer for networks without attention
    with pytest.raises(ConfigError, match="exposes no attention maps"):
        sliding_window_predict(empty, image, (8, 8, 8), return_attention=True)


def test_network_runs_in_eval_mode_and_gets_its_mode_back():
    network = UNet(3, 1, 2, channels=(4, 8), strides=(2,), norm="batch")
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    network.train()
    image = torch.randn(1, 12, 12, 12)
    result = sliding_window_predict(network, image, (8, 8, 8))
    assert network.training
    torch.testing.assert_close(
        result, _monai_probabilities(network.eval(), image, (8, 8, 8), 0.5), atol=1e-5, rtol=1e-5
    )
    result.mul_(2)  # an ordinary tensor, not an inference tensor: in-place edits work


def test_gaussian_map_is_cached_not_rebuilt_by_monai(monkeypatch):
    network = _unet(3)
    image = torch.randn(1, 12, 12, 12)
    expected = sliding_window_predict(network, image, (8, 8, 8))

    def rebuilt(*args, **kwargs):
        raise AssertionError("MONAI rebuilt the importance map")

    monkeypatch.setattr(monai.inferers.utils, "compute_importance_map", rebuilt)
    torch.testing.assert_close(sliding_window_predict(network, image, (8, 8, 8)), expected)
    device = torch.device("cpu")
    assert importance_map((8, 8, 8), "gaussian", device) is importance_map((8, 8, 8), "gaussian", device)


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"), [((20, 18, 13), (8, 8, 6), 0.5), ((5, 30, 9), (8, 8, 8), 0.25)]
)
def test_progress_callback_counts_every_window(shape, patch, overlap):
    seen = []
    sliding_window_predict(
        _unet(3),
        torch.randn(1, *shape),
        patch,
        overlap=overlap,
        sw_batch_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    calls = []

    def counting(window):
        calls.append(window.shape[0])
        return window

    with torch.no_grad():
        sliding_window_inference(torch.randn(1, 1, *shape), patch, 1, counting, overlap=overlap)
    assert seen[-1] == (len(calls), len(calls)) == (count_windows(shape, patch, overlap),) * 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_bf16_autocast_windows_give_float32_probabilities_close_to_float32():
    network = _GatedNet().eval()
    image = torch.randn(1, 12, 12, 10)
    exact = sliding_window_predict(network, image, (8, 8, 8), mirror_axes=(0,))
    probabilities, attention, _ = sliding_window_predict(
        network, image, (8, 8, 8), mirror_axes=(0,), amp_dtype=torch.bfloat16, return_attention=True
    )
    assert probabilities.dtype == attention.dtype == torch.float32
    torch.testing.assert_close(probabilities, exact, atol=0.02, rtol=0)
    probabilities.add_(1)  # not an inference tensor, although the windows ran in inference mode
    attention.add_(1)


def test_autocast_network_with_a_float32_head_still_stitches():
    class Float32Head(nn.Module):  # e.g. a final upsampling that autocast runs in float32
        def __init__(self):
            super().__init__()
            self.body = _unet(3)

        def forward(self, x):
            return self.body(x).float()

    network = Float32Head().eval()
    image = torch.randn(1, 12, 12, 10)
    result = sliding_window_predict(network, image, (8, 8, 8), amp_dtype=torch.bfloat16)
    torch.testing.assert_close(result, sliding_window_predict(network, image, (8, 8, 8)), atol=0.02, rtol=0)


def test_slabwise_softmax_equals_torch_softmax():
    logits = torch.randn(4, 9, 5, 6) * 10
    expected = torch.softmax(logits, dim=0)
    torch.testing.assert_close(_softmax_(logits.clone(), slab_values=7), expected)  # 1 row per slab
    torch.testing.assert_close(_softmax_(logits.clone(), slab_values=300), expected)  # 2 rows, ragged end


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"overlap": 1.0}, ConfigError),
        ({"blend": "median"}, ConfigError),
        ({"mirror_axes": (0, 3)}, ConfigError),
        ({"sw_batch_size": 0}, ConfigError),
        ({"patch_size": (8, 8)}, GeometryError),
    ],
)
def test_bad_options_are_named(kwargs, error):
    options = {"patch_size": (8, 8, 8), **kwargs}
    with pytest.raises(error):
        sliding_window_predict(_unet(3), torch.randn(1, 1, 10, 10, 10), **options)


def test_stitching_stays_on_the_gpu_only_while_it_fits_half_its_free_memory():
    """A 512 x 512 x 300 CT with 4 classes (1.9 GB stitched) stays on a GPU with 8 GB free; with 105 classes
    (TotalSegmentator's, 33 GB) the logits are stitched on the host and the GPU holds one window batch."""
    ct, gib = (512, 512, 300), 2**30
    cuda = torch.device("cuda", 1)
    assert choose_stitch_device("cuda:1", ct, 4, available_bytes=8 * gib) == cuda
    assert choose_stitch_device("cuda:1", ct, 105, available_bytes=8 * gib) == torch.device("cpu")
    assert choose_stitch_device("cuda:1", ct, 105, available_bytes=80 * gib) == cuda
    needed = stitched_bytes(ct, 4, in_channels=2, extra_maps=1)
    assert choose_stitch_device(cuda, ct, 4, 2, 1, available_bytes=2 * needed) == cuda
    assert choose_stitch_device(cuda, ct, 4, 2, 1, available_bytes=2 * needed - 2) == torch.device("cpu")
    assert choose_stitch_device("cpu", ct, 105, available_bytes=0) == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_windows_with_cpu_stitching_match_cpu():
    network = _unet(3)
    image = torch.randn(1, 40, 36, 30)
    on_cpu = sliding_window_predict(network, image, (16, 16, 16), device="cpu")
    gpu_windows = sliding_window_predict(network, image, (16, 16, 16), device="cuda", stitch_device="cpu")
    all_gpu = sliding_window_predict(network, image, (16, 16, 16), device="cuda")
    assert gpu_windows.device.type == "cpu" and all_gpu.device.type == "cuda"
    torch.testing.assert_close(gpu_windows, on_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(all_gpu.cpu(), gpu_windows, atol=1e-5, rtol=1e-5)
    bf16 = sliding_window_predict(network, image, (16, 16, 16), device="cuda", amp_dtype=torch.bfloat16)
    assert (bf16.argmax(0).cpu() == on_cpu.argmax(0)).float().mean() > 0.99


def test_one_output_channel_is_a_sigmoid_foreground_logit():
    """SAM-style networks with one logit: two channels [1 - sigmoid, sigmoid] of MONAI's blended logit."""
    network = _unet(2, out_channels=1)
    image = torch.randn(1, 37, 29)
    with torch.no_grad():
        logit = sliding_window_inference(image[None], (16, 12), 2, network, overlap=0.5, mode="gaussian")[0]
    result = sliding_window_predict(network, image, (16, 12), overlap=0.5)
    assert result.shape == (2, 37, 29)
    torch.testing.assert_close(result[1], torch.sigmoid(logit[0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.sum(0), torch.ones(37, 29))
    assert torch.equal(result.argmax(0), (logit[0] > 0).long())


def test_a_network_is_given_back_in_the_memory_format_it_came_in():
    """Validation during training must not leave the network channels-last (resume would then differ)."""
    network = _unet(3)
    sliding_window_predict(network, torch.randn(1, 12, 12, 12), (8, 8, 8), channels_last=True)
    assert all(p.is_contiguous() for p in network.parameters())
    network.to(memory_format=torch.channels_last_3d)  # a Predictor's network stays as it is
    sliding_window_predict(network, torch.randn(1, 12, 12, 12), (8, 8, 8))
    weights = [p for p in network.parameters() if p.ndim == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)


class _BatchRecorder(nn.Module):
    """Wraps a network and records the batch size of every call."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.network(x)

    def attention_maps(self):
        return self.network.attention_maps()


def test_padded_last_batch_changes_no_value_and_keeps_one_batch_shape():
    """For a compiled network: every call gets sw_batch_size windows, the probabilities stay the same."""
    image = torch.randn(1, 15, 12, 9)
    options = {"sw_batch_size": 5, "mirror_axes": (0,), "return_attention": True}
    assert count_windows((15, 12, 9), (8, 8, 8), 0.5) % 5  # the last batch is short
    runs = {}
    for pad in (False, True):
        torch.manual_seed(0)
        recorder = _BatchRecorder(_GatedNet().eval())
        runs[pad] = sliding_window_predict(recorder, image, (8, 8, 8), pad_last_batch=pad, **options)
        assert (set(recorder.batches) == {5}) == pad
    for padded, unpadded in zip(runs[True], runs[False], strict=True):
        torch.testing.assert_close(padded, unpadded)


def test_to_host_keeps_a_float32_host_tensor_and_casts_others():
    volume = torch.randn(3, 4, 5)
    assert to_host(volume) is volume
    assert to_host(volume.half()).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_host_from_the_gpu_is_pinned_and_complete():
    volume = torch.randn(4, 64, 64, 64, device="cuda")
    host = to_host(volume * 2)  # the product is still being computed when the copy is queued
    assert host.device.type == "cpu" and host.is_pinned()
    torch.testing.assert_close(host, (volume * 2).cpu(), rtol=0, atol=0)
