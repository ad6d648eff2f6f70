"""Inference-only rewrites of a trained network: the same outputs (to float rounding) for less work.

A network in eval mode spends time on steps that training needs and prediction does not:

- **Batch norm after a convolution** is a fixed per-channel scale and shift once the running statistics
  are frozen, so it folds into that convolution's weights and bias (as ONNX Runtime, TensorRT and
  ``torch.ao`` fusion do). Each folded pair saves one full pass over the feature map; in AGUNet's CPU
  default the batch norms are about 10 % of the forward time.
- **An activation right after a convolution or an instance norm** can overwrite that fresh output instead
  of allocating another feature map.
- **Instance norm on a channels-last input** (the sliding window's layout) is computed over (B, voxels, C)
  rows instead of PyTorch's strided kernel: several times faster, the same values.
- **A transposed convolution whose kernel equals its stride** (AGUNet's half-resolution head, MONAI
  UNet-style 2x up-sampling) maps every input voxel to its own 2^n block of output voxels: one matrix
  product over the channels and a voxel shuffle. PyTorch's CPU kernel for it does not go through oneDNN
  and costs about a tenth of AGUNet's forward; the matrix product a tenth of that (BENCHMARKS.md,
  end-to-end prediction).

`fuse_for_inference` works on a copy; the network given stays trainable. Only chains that run in a plain
``nn.Sequential`` order are touched (MONAI's ``Convolution``/``ADN`` and medattn's blocks are such
chains), so custom forwards keep their meaning.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.utils.fusion import fuse_conv_bn_weights

# Modules that are the identity in eval mode and may sit between a convolution and its batch norm.
_EVAL_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_INPLACE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SiLU, nn.Hardswish)


def fuse_for_inference(network: nn.Module) -> nn.Module:
    """An eval-mode copy of `network` with batch norms folded and block transposed convolutions as matmuls.

    Outputs equal the original's within float32 rounding (relative differences around 1e-6), so label maps
    agree except on voxels whose two best classes tie to that precision.

    Args:
        network: a trained network; it is not modified.

    Returns:
        The rewritten copy, in eval mode, on the same device and memory format as the parameters given.
    """
    fused = copy.deepcopy(network).eval()
    with torch.no_grad():
        for chain in _sequential_chains(fused):
            _fold_chain(chain)
        _replace_modules(fused, _is_block_transposed, BlockTransposedConv)
        _replace_modules(fused, _is_instance_norm, ChannelsLastInstanceNorm)
    return fused


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _sequential_chains(root: nn.Module) -> list[list[tuple[nn.Module, str, nn.Module]]]:
    """Every outermost plain Sequential, flattened into (parent, name, leaf) in execution order."""
    chains = []

    def flatten(sequential: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
        leaves = []
        for name, child in sequential.named_children():
            leaves.extend(flatten(child) if _is_plain_sequential(child) else [(sequential, name, child)])
        return leaves

    def visit(module: nn.Module) -> None:
        if _is_plain_sequential(module):
            chain = flatten(module)
            chains.append(chain)
            for _, _, leaf in chain:
                visit(leaf)
        else:
            for child in module.children():
                visit(child)

    visit(root)
    return chains


def _fold_chain(chain: list[tuple[nn.Module, str, nn.Module]]) -> None:
    """Fold conv -> [eval identities] -> batch norm pairs; make the activation after a conv or an instance
    norm in place (both return a new tensor that only the next module of the chain reads)."""
    fresh: nn.Module | None = None  # the module whose newly allocated output the next module receives
    for parent, name, module in chain:
        if isinstance(module, _ConvNd) or _is_instance_norm(module):
            fresh = module
            continue
        if isinstance(module, _EVAL_IDENTITY):
            continue
        if isinstance(fresh, _ConvNd) and isinstance(module, _BatchNorm) and _foldable(fresh, module):
            _fold_batch_norm(fresh, module)
            setattr(parent, name, nn.Identity())
            continue  # the conv output stays fresh: an activation next may overwrite it
        if fresh is not None and isinstance(module, _INPLACE_ACTIVATIONS) and hasattr(module, "inplace"):
            module.inplace = True
        fresh = None


def _foldable(conv: _ConvNd, norm: _BatchNorm) -> bool:
    return (
        norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
        and (not isinstance(conv, _ConvTransposeNd) or conv.groups == 1)
    )


def _fold_batch_norm(conv: _ConvNd, norm: _BatchNorm) -> None:
    """conv'(x) = norm(conv(x)) for eval-mode statistics, by `torch.nn.utils.fusion.fuse_conv_bn_weights`
    (which scales dim 0 of a convolution's weight and dim 1 of a transposed one's, for any number of spatial
    dims). It computes in the dtype it is given, so it gets float64 copies: the float32 weights then come
    out as the exactly rounded products. They are written into the convolution's own tensors, which keeps
    their device and memory format."""
    as_double = lambda tensor: None if tensor is None else tensor.double()  # noqa: E731
    weight, bias = fuse_conv_bn_weights(
        conv.weight.double(),
        as_double(conv.bias),
        norm.running_mean.double(),
        norm.running_var.double(),
        norm.eps,
        as_double(norm.weight),
        as_double(norm.bias),
        transpose=isinstance(conv, _ConvTransposeNd),
    )
    conv.weight.copy_(weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias)


class BlockTransposedConv(nn.Module):
    """A transposed convolution with kernel == stride (no padding) as a matrix product and a voxel shuffle.

    Each input voxel owns the stride^n block of output voxels its kernel lands on, so the output is
    ``x (B*N, Cin) @ W (Cin, k^n * Cout) + b`` rearranged into those blocks. The result is laid out
    channels-last (that is what the rearrangement produces without a further copy).
    """

    def __init__(self, transposed: _ConvTransposeNd):
        super().__init__()
        self.kernel = tuple(int(k) for k in transposed.kernel_size)
        self.out_channels = transposed.out_channels
        # (Cin, Cout, *k) -> (Cin, *k, Cout): output columns ordered block position first, channel last.
        weight = transposed.weight.detach()
        dims = len(self.kernel)
        self.register_buffer("weight", weight.permute(0, *range(2, 2 + dims), 1).reshape(weight.shape[0], -1))
        bias = (
            transposed.bias.detach()
            if transposed.bias is not None
            else torch.zeros(self.out_channels, dtype=weight.dtype, device=weight.device)
        )
        self.register_buffer("bias", bias.repeat(math.prod(self.kernel)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        dims = len(spatial)
        rows = x.movedim(1, -1).reshape(-1, channels)  # a view when x is channels-last
        blocks = torch.addmm(self.bias.to(x.dtype), rows, self.weight.to(x.dtype))
        blocks = blocks.view(batch, *spatial, *self.kernel, self.out_channels)
        # (B, s1..sn, k1..kn, C) -> (B, s1, k1, ..., sn, kn, C) -> (B, s1*k1, ..., sn*kn, C)
        order = [0] + [axis for d in range(dims) for axis in (1 + d, 1 + dims + d)] + [1 + 2 * dims]
        out_size = [s * k for s, k in zip(spatial, self.kernel, strict=True)]
        return blocks.permute(order).reshape(batch, *out_size, self.out_channels).movedim(-1, 1)


class ChannelsLastInstanceNorm(nn.Module):
    """Instance norm that reads a channels-last input as (B, voxels, C) rows, output channels-last.

    PyTorch's kernel takes a slow strided path on that layout, and so does ``torch.var_mean`` over the rows.
    Means over the voxel axis are fast, so the variance is taken in two passes, the mean of the squared
    deviations (exact where the one-pass E[x^2] - E[x]^2 loses digits to a large mean), then one fused
    scale-and-shift (BENCHMARKS.md, end-to-end prediction). Other layouts go to PyTorch unchanged.
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.eps = norm.eps
        self.register_buffer("weight", None if norm.weight is None else norm.weight.detach().clone())
        self.register_buffer("bias", None if norm.bias is None else norm.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = {5: torch.channels_last_3d, 4: torch.channels_last}.get(x.ndim)
        if layout is None or x.shape[1] == 1 or not x.is_contiguous(memory_format=layout):
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        batch, channels, *spatial = x.shape
        rows = x.movedim(1, -1).reshape(batch, -1, channels)  # a view: channels are the fastest axis
        values = rows.float()
        mean = values.mean(dim=1, keepdim=True)
        var = (values - mean).square_().mean(dim=1, keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out = torch.addcmul(shift.to(x.dtype), rows, scale.to(x.dtype))
        return out.view(batch, *spatial, channels).movedim(-1, 1)


def _is_instance_norm(module: nn.Module) -> bool:
    """Instance norm normalising by the input's own statistics (no running statistics to use instead)."""
    return type(module) in (nn.InstanceNorm2d, nn.InstanceNorm3d) and not module.track_running_stats


def _replace_modules(root: nn.Module, match, replacement) -> None:
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, name, replacement(child))


def _is_block_transposed(module: nn.Module) -> bool:
    if type(module) not in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        return False  # a subclass may have its own forward
    return (
        tuple(module.kernel_size) == tuple(module.stride)
        and not any(module.padding)
        and not any(module.output_padding)
        and all(d == 1 for d in module.dilation)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )
