"""The suffix table: every mask format writes what `load_image` reads back, names and aliases resolve, and
unknown suffixes are refused with the list of what is supported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.data import MetaTensor

from medattn.errors import UnreadableImageError, WriteError
from medattn.io import load_image, save_mask
from medattn.io.formats import (
    FORMAT_ALIASES,
    IMAGE2D_SUFFIXES,
    MASK_FORMATS,
    READ_SUFFIXES,
    VIDEO_SUFFIXES,
    mask_format,
    normalized_format,
    reader_for,
    supported_suffix,
)


def test_predict_format_names_in_the_order_the_cli_lists_them():
    assert list(MASK_FORMATS) == ["nii.gz", "seg.nrrd", "dicom-seg", "png", "nii", "nrrd", "mha"]
    assert MASK_FORMATS["dicom-seg"] == ".dcm"
    assert set(FORMAT_ALIASES.values()) <= set(MASK_FORMATS)


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("NII.GZ", "nii.gz"),
        (".seg.nrrd", "seg.nrrd"),
        ("dcm", "dicom-seg"),
        ("nifti", "nii.gz"),
        ("jpg", "jpg"),
    ],
)
def test_normalized_format(typed, name):
    assert normalized_format(typed) == name


@pytest.mark.parametrize("name", [name for name in MASK_FORMATS if name not in ("dicom-seg", "png")])
def test_every_volume_mask_format_reads_back_as_written(tmp_path, name):
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:4, 2:4, 1:3] = 2
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    path = tmp_path / f"mask{MASK_FORMATS[name]}"
    save_mask(MetaTensor(labels[None], affine=affine), path)
    assert supported_suffix(path) and mask_format(path).name == name
    read = load_image(path, dtype=None)
    np.testing.assert_array_equal(np.asarray(read[0]), labels)
    np.testing.assert_allclose(np.asarray(read.affine), affine, atol=1e-5)


def test_kinds_partition_the_readable_suffixes():
    assert set(IMAGE2D_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
    assert ".mp4" in VIDEO_SUFFIXES and not set(VIDEO_SUFFIXES) & set(IMAGE2D_SUFFIXES)
    assert {".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd", ".dcm"} <= set(READ_SUFFIXES)


def test_unknown_suffixes_name_what_is_supported(tmp_path):
    with pytest.raises(WriteError, match=r"medattn writes \.nii\.gz, \.seg\.nrrd, \.dcm, \.png"):
        mask_format(Path("mask.jpg"))
    unknown = tmp_path / "scan.xyz"
    unknown.write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match=r"medattn reads \.nii\.gz.*a DICOM folder"):
        reader_for(unknown)
