"""The bundled sample data is what sample_data/README.md promises: layout, labels, lesion sizes, geometry.

Checked with readers we did not write (nibabel, SimpleITK/GDCM, Pillow, PyAV), so a mistake in the
generator cannot hide behind the same mistake in medattn's own readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
BRAIN = SAMPLE / "brain_mri"
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3}
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _brain_cases() -> list[tuple[Path, Path]]:
    pairs = []
    for subset in ("Tr", "Ts"):
        for image in sorted((BRAIN / f"images{subset}").glob("*_0000.nii.gz")):
            pairs.append((image, BRAIN / f"labels{subset}" / image.name.replace("_0000.nii.gz", ".nii.gz")))
    return pairs


@pytest.fixture(scope="module")
def brain_cases() -> list[tuple[nib.Nifti1Image, nib.Nifti1Image]]:
    return [(nib.load(image), nib.load(label)) for image, label in _brain_cases()]


def test_brain_dataset_json_describes_the_nnunet_layout():
    meta = json.loads((BRAIN / "dataset.json").read_text())
    assert meta["labels"] == LABELS
    assert meta["channel_names"] == {"0": "T1"}
    assert meta["file_ending"] == ".nii.gz"
    assert meta["numTraining"] == len(list((BRAIN / "imagesTr").glob("*_0000.nii.gz"))) >= 4
    assert len(list((BRAIN / "imagesTs").glob("*_0000.nii.gz"))) == 2
    assert "licence" in meta and "Collins" in meta["licence"]
    for image, label in _brain_cases():
        assert label.is_file(), f"{image.name} has no label file {label}"


def test_brain_labels_lie_on_their_image_grid(brain_cases):
    for image, label in brain_cases:
        name = Path(image.get_filename()).name
        assert image.shape == label.shape and image.ndim == 3, name
        np.testing.assert_allclose(image.affine, label.affine, atol=1e-5, err_msg=name)
        assert image.header.get_sform(coded=True)[1] > 0 and image.header.get_qform(coded=True)[1] > 0, name
        np.testing.assert_allclose(
            image.header.get_qform(), image.header.get_sform(), atol=1e-4, err_msg=name
        )
        assert label.get_data_dtype() == np.uint8 and image.get_data_dtype() in (np.int16, np.float32), name
        values = set(np.unique(np.asarray(label.dataobj)).tolist())
        assert values <= set(LABELS.values()) and {1, 2, 3} <= values, f"{name}: label values {values}"


def test_brain_cases_vary_orientation_and_spacing(brain_cases):
    codes = {nib.aff2axcodes(image.affine) for image, _ in brain_cases}
    spacings = {tuple(np.round(image.header.get_zooms()[:3], 2)) for image, _ in brain_cases}
    directions = [
        image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0) for image, _ in brain_cases
    ]
    oblique = [d for d in directions if np.abs(d).max(axis=0).min() < np.cos(np.deg2rad(5))]
    assert len(codes) >= 3 and len(spacings) >= 3 and oblique
    assert any(len(set(s)) > 1 for s in spacings), "no anisotropic case"


def test_lesion_volumes_cover_every_size_class(brain_cases):
    volumes_ml = []
    for image, label in brain_cases:
        lesion = np.asarray(label.dataobj) == LABELS["lesion"]
        components, count = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
        voxel_ml = abs(np.linalg.det(label.affine[:3, :3])) / 1000.0
        sizes = ndimage.sum(lesion, components, range(1, count + 1)) * voxel_ml
        assert count >= 1, f"{image.get_filename()}: no lesion"
        volumes_ml.extend(sizes.tolist())
    volumes = np.array(volumes_ml)
    assert volumes.min() < 1.0 and volumes.max() > 10.0
    assert ((volumes >= 0.5) & (volumes <= 20.0)).all(), volumes
    for low, high in [(0.5, 1), (1, 3), (3, 10), (10, 20)]:
        assert ((volumes >= low) & (volumes < high)).any(), f"no lesion of {low}-{high} mL"


def test_dicom_series_reads_onto_the_nifti_grid():
    folder = SAMPLE / "brain_mri_dicom" / "brain_000"
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))  # GDCM sorts by position along the slice normal
    assert len(files) == len(list(folder.glob("*.dcm")))
    assert list(files) != sorted(files), "file names in slice order would not test sorting by position"
    reader.SetFileNames(files)
    series = reader.Execute()
    nifti = nib.load(BRAIN / "imagesTr" / "brain_000_0000.nii.gz")
    volume = np.asarray(nifti.dataobj)
    assert series.GetSize() == volume.shape

    lps = LPS_FROM_RAS @ nifti.affine
    dicom_index_to_lps = np.eye(4)
    dicom_index_to_lps[:3, :3] = np.array(series.GetDirection()).reshape(3, 3) * np.array(series.GetSpacing())
    dicom_index_to_lps[:3, 3] = series.GetOrigin()
    corners = np.array([[i, j, k, 1] for i in (0, volume.shape[0] - 1) for j in (0, volume.shape[1] - 1)
                        for k in (0, volume.shape[2] - 1)], dtype=float)  # fmt: skip
    for corner in corners:
        world = lps @ corner
        index = np.linalg.solve(dicom_index_to_lps, world)[:3]
        np.testing.assert_allclose(index, np.rint(index), atol=1e-3)
        voxel = tuple(int(v) for v in np.rint(index))
        np.testing.assert_allclose(series.TransformIndexToPhysicalPoint(voxel), world[:3], atol=1e-3)

    # Every voxel: same value at the same world position.
    ijk = np.indices(volume.shape).reshape(3, -1)
    world = lps[:3, :3] @ ijk + lps[:3, 3:4]
    index = np.linalg.solve(dicom_index_to_lps[:3, :3], world - dicom_index_to_lps[:3, 3:4])
    index = np.rint(index).astype(int)
    dicom_values = sitk.GetArrayFromImage(series).transpose(2, 1, 0)[tuple(index)]
    np.testing.assert_array_equal(dicom_values, volume.reshape(-1))


def test_endoscopy_frames_pair_rgb_images_with_binary_masks():
    images = sorted((SAMPLE / "endoscopy" / "images").glob("polyp_*.png"))
    assert len(images) >= 4
    for image_path in images:
        label_path = SAMPLE / "endoscopy" / "labels" / image_path.name
        with Image.open(image_path) as image, Image.open(label_path) as label:
            assert image.mode == "RGB" and label.mode == "L" and image.size == label.size
            mask = np.asarray(label)
        assert set(np.unique(mask).tolist()) == {0, 1}, f"{label_path}: mask values must be 0/1"
        assert 0.01 < mask.mean() < 0.3, f"{label_path}: polyp covers {mask.mean():.1%}"


def test_endoscopy_video_decodes_with_one_mask_per_frame():
    with av.open(str(SAMPLE / "endoscopy_video" / "colonoscopy_clip.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    with np.load(SAMPLE / "endoscopy_video" / "colonoscopy_clip_masks.npz") as archive:
        masks = archive["masks"]
    assert masks.dtype == np.uint8 and masks.shape == (len(frames), *frames[0].shape[:2])
    assert len(frames) >= 20 and set(np.unique(masks).tolist()) == {0, 1}
    assert masks.reshape(len(masks), -1).any(axis=1).all(), "a frame without its polyp"


def test_sample_data_stays_small():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 20 * 1024 * 1024, f"sample_data/ is {total / 1e6:.1f} MB"
