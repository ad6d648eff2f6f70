"""Training checkpoints: atomic save, safe load (``weights_only=True``), and random-number-generator state.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(path, weights_only=True)``
reads it without running pickled code: model and optimiser state dicts, scheduler and GradScaler state,
counters, history, and the RNG states of Python, NumPy and torch (CPU and every CUDA device) as tensors.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medattn.errors import InputNotFoundError, PackageError
from medattn.io.atomic import atomic_path
from medattn.weights import read_weights, save_weights

#: Bumped when the checkpoint layout changes incompatibly.
CHECKPOINT_FORMAT = 1


def unwrap_model(network: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state this process uses, as tensors and numbers."""
    version, python_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss": gauss_next,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states `capture_rng_state` recorded (CUDA ones only where the devices exist)."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: a kill leaves the previous checkpoint or the new one, whole."""
    return save_weights({"format": CHECKPOINT_FORMAT, **state}, path)


def copy_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Copy a written checkpoint atomically (the best checkpoint is the last one at the epoch it improved)."""
    destination = Path(destination)
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return destination


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Args:
        path: a ``checkpoint_*.pt`` written by the Trainer.
        map_location: where tensors go; CPU by default, the Trainer moves what it needs.

    Returns:
        The checkpoint dict (keys: model, optimizer, scheduler, scaler, epoch, step, best_metric, ...).

    Raises:
        InputNotFoundError: no file at `path`.
        PackageError: the file is not a medattn checkpoint (truncated, damaged, another format, a newer
            layout).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(
            "no checkpoint here; resume needs checkpoint_last.pt of an earlier run", path
        )
    state = read_weights(path, map_location=map_location, verify=True)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise PackageError("not a medattn training checkpoint (no 'model' state dict)", path)
    layout = state.get("format", 0)
    if not isinstance(layout, int) or isinstance(layout, bool):
        raise PackageError(f"the checkpoint's layout number is damaged ({layout!r})", path)
    if layout > CHECKPOINT_FORMAT:
        raise PackageError(
            f"checkpoint layout {state['format']} is newer than this medattn reads ({CHECKPOINT_FORMAT}); "
            "upgrade medattn",
            path,
        )
    return state
