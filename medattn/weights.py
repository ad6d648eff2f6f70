"""Read and write PyTorch weights files (packages, checkpoints) safely, and say what is wrong with them.

Every file is read with ``weights_only=True``: a weights file is untrusted input, and a full pickle could run
code. ``torch.load`` reports a damaged file with a zoo of exception types and miniz's internals;
`read_weights` turns each into one PackageError naming the file. With ``verify`` it also checks the CRC-32
of every record in the zip archive ``torch.save`` writes, which ``torch.load`` does not: a byte changed
inside a tensor is then an error, not a model that silently predicts something else. `save_weights` writes
atomically and names a full disk, which torch.save reports as a bare RuntimeError.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medattn.errors import InputNotFoundError, MissingDependencyError, PackageError
from medattn.io.atomic import atomic_path

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # first byte of a pickle (torch.save's format before PyTorch 1.6)


def read_weights(
    path: str | Path, *, map_location: str | torch.device = "cpu", mmap: bool = False, verify: bool = False
) -> Any:
    """What ``torch.save`` wrote to `path`, read with ``weights_only=True``.

    Args:
        path: a ``.pt``/``.pth`` file.
        map_location: where the tensors go.
        mmap: memory-map the tensors (zip files only), so checking a large file does not read it whole.
        verify: check every record's CRC-32 first (reads the whole file; for files medattn wrote itself,
            which always carry checksums).

    Raises:
        InputNotFoundError: no file at `path`.
        PackageError: the file is empty, cut short, damaged, not a PyTorch file, or holds pickled Python
            objects other than tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("no such weights file", path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise PackageError("the file is empty (0 bytes): it was cut short when written or copied", path)
    is_zip = zipfile.is_zipfile(path)
    if head == _ZIP_MAGIC and not is_zip:
        raise PackageError(
            "the file is cut short or damaged: the directory at the end of its zip archive is missing", path
        )
    if not is_zip and head[0] != _PICKLE_PROTOCOL:
        raise PackageError(
            "not a PyTorch weights file (torch.save writes a zip archive); "
            "it is damaged or another kind of file",
            path,
        )
    if verify and is_zip:
        _check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as error:
        raise PackageError(
            "holds pickled Python objects, not only tensors and numbers, or is damaged; medattn reads "
            "weights with weights_only=True: save the model's state_dict() with torch.save",
            path,
        ) from error
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for damaged data; named here
        raise PackageError(
            f"the file is damaged or cut short and cannot be read ({_first_sentence(error)})", path
        ) from error


def save_weights(content: Any, path: str | Path) -> Path:
    """``torch.save(content)`` to `path` atomically; a full disk is a DiskFullError naming `path`.

    torch.save turns an error of the file it writes into a RuntimeError; writing through `_KeptErrors`
    keeps the OSError (ENOSPC, EACCES), which `atomic_path` names.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        stream = _KeptErrors(handle)
        try:
            torch.save(content, stream)
        except RuntimeError:
            if stream.error is not None:
                raise stream.error from None
            raise
    return path


class _KeptErrors:
    """A binary file's write() that remembers the OSError it raised (for `save_weights`)."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def as_state_dict(loaded: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """`loaded` as a state dict (parameter names mapped to tensors), else a PackageError saying what it is."""
    if isinstance(loaded, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        others = sorted(
            {type(value).__name__ for value in loaded.values() if not isinstance(value, torch.Tensor)}
        )
        what = f"a mapping whose values include {', '.join(others) or 'non-string keys'}"
    else:
        what = f"a {type(loaded).__name__}"
    raise PackageError(
        f"holds {what}, not a state dict (parameter names mapped to tensors): save the model's state_dict()",
        path,
    )


# Containers training scripts wrap a state dict in (MedSAM's train_one_gpu.py saves {"model": ...}, many
# ImageNet checkpoints {"state_dict": ...}).
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_DDP_PREFIX = "module."


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors of a checkpoint, unwrapped from a training container and with any ``module.`` prefix
    (multi-GPU training) removed.

    Args:
        path: a local ``.pth``/``.pt`` file, or ``.safetensors`` (timm's and Hugging Face's format; needs
            the safetensors package). No downloads: medattn never fetches weights.

    Returns:
        The state dict (memory-mapped tensors where possible) and whether a ``module.`` prefix was removed.

    Raises:
        InputNotFoundError: the file does not exist.
        PackageError: the file is damaged, or not a PyTorch state dict readable with ``weights_only=True``
            (a bare tensor, a list, a pickled module).
        MissingDependencyError: a ``.safetensors`` file without the safetensors package.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(
            "checkpoint file not found; give the path of a local weights file (.pth)", path
        )
    state = _read_safetensors(path) if path.suffix == ".safetensors" else read_weights(path, mmap=True)
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    state = as_state_dict(state, path)
    stripped = bool(state) and all(key.startswith(_DDP_PREFIX) for key in state)
    if stripped:
        state = {key[len(_DDP_PREFIX) :]: value for key, value in state.items()}
    return dict(state), stripped


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (a format that holds only tensors, so nothing runs on load)."""
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise MissingDependencyError(
            f"{path}: reading .safetensors files needs the safetensors package: "
            "pip install 'medattn[safetensors]'"
        ) from error
    try:
        return load_file(path)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError; named here
        raise PackageError(
            f"not a readable .safetensors file: it is damaged or cut short ({_first_sentence(error)})", path
        ) from error


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
        unused: keys of the file that medattn's network deliberately lacks (an ImageNet classifier, a
            backbone stage it does not use); not an error.
        adapted: how tensors were fitted to the network (an RGB stem summed for a one-channel image, a
            position-bias table resized to another window, a bias-free conv given a zero bias).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    matched: int = 0
    stripped_prefix: bool = False
    looks_like: str | None = None
    unused: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

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


def _check_archive(path: Path) -> None:
    """PackageError when a record of the zip archive at `path` is unreadable or fails its CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, zlib.error) as error:
        raise PackageError(f"its zip archive is damaged ({_first_sentence(error)})", path) from error
    except OSError as error:
        raise PackageError(f"cannot be read ({error.strerror or error})", path) from error
    if damaged is not None:
        raise PackageError(
            f"the file is damaged: record {damaged!r} fails its checksum (the bytes changed after "
            "torch.save wrote them, e.g. on a faulty disk or in a copy)",
            path,
        )


def _first_sentence(error: Exception) -> str:
    """The first sentence of an error's message (torch appends paragraphs of advice), or its type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")
