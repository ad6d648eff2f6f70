"""Simulated output faults: a disk that fills after N bytes, a folder that refuses writes (also as root)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import tempfile
from pathlib import Path


class _Filling:
    """A file object whose writes raise ENOSPC once the disk's remaining bytes are used up."""

    def __init__(self, handle, disk: FullDisk):
        self._handle = handle
        self._disk = disk

    def write(self, data):
        size = len(data)
        if size > self._disk.free:
            self._disk.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= size
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


class FullDisk:
    """`open` for files under `folder` opened for writing counts what is written there and raises
    OSError(ENOSPC) once `free` bytes are used; installed on builtins.open and io.open (pathlib, gzip,
    PIL, nibabel and the csv/json writers all open files through them).

    Example:
        >>> FullDisk(tmp_path, free=10_000).install(monkeypatch)
    """

    def __init__(self, folder: Path, free: int):
        self.folder = Path(folder).resolve()
        self.free = free
        self._open = builtins.open

    def install(self, monkeypatch) -> FullDisk:
        monkeypatch.setattr(builtins, "open", self)
        monkeypatch.setattr(io, "open", self)
        return self

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = self._open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        if writing and isinstance(file, str | os.PathLike) and self.folder in Path(file).resolve().parents:
            return _Filling(handle, self)
        return handle


def refuse_writes(folder: Path, monkeypatch) -> None:
    """Make `folder` refuse new files: chmod 0555, and where that does not stop this process (root),
    tempfile.mkstemp in it raises EACCES as the kernel would."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return
    mkstemp = tempfile.mkstemp

    def refusing(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing)
