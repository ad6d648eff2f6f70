"""The one exception hierarchy: every failure a user can cause is a MedattnError naming file and fix."""

from __future__ import annotations

from pathlib import Path


class MedattnError(Exception):
    """Base of every error medattn raises on purpose; the CLI prints it as one line, without a traceback.

    Args:
        message: what went wrong and, where there is one, what to do about it.
        path: the file or folder the problem is in; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputNotFoundError(MedattnError, FileNotFoundError):
    """A path the user named does not exist."""


class UnreadableImageError(MedattnError, ValueError):
    """A file exists but is not an image medattn can read (truncated, wrong type, unsupported encoding)."""


class UnsupportedDicomError(UnreadableImageError):
    """A DICOM object or series that reads, but whose geometry or type medattn does not support."""


class GeometryError(MedattnError, ValueError):
    """Image and mask (or reference) grids disagree, or an image has the wrong number of dimensions."""


class NoCasesFoundError(MedattnError, ValueError):
    """A folder holds nothing medattn recognises as a case."""


class WriteError(MedattnError, OSError):
    """An output could not be written (unknown suffix, missing reference, disk problem)."""


class DiskFullError(WriteError):
    """The output's disk (or the user's quota) is full: every later case would fail the same way, so a batch
    stops at the first one instead of recording the same failure for each."""


class ConfigError(MedattnError, ValueError):
    """An option medattn cannot use (unknown model name, unsupported combination); names the valid ones."""


class PackageError(ConfigError):
    """A model package, checkpoint or weights file medattn cannot use: damaged, cut short, not a state dict,
    fields missing or of the wrong type, or written by a newer medattn; names the file and what is wrong."""


class MissingDependencyError(MedattnError, ImportError):
    """An optional extra is not installed; the message names the `pip install` that adds it."""


class ExportError(MedattnError, RuntimeError):
    """A network cannot be exported to a deployment format (an operator or shape the format cannot hold)."""


class InputWarning(UserWarning):
    """Something odd in an input that medattn worked around and the user should know of (non-finite voxels
    replaced, a duplicate DICOM file ignored); the CLI prints each as one line naming the file."""


def failure_message(error: Exception) -> str:
    """The one line a batch records for a case that failed: a MedattnError as it reads, anything else (a
    bug on that case's data) with its type, so one case never stops the batch and the bug stays visible."""
    if isinstance(error, MedattnError):
        return str(error)
    return f"internal error: {type(error).__name__}: {error}"
