"""Load SAM / MedSAM `.pth` files strictly, with a report of every key that differs.

Public SAM checkpoints hold a bare state dict; MedSAM training checkpoints wrap it in ``{"model": ...}`` and
multi-GPU runs prefix every key with ``module.``; `medattn.weights.read_state_dict` unwraps both, reading
with ``weights_only=True`` (a checkpoint is untrusted input). `medattn models load-check` compares a file
without loading it (`medattn.models.backbones.check_file`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from medattn.errors import PackageError
from medattn.models.sam.variants import guess_variant
from medattn.weights import KeyReport, compare_keys, read_state_dict

__all__ = ["KeyReport", "compare_keys", "load_checkpoint"]


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
