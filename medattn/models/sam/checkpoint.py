"""Read SAM / MedSAM `.pth` files and compare or load them strictly, with a report of every key that differs.

Public SAM checkpoints hold a bare state dict; MedSAM training checkpoints wrap it in ``{"model": ...}`` and
multi-GPU runs prefix every key with ``module.``. Files are read with ``weights_only=True`` (a checkpoint
is untrusted input) and memory-mapped where the format allows, so checking a 2.5 GB ViT-H file is quick.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medattn.errors import ConfigError, InputNotFoundError
from medattn.models.registry import create
from medattn.models.sam.variants import guess_variant

# Containers training scripts wrap a state dict in (MedSAM's train_one_gpu.py saves {"model": ...}).
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_DDP_PREFIX = "module."


@dataclass
class KeyReport:
    """How a checkpoint's tensors differ from a model's.

    Attributes:
        missing: keys the model has and the file lacks.
        unexpected: keys the file has and the model lacks.
        mismatched: (key, shape in the file, shape in the model) for keys in both with different shapes.
        matched: number of keys present in both with equal shapes.
        stripped_prefix: whether a ``module.`` prefix was removed from the file's keys.
        looks_like: the SAM variant whose ViT width and depth the file has, if any (a hint for mismatches).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    matched: int = 0
    stripped_prefix: bool = False
    looks_like: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file loads strictly: no missing, unexpected or mis-shaped key."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        """One paragraph listing the differences, at most `limit` keys of each kind."""

        def listed(items: list[str]) -> str:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {listed(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{key} (file {tuple(a)}, model {tuple(b)})" for key, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {listed(shapes)}")
        return "; ".join(parts) if parts else f"all {self.matched} tensors match"


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a SAM/MedSAM checkpoint, unwrapped and with any ``module.`` prefix removed.

    Args:
        path: a local ``.pth`` file (no downloads: medattn never fetches weights).

    Returns:
        The state dict (memory-mapped tensors where possible) and whether a ``module.`` prefix was removed.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the file is not a PyTorch state dict readable with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("checkpoint file not found; give the path of a local SAM/MedSAM .pth", path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(
            f"cannot read it as a PyTorch checkpoint with weights_only=True ({error}); "
            "save the model's state_dict() with torch.save",
            path,
        ) from error
    state = loaded
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            "holds no state dict (a mapping of parameter names to tensors, possibly under 'model')", path
        )
    stripped = bool(state) and all(key.startswith(_DDP_PREFIX) for key in state)
    if stripped:
        state = {key[len(_DDP_PREFIX) :]: value for key, value in state.items()}
    return dict(state), stripped


def compare_keys(
    model_state: Mapping[str, torch.Tensor],
    file_state: Mapping[str, torch.Tensor],
    optional_prefixes: Iterable[str] = (),
) -> KeyReport:
    """Compare names and shapes (not values) of a model's state dict and a checkpoint's.

    Args:
        model_state: the model's state dict (tensors may live on the meta device).
        file_state: the checkpoint's tensors.
        optional_prefixes: model keys starting with one of these may be absent from the file (parts a
            pretrained checkpoint cannot have, e.g. sam_adapter's adapters).
    """
    optional = tuple(optional_prefixes)
    report = KeyReport()
    for key, tensor in model_state.items():
        if key not in file_state:
            if not (optional and key.startswith(optional)):
                report.missing.append(key)
        elif tuple(file_state[key].shape) != tuple(tensor.shape):
            report.mismatched.append((key, tuple(file_state[key].shape), tuple(tensor.shape)))
        else:
            report.matched += 1
    report.unexpected = [key for key in file_state if key not in model_state]
    return report


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
        ConfigError: naming the file, every missing/unexpected key and shape mismatch, and the variant the
            file looks like when it is another one.
    """
    optional = tuple(optional_prefixes)
    report, state = _report(model.state_dict(), Path(path), optional)
    if not report.ok:
        hint = f" The file looks like SAM {report.looks_like}." if report.looks_like else ""
        raise ConfigError(f"does not fit the model: {report.summary()}.{hint}", path)
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
