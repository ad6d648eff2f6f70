"""Atomic writes: the permissions a new file would get, an overwrite keeps the old file's mode, and a full
disk or a folder that refuses writes is one WriteError naming the file, with no partial or temporary file."""

from __future__ import annotations

import errno
import os
import re

import numpy as np
import pytest
from full_disk import FullDisk, refuse_writes  # tests/ is on sys.path (pythonpath in pyproject.toml)

from medattn.errors import DiskFullError, WriteError
from medattn.io import save_mask
from medattn.io.atomic import check_writable


def test_written_masks_are_not_private(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = save_mask(np.zeros((4, 4, 4), np.uint8), tmp_path / "mask.nii.gz")
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_overwrite_keeps_the_existing_mode(tmp_path):
    path = tmp_path / "mask.nii.gz"
    save_mask(np.zeros((4, 4, 4), np.uint8), path)
    path.chmod(0o640)
    save_mask(np.ones((4, 4, 4), np.uint8), path)
    assert path.stat().st_mode & 0o777 == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("free", [0, 100, 2_000])
@pytest.mark.parametrize("suffix", [".nii.gz", ".png", ".seg.nrrd"])
def test_a_full_disk_is_one_named_error_and_leaves_no_file(tmp_path, monkeypatch, free, suffix):
    """ENOSPC after `free` bytes, at any point of the write: DiskFullError naming the file, no partial mask,
    no temporary file."""
    shape = (256, 256) if suffix == ".png" else (32, 32, 16)
    mask = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    FullDisk(tmp_path, free).install(monkeypatch)
    path = tmp_path / f"mask{suffix}"
    with pytest.raises(DiskFullError, match=f"mask{re.escape(suffix)}: the disk is full"):
        save_mask(mask, path)
    assert not path.exists() and not _leftovers(tmp_path)


def test_a_full_disk_keeps_the_file_it_would_have_replaced(tmp_path, monkeypatch):
    path = save_mask(np.ones((8, 8, 8), np.uint8), tmp_path / "mask.nii.gz")
    before = path.read_bytes()
    FullDisk(tmp_path, free=50).install(monkeypatch)
    with pytest.raises(DiskFullError):
        save_mask(np.zeros((8, 8, 8), np.uint8), path)
    assert path.read_bytes() == before and not _leftovers(tmp_path)


def test_a_disk_full_at_the_rename_or_fsync_leaves_nothing(tmp_path, monkeypatch):
    """Some filesystems report ENOSPC only when the data is flushed (fsync) or on the rename."""
    for name in ("replace", "fsync"):
        with monkeypatch.context() as patch:
            patch.setattr(
                os, name, lambda *args: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left"))
            )
            with pytest.raises(DiskFullError, match="mask.nii.gz: the disk is full"):
                save_mask(np.zeros((4, 4, 4), np.uint8), tmp_path / "mask.nii.gz")
        assert not list(tmp_path.iterdir())


def test_a_folder_that_refuses_writes_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    refuse_writes(folder, monkeypatch)
    try:
        with pytest.raises(
            WriteError, match="locked/mask.nii.gz: cannot write here .*choose an output folder"
        ):
            save_mask(np.zeros((4, 4, 4), np.uint8), folder / "mask.nii.gz")
        with pytest.raises(WriteError, match="locked: cannot write here"):
            check_writable(folder)
    finally:
        folder.chmod(0o755)
    assert not list(folder.iterdir())


def test_an_output_under_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="file: cannot create the output folder"):
        save_mask(np.zeros((4, 4, 4), np.uint8), tmp_path / "file" / "mask.nii.gz")
    with pytest.raises(WriteError, match="file: cannot write here"):
        check_writable(tmp_path / "file")
