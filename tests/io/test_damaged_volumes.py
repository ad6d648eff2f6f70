"""Damaged NIfTI, NRRD and MetaImage files: each kind of damage ends in one MedattnError that names the file
and the header field or problem, before anything of the claimed size is allocated, and in a few seconds."""

from __future__ import annotations

import gzip
import time

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medattn.errors import GeometryError, UnreadableImageError
from medattn.io import load_image

# Byte offsets of NIfTI-1 header fields (nifti1.h).
DIM, DATATYPE, PIXDIM, VOX_OFFSET, QFORM_CODE, SFORM_CODE, QUATERN_B, SROW_X = (
    40,
    70,
    76,
    108,
    252,
    254,
    256,
    280,
)


def _nifti_bytes(qform_code: int = 0, sform_code: int = 2) -> bytes:
    image = nib.Nifti1Image(np.arange(240, dtype=np.int16).reshape(6, 5, 8), np.diag([0.9, 0.8, 2.5, 1.0]))
    image.header["qform_code"], image.header["sform_code"] = qform_code, sform_code
    image.header.set_slope_inter(1.0, 0.0)
    return image.to_bytes()


def _damaged(raw: bytes, offset: int, value, dtype: str) -> bytes:
    encoded = np.array(value, dtype).tobytes()
    return raw[:offset] + encoded + raw[offset + len(encoded) :]


def _write(tmp_path, name: str, raw: bytes):
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
@pytest.mark.parametrize(
    ("offset", "value", "dtype", "error", "message"),
    [
        (DATATYPE, 158, "<i2", UnreadableImageError, "datatype field is damaged"),
        (DIM + 6, -3, "<i2", UnreadableImageError, r"dim field is damaged \(shape \(6, 5, -3\)\)"),
        (VOX_OFFSET, np.nan, "<f4", UnreadableImageError, "vox_offset field is damaged"),
        (SROW_X, 0.0, "<f4", GeometryError, r"sform \(srow_x, srow_y, srow_z\) field is damaged"),
        (116, np.nan, "<f4", UnreadableImageError, "scl_slope / scl_inter field is damaged"),
    ],
)
def test_damaged_nifti_header_field_is_named(tmp_path, name, offset, value, dtype, error, message):
    path = _write(tmp_path, name, _damaged(_nifti_bytes(), offset, value, dtype))
    with pytest.raises(error, match=message) as raised:
        load_image(path)
    assert name in str(raised.value)


def test_damaged_pixdim_and_quaternion_are_named_where_the_placement_comes_from_them(tmp_path):
    """Without an sform, nibabel places the scan by the qform (quaternion and pixdim) or by pixdim alone."""
    qform_only = _nifti_bytes(qform_code=1, sform_code=0)
    cases = {
        "pixdim.nii": (_damaged(qform_only, PIXDIM + 4, np.inf, "<f4"), "pixdim field is damaged"),
        "quaternion.nii": (_damaged(qform_only, QUATERN_B, 3.0, "<f4"), "qform .* not a rotation"),
        "both_coded.nii.gz": (
            _damaged(_nifti_bytes(qform_code=1, sform_code=1), QUATERN_B, 3.0, "<f4"),
            "qform .* not a rotation",
        ),
    }
    for name, (raw, message) in cases.items():
        path = _write(tmp_path, name, raw)
        with pytest.raises((GeometryError, UnreadableImageError), match=message) as raised:
            load_image(path)
        assert name in str(raised.value)


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
def test_nifti_cut_short_says_so(tmp_path, name):
    raw = _nifti_bytes()
    for cut, message in (
        (200, "cut short inside its header|not a readable NIfTI"),
        (len(raw) - 7, "cut short"),
    ):
        path = _write(tmp_path, name, raw[:cut])
        with pytest.raises(UnreadableImageError, match=message) as raised:
            load_image(path)
        assert name in str(raised.value)


def test_nifti_vox_offset_past_the_end_of_the_file(tmp_path):
    path = _write(tmp_path, "scan.nii", _damaged(_nifti_bytes(), VOX_OFFSET, 1e9, "<f4"))
    with pytest.raises(
        UnreadableImageError, match="vox_offset field is damaged .* byte 1000000000 of a 832-byte"
    ):
        load_image(path)


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz"])
def test_nifti_claiming_gigabytes_is_refused_before_reading(tmp_path, name):
    """dim = 30000^3 int16 (54 TB) in a file of a few hundred bytes: the allocation guard refuses it."""
    raw = _damaged(_nifti_bytes(), DIM + 2, [30000, 30000, 30000], "<i2")
    path = _write(tmp_path, name, raw)
    with pytest.raises(UnreadableImageError, match="header claims .* TB|more than the .* file can hold"):
        load_image(path)


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "nibabel-zlib"])
def test_damaged_gzip_stream_ends_quickly(tmp_path, monkeypatch, isal):
    """A corrupt deflate stream, a truncated one, one with garbage appended and one whose vox_offset points
    far past its end: an error within seconds, through ISA-L and through nibabel's own gzip."""
    if not isal:
        monkeypatch.setattr("medattn.io.nifti.igzip", None)
    compressed = gzip.compress(_nifti_bytes())
    middle = len(compressed) // 2
    streams = {
        "flipped.nii.gz": compressed[:middle] + bytes([compressed[middle] ^ 0xFF]) + compressed[middle + 1 :],
        "truncated.nii.gz": compressed[:middle],
        "appended.nii.gz": compressed + b"\x1f\x8b\x08garbage" * 100,
        "far_offset.nii.gz": gzip.compress(_damaged(_nifti_bytes(), VOX_OFFSET, 1e9, "<f4")),
    }
    for name, data in streams.items():
        (tmp_path / name).write_bytes(data)
        started = time.perf_counter()
        with pytest.raises(UnreadableImageError) as raised:
            load_image(tmp_path / name)
        assert name in str(raised.value) and time.perf_counter() - started < 5


def _itk_file(tmp_path, suffix: str, compressed: bool):
    image = sitk.GetImageFromArray(np.arange(240, dtype=np.int16).reshape(8, 5, 6))
    image.SetSpacing((0.9, 0.8, 2.5))
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path), useCompression=compressed)
    return path


@pytest.mark.parametrize(
    ("suffix", "compressed", "old", "new"),
    [
        (".mha", False, b"DimSize = 6 5 8", b"DimSize = 6 5 99999999"),
        (".mha", True, b"DimSize = 6 5 8", b"DimSize = 60000 50000 8"),
        (".nrrd", True, b"sizes: 6 5 8", b"sizes: 60000 50000 8"),
        (".nrrd", False, b"sizes: 6 5 8", b"sizes: 6 5 99999999"),
        (".nhdr", False, b"sizes: 6 5 8", b"sizes: 6 5 99999999"),
        (".mhd", False, b"DimSize = 6 5 8", b"DimSize = 6 5 99999999"),
    ],
)
def test_itk_header_claiming_more_than_the_file_holds_is_refused_before_reading(
    tmp_path, suffix, compressed, old, new
):
    """Checked against the data file for a detached header (.nhdr / .mhd), against the file itself
    otherwise; compressed data may expand, but not to gigabytes from a few hundred bytes."""
    path = _itk_file(tmp_path, suffix, compressed)
    header = path.read_bytes()
    assert old in header
    path.write_bytes(header.replace(old, new, 1))
    with pytest.raises(
        UnreadableImageError, match="the header claims .* more than the .* file can hold"
    ) as raised:
        load_image(path)
    assert path.name in str(raised.value)


def test_itk_detached_header_whose_data_file_is_missing(tmp_path):
    path = _itk_file(tmp_path, ".nhdr", False)
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(UnreadableImageError, match=r"data file the header names \(scan.raw\) does not exist"):
        load_image(path)


@pytest.mark.parametrize(
    ("suffix", "old", "new", "field"),
    [
        (".mha", b"ElementSpacing = 0.9", b"ElementSpacing = 0.0", "ElementSpacing"),
        (".mha", b"TransformMatrix = 1 0 0", b"TransformMatrix = 0 0 0", "TransformMatrix"),
        (".nrrd", b"(0.90000000000000002,0,0)", b"(0,0,0)", r"space directions \(or spacings\)"),
        (".nrrd", b"(0,0.80000000000000004,0)", b"(0.8,0,0)", "space directions"),
    ],
)
def test_itk_damaged_geometry_field_is_named(tmp_path, suffix, old, new, field):
    path = _itk_file(tmp_path, suffix, suffix == ".nrrd")
    header = path.read_bytes()
    assert old in header
    path.write_bytes(header.replace(old, new, 1))
    with pytest.raises(GeometryError, match=f"header's {field} field is damaged") as raised:
        load_image(path)
    assert path.name in str(raised.value)


@pytest.mark.parametrize("ndims", [b"73", b"0", b"-1", b"\xb3", b"4"])
def test_metaimage_ndims_damaged_or_disagreeing_with_dimsize(tmp_path, ndims):
    """Refused before ITK parses it: MetaIO corrupts the heap (and aborts the process) on NDims = 73."""
    path = _itk_file(tmp_path, ".mha", False)
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", b"NDims = " + ndims, 1))
    with pytest.raises(UnreadableImageError, match="NDims field is damaged or disagrees") as raised:
        load_image(path)
    assert path.name in str(raised.value)
