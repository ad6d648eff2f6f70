"""Atomic writes keep the permissions a new file would get, and an overwrite keeps the old file's mode."""

from __future__ import annotations

import os

import numpy as np

from medattn.io import save_mask


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
