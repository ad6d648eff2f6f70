"""Read SAM / MedSAM `.pth` files and compare or load them strictly, with a report of every key that differs.

Public SAM checkpoints hold a bare state dict; MedSAM training checkpoints wrap it in ``{"model": ...}`` and
multi-GPU runs prefix every key with ``module.``. Files are read with ``weights_only=True`` (a checkpoint
is untrusted input) and memory-mapped where the format allows, so checking a 2.5 GB ViT-H file is quick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from medattn.errors import InputNotFoundError, PackageError
from medattn.models.registry import create
from medattn.models.sam.variants import guess_variant
from medattn.weights import KeyReport, as_state_dict, compare_keys, read_weights

__all__ = ["KeyReport", "check_checkpoint", "compare_keys", "load_checkpoint", "read_state_dict"]

# Containers training scripts wrap a state dict in (MedSAM's train_one_gpu.py saves {"model": ...}).
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_DDP_PREFIX = "module."


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a SAM/MedSAM checkpoint, unwrapped and with any ``module.`` prefix removed.

    Args:
        path: a local ``.pth`` file (no downloads: medattn never fetches weights).

    Returns:
        The state dict (memory-mapped tensors where possible) and whether a ``module.`` prefix was removed.

    Raises:
        InputNotFoundError: the file does not exist.
        PackageError: the file is damaged, or not a PyTorch state dict readable with ``weights_only=True``
            (a bare tensor, a list, a pickled module).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("checkpoint file not found; give the path of a local SAM/MedSAM .pth", path)
    state = read_weights(path, mmap=True)
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    state = as_state_dict(state, path)
    stripped = bool(state) and all(key.startswith(_DDP_PREFIX) for key in state)
    if stripped:
        state = {key[len(_DDP_PREFIX) :]: value for key, value in state.items()}
    return dict(state), stripped


def _report(model_state: Mapping[str, torch.Tensor], path: Path, optional_prefixes: Iterable[str]):
    state, stripped = read_state_dict(path)
    report = compare_keys(model_state, state, optional_prefixes)
    report.stripped_prefix = stripped
    report.looks_like = guess_variant(state)
    return report, state


def load_checkpoint(model: nn.Module, path: str | Path, optional_prefixes: Iterable[str] = ()) -> KeyReport:
    """Load a SAM/MedSAM checkpoint into `model` strictly (parameter names as in segment-anything).

    Args:
        model: a module whose state dict has SAM's keys (``image_encoder.*``, ``prompt_encoder.*``,
            ``mask_decoder.*``), e.g. ``medattn.models.create("sam", ...)``.
        path: local ``.pth`` file.
        optional_prefixes: model keys that may be missing from the file; they keep their initial values.

    Returns:
        The key report (all keys matched).

    Raises:
        PackageError: naming the file, every missing/unexpected key and shape mismatch, and the variant the
            file looks like when it is another one.
    """
    optional = tuple(optional_prefixes)
    report, state = _report(model.state_dict(), Path(path), optional)
    if not report.ok:
        hint = f" The file looks like SAM {report.looks_like}." if report.looks_like else ""
        raise PackageError(f"does not fit the model: {report.summary()}.{hint}", path)
    model.load_state_dict(state, strict=not optional)
    return report


def check_checkpoint(path: str | Path, variant: str = "vit_b", in_channels: int = 3) -> KeyReport:
    """Compare a checkpoint with `sam` of `variant` without loading it (`medattn models load-check`).

    The model is built on the meta device (shapes only) and the file memory-mapped, so checking a ViT-H
    file costs neither its 2.5 GB nor the model's.

    Args:
        path: local ``.pth`` file.
        variant: SAM variant to compare with (``vit_b``, ``vit_l``, ``vit_h``).
        in_channels: image channels of the model (3 for the public checkpoints).

    Returns:
        Every missing/unexpected key and shape mismatch, and the variant the file looks like.
    """
    with torch.device("meta"):
        model = create("sam", spatial_dims=2, in_channels=in_channels, out_channels=1, variant=variant)
    return _report(model.state_dict(), Path(path), ())[0]
