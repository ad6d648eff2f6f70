"""Atomic file writes: a crash, a full disk or a refused write leaves the old file or the new one, never a
partial file, and is one WriteError naming the file (DiskFullError when the disk is full)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from medattn.errors import DiskFullError, MedattnError, WriteError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def full_suffix(path: str | Path) -> str:
    """The suffix that decides a format, lower case: '.nii.gz', '.seg.nrrd', '.nrrd', '.png'..."""
    name = Path(path).name.lower()
    for compound in (".nii.gz", ".seg.nrrd", ".seg.nhdr"):
        if name.endswith(compound):
            return compound
    return Path(name).suffix


def _default_mode(path: Path) -> int:
    """The existing file's mode when overwriting, else 0666 minus the process umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on failure removed.

    The temporary file lives in the destination folder (same filesystem, so the rename is atomic) and keeps
    the destination's suffix, so writers that pick a format from the name (SimpleITK, nibabel, PIL) still do.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the output folder: {error.strerror}", path.parent) from error
    suffix = full_suffix(path)
    try:
        handle, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name[: -len(suffix) or None]}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    except OSError as error:
        named = output_error(error, path)
        if named is None:
            raise
        raise named from error
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        # mkstemp makes the file private (0600); outputs get the mode any new file would get here.
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        named = output_error(error, path) if isinstance(error, OSError) else None
        if named is not None:
            raise named from error
        raise


def write_csv_rows(path: str | Path, columns: tuple[str, ...], rows: Iterable[dict]) -> None:
    """`rows` (dicts keyed by `columns`) as a CSV file with that header, written through `atomic_path`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def check_writable(folder: str | Path) -> Path:
    """Create `folder` if needed and a file in it, then remove that file: a batch refuses an output folder
    it cannot write to (no permission, read-only, not a folder) once, before its first case.

    Raises:
        WriteError: naming the folder and why.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".medattn-write-check.", dir=folder)
    except OSError as error:
        raise output_error(error, folder) or WriteError(
            f"cannot write here: {error.strerror}", folder
        ) from error
    os.close(handle)
    os.unlink(probe)
    return folder


def output_error(error: OSError, path: Path) -> WriteError | None:
    """The WriteError to raise for an OSError while writing `path`: a full disk (DiskFullError) or a
    folder that refuses writes; None for anything else, which is raised as it is."""
    if isinstance(error, MedattnError):
        return None
    if error.errno in _DISK_FULL:
        return DiskFullError(
            "the disk is full (no space left on the device); nothing of this file was kept: free space "
            "or choose an output folder on another disk, then run again",
            path,
        )
    if error.errno in _NOT_WRITABLE:
        return WriteError(
            f"cannot write here ({error.strerror}); choose an output folder you can write to", path
        )
    return None
