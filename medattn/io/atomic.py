"""Atomic file writes: a crash leaves the old file or the new one, never a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medattn.errors import WriteError


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
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name[: -len(suffix) or None]}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        # mkstemp makes the file private (0600); outputs get the mode any new file would get here.
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
