"""Where a network runs and how: device choice, mixed precision, memory layout, GPU memory, host copies.

Training and inference share these so `--device` and `--amp` mean the same in every command. Mixed
precision is for CUDA: the CPUs we run on have no bf16 units and run bf16 80-140x slower than float32
(BENCHMARKS.md), so `auto` means float32 there and an explicit `bf16`/`fp16` off CUDA is refused.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from medattn.errors import ConfigError

AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error, not a CUDA traceback."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from error


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device`; None runs float32.

    'auto' is bf16 on CUDA (fp16 where the GPU has no bf16) and float32 elsewhere; 'off' is float32.

    Raises:
        ConfigError: an unknown mode, or bf16/fp16 asked for on a device other than CUDA.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"unknown --amp {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; on {device} use --amp off (or auto)")
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
    return dtype == torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` to `dtype` on `device`, or a context that changes nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def gpu_available_bytes(device: torch.device | str) -> int:
    """Bytes a new allocation on CUDA `device` can take: the driver's free memory plus what torch's caching
    allocator holds reserved but unused (it hands that out first)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def to_host(volume: torch.Tensor) -> torch.Tensor:
    """`volume` in host memory, as float32; from a GPU through a pinned (page-locked) buffer.

    A plain ``.cpu()`` copies into pageable memory, which the driver stages through a pinned bounce buffer
    at a fraction of the bus speed; a non-blocking copy gets a pinned destination from torch's caching
    host allocator and runs as one DMA transfer. The stream is synchronised before returning, so the
    values are there for any thread to read. Host tensors come back as they are (no copy when float32).
    """
    if volume.device.type != "cuda":
        return volume.float()
    host = volume.to("cpu", torch.float32, non_blocking=True)
    torch.cuda.current_stream(volume.device).synchronize()
    return host


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a (B, C, *spatial) tensor with `spatial_dims` axes (2 or 3)."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def in_channels_last(network: nn.Module, spatial_dims: int) -> bool:
    """Whether every convolution weight of `network` is already stored channels-last(-3d)."""
    memory_format = channels_last_format(spatial_dims)
    weights = [p for p in network.parameters() if p.ndim == spatial_dims + 2]
    return all(p.is_contiguous(memory_format=memory_format) for p in weights)
