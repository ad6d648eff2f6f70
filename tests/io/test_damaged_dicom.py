"""Damaged DICOM files end in a MedattnError that names the file and the damage: cut short, a damaged
element type or length, a damaged number in a geometry or rescale tag, a pixel claim larger than the file,
one damaged slice of a series, a damaged DICOM SEG read as an evaluation reference."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from dicom_factory import write_series
from pydicom.data import get_testdata_file

from medattn.errors import GeometryError, UnreadableImageError
from medattn.io import load_image


@pytest.fixture
def ct(tmp_path):
    """A copy of pydicom's CT_small.dcm (explicit VR little endian, uncompressed) and its bytes."""
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), path)
    return path, path.read_bytes()


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, old
    return data.replace(old, new)


def _element(data: bytes, group: int, element: int) -> int:
    """Byte offset of an explicit-VR little-endian element's tag."""
    return data.index(group.to_bytes(2, "little") + element.to_bytes(2, "little"))


def test_a_file_cut_short_in_its_pixel_data_is_named(ct):
    path, data = ct
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(UnreadableImageError, match=r"ct\.dcm: the DICOM file is cut short .*7FE0,0010"):
        load_image(path)


def test_a_header_element_with_an_absurd_length_is_cut_short_not_a_memory_error(ct):
    path, data = ct
    at = _element(data, 0x0020, 0x0032)  # ImagePositionPatient: DS with a 2-byte length
    # Make it an OB with a 4-byte length of 4 GB: pydicom would allocate the claimed length to read it.
    damaged = bytearray(data[:at]) + data[at : at + 4] + b"OB\0\0" + (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(damaged) + data[at + 8 :])
    with pytest.raises(UnreadableImageError, match=r"ct\.dcm.*cut short"):
        load_image(path)


def test_garbage_after_the_pixel_data_is_ignored(ct):
    path, data = ct
    garbage = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    # An element after the pixel data that claims 4 GB: junk a writer left, no part of the image.
    path.write_bytes(data + b"\x09\x00\x10\x00OB\0\0" + (0xFFFFFFF0).to_bytes(4, "little") + garbage)
    assert load_image(path).shape[1:3] == (128, 128)


def test_an_unknown_value_representation_names_the_file_and_tag(ct):
    path, data = ct
    at = _element(data, 0x0020, 0x0032)
    path.write_bytes(data[: at + 4] + b"DQ" + data[at + 6 :])
    with pytest.raises(UnreadableImageError, match=r"ct\.dcm.*Unknown Value Representation.*0020,0032"):
        load_image(path)


@pytest.mark.parametrize(
    ("keyword", "group", "element"),
    [("ImagePositionPatient", 0x0020, 0x0032), ("ImageOrientationPatient", 0x0020, 0x0037)],
)
def test_a_damaged_number_in_a_geometry_tag_is_a_geometry_error_naming_the_tag(ct, keyword, group, element):
    path, data = ct
    at = _element(data, group, element) + 8  # the first character of the value
    path.write_bytes(data[:at] + b"I" + data[at + 1 :])
    with pytest.raises(GeometryError, match=rf"ct\.dcm: the {keyword} tag is damaged"):
        load_image(path)


def test_a_zero_pixel_spacing_is_a_geometry_error_naming_the_tag(ct):
    path, data = ct
    at = _element(data, 0x0028, 0x0030)
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    zero = b"0\\0".ljust(length, b" ")
    path.write_bytes(data[: at + 8] + zero + data[at + 8 + length :])
    with pytest.raises(GeometryError, match=r"ct\.dcm: the PixelSpacing tag is damaged"):
        load_image(path)


def test_a_damaged_rescale_intercept_is_named(ct):
    path, data = ct
    at = _element(data, 0x0028, 0x1052)
    path.write_bytes(data[: at + 8] + b"x" + data[at + 9 :])
    with pytest.raises(UnreadableImageError, match=r"ct\.dcm: the RescaleIntercept tag is damaged"):
        load_image(path)


def test_pixel_data_claiming_more_than_the_file_holds_is_refused_before_decoding(ct):
    path, data = ct
    at = _element(data, 0x0028, 0x0010)  # Rows, US
    path.write_bytes(data[: at + 8] + (65535).to_bytes(2, "little") + data[at + 10 :])
    with pytest.raises(UnreadableImageError, match=r"ct\.dcm: the header claims .* of pixel data"):
        load_image(path)


def test_one_damaged_slice_of_a_series_is_named(tmp_path):
    series = tmp_path / "series"
    write_series(series, np.zeros((8, 6, 5), np.float32))
    victim = sorted(series.iterdir())[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match=rf"{victim.name}: the DICOM file is cut short"):
        load_image(series)


def test_a_damaged_dicom_seg_reference_is_named(tmp_path):
    from medattn.io import save_mask
    from medattn.pipelines.evaluate_inputs import load_label_map

    series = tmp_path / "series"
    write_series(series, np.zeros((8, 6, 5), np.float32))
    labels = np.zeros((8, 6, 5), np.uint8)
    labels[2:5, 2:4, 1:3] = 1
    seg = tmp_path / "seg.dcm"
    save_mask(labels, seg, reference=series, labels={1: "lesion"})
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - 40])
    with pytest.raises(UnreadableImageError, match=r"seg\.dcm"):
        load_label_map(seg)
