"""NIfTI/NRRD/MHA reading: world coordinates agree with nibabel and SimpleITK; bad files are clear errors."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import rotation
from monai.transforms import LoadImage

from medattn.errors import GeometryError, InputNotFoundError, UnreadableImageError
from medattn.io import load_image
from medattn.io.readers import MedattnReader

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(12.0, -20.0) @ np.diag([0.7, 0.9, 3.0])
    affine[:3, 3] = (-40.5, 12.25, 60.0)
    return affine


def _sitk_oblique(shape=(9, 8, 5)) -> sitk.Image:
    array = np.random.default_rng(0).normal(size=shape[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 3.0))
    image.SetOrigin((-40.5, 12.25, 60.0))
    image.SetDirection(rotation(12.0, -20.0).flatten().tolist())
    return image


def test_nifti_matches_nibabel_and_simpleitk(tmp_path):
    data = np.random.default_rng(0).normal(size=(9, 8, 5)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), path)
    image = load_image(path)
    assert tuple(image.shape) == (1, 9, 8, 5)
    np.testing.assert_allclose(image.affine.numpy(), nib.load(path).affine, atol=1e-6)
    np.testing.assert_array_equal(image[0].numpy(), data)
    reference = sitk.ReadImage(str(path))
    for index in [(0, 0, 0), (8, 7, 4), (3, 5, 1)]:
        ras = (image.affine.numpy() @ [*index, 1])[:3]
        lps = np.asarray(reference.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(ras, LPS_TO_RAS @ lps, atol=1e-4)
    np.testing.assert_allclose(image.meta["spacing"], (0.7, 0.9, 3.0), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_itk_formats_match_simpleitk_world_coordinates(tmp_path, suffix):
    reference = _sitk_oblique()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(reference, str(path))
    image = load_image(path)
    np.testing.assert_allclose(image[0].numpy(), sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
    for index in [(0, 0, 0), (8, 7, 4), (2, 6, 3)]:
        ras = (image.affine.numpy() @ [*index, 1])[:3]
        np.testing.assert_allclose(
            ras, LPS_TO_RAS @ reference.TransformIndexToPhysicalPoint(index), atol=1e-4
        )


def test_four_d_nifti_becomes_channels_and_is_refused_where_one_channel_is_needed(tmp_path):
    path = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 3), np.float32), np.eye(4)), path)
    assert tuple(load_image(path).shape) == (3, 6, 5, 4)
    with pytest.raises(GeometryError, match="expected 1 channel"):
        load_image(path, channels=1)


def test_vector_nrrd_becomes_channels(tmp_path):
    vector = sitk.GetImageFromArray(np.zeros((4, 5, 6, 2), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "v.nrrd"))
    assert tuple(load_image(tmp_path / "v.nrrd").shape) == (2, 6, 5, 4)


def test_single_slice_volume_squeezes_to_2d_and_3d_is_refused_as_2d(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 1), np.float32), np.eye(4)), tmp_path / "slice.nii.gz")
    assert tuple(load_image(tmp_path / "slice.nii.gz", spatial_dims=2).shape) == (1, 6, 5)
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 3), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(GeometryError, match="expected a 2D image"):
        load_image(tmp_path / "vol.nii.gz", spatial_dims=2)


def test_labels_keep_integer_dtype(tmp_path):
    nib.save(
        nib.Nifti1Image(np.arange(24, dtype=np.uint8).reshape(4, 3, 2), np.eye(4)), tmp_path / "l.nii.gz"
    )
    assert not load_image(tmp_path / "l.nii.gz", dtype=None).is_floating_point()


def test_monai_load_image_with_medattn_reader(tmp_path):
    reference = _sitk_oblique()
    sitk.WriteImage(reference, str(tmp_path / "scan.nrrd"))
    loaded = LoadImage(reader=MedattnReader(), ensure_channel_first=True, image_only=True)(
        tmp_path / "scan.nrrd"
    )
    direct = load_image(tmp_path / "scan.nrrd")
    assert loaded.shape == direct.shape
    np.testing.assert_allclose(loaded.affine.numpy(), direct.affine.numpy())


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("missing.nii.gz", None, InputNotFoundError, "no such file"),
        ("text.nii.gz", b"this is not an image", UnreadableImageError, "not a readable NIfTI"),
        ("truncated.nii.gz", "truncate", UnreadableImageError, "the file is cut short"),
        ("garbage.nrrd", b"NRRD0004\nnonsense\n", UnreadableImageError, "not a readable .nrrd"),
        ("notes.xyz", b"hello", UnreadableImageError, "unknown image format"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_file(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content == "truncate":
        full = tmp_path / "full.nii.gz"
        noise = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
        nib.save(nib.Nifti1Image(noise, np.eye(4)), full)
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(gzip.compress(content) if name == "text.nii.gz" else content)
    with pytest.raises(error, match=message) as raised:
        load_image(path)
    assert name in str(raised.value)


def test_big_endian_and_rgb_nifti_read(tmp_path):
    header = nib.Nifti1Header(endianness=">")
    data = np.arange(60, dtype=">f4").reshape(5, 4, 3)
    nib.save(nib.Nifti1Image(data, np.eye(4), header=header), tmp_path / "be.nii")
    np.testing.assert_array_equal(load_image(tmp_path / "be.nii")[0].numpy(), data.astype(np.float32))
    rgb = np.zeros((5, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    image = load_image(tmp_path / "rgb.nii.gz")
    assert tuple(image.shape) == (3, 5, 4, 3) and float(image[1].mean()) == 7.0


def test_header_promising_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[42:48] = np.array([2000, 2000, 2000], "<i2").tobytes()  # dim[1..3] in the NIfTI-1 header
    path.write_bytes(bytes(raw))
    with pytest.raises(UnreadableImageError, match="more than the .* file can hold"):
        load_image(path)


def _nifti_variants():
    rng = np.random.default_rng(1)
    scaled = nib.Nifti1Image(rng.integers(-1000, 3000, (7, 6, 5)).astype(np.int16), _oblique_affine())
    scaled.header.set_slope_inter(0.5, -1024)
    big_endian = nib.Nifti1Image(
        np.arange(60, dtype=">f4").reshape(5, 4, 3), np.eye(4), header=nib.Nifti1Header(endianness=">")
    )
    return {
        "float32": nib.Nifti1Image(rng.normal(size=(9, 8, 5)).astype(np.float32), _oblique_affine()),
        "int16 scaled": scaled,
        "big endian": big_endian,
        "nifti-2": nib.Nifti2Image(rng.normal(size=(6, 5, 4)).astype(np.float32), np.diag([2, 2, 3, 1])),
        "4D": nib.Nifti1Image(rng.normal(size=(6, 5, 4, 3)).astype(np.float32), np.eye(4)),
    }


@pytest.mark.parametrize("name", list(_nifti_variants()))
def test_gzipped_nifti_read_through_isal_equals_nibabel(tmp_path, name):
    """.nii.gz goes through ISA-L's gzip (faster than zlib): the same voxels (scaled) and affine."""
    from medattn.io.nifti import read_gzipped_nifti

    path = tmp_path / "scan.nii.gz"
    nib.save(_nifti_variants()[name], path)
    fast = read_gzipped_nifti(path)
    assert fast is not None  # the fast path read it, nothing fell back
    reference = nib.load(path)
    np.testing.assert_array_equal(fast[1], np.asanyarray(reference.dataobj))
    np.testing.assert_array_equal(fast[0].affine, reference.affine)
    assert type(fast[0]) is type(reference)
    image = load_image(path, dtype=None)
    expected = np.moveaxis(np.asanyarray(reference.dataobj).reshape(*reference.shape[:3], -1), -1, 0)
    np.testing.assert_array_equal(image.numpy(), expected)


def test_nan_and_infinite_voxels_are_replaced_with_a_warning_naming_the_file(tmp_path):
    """NaN outside a resampled scan's field of view must not turn the z-score (and mask) into NaN."""
    import warnings

    from medattn.errors import InputWarning

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5) - 10
    data[0, 0, :2] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    path = tmp_path / "resampled.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.warns(InputWarning, match=r"resampled\.nii\.gz: 4 NaN or infinite"):
        image = load_image(path)
    values = image[0].numpy()
    assert np.isfinite(values).all() and image.meta["nonfinite_voxels"] == 4
    assert values[0, 0, 0] == values[2, 2, 2] == -8 and values[1, 1, 1] == 49  # finite min / max
    np.testing.assert_array_equal(values[0, 1], data[0, 1])  # finite voxels untouched
    clean = tmp_path / "clean.nii.gz"
    nib.save(nib.Nifti1Image(np.nan_to_num(data, nan=0, posinf=0, neginf=0), np.eye(4)), clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "nonfinite_voxels" not in load_image(clean).meta


def test_monai_loadimage_reads_a_nifti_whose_forms_disagree(tmp_path):
    """Training reads through MONAI's LoadImage, which turns every meta value into a tensor: the forms kept
    for writing masks must not reach it (they raised 'Unknown type: NiftiForms')."""
    from medattn.errors import InputWarning

    qform = np.diag([1.5, 1.5, 2.0, 1.0])
    sform = qform.copy()
    sform[0, 3] = 10.0
    image = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), None)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    nib.save(image, tmp_path / "scan.nii.gz")
    with pytest.warns(InputWarning, match="disagree"):
        loaded = LoadImage(reader=MedattnReader(), image_only=True)(str(tmp_path / "scan.nii.gz"))
    np.testing.assert_allclose(np.asarray(loaded.affine), sform)  # nibabel's choice, as load_image reads it


def test_a_nifti_misnamed_as_compressed_or_not_reads_as_what_it_is(tmp_path):
    """A gzipped NIfTI named .nii and a plain one named .nii.gz (renamed by hand, or written by a tool that
    ignores the suffix): both read by their content, equal to the original."""
    import shutil

    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "real.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "real.nii")
    shutil.copy(tmp_path / "real.nii.gz", tmp_path / "gzipped.nii")
    shutil.copy(tmp_path / "real.nii", tmp_path / "plain.nii.gz")
    for name in ("gzipped.nii", "plain.nii.gz"):
        image = load_image(tmp_path / name, dtype=None)
        np.testing.assert_array_equal(image[0].numpy(), data)
        np.testing.assert_allclose(image.affine, affine)
