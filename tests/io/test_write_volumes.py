"""Volume mask writing (NIfTI, NRRD, MHA): voxels land where the reference puts them, per nibabel and ITK."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dicom_factory import rotation
from monai.data import MetaTensor
from monai.transforms import Orientation, Spacing

from medattn.errors import GeometryError, WriteError
from medattn.io import load_image, save_mask

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (9, 7, 5)


def _affine(direction: np.ndarray, spacing=(0.7, 1.1, 2.5), origin=(12.5, -40.0, 31.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


# Axis-aligned RAS, an LPS scanner-like grid, and an oblique one (rotated about two axes).
AFFINES = {
    "ras": _affine(np.eye(3)),
    "lps": _affine(np.diag([-1.0, -1.0, 1.0])),
    "oblique": _affine(rotation(17.0, -25.0)),
}


def _mask(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 0, 0, 1, 2, 5], size=SHAPE).astype(np.int64)


def _reference(affine: np.ndarray) -> MetaTensor:
    return MetaTensor(np.zeros((1, *SHAPE), np.float32), affine=affine)


def _sitk_world_ras(image: sitk.Image, index: tuple[int, int, int]) -> np.ndarray:
    lps = np.asarray(image.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)))
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_voxels_keep_their_world_position(tmp_path, name, suffix):
    affine, mask = AFFINES[name], _mask()
    out = save_mask(mask, tmp_path / f"mask{suffix}", reference=_reference(affine))
    assert out == tmp_path / f"mask{suffix}"

    itk_image = sitk.ReadImage(str(out))
    itk_values = sitk.GetArrayFromImage(itk_image).transpose(2, 1, 0)
    np.testing.assert_array_equal(itk_values, mask)
    for index in [(0, 0, 0), (8, 0, 0), (0, 6, 0), (0, 0, 4), (3, 5, 2)]:
        expected = (affine @ np.array([*index, 1.0]))[:3]
        np.testing.assert_allclose(_sitk_world_ras(itk_image, index), expected, atol=1e-4)
    if suffix.startswith(".nii"):
        nifti = nib.load(out)
        np.testing.assert_allclose(nifti.affine, affine, atol=1e-5)
        np.testing.assert_allclose(nifti.get_qform(), affine, atol=1e-4)
        assert int(nifti.header["sform_code"]) > 0 and int(nifti.header["qform_code"]) > 0
        np.testing.assert_array_equal(np.asarray(nifti.dataobj), mask)


def test_nifti_dtype_follows_the_largest_label(tmp_path):
    small = save_mask(np.array([[[0, 3]]]), tmp_path / "small.nii.gz")
    large = save_mask(np.array([[[0, 300]]]), tmp_path / "large.nii.gz")
    assert nib.load(small).get_data_dtype() == np.uint8
    assert nib.load(large).get_data_dtype() == np.uint16
    assert int(np.asarray(nib.load(large).dataobj).max()) == 300


def test_ras_reoriented_mask_lands_on_an_lps_reference_grid(tmp_path):
    """A prediction made after MONAI Orientation('RAS') is written back on the scan's own LPS grid."""
    reference = _reference(AFFINES["lps"])
    mask = _mask(1)
    reoriented = Orientation(axcodes="RAS")(MetaTensor(mask[None], affine=reference.affine))
    assert not np.array_equal(reoriented[0].numpy(), mask)  # the axes really were flipped

    out = save_mask(reoriented, tmp_path / "mask.nii.gz", reference=reference)
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, AFFINES["lps"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask)


def test_permuted_axes_of_an_oblique_grid_are_put_back(tmp_path):
    affine = AFFINES["oblique"]
    mask = _mask(2)
    permuted = np.flip(mask.transpose(2, 0, 1), axis=1)
    permuted_affine = affine @ _index_map(mask.shape, (2, 0, 1), flip_axis=1)
    out = save_mask(
        MetaTensor(permuted[None].copy(), affine=permuted_affine),
        tmp_path / "m.mha",
        reference=_reference(affine),
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0), mask)


def _index_map(shape, order, flip_axis) -> np.ndarray:
    """Affine from the permuted/flipped array's indices to the original indices."""
    matrix = np.zeros((4, 4))
    matrix[3, 3] = 1
    for new_axis, old_axis in enumerate(order):
        matrix[old_axis, new_axis] = 1
    if flip_axis is not None:
        old_axis = order[flip_axis]
        matrix[old_axis, flip_axis] = -1
        matrix[old_axis, 3] = shape[old_axis] - 1
    return matrix


def test_reference_given_as_a_path(tmp_path):
    affine = AFFINES["oblique"]
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), affine), tmp_path / "scan.nii.gz")
    mask = _mask(3)
    out = save_mask(mask, tmp_path / "mask.nrrd", reference=tmp_path / "scan.nii.gz")
    itk_image = sitk.ReadImage(str(out))
    np.testing.assert_allclose(_sitk_world_ras(itk_image, (4, 3, 2)), (affine @ [4, 3, 2, 1])[:3], atol=1e-4)


def test_without_reference_a_metatensor_keeps_its_own_affine(tmp_path):
    affine = AFFINES["oblique"]
    out = save_mask(MetaTensor(_mask()[None], affine=affine), tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(nib.load(out).affine, affine, atol=1e-5)
    plain = save_mask(_mask(), tmp_path / "plain.nii.gz")
    np.testing.assert_allclose(nib.load(plain).affine, np.eye(4))


def test_unknown_suffix_names_the_path_and_the_formats(tmp_path):
    with pytest.raises(WriteError) as error:
        save_mask(_mask(), tmp_path / "mask.tiff")
    message = str(error.value)
    assert "mask.tiff" in message and ".nii.gz" in message and ".seg.nrrd" in message and ".dcm" in message


def test_shape_mismatch_names_both_shapes(tmp_path):
    with pytest.raises(GeometryError) as error:
        save_mask(
            np.zeros((9, 7, 4), np.uint8), tmp_path / "mask.nii.gz", reference=_reference(AFFINES["ras"])
        )
    assert "(9, 7, 4)" in str(error.value) and "(9, 7, 5)" in str(error.value)
    assert not (tmp_path / "mask.nii.gz").exists()


def test_a_resampled_mask_is_refused_not_silently_misplaced(tmp_path):
    reference = _reference(AFFINES["lps"])
    resampled = Spacing(pixdim=(1.0, 1.0, 1.0), mode="nearest")(
        MetaTensor(_mask()[None], affine=reference.affine)
    )
    with pytest.raises(GeometryError, match="resample"):
        save_mask(resampled, tmp_path / "mask.nii.gz", reference=reference)
    shifted = AFFINES["lps"].copy()
    shifted[:3, 3] += shifted[:3, 0]  # one voxel along i
    with pytest.raises(GeometryError, match="shifted"):
        save_mask(MetaTensor(_mask()[None], affine=shifted), tmp_path / "mask.nii.gz", reference=reference)


@pytest.mark.parametrize(
    ("mask", "error", "words"),
    [
        (np.full((1, *SHAPE), 0.5, np.float32), WriteError, "fractional"),
        (np.full(SHAPE, -1), WriteError, "negative"),
        (np.zeros((3, *SHAPE), np.float32), GeometryError, "3 channels"),
    ],
)
def test_masks_that_are_not_labels_are_refused(tmp_path, mask, error, words):
    with pytest.raises(error, match=words):
        save_mask(mask, tmp_path / "mask.nii.gz", reference=_reference(AFFINES["ras"]))


def test_float_and_tensor_labels_are_accepted(tmp_path):
    import torch

    mask = _mask()
    out = save_mask(
        torch.from_numpy(mask.astype(np.float32))[None],
        tmp_path / "m.nii.gz",
        reference=_reference(AFFINES["ras"]),
    )
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), mask)


def _placement(image: sitk.Image) -> np.ndarray:
    return np.array([*image.GetOrigin(), *image.GetSpacing(), *image.GetDirection()])


@pytest.mark.parametrize("codes", [(1, 2), (0, 0)], ids=["qform and sform differ", "neither coded"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".seg.nrrd", ".mha"])
def test_a_mask_lands_where_each_reader_puts_an_ambiguous_nifti(tmp_path, codes, suffix):
    """nibabel reads the sform (or a centred guess), ITK the qform (or the bare voxel size): the mask must
    overlay the scan in both, so it carries the input's forms (NIfTI) or ITK's placement (NRRD, MHA)."""
    from medattn.errors import InputWarning

    qform_code, sform_code = codes
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    qform[:3, 3] = (-59.0, -147.0, -59.0)
    sform = qform.copy()
    sform[:3, 3] = (-89.0, -127.0, -69.0)
    scan = nib.Nifti1Image(np.random.default_rng(0).random((9, 8, 7)).astype(np.float32), None)
    scan.set_qform(qform, code=qform_code)
    scan.set_sform(sform, code=sform_code)
    source = tmp_path / "scan.nii.gz"
    nib.save(scan, source)
    with pytest.warns(InputWarning, match="scan.nii.gz: the header has"):
        image = load_image(source)
    out = save_mask((image[0] > 0.5).to(torch.uint8), tmp_path / f"mask{suffix}", reference=image)
    np.testing.assert_allclose(
        _placement(sitk.ReadImage(str(out))), _placement(sitk.ReadImage(str(source))), atol=1e-5
    )
    if suffix == ".nii.gz":
        np.testing.assert_allclose(nib.load(out).affine, nib.load(source).affine)


@pytest.mark.parametrize("mask_dims", [2, 3])
def test_the_mask_of_a_2d_nifti_is_a_2d_nifti_of_its_shape(tmp_path, mask_dims):
    """A 2D NIfTI input (an ultrasound frame, a slice) gets a mask of its own shape in nibabel and ITK,
    not one with an extra axis that broadcasts against the image; other formats and 3D inputs keep 3 axes."""
    affine = AFFINES["lps"]
    nib.save(nib.Nifti1Image(np.zeros(SHAPE[:2], np.float32), affine), tmp_path / "frame.nii.gz")
    image = load_image(tmp_path / "frame.nii.gz", spatial_dims=mask_dims)  # as a 2D or a 3D model reads it
    labels = _mask()[:, :, 0]
    mask = labels if mask_dims == 2 else labels[:, :, None]
    out = save_mask(mask, tmp_path / "mask.nii.gz", reference=image)
    written = nib.load(out)
    assert written.shape == SHAPE[:2]
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(tmp_path / "frame.nii.gz")).GetSize()
    nrrd = save_mask(mask, tmp_path / "mask.nrrd", reference=image)
    assert sitk.ReadImage(str(nrrd)).GetSize() == (*SHAPE[:2], 1)
